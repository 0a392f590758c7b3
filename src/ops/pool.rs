//! 2D max pooling for any square kernel, stride and (-inf) padding as a
//! candle custom op. The backward routes each output gradient to the first
//! maximum of its window (row-major scan order), like PyTorch/Keras. (Stock
//! candle splits the gradient between tied maxima instead; ties only differ
//! there.)

use std::mem::MaybeUninit;

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::conv_bias_act::relu_grad;
use super::gemm::{contiguous_slice, par_filled, zeros, Elem};
use super::simd;

#[derive(Clone, Copy, Debug)]
struct PoolGeom {
    planes: usize,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    /// top, bottom, left, right
    pad: [usize; 4],
    oh: usize,
    ow: usize,
}

impl PoolGeom {
    fn new(dims: &[usize], k: usize, s: usize, pad: [usize; 4]) -> Result<Self> {
        let &[n, c, h, w] = dims else { bail!("max_pool2d: expected a 4D input, got {dims:?}") };
        if k == 0 || s == 0 {
            bail!("max_pool2d: kernel and stride must be >= 1");
        }
        let (hp, wp) = (h + pad[0] + pad[1], w + pad[2] + pad[3]);
        if hp < k || wp < k {
            bail!("max_pool2d: kernel {k} larger than padded input {hp}x{wp}");
        }
        Ok(PoolGeom { planes: n * c, h, w, k, s, pad, oh: (hp - k) / s + 1, ow: (wp - k) / s + 1 })
    }

    /// 2x2 windows at stride 2, unpadded: each input element is in at most
    /// one window (the fast path).
    fn is_2x2_stride2(&self) -> bool {
        is_unpool2(self.k, self.s, self.pad)
    }

    /// Keras' 2x2 / stride-1 "same" pool (the study's): a window at every
    /// position, the last row and column padded below and to the right.
    fn is_2x2_stride1_same(&self) -> bool {
        self.k == 2 && self.s == 1 && self.pad == [0, 1, 0, 1]
    }

    /// The 2x2 / stride-2 unpadded pool of planes of `h x w` making up
    /// `len` elements.
    fn unpool2(len: usize, h: usize, w: usize) -> Self {
        PoolGeom { planes: len / (h * w).max(1), h, w, k: 2, s: 2, pad: [0; 4], oh: h / 2, ow: w / 2 }
    }

    /// Input index range `[lo, hi)` of output position `o` along a dimension.
    #[inline]
    fn range(o: usize, s: usize, k: usize, pad_before: usize, len: usize) -> (usize, usize) {
        let start = (o * s) as isize - pad_before as isize;
        let lo = start.max(0) as usize;
        let hi = ((start + k as isize).max(0) as usize).min(len);
        (lo, hi.max(lo))
    }

    /// Index (within the plane) of the first maximum of window (oh, ow), if
    /// the window touches the image.
    #[inline]
    fn argmax<T: Elem>(&self, plane: &[T], oh: usize, ow: usize) -> Option<(usize, T)> {
        let (h0, h1) = Self::range(oh, self.s, self.k, self.pad[0], self.h);
        let (w0, w1) = Self::range(ow, self.s, self.k, self.pad[2], self.w);
        let mut best: Option<(usize, T)> = None;
        for ih in h0..h1 {
            let row = &plane[ih * self.w..(ih + 1) * self.w];
            for iw in w0..w1 {
                let v = row[iw];
                match best {
                    Some((_, b)) if !(v > b) => {}
                    _ => best = Some((ih * self.w + iw, v)),
                }
            }
        }
        best
    }
}

/// Whether `b`, `c` and `d` took over the running maximum of (a, b, c, d)
/// in scan order, and the maximum: the first maximum as masks, which
/// vectorise where an index stays scalar.
#[inline(always)]
fn first_max4_masks<T: Elem>(a: T, b: T, c: T, d: T) -> (bool, bool, bool, T) {
    let t1 = b > a;
    let m = if t1 { b } else { a };
    let t2 = c > m;
    let m = if t2 { c } else { m };
    let t3 = d > m;
    (t1, t2, t3, if t3 { d } else { m })
}

/// Index (0..4) of the first maximum of (a, b, c, d) in scan order.
#[inline(always)]
fn first_max4<T: Elem>(a: T, b: T, c: T, d: T) -> (usize, T) {
    let (t1, t2, t3, m) = first_max4_masks(a, b, c, d);
    (if t3 { 3 } else if t2 { 2 } else { t1 as usize }, m)
}

/// Calls `f(oh, ow, argmax index in plane, max)` for every output position
/// whose window touches the image. 2x2 windows fully inside the image take
/// a branch-light fast path.
#[inline(always)]
fn for_each_window<T: Elem>(g: &PoolGeom, xp: &[T], mut f: impl FnMut(usize, usize, usize, T)) {
    for oh in 0..g.oh {
        let (h0, h1) = PoolGeom::range(oh, g.s, g.k, g.pad[0], g.h);
        if g.k == 2 && h1 - h0 == 2 {
            let r0 = &xp[h0 * g.w..(h0 + 1) * g.w];
            let r1 = &xp[(h0 + 1) * g.w..(h0 + 2) * g.w];
            for ow in 0..g.ow {
                let (w0, w1) = PoolGeom::range(ow, g.s, g.k, g.pad[2], g.w);
                if w1 - w0 == 2 {
                    let (i, m) = first_max4(r0[w0], r0[w0 + 1], r1[w0], r1[w0 + 1]);
                    f(oh, ow, (h0 + (i >> 1)) * g.w + w0 + (i & 1), m);
                } else if let Some((i, m)) = g.argmax(xp, oh, ow) {
                    f(oh, ow, i, m);
                }
            }
        } else {
            for ow in 0..g.ow {
                if let Some((i, m)) = g.argmax(xp, oh, ow) {
                    f(oh, ow, i, m);
                }
            }
        }
    }
}

fn pool_fwd<T: Elem>(g: &PoolGeom, x: &[T]) -> Vec<T> {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    if g.is_2x2_stride2() && ohw > 0 {
        // SAFETY: `pool2_fwd_plane` writes its whole plane.
        return unsafe { par_filled(g.planes * ohw, ohw, |pl, yp| simd::dispatch(#[inline(always)] || pool2_fwd_plane(g, &x[pl * hw..(pl + 1) * hw], yp))) };
    }
    if g.is_2x2_stride1_same() && hw > 0 {
        // SAFETY: every window position is visited once.
        return unsafe {
            par_filled(g.planes * hw, hw, |pl, yp| {
                simd::dispatch(#[inline(always)] || same2_windows(g.h, g.w, &x[pl * hw..(pl + 1) * hw], |p, _, m| _ = yp[p].write(m)))
            })
        };
    }
    let mut y = vec![T::NEG_INF; g.planes * ohw]; // non-zero fill: written eagerly
    if ohw == 0 || hw == 0 {
        return y;
    }
    y.par_chunks_mut(ohw).enumerate().for_each(|(pl, yp)| {
        let xp = &x[pl * hw..(pl + 1) * hw];
        for_each_window(g, xp, |oh, ow, _, m| yp[oh * g.ow + ow] = m);
    });
    y
}

fn pool_bwd<T: Elem>(g: &PoolGeom, x: &[T], dy: &[T]) -> Vec<T> {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    if g.is_2x2_stride2() && ohw > 0 {
        // SAFETY: `pool2_bwd_plane` writes its whole plane.
        return unsafe {
            par_filled(g.planes * hw, hw, |pl, dxp| {
                simd::dispatch(#[inline(always)] || pool2_bwd_plane::<T, false>(g, &x[pl * hw..(pl + 1) * hw], &dy[pl * ohw..(pl + 1) * ohw], dxp))
            })
        };
    }
    if g.is_2x2_stride1_same() && hw > 0 {
        // SAFETY: `same2_bwd_plane` writes its whole plane.
        return unsafe {
            par_filled(g.planes * hw, hw, |pl, dxp| {
                let (xp, dyp) = (&x[pl * hw..(pl + 1) * hw], &dy[pl * hw..(pl + 1) * hw]);
                with_codes(hw, |codes| simd::dispatch(#[inline(always)] || same2_bwd_plane(g.h, g.w, xp, dyp, codes, dxp)))
            })
        };
    }
    let mut dx = zeros::<T>(g.planes * hw);
    if hw == 0 || ohw == 0 {
        return dx;
    }
    dx.par_chunks_mut(hw).enumerate().for_each(|(pl, dxp)| {
        let xp = &x[pl * hw..(pl + 1) * hw];
        let dyp = &dy[pl * ohw..(pl + 1) * ohw];
        for_each_window(g, xp, |oh, ow, i, _| dxp[i] += dyp[oh * g.ow + ow]);
    });
    dx
}

/// One plane of the 2x2 / stride-2 forward (straight loops that LLVM
/// vectorises, where `for_each_window` works window by window); writes all
/// of `yp` (`oh * ow`).
#[inline(always)]
fn pool2_fwd_plane<T: Elem>(g: &PoolGeom, xp: &[T], yp: &mut [MaybeUninit<T>]) {
    for (r, yr) in yp.chunks_exact_mut(g.ow).enumerate() {
        let r0 = &xp[2 * r * g.w..][..2 * g.ow];
        let r1 = &xp[(2 * r + 1) * g.w..][..2 * g.ow];
        for ((y, a), b) in yr.iter_mut().zip(r0.chunks_exact(2)).zip(r1.chunks_exact(2)) {
            y.write(first_max4(a[0], a[1], b[0], b[1]).1);
        }
    }
}

/// One plane of the 2x2 / stride-2 backward; writes all of `dxp` (`h * w`):
/// the gradient at each window's first maximum, zero elsewhere, including
/// the last row or column an odd size leaves outside every window. With
/// `RELU`, `xp` is a ReLU's output and the gradient goes on through it.
#[inline(always)]
fn pool2_bwd_plane<T: Elem, const RELU: bool>(g: &PoolGeom, xp: &[T], dyp: &[T], dxp: &mut [MaybeUninit<T>]) {
    let zero = T::ZERO;
    for (r, dyr) in dyp.chunks_exact(g.ow).enumerate() {
        let (d0, d1) = dxp[2 * r * g.w..(2 * r + 2) * g.w].split_at_mut(g.w);
        let r0 = &xp[2 * r * g.w..][..2 * g.ow];
        let r1 = &xp[(2 * r + 1) * g.w..][..2 * g.ow];
        let mut c = 0;
        while g.ow - c >= 8 {
            pool2_bwd_windows::<T, RELU, 8>(c, r0, r1, dyr, d0, d1);
            c += 8;
        }
        while g.ow - c >= 4 {
            pool2_bwd_windows::<T, RELU, 4>(c, r0, r1, dyr, d0, d1);
            c += 4;
        }
        while c < g.ow {
            pool2_bwd_windows::<T, RELU, 1>(c, r0, r1, dyr, d0, d1);
            c += 1;
        }
        if g.w % 2 == 1 {
            d0[g.w - 1].write(zero);
            d1[g.w - 1].write(zero);
        }
    }
    for d in &mut dxp[2 * g.oh * g.w..] {
        d.write(zero);
    }
}

/// Windows `c..c + L` of one row pair of [`pool2_bwd_plane`]: the pairs
/// are split into four arrays first and joined after, so the window loop
/// itself runs on whole vectors (taking pairs in place left it scalar:
/// 1.0 ns an element).
#[inline(always)]
fn pool2_bwd_windows<T: Elem, const RELU: bool, const L: usize>(c: usize, r0: &[T], r1: &[T], dyr: &[T], d0: &mut [MaybeUninit<T>], d1: &mut [MaybeUninit<T>]) {
    let zero = T::ZERO;
    let (r0, r1) = (&r0[2 * c..][..2 * L], &r1[2 * c..][..2 * L]);
    let dyr = &dyr[c..][..L];
    let mut x = [[zero; L]; 4];
    for j in 0..L {
        x[0][j] = r0[2 * j];
        x[1][j] = r0[2 * j + 1];
        x[2][j] = r1[2 * j];
        x[3][j] = r1[2 * j + 1];
    }
    let mut o = [[zero; L]; 4];
    for j in 0..L {
        let (t1, t2, t3, m) = first_max4_masks(x[0][j], x[1][j], x[2][j], x[3][j]);
        // `0 + dy`, as the general path's `+=` into zeros gives (-0.0 -> 0.0).
        let v = if RELU { relu_grad(m, zero + dyr[j]) } else { zero + dyr[j] };
        o[3][j] = if t3 { v } else { zero };
        o[2][j] = if t2 & !t3 { v } else { zero };
        o[1][j] = if t1 & !(t2 | t3) { v } else { zero };
        o[0][j] = if !(t1 | t2 | t3) { v } else { zero };
    }
    let (e0, e1) = (&mut d0[2 * c..][..2 * L], &mut d1[2 * c..][..2 * L]);
    for j in 0..L {
        e0[2 * j].write(o[0][j]);
        e0[2 * j + 1].write(o[1][j]);
        e1[2 * j].write(o[2][j]);
        e1[2 * j + 1].write(o[3][j]);
    }
}

/// Calls `f(p, code, max)` for every window of Keras' 2x2 / stride-1
/// "same" pool of an `h x w` plane, in scan order: `p` is the window's
/// position (its top-left element), `code` where its first maximum lies
/// (0: `p`, 1: right of it, 2: below, 3: below right). The padding is
/// -inf, which never beats a value, so edge windows use `first_max4` too;
/// the inner loop is straight for the vectoriser.
#[inline(always)]
fn same2_windows<T: Elem>(h: usize, w: usize, xp: &[T], mut f: impl FnMut(usize, usize, T)) {
    let pad = T::NEG_INF;
    for i in 0..h {
        let r0 = &xp[i * w..(i + 1) * w];
        match xp.get((i + 1) * w..(i + 2) * w) {
            Some(r1) => {
                for j in 0..w - 1 {
                    let (c, m) = first_max4(r0[j], r0[j + 1], r1[j], r1[j + 1]);
                    f(i * w + j, c, m);
                }
                let (c, m) = first_max4(r0[w - 1], pad, r1[w - 1], pad);
                f(i * w + w - 1, c, m);
            }
            None => {
                for j in 0..w {
                    let (c, m) = first_max4(r0[j], r0.get(j + 1).copied().unwrap_or(pad), pad, pad);
                    f(i * w + j, c, m);
                }
            }
        }
    }
}

/// One plane of the 2x2 / stride-1 "same" backward; writes all of `dxp`.
/// Each element gathers the gradients of the (up to four) windows whose
/// first maximum it is, added in the windows' scan order onto zero, which
/// gives the bits of the general path's scatter (`+=` into zeros). `codes`
/// is scratch for the plane's window codes.
#[inline(always)]
fn same2_bwd_plane<T: Elem>(h: usize, w: usize, xp: &[T], dyp: &[T], codes: &mut [u8], dxp: &mut [MaybeUninit<T>]) {
    let zero = T::ZERO;
    same2_windows(h, w, xp, |p, c, _| codes[p] = c as u8);
    let codes = &codes[..h * w];
    let pick = |code: u8, want: u8, dy: T| if code == want { dy } else { zero };
    // Row 0 has no windows above it.
    let (c0, d0) = (&codes[..w], &dyp[..w]);
    dxp[0].write(zero + pick(c0[0], 0, d0[0]));
    for j in 1..w {
        dxp[j].write(zero + pick(c0[j - 1], 1, d0[j - 1]) + pick(c0[j], 0, d0[j]));
    }
    for i in 1..h {
        // windows above-left (code 3), above (2), left (1) and its own (0)
        let (cu, cc) = (&codes[(i - 1) * w..i * w], &codes[i * w..(i + 1) * w]);
        let (du, dc) = (&dyp[(i - 1) * w..i * w], &dyp[i * w..(i + 1) * w]);
        let out = &mut dxp[i * w..(i + 1) * w];
        out[0].write(zero + pick(cu[0], 2, du[0]) + pick(cc[0], 0, dc[0]));
        let n = w - 1;
        let (cul, cuu, ccl, ccc) = (&cu[..n], &cu[1..], &cc[..n], &cc[1..]);
        let (dul, duu, dcl, dcc) = (&du[..n], &du[1..], &dc[..n], &dc[1..]);
        let out = &mut out[1..];
        for j in 0..n {
            out[j].write(zero + pick(cul[j], 3, dul[j]) + pick(cuu[j], 2, duu[j]) + pick(ccl[j], 1, dcl[j]) + pick(ccc[j], 0, dcc[j]));
        }
    }
}

thread_local! {
    static CODES: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `f` on a per-thread buffer of `len` window codes (contents unspecified).
/// Bytes rather than [`Elem::with_scratch`]'s floats: with codes held as
/// floats the stride-1 "same" backward ran 10-20% slower (interleaved runs).
fn with_codes(len: usize, f: impl FnOnce(&mut [u8])) {
    CODES.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0; len]),
    })
}

/// `s` as memory to fill, for a writer of whole planes.
///
/// # Safety
/// Only initialised values may be written through the result.
pub unsafe fn as_uninit<T>(s: &mut [T]) -> &mut [MaybeUninit<T>] {
    // SAFETY: `MaybeUninit<T>` has `T`'s layout; the caller keeps `s` initialised.
    unsafe { &mut *(s as *mut [T] as *mut [MaybeUninit<T>]) }
}

/// Whether [`unpool2`] can stand in for this pooling's backward.
pub fn is_unpool2(kernel: usize, stride: usize, pad: [usize; 4]) -> bool {
    kernel == 2 && stride == 2 && pad == [0; 4]
}

/// The 2x2 / stride-2 unpadded max pool of `x` (planes of `h x w`) into
/// `y` (every element written), one plane after another: for a caller
/// that pools a few planes at a time (the Winograd forward, while its
/// output is still in cache; BatchNorm, a plane as soon as it is written).
pub fn pool2<T: Elem>(h: usize, w: usize, x: &[T], y: &mut [MaybeUninit<T>]) {
    let g = PoolGeom::unpool2(x.len(), h, w);
    let (hw, ohw) = (h * w, g.oh * g.ow);
    assert!(y.len() == g.planes * ohw, "pool2: sizes {} / {}", x.len(), y.len());
    if ohw == 0 {
        return;
    }
    for (xp, yp) in x.chunks_exact(hw).zip(y.chunks_exact_mut(ohw)) {
        simd::dispatch(#[inline(always)] || pool2_fwd_plane(&g, xp, yp));
    }
}

/// [`pool2`], also writing each window's code to `codes` (one byte per
/// pooled value: where its first maximum lies, 0 top left, 1 top right,
/// 2 bottom left, 3 bottom right), which [`unpool2_codes`] takes instead
/// of `x`: a training forward then need not keep its output.
pub fn pool2_codes<T: Elem>(h: usize, w: usize, x: &[T], y: &mut [MaybeUninit<T>], codes: &mut [MaybeUninit<u8>]) {
    let g = PoolGeom::unpool2(x.len(), h, w);
    let (hw, ohw) = (h * w, g.oh * g.ow);
    assert!(y.len() == g.planes * ohw && codes.len() == y.len(), "pool2_codes: sizes {} / {} / {}", x.len(), y.len(), codes.len());
    if ohw == 0 {
        return;
    }
    for ((xp, yp), cp) in x.chunks_exact(hw).zip(y.chunks_exact_mut(ohw)).zip(codes.chunks_exact_mut(ohw)) {
        simd::dispatch(#[inline(always)] || pool2_codes_plane(&g, xp, yp, cp));
    }
}

/// One plane of [`pool2_codes`]; writes all of `yp` and `cp`.
#[inline(always)]
fn pool2_codes_plane<T: Elem>(g: &PoolGeom, xp: &[T], yp: &mut [MaybeUninit<T>], cp: &mut [MaybeUninit<u8>]) {
    for (r, (yr, cr)) in yp.chunks_exact_mut(g.ow).zip(cp.chunks_exact_mut(g.ow)).enumerate() {
        let r0 = &xp[2 * r * g.w..][..2 * g.ow];
        let r1 = &xp[(2 * r + 1) * g.w..][..2 * g.ow];
        for (((y, c), a), b) in yr.iter_mut().zip(cr.iter_mut()).zip(r0.chunks_exact(2)).zip(r1.chunks_exact(2)) {
            let (t1, t2, t3, m) = first_max4_masks(a[0], a[1], b[0], b[1]);
            y.write(m);
            c.write(if t3 { 3 } else if t2 { 2 } else { t1 as u8 });
        }
    }
}

/// [`unpool2`] from the pool's output `y` and the [`pool2_codes`] codes
/// instead of its input: the same bits (the gradient at each window's
/// first maximum, through the ReLU where `y`, the window's maximum, is not
/// positive), every element of `dx` (planes of `h x w`) written.
pub fn unpool2_codes<T: Elem>(h: usize, w: usize, y: &[T], codes: &[u8], dy: &[T], relu: bool, dx: &mut [T]) {
    let g = PoolGeom::unpool2(dx.len(), h, w);
    let (hw, ohw) = (h * w, g.oh * g.ow);
    assert!(y.len() == g.planes * ohw && codes.len() == y.len() && dy.len() == y.len(), "unpool2_codes: sizes {} / {} / {} / {}", y.len(), codes.len(), dy.len(), dx.len());
    if ohw == 0 {
        dx.fill(T::ZERO);
        return;
    }
    let zero = T::ZERO;
    for (((yp, cp), dyp), dxp) in y.chunks_exact(ohw).zip(codes.chunks_exact(ohw)).zip(dy.chunks_exact(ohw)).zip(dx.chunks_exact_mut(hw)) {
        simd::dispatch(
            #[inline(always)]
            || {
                for (r, ((yr, cr), dyr)) in yp.chunks_exact(g.ow).zip(cp.chunks_exact(g.ow)).zip(dyp.chunks_exact(g.ow)).enumerate() {
                    let (d0, d1) = dxp[2 * r * g.w..(2 * r + 2) * g.w].split_at_mut(g.w);
                    let mut c = 0;
                    while g.ow - c >= 8 {
                        unpool2_codes_windows::<T, 8>(c, relu, yr, cr, dyr, d0, d1);
                        c += 8;
                    }
                    while c < g.ow {
                        unpool2_codes_windows::<T, 1>(c, relu, yr, cr, dyr, d0, d1);
                        c += 1;
                    }
                    if g.w % 2 == 1 {
                        d0[g.w - 1] = zero;
                        d1[g.w - 1] = zero;
                    }
                }
                dxp[2 * g.oh * g.w..].fill(zero);
            },
        );
    }
}

/// Windows `c..c + L` of one row pair of [`unpool2_codes`], in four arrays
/// joined after, as [`pool2_bwd_windows`] (for whole vectors).
#[inline(always)]
fn unpool2_codes_windows<T: Elem, const L: usize>(c: usize, relu: bool, yr: &[T], cr: &[u8], dyr: &[T], d0: &mut [T], d1: &mut [T]) {
    let zero = T::ZERO;
    let (yr, cr, dyr) = (&yr[c..][..L], &cr[c..][..L], &dyr[c..][..L]);
    let mut o = [[zero; L]; 4];
    for j in 0..L {
        // `0 + dy`, as the general path's `+=` into zeros gives (-0.0 -> 0.0).
        let v = if relu { relu_grad(yr[j], zero + dyr[j]) } else { zero + dyr[j] };
        for (k, o) in o.iter_mut().enumerate() {
            o[j] = if cr[j] == k as u8 { v } else { zero };
        }
    }
    let (e0, e1) = (&mut d0[2 * c..][..2 * L], &mut d1[2 * c..][..2 * L]);
    for j in 0..L {
        e0[2 * j] = o[0][j];
        e0[2 * j + 1] = o[1][j];
        e1[2 * j] = o[2][j];
        e1[2 * j + 1] = o[3][j];
    }
}

/// The input gradient of a 2x2 / stride-2 unpadded max pool of `x`
/// (planes of `h x w`) given its output gradient `dy`, and with `relu`,
/// further back through the ReLU whose output `x` is, into `dx` (every
/// element written): the bits of the pool's backward followed by the ReLU
/// mask, in one pass over `x`, for a consumer that wants a few planes at a
/// time (the fused Winograd backward) rather than the whole gradient.
pub fn unpool2<T: Elem>(h: usize, w: usize, x: &[T], dy: &[T], relu: bool, dx: &mut [T]) {
    let g = PoolGeom::unpool2(x.len(), h, w);
    let (hw, ohw) = (h * w, g.oh * g.ow);
    assert!(x.len() == dx.len() && dy.len() == g.planes * ohw, "unpool2: sizes {} / {} / {}", x.len(), dy.len(), dx.len());
    if ohw == 0 {
        dx.fill(T::ZERO);
        return;
    }
    // SAFETY: `pool2_bwd_plane` writes only initialised values.
    let dx = unsafe { as_uninit(dx) };
    for ((xp, dyp), dxp) in x.chunks_exact(hw).zip(dy.chunks_exact(ohw)).zip(dx.chunks_exact_mut(hw)) {
        simd::dispatch(
            #[inline(always)]
            || match relu {
                true => pool2_bwd_plane::<T, true>(&g, xp, dyp, dxp),
                false => pool2_bwd_plane::<T, false>(&g, xp, dyp, dxp),
            },
        );
    }
}

/// Forward op on `x`.
#[derive(Clone, Copy, Debug)]
pub struct MaxPool2dOp {
    pub kernel: usize,
    pub stride: usize,
    pub pad: [usize; 4],
}

impl CustomOp1 for MaxPool2dOp {
    fn name(&self) -> &'static str {
        "fer-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = PoolGeom::new(l.dims(), self.kernel, self.stride, self.pad)?;
        let (n, c) = (l.dims()[0], l.dims()[1]);
        let out = match s {
            CpuStorage::F32(_) => f32::to_cpu_storage_owned(pool_fwd::<f32>(&g, contiguous_slice(s, l)?)),
            CpuStorage::F64(_) => f64::to_cpu_storage_owned(pool_fwd::<f64>(&g, contiguous_slice(s, l)?)),
            _ => bail!("fer-max-pool2d: only f32/f64"),
        };
        Ok((out, Shape::from((n, c, g.oh, g.ow))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(arg.apply_op2_no_bwd(&grad, &MaxPool2dBwdOp(*self))?))
    }
}

/// `(x, dy) -> dx`.
struct MaxPool2dBwdOp(MaxPool2dOp);

impl CustomOp2 for MaxPool2dBwdOp {
    fn name(&self) -> &'static str {
        "fer-max-pool2d-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let MaxPool2dOp { kernel, stride, pad } = self.0;
        let g = PoolGeom::new(l1.dims(), kernel, stride, pad)?;
        let (n, c) = (l1.dims()[0], l1.dims()[1]);
        if l2.dims() != [n, c, g.oh, g.ow] {
            bail!("fer-max-pool2d-bwd: grad shape {:?} != {:?}", l2.dims(), [n, c, g.oh, g.ow]);
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                f32::to_cpu_storage_owned(pool_bwd::<f32>(&g, contiguous_slice(s1, l1)?, contiguous_slice(s2, l2)?))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                f64::to_cpu_storage_owned(pool_bwd::<f64>(&g, contiguous_slice(s1, l1)?, contiguous_slice(s2, l2)?))
            }
            _ => bail!("fer-max-pool2d-bwd: dtype mismatch"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// Fast max pooling with autograd.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: [usize; 4]) -> Result<Tensor> {
    x.contiguous()?.apply_op1(MaxPool2dOp { kernel, stride, pad: padding })
}

#[cfg(test)]
mod timing {
    /// Best of 50 rounds of 10 calls, seconds a call.
    fn best_of(mut f: impl FnMut()) -> f64 {
        let mut best = f64::MAX;
        for _ in 0..50 {
            let t = std::time::Instant::now();
            for _ in 0..10 {
                f();
            }
            best = best.min(t.elapsed().as_secs_f64() / 10.0);
        }
        best
    }

    /// The 2x2 / stride-2 pool's backward (with ReLU) and forward on one
    /// image's 48 maps of 48x48, in cache, one thread, best of 50; then
    /// the stride-1 "same" pool's backward of the same maps (on the
    /// thread pool, as in training):
    /// `cargo test --release -- --ignored --nocapture unpool2_timing`
    #[test]
    #[ignore]
    fn unpool2_timing() {
        let (planes, h, w) = (48, 48, 48);
        let x: Vec<f32> = (0..planes * h * w).map(|i| ((i * 7919) % 1013) as f32 / 1013.0 - 0.3).collect();
        let dy: Vec<f32> = (0..planes * h * w / 4).map(|i| ((i * 31) % 17) as f32 - 8.0).collect();
        let report = |what: &str, secs: f64| println!("{what} 48x48x48: {:.1} us, {:.2} ns/elem", secs * 1e6, secs * 1e9 / x.len() as f64);
        let mut dx = vec![0f32; x.len()];
        report("unpool2", best_of(|| super::unpool2(h, w, &x, &dy, true, &mut dx)));
        let mut y = vec![std::mem::MaybeUninit::<f32>::uninit(); dy.len()];
        report("pool2", best_of(|| super::pool2(h, w, &x, &mut y)));
        let g = super::PoolGeom::new(&[1, planes, h, w], 2, 1, [0, 1, 0, 1]).unwrap();
        let dys: Vec<f32> = (0..x.len()).map(|i| ((i * 31) % 17) as f32 - 8.0).collect();
        report("same pool bwd", best_of(|| _ = std::hint::black_box(super::pool_bwd(&g, &x, &dys))));
    }
}
