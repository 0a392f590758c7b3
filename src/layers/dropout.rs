use candle_core::{Result, Tensor};
use rand::RngCore;
use rand_chacha::ChaCha8Rng;

/// Inverted dropout: kept activations are scaled by 1/(1-rate) during
/// training so inference needs no rescaling (as Keras does).
pub struct Dropout {
    rate: f64,
}

pub fn dropout(rate: f64) -> Dropout {
    Dropout { rate }
}

impl Dropout {
    /// The mask comes from `rng`, not candle's global generator, so a seeded
    /// run is bit-reproducible.
    pub fn forward_t(&self, xs: &Tensor, train: bool, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        if !train || self.rate <= 0.0 {
            return Ok(xs.clone());
        }
        xs.broadcast_mul(&self.mask(xs, rng)?)
    }

    fn mask(&self, xs: &Tensor, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        // Compare raw 32-bit draws against rate * 2^32: one draw per element.
        let threshold = (self.rate * 4_294_967_296.0) as u64;
        let keep = (1.0 / (1.0 - self.rate)) as f32;
        let mask: Vec<f32> = (0..xs.elem_count())
            .map(|_| if (rng.next_u32() as u64) < threshold { 0.0 } else { keep })
            .collect();
        Tensor::from_vec(mask, xs.shape(), xs.device())?.to_dtype(xs.dtype())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check, input};
    use rand::SeedableRng;

    #[test]
    fn gradient_with_a_fixed_mask() {
        let d = dropout(0.4);
        let x = input(&[2, 3, 4, 4], 2);
        let rng = ChaCha8Rng::seed_from_u64(11);
        check(&[x], |v| d.forward_t(v[0].as_tensor(), true, &mut rng.clone()), "dropout");
    }

    #[test]
    fn drops_about_rate_and_rescales() {
        let d = dropout(0.25);
        let x = Tensor::ones((100, 100), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let y: Vec<f32> = d.forward_t(&x, true, &mut rng).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let dropped = y.iter().filter(|v| **v == 0.0).count();
        assert!((2300..2700).contains(&dropped), "{dropped}");
        assert!(y.iter().all(|v| *v == 0.0 || (*v - 4.0 / 3.0).abs() < 1e-6));
        let mean = y.iter().sum::<f32>() / y.len() as f32;
        assert!((mean - 1.0).abs() < 0.03);
        // Inference is the identity and draws nothing.
        let before = rng.clone();
        assert_eq!(d.forward_t(&x, false, &mut rng).unwrap().to_vec2::<f32>().unwrap(), x.to_vec2::<f32>().unwrap());
        assert_eq!(before, rng);
    }
}
