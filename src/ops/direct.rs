//! Direct convolution for layers with few input taps (`C * KH * KW <= 16`:
//! the first layer of every preset, one grayscale channel with a 3x3 or
//! 4x4 kernel), where im2col + GEMM has an inner dimension of only 9 or 16.
//!
//! The forward unfolds each image into its `C*KH*KW` shifted copies
//! (im2col, in cache) and multiplies them by the weights with
//! [`gemm_rows`] a block of pixels at a time, the bias and ReLU applied on
//! the way out. The weight and bias gradients mask the output gradient by
//! the ReLU on the fly and multiply it with each tap's inputs, read from
//! the zero-padded image itself where the layer has one channel and
//! stride 1 (from the unfolded copies otherwise), in 16 lanes per sum that
//! are added up over a fixed chunk of images and reduced in chunk order,
//! so they do not depend on the thread count. On a 2-core Xeon, 64 images
//! of 48x48 with 48 4x4 filters: forward 4.6 -> 3.0 ms, weight gradient
//! 6.6 -> 2.2 ms a step against the per-tap passes and per-block dot
//! products this replaced (`phase_profile`, seed4x4 layer 0). The input
//! gradient (no preset needs it: the first layer's input is the image)
//! stays on the im2col path.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::conv::{im2col, sum_partials, Geom};
use super::conv_bias_act::relu_grad;
use super::gemm::{par_filled, Elem, Mat};
use super::simd;
use super::small_gemm::gemm_rows;
use super::winograd::Epilogue;

/// Largest `C * KH * KW` the direct path takes.
pub const MAX_TAPS: usize = 16;

/// Images per weight-gradient partial sum (fixed: determines the reduction order).
const WGRAD_CHUNK: usize = 4;

/// Partial sums per weight-gradient sum: one 16-pixel vector of f32 (a
/// plain float sum would run one pixel at a time).
const LANES: usize = 16;

/// Whether `g` runs on the direct path.
pub fn applicable(g: &Geom) -> bool {
    g.ckk() <= MAX_TAPS && g.p() > 0
}

/// Pixels per forward block: six of [`gemm_rows`]' 48-column panels. A block
/// of every tap's row (`taps * BLOCK` values, at most 18 KB of f32) stays
/// in L1 while all output channels use it, and the block's `O * BLOCK`
/// products (54 KB for 48 channels) in L2 until the epilogue writes them out.
const BLOCK: usize = 288;

/// One image of the forward: all `O` output rows of `yn` from its unfolded
/// `cols` (`taps` rows of `p`), block by block through [`gemm_rows`]
/// (register-blocked: each `cols` value loaded once for 8 channels), then
/// the bias and ReLU on the way out; `acc` holds `O * BLOCK` values.
#[inline(always)]
fn fwd_image<T: Elem>(p: usize, w: &[T], cols: &[T], epi: &Epilogue<T>, acc: &mut [T], yn: &mut [MaybeUninit<T>]) {
    let (taps, o_n) = (cols.len() / p, yn.len() / p);
    for j in (0..p).step_by(BLOCK) {
        let len = BLOCK.min(p - j);
        let acc = &mut acc[..o_n * len];
        gemm_rows(o_n, len, taps, acc, len, false, Mat::row_major(w, taps), &cols[j..], p);
        for (o, a) in acc.chunks_exact(len).enumerate() {
            let b = epi.bias.map_or(T::ZERO, |b| b[o]);
            for (y, &v) in yn[o * p + j..o * p + j + len].iter_mut().zip(a) {
                y.write(epi.map(b, v));
            }
        }
    }
}

/// The weight gradient's `O x (taps + 1)` sums (`dw` then `db` of each
/// channel) as [`LANES`] partial sums each, added up over the pixels of a
/// chunk of images and reduced in lane order only at the chunk's end, so
/// the pixel loop keeps its accumulators in registers.
type Lanes<T> = Vec<[T; LANES]>;

/// Where [`wgrad_image`] reads the input value of each tap: tap
/// `r * KW + kw` at output pixel `(oh, ow)` is `src[off[r] + oh * step + ow + kw]`.
/// Either the unfolded columns (`KW = 1`, one row of `src` per tap) or,
/// for stride 1, the zero-padded image itself (a row per input channel
/// and kernel row), a few KB that stay in L1 where the 16 rows of columns
/// (147 KB at 48x48) came from L2 for every output channel.
struct Taps<'a, T, const R: usize> {
    src: &'a [T],
    off: [usize; R],
    step: usize,
}

impl<T, const R: usize> Taps<'_, T, R> {
    /// The bounds both weight-gradient kernels read within (`lanes.len()`
    /// being `O * (R * KW + 1)`): `dy` and `relu_out` hold `O * OH * OW`
    /// values, and every tap row holds `OW + KW - 1` from `off[r] + oh * step`.
    fn assert_fits<U, const KW: usize>((oh_n, ow_n): (usize, usize), taps: &Self, dy: &[U], relu_out: Option<&[U]>, lanes: usize) {
        let len = lanes / (R * KW + 1) * oh_n * ow_n;
        assert!(dy.len() >= len && relu_out.is_none_or(|y| y.len() >= len));
        assert!(oh_n == 0 || taps.off.iter().all(|&off| off + (oh_n - 1) * taps.step + ow_n + KW - 1 <= taps.src.len()));
    }
}

/// Adds one image's weight (and bias) gradient to `lanes`: for each output
/// channel, its (ReLU-masked) gradient row, [`LANES`] pixels at a time,
/// times each tap's inputs, into `R * KW + 1` vector accumulators. A
/// channel's gradient row is read start to end, which the hardware
/// prefetcher follows (blocks of pixels across all channels made short,
/// strided reads that waited on memory).
#[inline(always)]
fn wgrad_image<T: Elem, const R: usize, const KW: usize>((oh_n, ow_n): (usize, usize), taps: &Taps<'_, T, R>, dy: &[T], relu_out: Option<&[T]>, lanes: &mut [[T; LANES]]) {
    let p = oh_n * ow_n;
    let nt = R * KW;
    let full = ow_n - ow_n % LANES;
    Taps::assert_fits::<T, KW>((oh_n, ow_n), taps, dy, relu_out, lanes.len());
    for (o, lo) in lanes.chunks_exact_mut(nt + 1).enumerate() {
        let mut acc = [[[T::ZERO; LANES]; KW]; R];
        let mut sum = [T::ZERO; LANES];
        for oh in 0..oh_n {
            let row = o * p + oh * ow_n;
            // SAFETY: `assert_fits`: row `oh` of channel `o` of `dy` and
            // `relu_out` holds `ow_n >= full` values, and every tap row
            // `off[r] + oh * step` holds `ow_n + KW - 1 >= full + KW - 1`.
            unsafe {
                let sp = taps.src.as_ptr().add(oh * taps.step);
                let dp = dy.as_ptr().add(row);
                match relu_out {
                    Some(y) => {
                        let yp = y.as_ptr().add(row);
                        for v in (0..full).step_by(LANES) {
                            let dv: [T; LANES] = std::ptr::read_unaligned(dp.add(v) as *const [T; LANES]);
                            let yv: [T; LANES] = std::ptr::read_unaligned(yp.add(v) as *const [T; LANES]);
                            let g: [T; LANES] = std::array::from_fn(|l| relu_grad(yv[l], dv[l]));
                            fma_taps(&mut acc, &mut sum, &g, |r, kw| std::ptr::read_unaligned(sp.add(taps.off[r] + v + kw) as *const [T; LANES]));
                        }
                    }
                    None => {
                        for v in (0..full).step_by(LANES) {
                            let g: [T; LANES] = std::ptr::read_unaligned(dp.add(v) as *const [T; LANES]);
                            fma_taps(&mut acc, &mut sum, &g, |r, kw| std::ptr::read_unaligned(sp.add(taps.off[r] + v + kw) as *const [T; LANES]));
                        }
                    }
                }
            }
            if full < ow_n {
                // the row's last `ow_n % LANES` pixels, zero-padded to a
                // vector (a dynamic lane index would keep `acc` out of registers)
                let n = ow_n - full;
                let pad = |f: &dyn Fn(usize) -> T| -> [T; LANES] { std::array::from_fn(|l| if l < n { f(l) } else { T::ZERO }) };
                let d = pad(&|l| dy[row + full + l]);
                let g = match relu_out {
                    Some(y) => pad(&|l| relu_grad(y[row + full + l], d[l])),
                    None => d,
                };
                let at = oh * taps.step + full;
                fma_taps(&mut acc, &mut sum, &g, |r, kw| pad(&|l| taps.src[taps.off[r] + at + kw + l]));
            }
        }
        for (l, a) in lo.iter_mut().zip(acc.iter().flatten().chain([&sum])) {
            for (l, &a) in l.iter_mut().zip(a) {
                *l += a;
            }
        }
    }
}

/// `acc[r][kw] += g * c(r, kw)` for every tap, and `sum += g`.
#[inline(always)]
fn fma_taps<T: Elem, const R: usize, const KW: usize>(acc: &mut [[[T; LANES]; KW]; R], sum: &mut [T; LANES], g: &[T; LANES], c: impl Fn(usize, usize) -> [T; LANES]) {
    // Spelled out tap by tap: as loops, LLVM did not unroll them (16 taps
    // of 16 lanes are past its full-unroll threshold), so `acc` was indexed
    // at run time and lived on the stack, a load and a store around every
    // multiply-add (3x slower).
    macro_rules! tap {
        ($r:literal: $($kw:literal)*) => {$(
            if $r < R && $kw < KW {
                let c = c($r, $kw);
                for l in 0..LANES {
                    acc[$r][$kw][l] = g[l].mul_add(c[l], acc[$r][$kw][l]);
                }
            }
        )*};
    }
    macro_rules! rows {
        ($($r:literal)*) => {$( tap!($r: 0 1 2 3); )*};
    }
    // (taps past these would be skipped, not computed)
    const { assert!(R <= 16 && KW <= 4, "fma_taps spells out 16 rows of 4 taps") };
    rows!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    for l in 0..LANES {
        sum[l] += g[l];
    }
}

/// Kernel sides whose stride-1 one-channel weight gradient reads the
/// padded image instead of the unfolded columns.
fn padded_taps(g: &Geom) -> bool {
    g.c == 1 && g.stride == 1 && g.kh == g.kw && (2..=4).contains(&g.kh)
}

/// The zero-padded `(H + pads) x (W + pads)` copy of one one-channel image.
fn pad_image<T: Elem>(g: &Geom, x: &[T], xp: &mut [T]) {
    let wp = g.w + g.pad[2] + g.pad[3];
    xp.fill(T::ZERO);
    for (ih, row) in x.chunks_exact(g.w).enumerate() {
        let at = (ih + g.pad[0]) * wp + g.pad[2];
        xp[at..at + g.w].copy_from_slice(row);
    }
}

/// One image's weight gradient into `lanes`, from its padded copy where
/// [`padded_taps`], else from its unfolded columns (`buf`: scratch for either).
#[inline(always)]
fn wgrad_any<T: Elem>(g: &Geom, x: &[T], dy: &[T], relu_out: Option<&[T]>, buf: &mut [T], lanes: &mut [[T; LANES]]) {
    let (p, out) = (g.p(), (g.oh, g.ow));
    if padded_taps(g) {
        let wp = g.w + g.pad[2] + g.pad[3];
        let xp = &mut buf[..(g.h + g.pad[0] + g.pad[1]) * wp];
        pad_image(g, x, xp);
        let xp = &*xp;
        macro_rules! square {
            ($($k:literal)*) => {
                match g.kh {
                    $($k => {
                        let taps = Taps::<T, $k> { src: xp, off: std::array::from_fn(|kh| kh * wp), step: wp };
                        run_taps::<T, $k, $k>(out, &taps, dy, relu_out, lanes)
                    })*
                    k => unreachable!("a {k}x{k} kernel on the padded-image path"),
                }
            };
        }
        return square!(2 3 4);
    }
    let cols = &mut buf[..g.ckk() * p];
    im2col(g, x, cols);
    let cols = &*cols;
    macro_rules! by_taps {
        ($($n:literal)*) => {
            match g.ckk() {
                $($n => {
                    let taps = Taps::<T, $n> { src: cols, off: std::array::from_fn(|k| k * p), step: g.ow };
                    run_taps::<T, $n, 1>(out, &taps, dy, relu_out, lanes)
                })*
                taps => unreachable!("{taps} taps on the direct path"),
            }
        };
    }
    by_taps!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
}

/// [`wgrad_image`], or its AVX-512 form for f32 where the CPU has it.
fn run_taps<T: Elem, const R: usize, const KW: usize>(out: (usize, usize), taps: &Taps<'_, T, R>, dy: &[T], relu_out: Option<&[T]>, lanes: &mut [[T; LANES]]) {
    #[cfg(target_arch = "x86_64")]
    if simd::has_avx512() && std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        Taps::assert_fits::<T, KW>(out, taps, dy, relu_out, lanes.len());
        // SAFETY: `T` is `f32` (same type id), so these are the same
        // slices; `assert_fits` gives the bounds `avx512::wgrad_image` reads within.
        unsafe {
            let f = |s: &[T]| std::slice::from_raw_parts(s.as_ptr() as *const f32, s.len());
            let taps = Taps::<f32, R> { src: f(taps.src), off: taps.off, step: taps.step };
            let lanes = std::slice::from_raw_parts_mut(lanes.as_mut_ptr() as *mut [f32; LANES], lanes.len());
            return avx512::wgrad_image::<R, KW>(out, &taps, f(dy), relu_out.map(f), lanes);
        }
    }
    simd::dispatch(#[inline(always)] || wgrad_image::<T, R, KW>(out, taps, dy, relu_out, lanes))
}

/// [`wgrad_image`] in AVX-512 intrinsics, for f32: written with LLVM's
/// vectoriser, its 16 accumulators went to the stack (the taps' loops
/// were not unrolled) or its shifted tap loads were rebuilt from
/// permutes. The same lanes, the same order of fused multiply-adds, so
/// the same bits.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Taps, LANES};

    /// How far ahead of the pixel being read `dy` and `relu_out` are
    /// prefetched (4 KB). The hardware prefetcher stops at each 4 KB page,
    /// and a channel's row of 2304 pixels spans three: without this the
    /// kernel waited on memory and took twice as long.
    ///
    /// `direct_timing`, 4x4, one thread: 7.0 ms without, 3.9 with (4.1
    /// with 512 pixels ahead).
    const AHEAD: usize = 1024;

    /// Asks for the cache line at `p` (no effect on memory, never faults).
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
    }

    /// `l += a`, lane by lane.
    #[inline(always)]
    unsafe fn add_lanes(l: &mut [f32; LANES], a: __m512) {
        _mm512_storeu_ps(l.as_mut_ptr(), _mm512_add_ps(_mm512_loadu_ps(l.as_ptr()), a));
    }

    /// [`super::wgrad_image`] for f32.
    ///
    /// # Safety
    /// AVX-512F, and the bounds of [`super::Taps::assert_fits`].
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)] // see the comment on the loop after
    pub(super) unsafe fn wgrad_image<const R: usize, const KW: usize>((oh_n, ow_n): (usize, usize), taps: &Taps<'_, f32, R>, dy: &[f32], relu_out: Option<&[f32]>, lanes: &mut [[f32; LANES]]) {
        let p = oh_n * ow_n;
        let nt = R * KW;
        for (o, lo) in lanes.chunks_exact_mut(nt + 1).enumerate() {
            let mut acc = [[_mm512_setzero_ps(); KW]; R];
            let mut sum = _mm512_setzero_ps();
            for oh in 0..oh_n {
                let sp = taps.src.as_ptr().add(oh * taps.step);
                let dp = dy.as_ptr().add(o * p + oh * ow_n);
                let yp = relu_out.map(|y| y.as_ptr().add(o * p + oh * ow_n));
                for v in (0..ow_n).step_by(LANES) {
                    // the row's last `ow_n % LANES` pixels: masked loads, zeros past the row
                    let m: __mmask16 = if ow_n - v >= LANES { !0 } else { (1 << (ow_n - v)) - 1 };
                    let gm = match yp {
                        Some(yp) => {
                            prefetch(yp.wrapping_add(v + AHEAD));
                            _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(m, _mm512_maskz_loadu_ps(m, yp.add(v)), _mm512_setzero_ps())
                        }
                        None => m,
                    };
                    prefetch(dp.wrapping_add(v + AHEAD));
                    let g = _mm512_maskz_loadu_ps(gm, dp.add(v));
                    for r in 0..R {
                        for kw in 0..KW {
                            acc[r][kw] = _mm512_fmadd_ps(g, _mm512_maskz_loadu_ps(m, sp.add(taps.off[r] + v + kw)), acc[r][kw]);
                        }
                    }
                    sum = _mm512_add_ps(sum, g);
                }
            }
            // `acc` indexed, not iterated, here and above: an iterator over
            // it kept it in memory, stored back after every multiply-add.
            for r in 0..R {
                for kw in 0..KW {
                    add_lanes(&mut lo[r * KW + kw], acc[r][kw]);
                }
            }
            add_lanes(&mut lo[nt], sum);
        }
    }
}

/// `y = epilogue(conv(x, w))`: `x (N, C, H, W)`, `w (O, C, KH, KW)` -> `(N, O, OH, OW)`.
pub fn conv2d_fwd<T: Elem>(g: &Geom, x: &[T], w: &[T], epi: &Epilogue<T>) -> Vec<T> {
    let (taps, p, chw) = (g.ckk(), g.p(), g.chw());
    // SAFETY: `fwd_image` writes every output of its image.
    unsafe {
        par_filled(g.n * g.o * p, g.o * p, |n, yn| {
            T::with_scratch(taps * p + g.o * BLOCK, |buf| {
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
            let mut lanes: Lanes<T> = vec![[T::ZERO; LANES]; g.o * (taps + 1)];
            let scratch = (taps * p).max((g.h + g.pad[0] + g.pad[1]) * (g.w + g.pad[2] + g.pad[3]));
            T::with_scratch(scratch, |buf| {
                for n in chunk * WGRAD_CHUNK..((chunk + 1) * WGRAD_CHUNK).min(g.n) {
                    let at = n * g.o * p..(n + 1) * g.o * p;
                    let y = relu_out.map(|y| &y[at.clone()]);
                    wgrad_any(g, &x[n * chw..(n + 1) * chw], &dy[at], y, buf, &mut lanes);
                }
            });
            let mut acc = vec![T::ZERO; wlen + g.o];
            for (o, lo) in lanes.chunks_exact(taps + 1).enumerate() {
                for (k, l) in lo.iter().enumerate() {
                    let at = if k < taps { o * taps + k } else { wlen + o };
                    acc[at] = l.iter().fold(T::ZERO, |s, &v| s + v);
                }
            }
            acc
        })
        .collect();
    let mut sum = sum_partials(partials);
    let db = want_db.then(|| sum.split_off(wlen));
    sum.truncate(wlen);
    (sum, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data<T: Elem>(len: usize, seed: usize) -> Vec<T> {
        (0..len).map(|i| T::from_f64(((i * 7919 + seed * 104729) % 1999) as f64 / 999.5 - 1.0)).collect()
    }

    /// `(dw, db)` by the definition, in f64.
    fn naive<T: Elem>(g: &Geom, x: &[T], dy: &[T], y: Option<&[T]>) -> (Vec<f64>, Vec<f64>) {
        let (mut dw, mut db) = (vec![0.0; g.o * g.ckk()], vec![0.0; g.o]);
        for n in 0..g.n {
            for o in 0..g.o {
                for oh in 0..g.oh {
                    for ow in 0..g.ow {
                        let at = ((n * g.o + o) * g.oh + oh) * g.ow + ow;
                        let d = match y {
                            Some(y) if y[at].to_f64() <= 0.0 => 0.0,
                            _ => dy[at].to_f64(),
                        };
                        db[o] += d;
                        for c in 0..g.c {
                            for kh in 0..g.kh {
                                for kw in 0..g.kw {
                                    let ih = (oh * g.stride + kh) as isize - g.pad[0] as isize;
                                    let iw = (ow * g.stride + kw) as isize - g.pad[2] as isize;
                                    if ih >= 0 && iw >= 0 && (ih as usize) < g.h && (iw as usize) < g.w {
                                        let xv = x[((n * g.c + c) * g.h + ih as usize) * g.w + iw as usize].to_f64();
                                        dw[((o * g.c + c) * g.kh + kh) * g.kw + kw] += d * xv;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (dw, db)
    }

    /// x dims, w dims, padding (t, b, l, r), stride
    type Case = ([usize; 4], [usize; 4], [usize; 4], usize);

    const CASES: &[Case] = &[
        ([5, 1, 20, 19], [6, 1, 4, 4], [1, 2, 1, 2], 1), // padded image, whole vectors and tails
        ([3, 1, 9, 33], [3, 1, 3, 3], [1, 1, 1, 1], 1),
        ([2, 1, 7, 16], [2, 1, 2, 2], [0, 1, 0, 1], 1),
        ([2, 1, 5, 4], [3, 1, 4, 4], [1, 2, 1, 2], 1), // tails only
        ([6, 2, 9, 18], [4, 2, 2, 3], [0, 1, 1, 1], 1), // unfolded columns
        ([2, 1, 11, 40], [3, 1, 4, 4], [1, 2, 1, 2], 2), // stride 2: columns
        ([1, 16, 3, 21], [5, 16, 1, 1], [0, 0, 0, 0], 1), // 16 taps
    ];

    fn check<T: Elem>(tol: f64) {
        for (i, &(xd, wd, pad, s)) in CASES.iter().enumerate() {
            let g = Geom::new(&xd, &wd, pad, s).unwrap();
            let x = data::<T>(g.n * g.chw(), i);
            let out = g.n * g.o * g.p();
            let (dy, y) = (data::<T>(out, i + 10), data::<T>(out, i + 20));
            for relu in [None, Some(&y[..])] {
                let (dw, db) = conv2d_bwd_weight(&g, &x, &dy, relu, true);
                let (ndw, ndb) = naive(&g, &x, &dy, relu);
                for (what, a, b) in [("dw", dw, ndw), ("db", db.unwrap(), ndb)] {
                    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                    for (k, (a, b)) in a.iter().zip(&b).enumerate() {
                        assert!((a.to_f64() - b).abs() <= tol * scale, "case {i} relu {} {what}[{k}]: {} against {b}", relu.is_some(), a.to_f64());
                    }
                }
            }
        }
    }

    #[test]
    fn weight_gradient_matches_the_definition() {
        check::<f32>(1e-5);
        check::<f64>(1e-12);
    }

    /// The AVX-512 kernel and the portable one give the same bits (on a
    /// CPU without AVX-512 both calls run the portable one).
    #[test]
    fn avx512_and_portable_kernels_agree_bitwise() {
        let g = Geom::new(&[1, 1, 20, 37], &[5, 1, 4, 4], [1, 2, 1, 2], 1).unwrap();
        let x = data::<f32>(g.chw(), 1);
        let (dy, y) = (data::<f32>(g.o * g.p(), 2), data::<f32>(g.o * g.p(), 3));
        let wp = g.w + 3;
        let mut xp = vec![0f32; (g.h + 3) * wp];
        pad_image(&g, &x, &mut xp);
        let taps = Taps::<f32, 4> { src: &xp, off: std::array::from_fn(|kh| kh * wp), step: wp };
        for relu in [None, Some(&y[..])] {
            let mut fast = vec![[0f32; LANES]; g.o * 17];
            let mut portable = fast.clone();
            run_taps::<f32, 4, 4>((g.oh, g.ow), &taps, &dy, relu, &mut fast);
            simd::dispatch(|| wgrad_image::<f32, 4, 4>((g.oh, g.ow), &taps, &dy, relu, &mut portable));
            let bits = |v: &[[f32; LANES]]| v.iter().flatten().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&portable), "relu {}", relu.is_some());
            assert!(fast.iter().flatten().any(|&v| v != 0.0));
        }
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use std::time::Instant;

    /// `DT_TAPS=16 direct_timing --ignored --nocapture`: forward and
    /// weight gradient of the first layer (64 images, 48x48, 48 channels).
    #[test]
    #[ignore]
    fn direct_timing() {
        let r: usize = std::env::var("DT_R").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
        let g = Geom::new(&[64, 1, 48, 48], &[48, 1, r, r], [(r - 1) / 2, r / 2, (r - 1) / 2, r / 2], 1).unwrap();
        let x: Vec<f32> = (0..g.n * g.chw()).map(|i| (i % 97) as f32 / 97.0).collect();
        let w: Vec<f32> = (0..g.o * r * r).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect();
        let dy: Vec<f32> = (0..g.n * g.o * g.p()).map(|i| (i % 89) as f32 / 89.0 - 0.5).collect();
        let (mut f, mut b) = (f64::MAX, f64::MAX);
        for _ in 0..5 {
            let t = Instant::now();
            let y = conv2d_fwd(&g, &x, &w, &Epilogue { bias: None, relu: true });
            f = f.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            std::hint::black_box(conv2d_bwd_weight(&g, &x, &dy, Some(&y), true));
            b = b.min(t.elapsed().as_secs_f64());
        }
        println!("direct {r}x{r}: fwd {:.2} ms, wgrad {:.2} ms", f * 1e3, b * 1e3);
    }
}
