use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::ops::gemm::{contiguous_slice, par_filled, Elem};
use crate::ops::simd;

/// Inverted dropout: kept activations are scaled by 1/(1-rate) during
/// training so inference needs no rescaling (as Keras does).
pub struct Dropout {
    rate: f64,
}

pub fn dropout(rate: f64) -> Dropout {
    Dropout { rate }
}

/// Elements per mask chunk; chunk `i` draws from stream `i` of a ChaCha8
/// keyed once per call, so the mask is drawn in parallel and is the same
/// for any thread count.
const MASK_CHUNK: usize = 1 << 14;

impl Dropout {
    /// The mask comes from `rng`, not candle's global generator, so a seeded
    /// run is bit-reproducible.
    pub fn forward_t(&self, xs: &Tensor, train: bool, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        if !train || self.rate <= 0.0 {
            return Ok(xs.clone());
        }
        xs.contiguous()?.apply_op1(self.mask_op(xs.elem_count(), rng))
    }

    /// The training forward with no autograd graph, and its mask (`None`
    /// when nothing is dropped), for [`super::Saved`]'s backward.
    pub(super) fn forward_saved(&self, xs: &Tensor, rng: &mut ChaCha8Rng) -> Result<(Tensor, Option<MaskOp>)> {
        if self.rate <= 0.0 {
            return Ok((xs.clone(), None));
        }
        let op = self.mask_op(xs.elem_count(), rng);
        Ok((xs.contiguous()?.apply_op1_no_bwd(&op)?, Some(op)))
    }

    fn mask_op(&self, len: usize, rng: &mut ChaCha8Rng) -> MaskOp {
        MaskOp { keep: self.mask(len, rng), scale: 1.0 / (1.0 - self.rate) }
    }

    fn mask(&self, len: usize, rng: &mut ChaCha8Rng) -> Vec<bool> {
        // Compare raw 32-bit draws against rate * 2^32: one draw per element.
        let threshold = (self.rate * 4_294_967_296.0) as u64;
        let key = rng.next_u64();
        let mut keep = vec![false; len];
        keep.par_chunks_mut(MASK_CHUNK).enumerate().for_each(|(i, chunk)| {
            let mut r = ChaCha8Rng::seed_from_u64(key);
            r.set_stream(i as u64);
            let mut draws = [0u32; 256];
            for block in chunk.chunks_mut(draws.len()) {
                r.fill(&mut draws[..block.len()]);
                for (k, &d) in block.iter_mut().zip(&draws) {
                    *k = d as u64 >= threshold;
                }
            }
        });
        keep
    }
}

/// `x * keep * scale`, element-wise; its own backward (the same map on the
/// gradient), so autograd sees one node and no stored mask tensor.
pub(super) struct MaskOp {
    keep: Vec<bool>,
    scale: f64,
}

fn apply_mask<T: Elem>(x: &[T], keep: &[bool], scale: f64) -> Vec<T> {
    let scale = T::from_f64(scale);
    // SAFETY: every element of every piece is written (`x`, `keep` and
    // the output have the same length; the caller checks).
    unsafe {
        par_filled(x.len(), MASK_CHUNK, |i, o| {
            let (x, k) = (&x[i * MASK_CHUNK..][..o.len()], &keep[i * MASK_CHUNK..][..o.len()]);
            simd::dispatch(#[inline(always)] || {
                for ((o, &x), &k) in o.iter_mut().zip(x).zip(k) {
                    o.write(if k { x * scale } else { T::ZERO });
                }
            })
        })
    }
}

impl MaskOp {
    /// The gradient through the mask: the same map.
    pub(super) fn backward(&self, grad: &Tensor) -> Result<Tensor> {
        grad.contiguous()?.apply_op1_no_bwd(self)
    }
}

impl CustomOp1 for MaskOp {
    fn name(&self) -> &'static str {
        "fer-dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        if l.shape().elem_count() != self.keep.len() {
            bail!("dropout: mask of {} elements for a tensor of {}", self.keep.len(), l.shape().elem_count());
        }
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(apply_mask::<f32>(contiguous_slice(s, l)?, &self.keep, self.scale)),
            CpuStorage::F64(_) => CpuStorage::F64(apply_mask::<f64>(contiguous_slice(s, l)?, &self.keep, self.scale)),
            _ => bail!("dropout: expected f32 or f64"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        grad.contiguous()?.apply_op1_no_bwd(self).map(Some)
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
