use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rand::RngCore;
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

/// Elements per mask chunk (the chunks are drawn in parallel).
const MASK_CHUNK: usize = 1 << 14;

/// SplitMix64's output function: a 64-bit hash good enough for
/// statistical use. Element `e` of a mask keeps the 16 bits at `16 (e % 4)`
/// of `mix(key + (e / 4 + 1) * golden)`, so the mask depends only on the key
/// and the index: the same for any thread count, and vectorised (ChaCha8,
/// a draw per element, took 1.7 ms of seed4x4's 140 ms training step for
/// its first dropout alone).
#[inline(always)]
fn mix(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

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
        // 16-bit draws against rate * 2^16: a rate resolved to 1/65536.
        let threshold = (self.rate * 65_536.0).round() as u64;
        let key = rng.next_u64();
        let mut keep = vec![false; len];
        keep.par_chunks_mut(MASK_CHUNK).enumerate().for_each(|(i, chunk)| {
            simd::dispatch(#[inline(always)] || {
                let first = (i * MASK_CHUNK / 4) as u64;
                for (w, quad) in chunk.chunks_mut(4).enumerate() {
                    let h = mix(key.wrapping_add((first + w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
                    for (j, k) in quad.iter_mut().enumerate() {
                        *k = (h >> (16 * j)) & 0xffff >= threshold;
                    }
                }
            })
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

    /// Each of the four elements a hash serves drops at the rate, across
    /// chunk boundaries and a ragged end; the mask is the same on one thread.
    #[test]
    fn every_lane_of_the_mask_drops_at_the_rate() {
        let d = dropout(0.3);
        let len = 3 * MASK_CHUNK + 4 * 1000 + 3;
        let keep = d.mask(len, &mut ChaCha8Rng::seed_from_u64(5));
        for lane in 0..4 {
            let (n, dropped) = keep.iter().skip(lane).step_by(4).fold((0, 0), |(n, k), &v| (n + 1, k + usize::from(!v)));
            let frac = dropped as f64 / n as f64;
            assert!((0.28..0.32).contains(&frac), "lane {lane}: {frac}");
        }
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert_eq!(one.install(|| d.mask(len, &mut ChaCha8Rng::seed_from_u64(5))), keep);
        assert_ne!(d.mask(len, &mut ChaCha8Rng::seed_from_u64(6)), keep);
    }
}
