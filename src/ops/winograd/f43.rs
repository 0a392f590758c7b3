//! Hand-written transforms for F(4x4, 3x3): 36 products per 16 outputs
//! (2.25 per output against F(2x2, 3x3)'s 4 and a direct convolution's 9),
//! for the large 3x3 layers. Lavin & Gray's matrices (interpolation at 0,
//! ±1, ±2, ∞), with the common subexpressions written out; same layouts and
//! band handling as [`super::f23`]: `V[ξ][c][t]`, `M[ξ][o][t]`,
//! `U[ξ][o][c]` with 36 planes, `ξ = 6 a + b`.
//!
//! Tiles sit at stride 4, so a tile row is first split into its 4 phases
//! (`ph[p][u] = row[4 u + p]`): element `k` of tile `tj` is then
//! `ph[k % 4][tj + k / 4]`, and every transform loop runs over `tj` on
//! contiguous slices, which LLVM vectorises (under `simd::dispatch`); the
//! gathers of stride 4 are left to the short split and merge passes.

use super::super::conv::Geom;
use super::super::gemm::{zeros, Elem};
use super::{load_output_row, load_padded_row, Epilogue, Tiles};

/// `B^T d` for one column of 6 values.
#[inline(always)]
fn bt<T: Elem>(d: [T; 6], two: T, four: T, five: T) -> [T; 6] {
    let p = d[4] - four * d[2];
    let q = d[3] - four * d[1];
    let r = d[4] - d[2];
    let s = two * (d[3] - d[1]);
    [four * d[0] - five * d[2] + d[4], p + q, p - q, r + s, r - s, four * d[1] - five * d[3] + d[5]]
}

/// `B e` (the adjoint of [`bt`]).
#[inline(always)]
fn b6<T: Elem>(e: [T; 6], two: T, four: T, five: T) -> [T; 6] {
    let s12 = e[1] + e[2];
    let d12 = e[2] - e[1];
    let s34 = e[3] + e[4];
    let d34 = e[3] - e[4];
    [
        four * e[0],
        four * d12 - two * (e[3] - e[4]) + four * e[5],
        T::ZERO - five * e[0] - four * s12 - s34,
        two * d34 - d12 - five * e[5],
        e[0] + s12 + s34,
        e[5],
    ]
}

/// `A^T m`: 4 outputs from 6 values.
#[inline(always)]
fn at<T: Elem>(m: [T; 6], two: T, four: T, eight: T) -> [T; 4] {
    let s12 = m[1] + m[2];
    let d12 = m[1] - m[2];
    let s34 = m[3] + m[4];
    let d34 = m[3] - m[4];
    [m[0] + s12 + s34, d12 + two * d34, s12 + four * s34, d12 + eight * d34 + m[5]]
}

/// `A y` (the adjoint of [`at`]).
#[inline(always)]
fn a6<T: Elem>(y: [T; 4], two: T, four: T, eight: T) -> [T; 6] {
    let e = y[0] + y[2];
    let o = y[1] + y[3];
    let e2 = y[0] + four * y[2];
    let o2 = two * y[1] + eight * y[3];
    [y[0], e + o, e - o, e2 + o2, e2 - o2, y[3]]
}

/// `G g`: 6 values from a 3-tap kernel column (in f64: the 1/6 and 1/24
/// are not exact in f32, and this runs once per step per layer).
#[inline(always)]
fn g6(w: [f64; 3]) -> [f64; 6] {
    let (s, t) = (w[0] + w[2], 4.0 * w[2] + w[0]);
    [w[0] / 4.0, -(s + w[1]) / 6.0, -(s - w[1]) / 6.0, (t + 2.0 * w[1]) / 24.0, (t - 2.0 * w[1]) / 24.0, w[2]]
}

/// `G^T u` (the adjoint of [`g6`]).
#[inline(always)]
fn gt6(u: [f64; 6]) -> [f64; 3] {
    [
        u[0] / 4.0 - (u[1] + u[2]) / 6.0 + (u[3] + u[4]) / 24.0,
        (u[2] - u[1]) / 6.0 + (u[3] - u[4]) / 12.0,
        (u[3] + u[4] - u[1] - u[2]) / 6.0 + u[5],
    ]
}

/// `outs[.][j] = f(ins[.][j])` for `j < n`: six (or four) streams in,
/// six (or four) out. A function, not a loop written in place: its slice
/// parameters tell LLVM that the streams do not overlap (a loop over a
/// dozen slices cut from buffers needs more run-time overlap checks than
/// LLVM will emit, and stays scalar), and cutting them to `n` here drops
/// the bounds checks, so the loop vectorises.
macro_rules! stream_fn {
    ($name:ident, $ni:literal [$($i:ident),+], $no:literal [$($o:ident),+]) => {
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        fn $name<T: Elem>(n: usize, $($i: &[T],)+ $($o: &mut [T],)+ f: impl Fn([T; $ni]) -> [T; $no]) {
            $(let $i = &$i[..n];)+
            $(let $o = &mut $o[..n];)+
            for j in 0..n {
                let r = f([$($i[j]),+]);
                let mut _k = 0;
                $($o[j] = r[_k]; _k += 1;)+
            }
        }
    };
}
stream_fn!(stream66, 6 [i0, i1, i2, i3, i4, i5], 6 [o0, o1, o2, o3, o4, o5]);
stream_fn!(stream64, 6 [i0, i1, i2, i3, i4, i5], 4 [o0, o1, o2, o3]);
stream_fn!(stream46, 4 [i0, i1, i2, i3], 6 [o0, o1, o2, o3, o4, o5]);

/// `streams!(n, [ins] => [outs], f)`: the [`stream_fn`] for that many streams.
macro_rules! streams {
    ($n:expr, [$a0:ident, $a1:ident, $a2:ident, $a3:ident, $a4:ident, $a5:ident] => [$($o:ident),+], $f:expr) => {
        streams!(@six $n, [$a0, $a1, $a2, $a3, $a4, $a5], [$($o),+], $f)
    };
    ($n:expr, [$a0:ident, $a1:ident, $a2:ident, $a3:ident] => [$($o:ident),+], $f:expr) => {
        stream46($n, $a0, $a1, $a2, $a3, $($o),+, $f)
    };
    (@six $n:expr, [$($i:ident),+], [$b0:ident, $b1:ident, $b2:ident, $b3:ident, $b4:ident, $b5:ident], $f:expr) => {
        stream66($n, $($i),+, $b0, $b1, $b2, $b3, $b4, $b5, $f)
    };
    (@six $n:expr, [$($i:ident),+], [$b0:ident, $b1:ident, $b2:ident, $b3:ident], $f:expr) => {
        stream64($n, $($i),+, $b0, $b1, $b2, $b3, $f)
    };
}

/// `let_planes!(buf, base, stride, len => p0, p1, ..)`: `p_k =
/// &buf[base + k * stride..][..len]`; `let_planes!(mut ..)` the same
/// mutably (disjoint, `len <= stride`). Spelt out instead of
/// `array::from_fn`, which LLVM did not always inline in these loops.
macro_rules! let_planes {
    (mut $buf:expr, $base:expr, $stride:expr, $len:expr => $($p:ident),+) => {
        let (stride, len) = ($stride, $len);
        debug_assert!(len <= stride);
        let mut rest = &mut $buf[$base..];
        $(
            let cut = stride.min(rest.len());
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(cut);
            let $p = &mut head[..len];
            rest = tail;
        )+
        let _ = rest;
    };
    ($buf:expr, $base:expr, $stride:expr, $len:expr => $($p:ident),+) => {
        let (stride, len, mut at) = ($stride, $len, $base);
        $(
            let $p = &$buf[at..][..len];
            at += stride;
        )+
        let _ = at;
    };
}

fn consts<T: Elem>() -> (T, T, T, T) {
    (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(5.0), T::from_f64(8.0))
}

/// `U[ξ][o][c]` (36, O, C) from `w (O, C, 3, 3)`.
pub(super) fn filter_transform<T: Elem>(g: &Geom, w: &[T]) -> Vec<T> {
    let (o_n, c_n) = (g.o, g.c);
    let mut u = zeros::<T>(36 * o_n * c_n);
    for o in 0..o_n {
        for c in 0..c_n {
            let k = &w[(o * c_n + c) * 9..(o * c_n + c) * 9 + 9];
            let cols: [[f64; 6]; 3] = std::array::from_fn(|j| g6([k[j].to_f64(), k[3 + j].to_f64(), k[6 + j].to_f64()]));
            for a in 0..6 {
                let r = g6([cols[0][a], cols[1][a], cols[2][a]]);
                for b in 0..6 {
                    u[((a * 6 + b) * o_n + o) * c_n + c] = T::from_f64(r[b]);
                }
            }
        }
    }
    u
}

/// `dw (O, C, 3, 3)` from `dU[ξ][o][c]`: `G^T dU G`.
pub(super) fn filter_transform_bwd<T: Elem>(g: &Geom, du: &[T]) -> Vec<T> {
    let (o_n, c_n) = (g.o, g.c);
    let mut dw = zeros::<T>(o_n * c_n * 9);
    for o in 0..o_n {
        for c in 0..c_n {
            let at = |a: usize, b: usize| du[((a * 6 + b) * o_n + o) * c_n + c].to_f64();
            let cols: [[f64; 3]; 6] = std::array::from_fn(|b| gt6(std::array::from_fn(|a| at(a, b))));
            let k = &mut dw[(o * c_n + c) * 9..(o * c_n + c) * 9 + 9];
            for i in 0..3 {
                let r = gt6(std::array::from_fn(|b| cols[b][i]));
                for j in 0..3 {
                    k[i * 3 + j] = T::from_f64(r[j]);
                }
            }
        }
    }
    dw
}

/// `ph[p][u] = row[4 u + p]` for `u < len` (zero past the row's end).
#[inline(always)]
fn split4<T: Elem>(row: &[T], ph: &mut [T], len: usize) {
    let (p0, rest) = ph.split_at_mut(len);
    let (p1, rest) = rest.split_at_mut(len);
    let (p2, p3) = rest.split_at_mut(len);
    let full = (row.len() / 4).min(len);
    deinterleave4(full, row, p0, p1, p2, p3);
    for u in full..len {
        let at = |p: usize| row.get(4 * u + p).copied().unwrap_or(T::ZERO);
        (p0[u], p1[u], p2[u], p3[u]) = (at(0), at(1), at(2), at(3));
    }
}

/// The stride-4 loop of [`split4`], in a function of its own so that its
/// four outputs are known not to overlap (LLVM then turns it into shuffles).
#[inline(always)]
fn deinterleave4<T: Elem>(n: usize, row: &[T], p0: &mut [T], p1: &mut [T], p2: &mut [T], p3: &mut [T]) {
    let row = &row[..4 * n];
    let (p0, p1, p2, p3) = (&mut p0[..n], &mut p1[..n], &mut p2[..n], &mut p3[..n]);
    for u in 0..n {
        p0[u] = row[4 * u];
        p1[u] = row[4 * u + 1];
        p2[u] = row[4 * u + 2];
        p3[u] = row[4 * u + 3];
    }
}

/// `row[4 u + p] = ph[p][u]` (the inverse of [`split4`]) for the whole row.
#[inline(always)]
fn merge4<T: Elem>(ph: &[T], len: usize, row: &mut [T]) {
    let full = (row.len() / 4).min(len);
    let (head, tail) = row.split_at_mut(4 * full);
    interleave4(full, &ph[..len], &ph[len..2 * len], &ph[2 * len..3 * len], &ph[3 * len..4 * len], head);
    for (j, d) in tail.iter_mut().enumerate() {
        *d = ph[j * len + full];
    }
}

#[inline(always)]
fn interleave4<T: Elem>(n: usize, p0: &[T], p1: &[T], p2: &[T], p3: &[T], row: &mut [T]) {
    let row = &mut row[..4 * n];
    let (p0, p1, p2, p3) = (&p0[..n], &p1[..n], &p2[..n], &p3[..n]);
    for u in 0..n {
        row[4 * u] = p0[u];
        row[4 * u + 1] = p1[u];
        row[4 * u + 2] = p2[u];
        row[4 * u + 3] = p3[u];
    }
}

/// `V[ξ][c][t]` (36, C, tg) for `ng` images `x (ng, C, H, W)`: the row
/// transform on six whole padded rows, then the column transform of each
/// tile writes the 36 planes contiguously along a tile row.
#[inline(always)]
pub(super) fn input_transform<T: Elem>(g: &Geom, tl: &Tiles, x: &[T], ng: usize, v: &mut [T]) {
    let (c_n, tw) = (g.c, tl.tw);
    let tg = ng * tl.t;
    let wp = 4 * tw + 2;
    let len = tw + 1;
    let (pt, pl) = (g.pad[0] as isize, g.pad[2]);
    let (two, four, five, _) = consts::<T>();
    let mut rows = vec![T::ZERO; 6 * wp];
    let mut tmp = vec![T::ZERO; 6 * wp];
    let mut ph = vec![T::ZERO; 4 * len];
    for img in 0..ng {
        for c in 0..c_n {
            let xc = &x[(img * c_n + c) * g.h * g.w..(img * c_n + c + 1) * g.h * g.w];
            for ti in 0..tl.th {
                let r0 = 4 * (tl.ti0 + ti) as isize - pt;
                for r in 0..6 {
                    load_padded_row(xc, g, r0 + r as isize, pl, &mut rows[r * wp..(r + 1) * wp]);
                }
                {
                    let_planes!(rows, 0, wp, wp => d0, d1, d2, d3, d4, d5);
                    let_planes!(mut tmp, 0, wp, wp => t0, t1, t2, t3, t4, t5);
                    streams!(wp, [d0, d1, d2, d3, d4, d5] => [t0, t1, t2, t3, t4, t5], |d| bt(d, two, four, five));
                }
                let t0 = img * tl.t + ti * tw;
                for a in 0..6 {
                    split4(&tmp[a * wp..(a + 1) * wp], &mut ph, len);
                    {
                        let_planes!(ph, 0, len, tw => d0, d1, d2, d3);
                        let_planes!(ph, 1, len, tw => d4, d5);
                        let_planes!(mut v, (a * 6 * c_n + c) * tg + t0, c_n * tg, tw => o0, o1, o2, o3, o4, o5);
                        streams!(tw, [d0, d1, d2, d3, d4, d5] => [o0, o1, o2, o3, o4, o5], |d| bt(d, two, four, five));
                    }
                }
            }
        }
    }
}

/// Scatter-adds `B dV B^T` of every tile into `dx (ng, C, H, W)`.
#[inline(always)]
pub(super) fn input_transform_bwd<T: Elem>(g: &Geom, tl: &Tiles, dv: &[T], ng: usize, dx: &mut [T]) {
    let (c_n, tw) = (g.c, tl.tw);
    let tg = ng * tl.t;
    let wp = 4 * tw + 2;
    let len = tw + 1;
    let (pt, pl) = (g.pad[0] as isize, g.pad[2]);
    let (two, four, five, _) = consts::<T>();
    let mut e = vec![T::ZERO; 6 * wp];
    let mut rows = vec![T::ZERO; 6 * wp];
    let mut o6 = vec![T::ZERO; 6 * tw];
    let mut ph = vec![T::ZERO; 4 * len];
    let lo = pl.min(wp);
    let hi = (pl + g.w).min(wp);
    for img in 0..ng {
        for c in 0..c_n {
            let xc = &mut dx[(img * c_n + c) * g.h * g.w..(img * c_n + c + 1) * g.h * g.w];
            for ti in 0..tl.th {
                let r0 = 4 * (tl.ti0 + ti) as isize - pt;
                let t0 = img * tl.t + ti * tw;
                // column adjoint on each tile row a of dV; neighbouring tiles overlap by 2
                for a in 0..6 {
                    {
                        let_planes!(dv, (a * 6 * c_n + c) * tg + t0, c_n * tg, tw => d0, d1, d2, d3, d4, d5);
                        let_planes!(mut o6, 0, tw, tw => o0, o1, o2, o3, o4, o5);
                        streams!(tw, [d0, d1, d2, d3, d4, d5] => [o0, o1, o2, o3, o4, o5], |d| b6(d, two, four, five));
                    }
                    // phase p holds taps p (at tj) and p + 4 (at tj + 1)
                    for p in 0..4 {
                        let dst = &mut ph[p * len..(p + 1) * len];
                        dst[..tw].copy_from_slice(&o6[p * tw..(p + 1) * tw]);
                        dst[tw] = T::ZERO;
                        if p < 2 {
                            dst[1..].iter_mut().zip(&o6[(p + 4) * tw..(p + 5) * tw]).for_each(|(d, &s)| *d += s);
                        }
                    }
                    merge4(&ph, len, &mut e[a * wp..(a + 1) * wp]);
                }
                if hi <= lo {
                    continue;
                }
                // row adjoint: padded row r0 + k gets (B e)[k]
                {
                    let_planes!(e, lo, wp, hi - lo => e0, e1, e2, e3, e4, e5);
                    let_planes!(mut rows, lo, wp, hi - lo => q0, q1, q2, q3, q4, q5);
                    streams!(hi - lo, [e0, e1, e2, e3, e4, e5] => [q0, q1, q2, q3, q4, q5], |d| b6(d, two, four, five));
                }
                for k in 0..6 {
                    let ih = r0 + k as isize;
                    if ih < 0 || ih >= g.h as isize {
                        continue;
                    }
                    let xr = &mut xc[ih as usize * g.w..(ih as usize + 1) * g.w];
                    let src = &rows[k * wp + lo..k * wp + hi];
                    xr[lo - pl..hi - pl].iter_mut().zip(src).for_each(|(o, &w)| *o += w);
                }
            }
        }
    }
}

/// `y (ng, O, OH, OW)` from `M[ξ][o][t]`, through `epi`.
#[inline(always)]
pub(super) fn output_transform<T: Elem>(g: &Geom, tl: &Tiles, m: &[T], ng: usize, y: &mut [T], epi: &Epilogue<T>) {
    let (o_n, p, tw) = (g.o, g.p(), tl.tw);
    let tg = ng * tl.t;
    let (two, four, _, eight) = consts::<T>();
    let mut s = vec![T::ZERO; 24 * tw]; // s[i][b][tj]
    let mut z = vec![T::ZERO; 4 * tw]; // z[j][tj]: output column 4 tj + j
    let mut yr = vec![T::ZERO; 4 * tw];
    for img in 0..ng {
        for o in 0..o_n {
            let yo = &mut y[(img * o_n + o) * p..(img * o_n + o + 1) * p];
            for ti in 0..tl.th {
                let t0 = img * tl.t + ti * tw;
                for b in 0..6 {
                    let_planes!(m, (b * o_n + o) * tg + t0, 6 * o_n * tg, tw => m0, m1, m2, m3, m4, m5);
                    let (s0, rest) = s.split_at_mut(6 * tw);
                    let (s1, rest) = rest.split_at_mut(6 * tw);
                    let (s2, s3) = rest.split_at_mut(6 * tw);
                    let (s0, s1, s2, s3) = (&mut s0[b * tw..], &mut s1[b * tw..], &mut s2[b * tw..], &mut s3[b * tw..]);
                    streams!(tw, [m0, m1, m2, m3, m4, m5] => [s0, s1, s2, s3], |v| at(v, two, four, eight));
                }
                for i in 0..4 {
                    let oh = 4 * (tl.ti0 + ti) + i;
                    if oh >= g.oh {
                        break;
                    }
                    {
                        let_planes!(s, i * 6 * tw, tw, tw => q0, q1, q2, q3, q4, q5);
                        let_planes!(mut z, 0, tw, tw => z0, z1, z2, z3);
                        streams!(tw, [q0, q1, q2, q3, q4, q5] => [z0, z1, z2, z3], |v| at(v, two, four, eight));
                    }
                    merge4(&z, tw, &mut yr);
                    epi.write(o, &yr[..g.ow], &mut yo[oh * g.ow..(oh + 1) * g.ow]);
                }
            }
        }
    }
}

/// `dM[ξ][o][t] = A dY A^T` from `dy (ng, O, OH, OW)`.
#[inline(always)]
pub(super) fn output_transform_bwd<T: Elem>(g: &Geom, tl: &Tiles, dy: &[T], ng: usize, dm: &mut [T]) {
    let (o_n, p, tw) = (g.o, g.p(), tl.tw);
    let tg = ng * tl.t;
    let wq = 4 * tw;
    let (two, four, _, eight) = consts::<T>();
    let mut rows = vec![T::ZERO; 4 * wq];
    let mut r6 = vec![T::ZERO; 6 * wq];
    let mut ph = vec![T::ZERO; 4 * tw];
    for img in 0..ng {
        for o in 0..o_n {
            let yo = &dy[(img * o_n + o) * p..(img * o_n + o + 1) * p];
            for ti in 0..tl.th {
                for i in 0..4 {
                    load_output_row(yo, g, 4 * (tl.ti0 + ti) + i, &mut rows[i * wq..(i + 1) * wq]);
                }
                {
                    let_planes!(rows, 0, wq, wq => y0, y1, y2, y3);
                    let_planes!(mut r6, 0, wq, wq => a0, a1, a2, a3, a4, a5);
                    streams!(wq, [y0, y1, y2, y3] => [a0, a1, a2, a3, a4, a5], |v| a6(v, two, four, eight));
                }
                let t0 = img * tl.t + ti * tw;
                for a in 0..6 {
                    split4(&r6[a * wq..(a + 1) * wq], &mut ph, tw);
                    {
                        let_planes!(ph, 0, tw, tw => q0, q1, q2, q3);
                        let_planes!(mut dm, (a * 6 * o_n + o) * tg + t0, o_n * tg, tw => o0, o1, o2, o3, o4, o5);
                        streams!(tw, [q0, q1, q2, q3] => [o0, o1, o2, o3, o4, o5], |v| a6(v, two, four, eight));
                    }
                }
            }
        }
    }
}
