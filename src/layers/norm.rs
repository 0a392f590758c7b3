use candle_core::{Result, Tensor, Var};

use super::{filled, value, Param};

/// Batch normalisation over (N, H, W) per channel, Keras flavour: the running
/// statistics move as `running = momentum * running + (1 - momentum) * batch`
/// and the running variance takes the biased batch variance.
pub struct BatchNorm2d {
    gamma: Var,
    beta: Var,
    running_mean: Var,
    running_var: Var,
    momentum: f64,
    eps: f64,
}

pub fn batch_norm2d(channels: usize, momentum: f64, eps: f64) -> crate::Result<BatchNorm2d> {
    Ok(BatchNorm2d {
        gamma: filled(1.0, channels)?,
        beta: filled(0.0, channels)?,
        running_mean: filled(0.0, channels)?,
        running_var: filled(1.0, channels)?,
        momentum,
        eps,
    })
}

impl BatchNorm2d {
    /// Training mode normalises with the batch statistics and updates the
    /// running ones as a side effect; inference uses the running ones.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let per_channel = |v: &Var| -> Result<Tensor> { value(v, train).reshape((1, (), 1, 1)) };
        let (gamma, beta) = (per_channel(&self.gamma)?, per_channel(&self.beta)?);
        if !train {
            let scale = gamma.broadcast_div(&(per_channel(&self.running_var)? + self.eps)?.sqrt()?)?;
            let shift = (beta - per_channel(&self.running_mean)?.broadcast_mul(&scale)?)?;
            return xs.broadcast_mul(&scale)?.broadcast_add(&shift);
        }
        let mean = xs.mean_keepdim((0, 2, 3))?;
        let centered = xs.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim((0, 2, 3))?;
        self.update_running(&mean, &var)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed.broadcast_mul(&gamma)?.broadcast_add(&beta)
    }

    fn update_running(&self, mean: &Tensor, var: &Tensor) -> Result<()> {
        let m = self.momentum;
        for (running, batch) in [(&self.running_mean, mean), (&self.running_var, var)] {
            let batch = batch.detach().flatten_all()?;
            let next = (running.as_tensor().detach().affine(m, 0.0)? + batch.affine(1.0 - m, 0.0)?)?;
            running.set(&next)?;
        }
        Ok(())
    }

    pub fn params(&self) -> Vec<Param<'_>> {
        vec![
            Param { name: "weight", var: &self.gamma, trainable: true },
            Param { name: "bias", var: &self.beta, trainable: true },
            Param { name: "running_mean", var: &self.running_mean, trainable: false },
            Param { name: "running_var", var: &self.running_var, trainable: false },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check, input};
    use candle_core::Device;

    #[test]
    fn gradient_train_mode() {
        let bn = batch_norm2d(3, 0.99, 1e-3).unwrap();
        bn.gamma.set(&Tensor::new(&[1.5f32, -0.5, 2.0], &Device::Cpu).unwrap()).unwrap();
        bn.beta.set(&Tensor::new(&[0.1f32, 0.2, -0.3], &Device::Cpu).unwrap()).unwrap();
        let x = input(&[3, 3, 2, 2], 5);
        let vars = [x, bn.gamma.clone(), bn.beta.clone()];
        check(&vars, |v| bn.forward_t(v[0].as_tensor(), true), "batch_norm2d");
    }

    #[test]
    fn gradient_eval_mode() {
        let bn = batch_norm2d(2, 0.9, 1e-3).unwrap();
        bn.running_var.set(&Tensor::new(&[0.5f32, 2.0], &Device::Cpu).unwrap()).unwrap();
        let x = input(&[2, 2, 3, 3], 6);
        // Eval mode detaches gamma/beta (no graph at inference), so only x is checked.
        check(&[x], |v| bn.forward_t(v[0].as_tensor(), false), "batch_norm2d eval");
    }

    #[test]
    fn running_stats_follow_keras_momentum() {
        let bn = batch_norm2d(1, 0.9, 1e-3).unwrap();
        let x = Tensor::new(&[[[[1f32, 2.], [3., 6.]]]], &Device::Cpu).unwrap();
        let y: Vec<f32> = bn.forward_t(&x, true).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let (mean, var) = (3.0f32, 3.5f32);
        for (yi, xi) in y.iter().zip([1f32, 2., 3., 6.]) {
            assert!((yi - (xi - mean) / (var + 1e-3).sqrt()).abs() < 1e-5);
        }
        let rm: Vec<f32> = bn.running_mean.as_tensor().to_vec1().unwrap();
        let rv: Vec<f32> = bn.running_var.as_tensor().to_vec1().unwrap();
        assert!((rm[0] - 0.1 * mean).abs() < 1e-6, "{rm:?}");
        assert!((rv[0] - (0.9 + 0.1 * var)).abs() < 1e-6, "{rv:?}");
        // Eval mode leaves the statistics alone.
        bn.forward_t(&x, false).unwrap();
        assert_eq!(bn.running_mean.as_tensor().to_vec1::<f32>().unwrap(), rm);
    }
}
