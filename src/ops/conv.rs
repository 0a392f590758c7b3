//! conv2d (explicit asymmetric zero padding, stride >= 1, no dilation, no
//! bias) as a candle custom op with a fast backward.
//!
//! * forward: per image, im2col into a (C*KH*KW, OH*OW) buffer, then
//!   `Y_n (O, P) = W (O, CKK) * cols_n`.
//! * input gradient: `dcols_n = W^T * dY_n`, then col2im (scatter-add).
//! * weight gradient: `dW = sum_n dY_n * cols_n^T`, accumulated in fixed
//!   chunks of images and reduced in chunk order, so the result does not
//!   depend on the thread count or the scheduling.
//!
//! Parallel over the batch (rayon) with single-threaded GEMMs; when the
//! batch is smaller than the pool the GEMMs get the threads instead.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{contiguous_slice, gemm, zeros, Elem, Mat, Parallelism};

/// Images per weight-gradient partial sum (fixed: determines the reduction order).
const WGRAD_CHUNK: usize = 4;

/// Shape bookkeeping for one convolution.
#[derive(Clone, Copy, Debug)]
pub struct Geom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    /// top, bottom, left, right
    pub pad: [usize; 4],
    pub stride: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geom {
    pub fn new(x: &[usize], w: &[usize], pad: [usize; 4], stride: usize) -> Result<Self> {
        let (&[n, c, h, wd], &[o, c2, kh, kw]) = (x, w) else {
            bail!("conv2d: expected 4D x and w, got {x:?} and {w:?}")
        };
        if c != c2 {
            bail!("conv2d: x has {c} channels but w expects {c2}");
        }
        if stride == 0 {
            bail!("conv2d: stride must be >= 1");
        }
        let hp = h + pad[0] + pad[1];
        let wp = wd + pad[2] + pad[3];
        if hp < kh || wp < kw || kh == 0 || kw == 0 {
            bail!("conv2d: kernel {kh}x{kw} larger than padded input {hp}x{wp}");
        }
        Ok(Geom { n, c, h, w: wd, o, kh, kw, pad, stride, oh: (hp - kh) / stride + 1, ow: (wp - kw) / stride + 1 })
    }
    pub fn ckk(&self) -> usize {
        self.c * self.kh * self.kw
    }
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }
    pub fn chw(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn flops(&self) -> f64 {
        2.0 * (self.n * self.o * self.p() * self.ckk()) as f64
    }
    /// 1x1, stride 1, no padding: the image itself is the column matrix.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == [0; 4]
    }
    /// Output columns `[lo, hi)` whose input column `ow*s + kw - pl` is inside the image.
    fn valid_ow(&self, kw: usize) -> (usize, usize) {
        let (s, pl) = (self.stride, self.pad[2]);
        let lo = if pl > kw { (pl - kw).div_ceil(s) } else { 0 }.min(self.ow);
        let hi = if self.w + pl > kw { ((self.w - 1 + pl - kw) / s + 1).min(self.ow) } else { 0 };
        (lo, hi.max(lo))
    }
}

/// `cols (CKK, P)` from one image `x (C, H, W)`.
pub fn im2col<T: Elem>(g: &Geom, x: &[T], cols: &mut [T]) {
    let (p, s, pt, pl) = (g.p(), g.stride, g.pad[0], g.pad[2]);
    for c in 0..g.c {
        let xc = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for kh in 0..g.kh {
            for kw in 0..g.kw {
                let row = (c * g.kh + kh) * g.kw + kw;
                let dst = &mut cols[row * p..(row + 1) * p];
                let (lo, hi) = g.valid_ow(kw);
                for oh in 0..g.oh {
                    let d = &mut dst[oh * g.ow..(oh + 1) * g.ow];
                    let ih = (oh * s + kh) as isize - pt as isize;
                    if ih < 0 || ih >= g.h as isize {
                        d.fill(T::ZERO);
                        continue;
                    }
                    let xr = &xc[ih as usize * g.w..(ih as usize + 1) * g.w];
                    d[..lo].fill(T::ZERO);
                    d[hi..].fill(T::ZERO);
                    if s == 1 {
                        let iw0 = lo + kw - pl;
                        d[lo..hi].copy_from_slice(&xr[iw0..iw0 + (hi - lo)]);
                    } else {
                        for (ow, v) in d[lo..hi].iter_mut().enumerate() {
                            *v = xr[(ow + lo) * s + kw - pl];
                        }
                    }
                }
            }
        }
    }
}

/// Scatter-add `cols (CKK, P)` back into one image `dx (C, H, W)` (not zeroed here).
pub fn col2im<T: Elem>(g: &Geom, cols: &[T], dx: &mut [T]) {
    let (p, s, pt, pl) = (g.p(), g.stride, g.pad[0], g.pad[2]);
    for c in 0..g.c {
        let xc = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for kh in 0..g.kh {
            for kw in 0..g.kw {
                let row = (c * g.kh + kh) * g.kw + kw;
                let src = &cols[row * p..(row + 1) * p];
                let (lo, hi) = g.valid_ow(kw);
                for oh in 0..g.oh {
                    let ih = (oh * s + kh) as isize - pt as isize;
                    if ih < 0 || ih >= g.h as isize {
                        continue;
                    }
                    let sr = &src[oh * g.ow..(oh + 1) * g.ow];
                    let xr = &mut xc[ih as usize * g.w..(ih as usize + 1) * g.w];
                    if s == 1 {
                        let iw0 = lo + kw - pl;
                        for (d, &v) in xr[iw0..iw0 + (hi - lo)].iter_mut().zip(&sr[lo..hi]) {
                            *d += v;
                        }
                    } else {
                        for ow in lo..hi {
                            xr[ow * s + kw - pl] += sr[ow];
                        }
                    }
                }
            }
        }
    }
}

/// Parallelism for the work inside `jobs` outer jobs: threads to spare
/// only when there are fewer jobs than threads. The im2col paths then run
/// the jobs in order and split each GEMM across the pool (see
/// [`for_each_chunk`] and [`map_jobs`]); Winograd runs its jobs in
/// parallel regardless and spreads its plane GEMMs instead.
pub(super) fn inner_par(jobs: usize) -> Parallelism {
    let t = rayon::current_num_threads().max(1);
    if t > 1 && jobs < t {
        Parallelism::Rayon(t)
    } else {
        Parallelism::None
    }
}

/// Runs `f(i, chunk)` on the `len`-element chunks of `out`: in parallel when
/// the GEMMs inside are single-threaded (`par` from [`inner_par`] is None),
/// in order otherwise.
pub(super) fn for_each_chunk<T: Send>(out: &mut [T], len: usize, par: Parallelism, f: impl Fn(usize, &mut [T]) + Sync) {
    chunks_each(out, len, matches!(par, Parallelism::None), f);
}

/// `f(i, chunk)` on the `len`-element chunks of `out`, in parallel or in order.
pub(super) fn chunks_each<T: Send>(out: &mut [T], len: usize, parallel: bool, f: impl Fn(usize, &mut [T]) + Sync) {
    if parallel {
        out.par_chunks_mut(len).enumerate().for_each(|(i, chunk)| f(i, chunk));
    } else {
        out.chunks_mut(len).enumerate().for_each(|(i, chunk)| f(i, chunk));
    }
}

/// `[f(0), .., f(jobs - 1)]`, parallel under the same rule as [`for_each_chunk`].
pub(super) fn map_jobs<R: Send>(jobs: usize, par: Parallelism, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    if matches!(par, Parallelism::None) {
        (0..jobs).into_par_iter().map(&f).collect()
    } else {
        (0..jobs).map(f).collect()
    }
}

/// Element-wise `partials[0] + partials[1] + ...`, added in that order for
/// every element, so the result does not depend on the thread count.
pub(super) fn sum_partials<T: Elem>(mut partials: Vec<Vec<T>>) -> Vec<T> {
    let mut sum = std::mem::take(&mut partials[0]);
    if partials.len() > 1 {
        let block = 4096;
        sum.par_chunks_mut(block).enumerate().for_each(|(bi, d)| {
            let len = d.len();
            for part in &partials[1..] {
                for (a, &b) in d.iter_mut().zip(&part[bi * block..bi * block + len]) {
                    *a += b;
                }
            }
        });
    }
    sum
}

/// Forward: `x (N, C, H, W)`, `w (O, C, KH, KW)` -> `y (N, O, OH, OW)`.
pub fn conv2d_fwd<T: Elem>(g: &Geom, x: &[T], w: &[T]) -> Vec<T> {
    let (ckk, p, chw) = (g.ckk(), g.p(), g.chw());
    let mut y = zeros::<T>(g.n * g.o * p);
    if y.is_empty() {
        return y;
    }
    let par = inner_par(g.n);
    let run = |cols: &mut [T], n: usize, yn: &mut [T]| {
        let xn = &x[n * chw..(n + 1) * chw];
        let b = if g.is_pointwise() {
            xn
        } else {
            im2col(g, xn, cols);
            &cols[..]
        };
        gemm(g.o, p, ckk, yn, p, false, Mat::row_major(w, ckk), Mat::row_major(b, p), par);
    };
    let cols_len = if g.is_pointwise() { 0 } else { ckk * p };
    for_each_chunk(&mut y, g.o * p, par, |n, yn| T::with_scratch(cols_len, |cols| run(cols, n, yn)));
    y
}

/// Input gradient: `dy (N, O, OH, OW)`, `w` -> `dx (N, C, H, W)`.
pub fn conv2d_bwd_input<T: Elem>(g: &Geom, dy: &[T], w: &[T]) -> Vec<T> {
    let (ckk, p, chw) = (g.ckk(), g.p(), g.chw());
    let mut dx = zeros::<T>(g.n * chw);
    if dx.is_empty() {
        return dx;
    }
    let par = inner_par(g.n);
    let run = |dcols: &mut [T], n: usize, dxn: &mut [T]| {
        let dyn_ = &dy[n * g.o * p..(n + 1) * g.o * p];
        let wt = Mat::transposed(w, ckk); // (CKK, O)
        if g.is_pointwise() {
            gemm(ckk, p, g.o, dxn, p, false, wt, Mat::row_major(dyn_, p), par);
        } else {
            gemm(ckk, p, g.o, dcols, p, false, wt, Mat::row_major(dyn_, p), par);
            col2im(g, dcols, dxn);
        }
    };
    let cols_len = if g.is_pointwise() { 0 } else { ckk * p };
    for_each_chunk(&mut dx, chw, par, |n, dxn| T::with_scratch(cols_len, |dcols| run(dcols, n, dxn)));
    dx
}

/// Weight gradient: `x`, `dy` -> `dw (O, C, KH, KW)`.
pub fn conv2d_bwd_weight<T: Elem>(g: &Geom, x: &[T], dy: &[T]) -> Vec<T> {
    let (ckk, p, chw) = (g.ckk(), g.p(), g.chw());
    let chunks = g.n.div_ceil(WGRAD_CHUNK);
    if chunks == 0 {
        return zeros::<T>(g.o * ckk);
    }
    let par = inner_par(chunks);
    let cols_len = if g.is_pointwise() { 0 } else { ckk * p };
    let run = |cols: &mut [T], chunk: usize| -> Vec<T> {
        let mut acc = zeros::<T>(g.o * ckk);
        let (n0, n1) = (chunk * WGRAD_CHUNK, ((chunk + 1) * WGRAD_CHUNK).min(g.n));
        for n in n0..n1 {
            let xn = &x[n * chw..(n + 1) * chw];
            let b = if g.is_pointwise() {
                xn
            } else {
                im2col(g, xn, cols);
                &cols[..]
            };
            let dyn_ = &dy[n * g.o * p..(n + 1) * g.o * p];
            gemm(g.o, ckk, p, &mut acc, ckk, n > n0, Mat::row_major(dyn_, p), Mat::transposed(b, p), par);
        }
        acc
    };
    sum_partials(map_jobs(chunks, par, |chunk| T::with_scratch(cols_len, |cols| run(cols, chunk))))
}

/// Convolution algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algo {
    Im2col,
    /// [`super::direct`]: few input taps (the first layer).
    Direct,
    /// Winograd F(m x m, r x r) with this `m`.
    Winograd(usize),
}

/// The algorithm the custom ops use for `g`: the direct kernel for at most
/// [`super::direct::MAX_TAPS`] input taps (the one-channel first layer),
/// Winograd for stride-1 3x3
/// kernels (F(2x2, 3x3)) on outputs of at least 12x12 (and on smaller maps
/// from 4x4 with >= 16 input channels) and 4x4 kernels
/// (F(3x3, 4x4)) on outputs of at least 8x8, with >= 8 input channels;
/// im2col + GEMM otherwise. With fewer channels or smaller planes the
/// transforms cost more than the GEMMs save. Measured with `bench_ops --raw
/// [--kernel 4]` (2 cores, batch 64, CPU ms of fwd+dx+dw) and end to end
/// with `bench_speed.py`: for the 4x4 convs 2-4 of seed4x4, im2col 575,
/// F(2x2) 453, F(3x3) 414; for 3x3 the larger tiles F(3x3)/F(4x4) win in
/// isolation but not in training, where the hand-written F(2x2, 3x3) was as
/// fast or faster (within noise). The 12x12 convs of seed3x3 moved to
/// Winograd once its backward was fused: training 212 -> 221 img/s (mean of
/// 4 interleaved pairs). The hand-written F(4x4, 3x3) (fewer products,
/// dearer transforms) replaces F(2x2, 3x3) where its 4x4 tiles waste at
/// most 15% of the output on partial tiles: in `examples/wino_ab.rs` (one
/// thread, 64 images, forward + fused backward) it was faster at 12x12,
/// 20x20, 24x24, 44x44 and 48x48 (backward 2-30%, forward -7% to +20%),
/// and even at 18x18 (5x5 tiles for 4.5x4.5). `FER_WINOGRAD=f23` keeps
/// F(2x2, 3x3) everywhere (for A/B runs). F(3x3, 4x4) got hand-written
/// transforms too (`winograd::alpha`), which made it faster than im2col
/// down to 8x8 maps, so it took over seed4x4's 15x15 conv as well.
/// F(4x4, 4x4) has hand-written transforms as well (`winograd::f44`, 23%
/// fewer products than F(3x3, 4x4)), but its 7x7 tiles cost more to
/// transform than they save: on seed4x4 stride-2 training it tied
/// (`bench_speed.py`, three alternating pairs: 307-327 img/s against
/// F(3x3, 4x4)'s 313-325; `phase_profile`: its forwards 15-30% slower, its
/// backwards 7-15% faster), so it is left to `FER_CONV=winograd4`.
pub fn choose_algo(g: &Geom) -> Algo {
    static FORCE: std::sync::OnceLock<Option<Algo>> = std::sync::OnceLock::new();
    let force = *FORCE.get_or_init(|| match std::env::var("FER_CONV").ok()?.as_str() {
        "im2col" => Some(Algo::Im2col),
        v => v.strip_prefix("winograd")?.parse().ok().filter(|m| (1..=6).contains(m)).map(Algo::Winograd),
    });
    // `FER_CONV=im2col` turns the direct path off too (for A/B runs).
    let direct = force != Some(Algo::Im2col) && super::direct::applicable(g);
    if !super::winograd::applicable(g) || g.kh > 5 {
        return if direct { Algo::Direct } else { Algo::Im2col };
    }
    match force {
        Some(Algo::Winograd(m)) if m + g.kh <= 8 => return Algo::Winograd(m),
        Some(_) => return Algo::Im2col,
        None => {}
    }
    if direct {
        return Algo::Direct;
    }
    let f23_only = super::winograd::env_mode() == super::winograd::EnvMode::F23;
    // whether m x m output tiles cover the output with at most `pct`% waste
    let tiles_fit = |m: usize, pct: usize| 100 * g.oh.next_multiple_of(m) * g.ow.next_multiple_of(m) <= (100 + pct) * g.p();
    match g.kh {
        3 if g.c >= 8 && g.p() >= 144 && !f23_only && tiles_fit(4, 15) => Algo::Winograd(4),
        3 if g.c >= 8 && g.p() >= 144 => Algo::Winograd(2),
        // Small maps (fer_vgg's 6x6 stage): F(2x2, 3x3) beat im2col from 16
        // channels on (wino_ab, one thread, 64 images, fwd / bwd ms: 6x6 c16
        // 0.8 / 1.4 vs 0.9 / 1.7, c256 23.4 / 54.0 vs 39.0 / 96.1; 4x4 c256
        // 16.6 / 34.6 vs 16.0 / 60.2), as long as its 2x2 tiles fit.
        3 if g.c >= 16 && g.p() >= 16 && tiles_fit(2, 15) => Algo::Winograd(2),
        // F(3x3, 4x4) with its hand-written transforms beats im2col from 8x8
        // maps on (wino_ab, one thread, 64 channels: 15x15 fwd+bwd 52 vs 92 ms,
        // 8x8 30 vs 34), while 3x3 tiles waste at most 30% of the output
        // (10x10: a tie).
        4 if g.c >= 8 && g.p() >= 64 && tiles_fit(3, 30) => Algo::Winograd(3),
        _ => Algo::Im2col,
    }
}

pub(crate) fn fwd_any<T: Elem>(g: &Geom, x: &[T], w: &[T]) -> Vec<T> {
    match choose_algo(g) {
        Algo::Winograd(m) => super::winograd::conv2d_fwd(g, m, x, w),
        Algo::Direct => super::direct::conv2d_fwd(g, x, w, &super::winograd::Epilogue::NONE),
        Algo::Im2col => conv2d_fwd(g, x, w),
    }
}

fn bwd_input_any<T: Elem>(g: &Geom, dy: &[T], w: &[T]) -> Vec<T> {
    match choose_algo(g) {
        Algo::Winograd(m) => super::winograd::conv2d_bwd_input(g, m, dy, w),
        Algo::Direct | Algo::Im2col => conv2d_bwd_input(g, dy, w),
    }
}

fn bwd_weight_any<T: Elem>(g: &Geom, x: &[T], dy: &[T]) -> Vec<T> {
    match choose_algo(g) {
        Algo::Winograd(m) => super::winograd::conv2d_bwd_weight(g, m, x, dy),
        Algo::Direct => super::direct::conv2d_bwd_weight(g, x, dy, None, false).0,
        Algo::Im2col => conv2d_bwd_weight(g, x, dy),
    }
}

/// The forward custom op on `(x, w)`.
#[derive(Clone, Copy, Debug)]
pub struct Conv2dOp {
    pub pad: [usize; 4],
    pub stride: usize,
}

fn out_storage<T: Elem>(v: Vec<T>) -> CpuStorage {
    T::to_cpu_storage_owned(v)
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "fer-conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.dims(), l2.dims(), self.pad, self.stride)?;
        let shape = Shape::from((g.n, g.o, g.oh, g.ow));
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                out_storage(fwd_any::<f32>(&g, contiguous_slice(s1, l1)?, contiguous_slice(s2, l2)?))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                out_storage(fwd_any::<f64>(&g, contiguous_slice(s1, l1)?, contiguous_slice(s2, l2)?))
            }
            _ => bail!("fer-conv2d: x and w must both be f32 or both f64"),
        };
        Ok((out, shape))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        input_and_weight_grads(x, w, &grad.contiguous()?, self.pad, self.stride, x.track_op())
    }
}

/// `(dx, dw)` of a convolution of `x` by `w` given the contiguous output
/// gradient `grad`: `dx` where `want_dx`, `dw` where autograd tracks `w`.
pub(crate) fn input_and_weight_grads(
    x: &Tensor,
    w: &Tensor,
    grad: &Tensor,
    pad: [usize; 4],
    stride: usize,
    want_dx: bool,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let dx = if want_dx {
        Some(grad.apply_op2_no_bwd(w, &Conv2dBwdInputOp { pad, stride, x_dims: x.dims4()? })?)
    } else {
        None
    };
    let dw = if w.track_op() {
        Some(x.apply_op2_no_bwd(grad, &Conv2dBwdWeightOp { pad, stride, w_dims: w.dims4()? })?)
    } else {
        None
    };
    Ok((dx, dw))
}

/// `(dy, w) -> dx`.
struct Conv2dBwdInputOp {
    pad: [usize; 4],
    stride: usize,
    x_dims: (usize, usize, usize, usize),
}

impl CustomOp2 for Conv2dBwdInputOp {
    fn name(&self) -> &'static str {
        "fer-conv2d-bwd-input"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = self.x_dims;
        let g = Geom::new(&[n, c, h, w], l2.dims(), self.pad, self.stride)?;
        if l1.dims() != [g.n, g.o, g.oh, g.ow] {
            bail!("fer-conv2d-bwd-input: grad shape {:?}, expected {:?}", l1.dims(), [g.n, g.o, g.oh, g.ow]);
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                out_storage(bwd_input_any::<f32>(&g, contiguous_slice(s1, l1)?, contiguous_slice(s2, l2)?))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                out_storage(bwd_input_any::<f64>(&g, contiguous_slice(s1, l1)?, contiguous_slice(s2, l2)?))
            }
            _ => bail!("fer-conv2d-bwd-input: dtype mismatch"),
        };
        Ok((out, Shape::from(self.x_dims)))
    }
}

/// `(x, dy) -> dw`.
struct Conv2dBwdWeightOp {
    pad: [usize; 4],
    stride: usize,
    w_dims: (usize, usize, usize, usize),
}

impl CustomOp2 for Conv2dBwdWeightOp {
    fn name(&self) -> &'static str {
        "fer-conv2d-bwd-weight"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (o, c, kh, kw) = self.w_dims;
        let g = Geom::new(l1.dims(), &[o, c, kh, kw], self.pad, self.stride)?;
        if l2.dims() != [g.n, g.o, g.oh, g.ow] {
            bail!("fer-conv2d-bwd-weight: grad shape {:?}, expected {:?}", l2.dims(), [g.n, g.o, g.oh, g.ow]);
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                out_storage(bwd_weight_any::<f32>(&g, contiguous_slice(s1, l1)?, contiguous_slice(s2, l2)?))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                out_storage(bwd_weight_any::<f64>(&g, contiguous_slice(s1, l1)?, contiguous_slice(s2, l2)?))
            }
            _ => bail!("fer-conv2d-bwd-weight: dtype mismatch"),
        };
        Ok((out, Shape::from(self.w_dims)))
    }
}

/// Fast conv2d with autograd: `x (N, C, H, W)`, `w (O, C, KH, KW)`.
pub fn conv2d(x: &Tensor, w: &Tensor, padding: [usize; 4], stride: usize) -> Result<Tensor> {
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    x.apply_op2(&w, Conv2dOp { pad: padding, stride })
}
