//! Direct convolution for layers with few input taps (`C * KH * KW <= 16`:
//! the first layer of every preset, one grayscale channel with a 3x3 or
//! 4x4 kernel), where im2col + GEMM has an inner dimension of only 9 or 16.
//! The forward is no faster than im2col + GEMM (both about 6-7 ms for 64
//! images at 48x48x48 on a 2-core Xeon: writing the 28 MB output is most
//! of it); the gain is in the backward, which masks the ReLU and sums the
//! bias on the fly instead of writing a masked copy of the gradient and
//! reading it twice more.
//!
//! Here each image is unfolded into its `C*KH*KW` shifted copies (im2col,
//! a few tens of KB, in cache) and every output row is built with one
//! multiply-add pass per tap, with the bias and ReLU applied on the way
//! out. The weight and bias gradients are dot products of the (ReLU-masked)
//! output gradient with the same copies, accumulated in fixed chunks of
//! images and reduced in chunk order, so they do not depend on the thread
//! count. The input gradient (no preset needs it: the first layer's input
//! is the image) stays on the im2col path.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::conv::{im2col, sum_partials, Geom};
use super::conv_bias_act::relu_grad;
use super::gemm::{par_filled, Elem};
use super::simd;
use super::winograd::Epilogue;

/// Largest `C * KH * KW` the direct path takes.
pub const MAX_TAPS: usize = 16;

/// Images per weight-gradient partial sum (fixed: determines the reduction order).
const WGRAD_CHUNK: usize = 4;

/// Lanes of the dot products: independent partial sums that LLVM keeps in
/// vector registers (a plain float sum would run one element at a time).
const LANES: usize = 16;

/// Whether `g` runs on the direct path.
pub fn applicable(g: &Geom) -> bool {
    g.ckk() <= MAX_TAPS && g.p() > 0
}

/// Pixels per block: a block of every tap's row (`taps * BLOCK` values,
/// at most 16 KB of f32) stays in L1 while all output channels use it.
const BLOCK: usize = 256;

/// One image of the forward: all `O` output rows of `yn` from its unfolded
/// `cols` (`taps` rows of `p`), block by block; `acc` holds [`BLOCK`] values.
#[inline(always)]
fn fwd_image<T: Elem>(p: usize, w: &[T], cols: &[T], epi: &Epilogue<T>, acc: &mut [T], yn: &mut [MaybeUninit<T>]) {
    let taps = cols.len() / p;
    for j in (0..p).step_by(BLOCK) {
        let len = BLOCK.min(p - j);
        let acc = &mut acc[..len];
        for o in 0..yn.len() / p {
            let wo = &w[o * taps..(o + 1) * taps];
            for (k, &wk) in wo.iter().enumerate() {
                let c = &cols[k * p + j..k * p + j + len];
                if k == 0 {
                    for (a, &c) in acc.iter_mut().zip(c) {
                        *a = wk * c;
                    }
                } else {
                    for (a, &c) in acc.iter_mut().zip(c) {
                        *a += wk * c;
                    }
                }
            }
            let b = epi.bias.map_or(T::ZERO, |b| b[o]);
            for (y, &v) in yn[o * p + j..o * p + j + len].iter_mut().zip(acc.iter()) {
                y.write(epi.map(b, v));
            }
        }
    }
}

/// `sum_i a[i] * b[i]` in [`LANES`] fixed lanes, then the lanes in order.
#[inline(always)]
fn dot<T: Elem>(a: &[T], b: &[T]) -> T {
    let mut lanes = [T::ZERO; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            lanes[l] += x[l] * y[l];
        }
    }
    let mut s = T::ZERO;
    for v in lanes {
        s += v;
    }
    for (&x, &y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

/// `sum_i a[i]` in [`LANES`] fixed lanes, then the lanes in order.
#[inline(always)]
fn lane_sum<T: Elem>(a: &[T]) -> T {
    let mut lanes = [T::ZERO; LANES];
    let ac = a.chunks_exact(LANES);
    let rest = ac.remainder();
    for x in ac {
        for l in 0..LANES {
            lanes[l] += x[l];
        }
    }
    let mut s = T::ZERO;
    for v in lanes.into_iter().chain(rest.iter().copied()) {
        s += v;
    }
    s
}

/// One image of the weight gradient, added to `acc` (`dw` then `db`),
/// block by block as the forward; `g` holds [`BLOCK`] masked gradient values.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn wgrad_image<T: Elem>(o_n: usize, p: usize, cols: &[T], dy: &[T], relu_out: Option<&[T]>, want_db: bool, g: &mut [T], acc: &mut [T]) {
    let taps = cols.len() / p;
    let wlen = o_n * taps;
    for j in (0..p).step_by(BLOCK) {
        let len = BLOCK.min(p - j);
        for o in 0..o_n {
            let d = &dy[o * p + j..o * p + j + len];
            let d = match relu_out {
                Some(y) => {
                    for ((g, &y), &d) in g.iter_mut().zip(&y[o * p + j..o * p + j + len]).zip(d) {
                        *g = relu_grad(y, d);
                    }
                    &g[..len]
                }
                None => d,
            };
            for k in 0..taps {
                acc[o * taps + k] += dot(d, &cols[k * p + j..k * p + j + len]);
            }
            if want_db {
                acc[wlen + o] += lane_sum(d);
            }
        }
    }
}

/// `y = epilogue(conv(x, w))`: `x (N, C, H, W)`, `w (O, C, KH, KW)` -> `(N, O, OH, OW)`.
pub fn conv2d_fwd<T: Elem>(g: &Geom, x: &[T], w: &[T], epi: &Epilogue<T>) -> Vec<T> {
    let (taps, p, chw) = (g.ckk(), g.p(), g.chw());
    // SAFETY: `fwd_image` writes every output of its image.
    unsafe {
        par_filled(g.n * g.o * p, g.o * p, |n, yn| {
            T::with_scratch(taps * p + BLOCK, |buf| {
                let (cols, acc) = buf.split_at_mut(taps * p);
                im2col(g, &x[n * chw..(n + 1) * chw], cols);
                simd::dispatch(#[inline(always)] || fwd_image(p, w, cols, epi, acc, yn))
            })
        })
    }
}

/// Weight and (with `want_db`) bias gradients from `x` and the output
/// gradient `dy`, masked by the ReLU where `relu_out` (the forward's output)
/// is given: `(dw (O, C, KH, KW), db (O))`.
pub fn conv2d_bwd_weight<T: Elem>(g: &Geom, x: &[T], dy: &[T], relu_out: Option<&[T]>, want_db: bool) -> (Vec<T>, Option<Vec<T>>) {
    let (taps, p, chw) = (g.ckk(), g.p(), g.chw());
    let wlen = g.o * taps;
    let chunks = g.n.div_ceil(WGRAD_CHUNK);
    if chunks == 0 {
        return (vec![T::ZERO; wlen], want_db.then(|| vec![T::ZERO; g.o]));
    }
    // Each partial: dw (O * taps) then db (O).
    let partials: Vec<Vec<T>> = (0..chunks)
        .into_par_iter()
        .map(|chunk| {
            let mut acc = vec![T::ZERO; wlen + g.o];
            T::with_scratch(taps * p + BLOCK, |buf| {
                let (cols, masked) = buf.split_at_mut(taps * p);
                for n in chunk * WGRAD_CHUNK..((chunk + 1) * WGRAD_CHUNK).min(g.n) {
                    im2col(g, &x[n * chw..(n + 1) * chw], cols);
                    let at = n * g.o * p..(n + 1) * g.o * p;
                    let y = relu_out.map(|y| &y[at.clone()]);
                    simd::dispatch(#[inline(always)] || wgrad_image(g.o, p, cols, &dy[at], y, want_db, masked, &mut acc));
                }
            });
            acc
        })
        .collect();
    let mut sum = sum_partials(partials);
    let db = want_db.then(|| sum.split_off(wlen));
    sum.truncate(wlen);
    (sum, db)
}

