//! `y = x w^T + b` as one candle op with its own backward.
//!
//! The study's "same"-pooling models flatten 124 (or 128) maps of 48x48
//! into 285,696 features for a 7-unit layer. Candle's matmul runs that as a
//! 64 x 7 x 285,696 product whose reduction is not split across threads,
//! and its backward forms the weight gradient as the transposed, tall and
//! thin `x^T dy` (285,696 x 7) before transposing it back: together about a
//! tenth of such a model's training step. Here the forward splits the
//! reduction into fixed blocks (so the sum does not depend on the thread
//! count), and both gradients are products with the long dimension as
//! their output columns, which the GEMM spreads over the threads.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::conv::{inner_par, sum_partials};
use super::gemm::{contiguous_slice, gemm, zeros, Elem, Mat, Parallelism};

/// Reduction block of the forward: each block's partial products are
/// summed in block order.
const BLOCK: usize = 8192;

/// `x (n x k) w^T (k x o) + b`.
fn forward<T: Elem>(n: usize, k: usize, o: usize, x: &[T], w: &[T], b: &[T]) -> Vec<T> {
    // block `bi` of the reduction, on `par`'s threads
    let partial = |bi: usize, par: Parallelism| {
        let start = bi * BLOCK;
        let mut part = vec![T::ZERO; n * o];
        let (a, bt) = (Mat::row_major(&x[start..], k), Mat::transposed(&w[start..], k));
        gemm(n, o, BLOCK.min(k - start), &mut part, o, false, a, bt, par);
        part
    };
    let mut y = match k.div_ceil(BLOCK) {
        0 | 1 => partial(0, inner_par(1)),
        blocks => sum_partials((0..blocks).into_par_iter().map(|bi| partial(bi, Parallelism::None)).collect()),
    };
    for row in y.chunks_mut(o) {
        for (v, &bias) in row.iter_mut().zip(b) {
            *v += bias;
        }
    }
    y
}

/// `dy (n x o) w (o x k)`.
pub fn grad_input<T: Elem>(n: usize, k: usize, o: usize, dy: &[T], w: &[T]) -> Vec<T> {
    // 73 MB for the study's flatten: a parallel fill, not calloc's one-thread one
    let mut dx = zeros::<T>(n * k);
    gemm(n, k, o, &mut dx, k, false, Mat::row_major(dy, o), Mat::row_major(w, k), inner_par(1));
    dx
}

/// `dy^T (o x n) x (n x k)`.
pub fn grad_weight<T: Elem>(n: usize, k: usize, o: usize, dy: &[T], x: &[T]) -> Vec<T> {
    let mut dw = zeros::<T>(o * k);
    gemm(o, k, n, &mut dw, k, false, Mat::transposed(dy, o), Mat::row_major(x, k), inner_par(1));
    dw
}

/// `(n, k, o)` of `x (n, k)` and `w (o, k)`.
fn dims(what: &str, x: &Layout, w: &Layout) -> Result<(usize, usize, usize)> {
    match (x.dims(), w.dims()) {
        (&[n, k], &[o, kw]) if k == kw => Ok((n, k, o)),
        (xd, wd) => bail!("{what}: x {xd:?} and weight {wd:?} do not match as (n, in) and (out, in)"),
    }
}

/// The forward op: `(x, w, b) -> x w^T + b`.
struct DenseOp;

impl CustomOp3 for DenseOp {
    fn name(&self) -> &'static str {
        "fer-dense"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, k, o) = dims("fer-dense", l1, l2)?;
        if l3.dims() != [o] {
            bail!("fer-dense: bias shape {:?}, expected [{o}]", l3.dims());
        }
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => f32::to_cpu_storage_owned(forward::<f32>(
                n,
                k,
                o,
                contiguous_slice(s1, l1)?,
                contiguous_slice(s2, l2)?,
                contiguous_slice(s3, l3)?,
            )),
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => f64::to_cpu_storage_owned(forward::<f64>(
                n,
                k,
                o,
                contiguous_slice(s1, l1)?,
                contiguous_slice(s2, l2)?,
                contiguous_slice(s3, l3)?,
            )),
            _ => bail!("fer-dense: x, weight and bias must all be f32 or all f64"),
        };
        Ok((out, Shape::from((n, o))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = gradients(x, w, grad, x.track_op())?;
        Ok((dx, w.track_op().then_some(dw), b.track_op().then_some(db)))
    }
}

/// `(dy (n, o), w (o, k)) -> dx (n, k)` or `(dy (n, o), x (n, k)) -> dw (o, k)`.
#[derive(Clone, Copy)]
enum Grad {
    Input,
    Weight,
}

impl Grad {
    fn run<T: Elem>(self, n: usize, k: usize, o: usize, dy: &[T], m: &[T]) -> Vec<T> {
        match self {
            Grad::Input => grad_input(n, k, o, dy, m),
            Grad::Weight => grad_weight(n, k, o, dy, m),
        }
    }
}

impl CustomOp2 for Grad {
    fn name(&self) -> &'static str {
        match self {
            Grad::Input => "fer-dense-grad-input",
            Grad::Weight => "fer-dense-grad-weight",
        }
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (&[n, o], &[rows, k]) = (l1.dims(), l2.dims()) else {
            bail!("{name}: expected two matrices, got {:?} and {:?}", l1.dims(), l2.dims())
        };
        let (fits, out) = match self {
            Grad::Input => (rows == o, (n, k)),
            Grad::Weight => (rows == n, (o, k)),
        };
        if !fits {
            bail!("{name}: grad {:?} does not fit {:?}", l1.dims(), l2.dims());
        }
        let storage = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => f32::to_cpu_storage_owned(self.run::<f32>(n, k, o, contiguous_slice(s1, l1)?, contiguous_slice(s2, l2)?)),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => f64::to_cpu_storage_owned(self.run::<f64>(n, k, o, contiguous_slice(s1, l1)?, contiguous_slice(s2, l2)?)),
            _ => bail!("{name}: dtype mismatch"),
        };
        Ok((storage, Shape::from(out)))
    }
}

/// `x (n, in) w^T + b` with `w (out, in)` and `b (out)`, with autograd.
pub fn dense(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, DenseOp)
}

/// [`dense`] with no autograd graph.
pub fn forward_tensors(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op3_no_bwd(&w.contiguous()?, &b.contiguous()?, &DenseOp)
}

/// `(dx, dw, db)` of [`dense`] given its output gradient, by the ops its
/// autograd backward runs (`dx` only when `want_dx`).
pub fn gradients(x: &Tensor, w: &Tensor, grad: &Tensor, want_dx: bool) -> Result<(Option<Tensor>, Tensor, Tensor)> {
    let grad = grad.contiguous()?;
    let dx = if want_dx { Some(grad.apply_op2_no_bwd(&w.contiguous()?, &Grad::Input)?) } else { None };
    Ok((dx, grad.apply_op2_no_bwd(&x.contiguous()?, &Grad::Weight)?, grad.sum(0)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn close(a: &Tensor, b: &Tensor, what: &str) {
        let (a, b): (Vec<f32>, Vec<f32>) = (a.flatten_all().unwrap().to_vec1().unwrap(), b.flatten_all().unwrap().to_vec1().unwrap());
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            assert!((p - q).abs() <= 1e-4 * (1.0 + p.abs().max(q.abs())), "{what}[{i}]: {p} vs {q}");
        }
    }

    /// Against candle's matmul, value and all three gradients, for a
    /// reduction of one block, several blocks with a short last one, and a
    /// batch of 1.
    #[test]
    fn matches_candle() {
        for (n, k, o) in [(5, 37, 7), (3, 2 * BLOCK + 1001, 4), (1, BLOCK + 1, 7), (6, 1, 2)] {
            let dev = Device::Cpu;
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap()).unwrap();
            let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (o, k), &dev).unwrap()).unwrap();
            let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, o, &dev).unwrap()).unwrap();
            let r = Tensor::randn(0f32, 1.0, (n, o), &dev).unwrap();
            let ours = dense(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
            let theirs = x.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap().broadcast_add(b.as_tensor()).unwrap();
            close(&ours, &theirs, "y");
            let g1 = ours.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = theirs.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
            for (v, what) in [(&x, "dx"), (&w, "dw"), (&b, "db")] {
                close(g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap(), what);
            }
        }
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 5), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::zeros((3, 4), candle_core::DType::F32, &dev).unwrap();
        let b = Tensor::zeros(3, candle_core::DType::F32, &dev).unwrap();
        let err = dense(&x, &w, &b).unwrap_err().to_string();
        assert!(err.contains("do not match"), "{err}");
    }
}
