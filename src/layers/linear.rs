use candle_core::{Result, Tensor, Var};
use rand_chacha::ChaCha8Rng;

use super::{activate, filled, glorot_uniform, value, Param};
use crate::ops::dense;
use crate::spec::Activation;

/// Fully connected layer; weight stored (out, in) like candle-nn / PyTorch.
pub struct Dense {
    weight: Var,
    bias: Var,
    activation: Activation,
}

pub fn dense(in_features: usize, units: usize, activation: Activation, rng: &mut ChaCha8Rng) -> crate::Result<Dense> {
    Ok(Dense {
        weight: glorot_uniform(&[units, in_features], in_features, units, rng)?,
        bias: filled(0.0, units)?,
        activation,
    })
}

impl Dense {
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let ys = dense::dense(xs, &value(&self.weight, train), &value(&self.bias, train))?;
        activate(ys, self.activation)
    }

    /// Whether the layer has no activation (the classifier, whose softmax
    /// is the loss's).
    pub fn is_linear(&self) -> bool {
        self.activation == Activation::None
    }

    /// A training forward outside autograd; see [`Self::backward_saved`].
    pub fn forward_saved(&self, xs: &Tensor) -> Result<Tensor> {
        dense::forward_tensors(xs, self.weight.as_tensor(), self.bias.as_tensor())
    }

    /// `(dx, dw, db)` of [`Self::forward_saved`] on `xs` given the output
    /// gradient (`dx` only when `want_dx`): the same ops autograd runs.
    pub fn backward_saved(&self, xs: &Tensor, grad: &Tensor, want_dx: bool) -> Result<(Option<Tensor>, Tensor, Tensor)> {
        dense::gradients(xs, self.weight.as_tensor(), grad, want_dx)
    }

    pub fn weight_bias(&self) -> (&Var, &Var) {
        (&self.weight, &self.bias)
    }

    pub fn params(&self) -> Vec<Param<'_>> {
        vec![
            Param { name: "weight", var: &self.weight, trainable: true },
            Param { name: "bias", var: &self.bias, trainable: true },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check, input};
    use rand::SeedableRng;

    #[test]
    fn gradient() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for act in [Activation::None, Activation::Relu] {
            let d = dense(5, 4, act, &mut rng).unwrap();
            let x = input(&[3, 5], 8);
            let vars = [x, d.weight.clone(), d.bias.clone()];
            check(&vars, |v| d.forward_t(v[0].as_tensor(), true), "dense");
        }
    }
}
