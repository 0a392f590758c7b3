//! The transforms of the Winograd convolutions whose tiles are 6x6:
//! F(4x4, 3x3) ([`super::f43`]) and F(3x3, 4x4) ([`super::f34`]). Both
//! interpolate at 0, ±1, ±2 and ∞ (Lavin & Gray), so they share `B^T`
//! (which depends only on the points) and everything but `A^T`, `G` and
//! the tile stride `m`, which the [`Alpha6`] impls give. Same layouts and
//! band handling as [`super::f23`]: `V[ξ][c][t]`, `M[ξ][o][t]`,
//! `U[ξ][o][c]` with 36 planes, `ξ = 6 a + b`.
//!
//! Tiles sit at stride `m`, so a tile row is first split into its `m`
//! phases (`ph[p][u] = row[m u + p]`): element `k` of tile `tj` is then
//! `ph[k % m][tj + k / m]`, and every transform loop runs over `tj` on
//! contiguous slices, which LLVM vectorises (under `simd::dispatch`); the
//! strided gathers are left to the short split and merge passes. On maps
//! with few tiles a row, the band forms run those loops over the tiles of
//! all tile rows of a band at once (see [`band_outputs`]).

use super::super::conv::Geom;
use super::super::gemm::{zeros, Elem};
use super::{add_padded_row, load_output_row, load_padded_row, Epilogue, Tiles};

/// What differs between the two 6x6-tile Winograd convolutions.
pub(super) trait Alpha6 {
    /// Outputs per tile side.
    const M: usize;
    /// Kernel side (`M + R - 1 = 6`).
    const R: usize;
    /// `G w` for one kernel column (`R` taps), in f64: its 1/6 and 1/24 are
    /// not exact in f32, and this runs once per step per layer.
    fn g(w: &[f64]) -> [f64; 6];
    /// `G^T u` (the adjoint of [`Alpha6::g`]) into `out` (`R` values).
    fn gt(u: [f64; 6], out: &mut [f64]);
    /// `ph[p][u] = row[M u + p]` for `u < len` (zero past the row's end).
    fn split<T: Elem>(row: &[T], ph: &mut [T], len: usize);
    /// `row[M u + p] = ph[p][u]` (the inverse of `split`) for the whole row.
    fn merge<T: Elem>(ph: &[T], len: usize, row: &mut [T]);
    /// `A^T`: the `M` planes `dst[db + i ds..][..n]` from the 6 planes
    /// `src[sb + k ss..][..n]`.
    fn at<T: Elem>(n: usize, src: &[T], sb: usize, ss: usize, dst: &mut [T], db: usize, ds: usize);
    /// `A` (the adjoint of `at`): 6 planes from `M`.
    fn a<T: Elem>(n: usize, src: &[T], sb: usize, ss: usize, dst: &mut [T], db: usize, ds: usize);
}

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

fn consts<T: Elem>() -> (T, T, T) {
    (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(5.0))
}

/// Where tap `k` of tile `tj` sits in the phases of a row (`len` per
/// phase), less `tj`: `ph[k % M][tj + k / M]`.
#[inline(always)]
fn taps<K: Alpha6>(len: usize) -> [usize; 6] {
    let at = |k: usize| (k % K::M) * len + k / K::M;
    [at(0), at(1), at(2), at(3), at(4), at(5)]
}

/// `U[ξ][o][c]` (36, O, C) from `w (O, C, R, R)`.
pub(super) fn filter_transform<K: Alpha6, T: Elem>(g: &Geom, w: &[T]) -> Vec<T> {
    let (o_n, c_n, r) = (g.o, g.c, K::R);
    let mut u = zeros::<T>(36 * o_n * c_n);
    let mut cols = [[0.0f64; 6]; 4];
    let mut tap = [0.0f64; 4];
    for o in 0..o_n {
        for c in 0..c_n {
            let k = &w[(o * c_n + c) * r * r..(o * c_n + c + 1) * r * r];
            for j in 0..r {
                for i in 0..r {
                    tap[i] = k[i * r + j].to_f64();
                }
                cols[j] = K::g(&tap[..r]);
            }
            for a in 0..6 {
                for j in 0..r {
                    tap[j] = cols[j][a];
                }
                let row = K::g(&tap[..r]);
                for b in 0..6 {
                    u[((a * 6 + b) * o_n + o) * c_n + c] = T::from_f64(row[b]);
                }
            }
        }
    }
    u
}

/// `dw (O, C, R, R)` from `dU[ξ][o][c]`: `G^T dU G`.
pub(super) fn filter_transform_bwd<K: Alpha6, T: Elem>(g: &Geom, du: &[T]) -> Vec<T> {
    let (o_n, c_n, r) = (g.o, g.c, K::R);
    let mut dw = zeros::<T>(o_n * c_n * r * r);
    let mut cols = [[0.0f64; 4]; 6];
    let mut out = [0.0f64; 4];
    for o in 0..o_n {
        for c in 0..c_n {
            let at = |a: usize, b: usize| du[((a * 6 + b) * o_n + o) * c_n + c].to_f64();
            for (b, col) in cols.iter_mut().enumerate() {
                K::gt([at(0, b), at(1, b), at(2, b), at(3, b), at(4, b), at(5, b)], col);
            }
            let k = &mut dw[(o * c_n + c) * r * r..(o * c_n + c + 1) * r * r];
            for i in 0..r {
                K::gt(std::array::from_fn(|b| cols[b][i]), &mut out);
                for j in 0..r {
                    k[i * r + j] = T::from_f64(out[j]);
                }
            }
        }
    }
    dw
}

// Two forms of each tile transform, picked by the tiles per tile row `tw`:
// `*_rows` runs its column passes along one tile row at a time (`tw`
// long), `*_band` along all tile rows of the band at once, which pays for
// copies (and, for the input, a spare tile per row) but keeps 16-lane
// vectors full when `tw` is small. Measured with `wino_ab` (F(4x4, 3x3),
// one thread, 64 images, best of 4-6 interleaved rounds, ms fwd / bwd):
// 48x48 (tw 12): rows 34.9 / 72.4, band outputs 36.2 / 72.8, all band
// 40.5 / 79.5; 24x24 (tw 6): rows 22.2 / 42.0, band outputs 19.8 / 41.2,
// all band 17.1 / 38.6; 12x12 (tw 3, 16 images a group): rows 18.2 / 33.2,
// band outputs 15.4 / 31.0, all band 16.5 / 34.5. F(3x3, 4x4) at 24x24
// (tw 8), rows against all band: 48 -> 64 channels 23.8 / 49.1 against
// 19.5 / 42.7, 64 -> 64 29.2 / 61.6 against 25.1 / 56.6.

/// Whether the output transforms run band-wide.
fn band_outputs(tl: &Tiles) -> bool {
    tl.tw <= 8
}

/// Whether the input transforms run band-wide (below 5 tiles a row, the
/// spare tile costs more than the longer vectors gain).
fn band_inputs(tl: &Tiles) -> bool {
    (5..=8).contains(&tl.tw)
}

/// `V[ξ][c][t]` (36, C, tg) for `ng` images `x (ng, C, H, W)`.
#[inline(always)]
pub(super) fn input_transform<K: Alpha6, T: Elem>(g: &Geom, tl: &Tiles, x: &[T], ng: usize, v: &mut [T]) {
    if band_inputs(tl) {
        input_transform_band::<K, T>(g, tl, x, ng, v)
    } else {
        input_transform_rows::<K, T>(g, tl, x, ng, v)
    }
}

/// Scatter-adds `B dV B^T` of every tile into `dx (ng, C, H, W)`.
#[inline(always)]
pub(super) fn input_transform_bwd<K: Alpha6, T: Elem>(g: &Geom, tl: &Tiles, dv: &[T], ng: usize, dx: &mut [T]) {
    if band_inputs(tl) {
        input_transform_bwd_band::<K, T>(g, tl, dv, ng, dx)
    } else {
        input_transform_bwd_rows::<K, T>(g, tl, dv, ng, dx)
    }
}

/// `y (ng, O, OH, OW)` from `M[ξ][o][t]`, through `epi`.
#[inline(always)]
pub(super) fn output_transform<K: Alpha6, T: Elem>(g: &Geom, tl: &Tiles, mm: &[T], ng: usize, y: &mut [T], epi: &Epilogue<T>) {
    if band_outputs(tl) {
        output_transform_band::<K, T>(g, tl, mm, ng, y, epi)
    } else {
        output_transform_rows::<K, T>(g, tl, mm, ng, y, epi)
    }
}

/// `dM[ξ][o][t] = A dY A^T` from `dy (ng, O, OH, OW)`.
#[inline(always)]
pub(super) fn output_transform_bwd<K: Alpha6, T: Elem>(g: &Geom, tl: &Tiles, dy: &[T], ng: usize, dm: &mut [T]) {
    if band_outputs(tl) {
        output_transform_bwd_band::<K, T>(g, tl, dy, ng, dm)
    } else {
        output_transform_bwd_rows::<K, T>(g, tl, dy, ng, dm)
    }
}

/// `V[ξ][c][t]` (36, C, tg) for `ng` images `x (ng, C, H, W)`: the row
/// transform on six whole padded rows, then the column transform of each
/// tile writes the 36 planes contiguously along a tile row.
#[inline(always)]
fn input_transform_rows<K: Alpha6, T: Elem>(g: &Geom, tl: &Tiles, x: &[T], ng: usize, v: &mut [T]) {
    let (c_n, tw, m) = (g.c, tl.tw, K::M);
    let tg = ng * tl.t;
    let wp = m * tw + K::R - 1;
    let len = tw + 1;
    let tap = taps::<K>(len);
    let (pt, pl) = (g.pad[0] as isize, g.pad[2]);
    let (two, four, five) = consts::<T>();
    let mut rows = vec![T::ZERO; 6 * wp];
    let mut tmp = vec![T::ZERO; 6 * wp];
    let mut ph = vec![T::ZERO; m * len];
    for img in 0..ng {
        for c in 0..c_n {
            let xc = &x[(img * c_n + c) * g.h * g.w..(img * c_n + c + 1) * g.h * g.w];
            for ti in 0..tl.th {
                let r0 = (m * (tl.ti0 + ti)) as isize - pt;
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
                    K::split(&tmp[a * wp..(a + 1) * wp], &mut ph, len);
                    let (d0, d1, d2) = (&ph[tap[0]..][..tw], &ph[tap[1]..][..tw], &ph[tap[2]..][..tw]);
                    let (d3, d4, d5) = (&ph[tap[3]..][..tw], &ph[tap[4]..][..tw], &ph[tap[5]..][..tw]);
                    let_planes!(mut v, (a * 6 * c_n + c) * tg + t0, c_n * tg, tw => o0, o1, o2, o3, o4, o5);
                    streams!(tw, [d0, d1, d2, d3, d4, d5] => [o0, o1, o2, o3, o4, o5], |d| bt(d, two, four, five));
                }
            }
        }
    }
}

/// Scatter-adds `B dV B^T` of every tile into `dx (ng, C, H, W)`.
#[inline(always)]
fn input_transform_bwd_rows<K: Alpha6, T: Elem>(g: &Geom, tl: &Tiles, dv: &[T], ng: usize, dx: &mut [T]) {
    let (c_n, tw, m) = (g.c, tl.tw, K::M);
    let tg = ng * tl.t;
    let wp = m * tw + K::R - 1;
    let len = tw + 1;
    let (pt, pl) = (g.pad[0] as isize, g.pad[2]);
    let (two, four, five) = consts::<T>();
    let mut e = vec![T::ZERO; 6 * wp];
    let mut rows = vec![T::ZERO; 6 * wp];
    let mut o6 = vec![T::ZERO; 6 * tw];
    let mut ph = vec![T::ZERO; m * len];
    let lo = pl.min(wp);
    let hi = (pl + g.w).min(wp);
    for img in 0..ng {
        for c in 0..c_n {
            let xc = &mut dx[(img * c_n + c) * g.h * g.w..(img * c_n + c + 1) * g.h * g.w];
            for ti in 0..tl.th {
                let r0 = (m * (tl.ti0 + ti)) as isize - pt;
                let t0 = img * tl.t + ti * tw;
                // column adjoint on each tile row a of dV; neighbouring tiles overlap by R - 1
                for a in 0..6 {
                    {
                        let_planes!(dv, (a * 6 * c_n + c) * tg + t0, c_n * tg, tw => d0, d1, d2, d3, d4, d5);
                        let_planes!(mut o6, 0, tw, tw => o0, o1, o2, o3, o4, o5);
                        streams!(tw, [d0, d1, d2, d3, d4, d5] => [o0, o1, o2, o3, o4, o5], |d| b6(d, two, four, five));
                    }
                    // phase p holds taps p (at tj) and p + M (at tj + 1)
                    for p in 0..m {
                        let dst = &mut ph[p * len..(p + 1) * len];
                        dst[..tw].copy_from_slice(&o6[p * tw..(p + 1) * tw]);
                        dst[tw] = T::ZERO;
                        if p + m < 6 {
                            dst[1..].iter_mut().zip(&o6[(p + m) * tw..(p + m + 1) * tw]).for_each(|(d, &s)| *d += s);
                        }
                    }
                    K::merge(&ph, len, &mut e[a * wp..(a + 1) * wp]);
                }
                if hi <= lo {
                    continue;
                }
                add_row_adjoint(g, &e, wp, (lo, hi), &mut rows, xc, r0, pl);
            }
        }
    }
}

/// The row adjoint of one tile row, shared by both forms of
/// `input_transform_bwd`: padded input row `r0 + k` of `xc` gets
/// `(B e)[k]`, where `e`'s six rows sit `stride` apart and columns
/// `lo..hi` of them fall inside the image; `rows` is scratch for six
/// padded rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn add_row_adjoint<T: Elem>(g: &Geom, e: &[T], stride: usize, (lo, hi): (usize, usize), rows: &mut [T], xc: &mut [T], r0: isize, pl: usize) {
    let wp = rows.len() / 6;
    let (two, four, five) = consts::<T>();
    {
        let_planes!(e, lo, stride, hi - lo => e0, e1, e2, e3, e4, e5);
        let_planes!(mut rows, lo, wp, hi - lo => q0, q1, q2, q3, q4, q5);
        streams!(hi - lo, [e0, e1, e2, e3, e4, e5] => [q0, q1, q2, q3, q4, q5], |d| b6(d, two, four, five));
    }
    for k in 0..6 {
        add_padded_row(xc, g, r0 + k as isize, pl, &rows[k * wp..(k + 1) * wp]);
    }
}

/// `y (ng, O, OH, OW)` from `M[ξ][o][t]`, through `epi`.
#[inline(always)]
fn output_transform_rows<K: Alpha6, T: Elem>(g: &Geom, tl: &Tiles, mm: &[T], ng: usize, y: &mut [T], epi: &Epilogue<T>) {
    let (o_n, p, tw, m) = (g.o, g.p(), tl.tw, K::M);
    let tg = ng * tl.t;
    let mut s = vec![T::ZERO; m * 6 * tw]; // s[i][b][tj]
    let mut z = vec![T::ZERO; m * tw]; // z[j][tj]: output column m tj + j
    let mut yr = vec![T::ZERO; m * tw];
    for img in 0..ng {
        for o in 0..o_n {
            let yo = &mut y[(img * o_n + o) * p..(img * o_n + o + 1) * p];
            for ti in 0..tl.th {
                let t0 = img * tl.t + ti * tw;
                for b in 0..6 {
                    K::at(tw, mm, (b * o_n + o) * tg + t0, 6 * o_n * tg, &mut s, b * tw, 6 * tw);
                }
                for i in 0..m {
                    let oh = m * (tl.ti0 + ti) + i;
                    if oh >= g.oh {
                        break;
                    }
                    K::at(tw, &s, i * 6 * tw, tw, &mut z, 0, tw);
                    K::merge(&z, tw, &mut yr);
                    epi.write(o, &yr[..g.ow], &mut yo[oh * g.ow..(oh + 1) * g.ow]);
                }
            }
        }
    }
}

/// `dM[ξ][o][t] = A dY A^T` from `dy (ng, O, OH, OW)`.
#[inline(always)]
fn output_transform_bwd_rows<K: Alpha6, T: Elem>(g: &Geom, tl: &Tiles, dy: &[T], ng: usize, dm: &mut [T]) {
    let (o_n, p, tw, m) = (g.o, g.p(), tl.tw, K::M);
    let tg = ng * tl.t;
    let wq = m * tw;
    let mut rows = vec![T::ZERO; m * wq];
    let mut r6 = vec![T::ZERO; 6 * wq];
    let mut ph = vec![T::ZERO; m * tw];
    for img in 0..ng {
        for o in 0..o_n {
            let yo = &dy[(img * o_n + o) * p..(img * o_n + o + 1) * p];
            for ti in 0..tl.th {
                for i in 0..m {
                    load_output_row(yo, g, m * (tl.ti0 + ti) + i, &mut rows[i * wq..(i + 1) * wq]);
                }
                K::a(wq, &rows, 0, wq, &mut r6, 0, wq);
                let t0 = img * tl.t + ti * tw;
                for a in 0..6 {
                    K::split(&r6[a * wq..(a + 1) * wq], &mut ph, tw);
                    K::a(tw, &ph, 0, tw, dm, (a * 6 * o_n + o) * tg + t0, o_n * tg);
                }
            }
        }
    }
}

/// `V[ξ][c][t]` (36, C, tg) for `ng` images `x (ng, C, H, W)`, one channel
/// at a time over all `rows = ng * th` tile rows of the band: the row
/// transform on each tile row's six padded rows, then the column transform
/// on the phases of all the rows at once. Each tile row is `q = tw + 1`
/// tiles long there (the spare one is dropped when copying into `V`), so
/// the column transform runs over `rows * q` values instead of `tw`, which
/// is 12, 6 or 3 at 48x48, 24x24 and 12x12: too short for 16-lane vectors.
#[inline(always)]
fn input_transform_band<K: Alpha6, T: Elem>(g: &Geom, tl: &Tiles, x: &[T], ng: usize, v: &mut [T]) {
    let (c_n, th, tw, m, q) = (g.c, tl.th, tl.tw, K::M, tl.q);
    let (rows, tg) = (ng * th, ng * tl.t);
    let wpp = m * q;
    let hp = m * th + K::R - 1;
    let n = rows * q;
    let tap = taps::<K>(n + 1);
    let (pt, pl) = (g.pad[0] as isize, g.pad[2]);
    let r_first = (m * tl.ti0) as isize - pt;
    let (two, four, five) = consts::<T>();
    let mut xp = vec![T::ZERO; hp * wpp];
    let mut tmp = vec![T::ZERO; 6 * rows * wpp];
    let mut ph = vec![T::ZERO; m * (n + 1)];
    let mut out = vec![T::ZERO; 6 * n];
    for c in 0..c_n {
        for img in 0..ng {
            let xc = &x[(img * c_n + c) * g.h * g.w..(img * c_n + c + 1) * g.h * g.w];
            for rr in 0..hp {
                load_padded_row(xc, g, r_first + rr as isize, pl, &mut xp[rr * wpp..(rr + 1) * wpp]);
            }
            for ti in 0..th {
                let row = img * th + ti;
                let_planes!(xp, m * ti * wpp, wpp, wpp => d0, d1, d2, d3, d4, d5);
                let_planes!(mut tmp, row * wpp, rows * wpp, wpp => t0, t1, t2, t3, t4, t5);
                streams!(wpp, [d0, d1, d2, d3, d4, d5] => [t0, t1, t2, t3, t4, t5], |d| bt(d, two, four, five));
            }
        }
        for a in 0..6 {
            // the phases run on across rows, so one more value at the end
            // keeps the spare tile of the last row in bounds
            K::split(&tmp[a * rows * wpp..(a + 1) * rows * wpp], &mut ph, n + 1);
            {
                let (d0, d1, d2) = (&ph[tap[0]..][..n], &ph[tap[1]..][..n], &ph[tap[2]..][..n]);
                let (d3, d4, d5) = (&ph[tap[3]..][..n], &ph[tap[4]..][..n], &ph[tap[5]..][..n]);
                let_planes!(mut out, 0, n, n => o0, o1, o2, o3, o4, o5);
                streams!(n, [d0, d1, d2, d3, d4, d5] => [o0, o1, o2, o3, o4, o5], |d| bt(d, two, four, five));
            }
            for b in 0..6 {
                let base = ((a * 6 + b) * c_n + c) * tg;
                for row in 0..rows {
                    v[base + row * tw..base + (row + 1) * tw].copy_from_slice(&out[b * n + row * q..][..tw]);
                }
            }
        }
    }
}

/// Scatter-adds `B dV B^T` of every tile into `dx (ng, C, H, W)`: the
/// adjoint of [`input_transform_band`], with the same long column passes (over
/// `rows * q` values, a zero spare tile ending each row).
#[inline(always)]
fn input_transform_bwd_band<K: Alpha6, T: Elem>(g: &Geom, tl: &Tiles, dv: &[T], ng: usize, dx: &mut [T]) {
    let (c_n, th, tw, m, q) = (g.c, tl.th, tl.tw, K::M, tl.q);
    let (rows, tg) = (ng * th, ng * tl.t);
    let wpp = m * q;
    let n = rows * q;
    let (pt, pl) = (g.pad[0] as isize, g.pad[2]);
    let (two, four, five) = consts::<T>();
    let mut dq = vec![T::ZERO; 6 * n];
    // o6[k][1 + u]: tap k of tile u; the leading zero stands for tile -1
    let mut o6 = vec![T::ZERO; 6 * (n + 1)];
    let mut ph = vec![T::ZERO; m * n];
    let mut e = vec![T::ZERO; 6 * rows * wpp];
    let mut rows6 = vec![T::ZERO; 6 * wpp];
    let lo = pl.min(wpp);
    let hi = (pl + g.w).min(wpp);
    for c in 0..c_n {
        // column adjoint on each tile row a of dV
        for a in 0..6 {
            for b in 0..6 {
                let src = &dv[((a * 6 + b) * c_n + c) * tg..][..tg];
                let d = &mut dq[b * n..(b + 1) * n];
                for row in 0..rows {
                    d[row * q..row * q + tw].copy_from_slice(&src[row * tw..(row + 1) * tw]);
                    d[row * q + tw..(row + 1) * q].fill(T::ZERO);
                }
            }
            {
                let_planes!(dq, 0, n, n => d0, d1, d2, d3, d4, d5);
                let_planes!(mut o6, 1, n + 1, n => o0, o1, o2, o3, o4, o5);
                streams!(n, [d0, d1, d2, d3, d4, d5] => [o0, o1, o2, o3, o4, o5], |d| b6(d, two, four, five));
            }
            // phase p of tile u: its tap p plus tap p + M of tile u - 1 (neighbouring tiles overlap by R - 1)
            for p in 0..m {
                let dst = &mut ph[p * n..(p + 1) * n];
                dst.copy_from_slice(&o6[p * (n + 1) + 1..][..n]);
                if p + m < 6 {
                    dst.iter_mut().zip(&o6[(p + m) * (n + 1)..][..n]).for_each(|(d, &s)| *d += s);
                }
            }
            K::merge(&ph, n, &mut e[a * rows * wpp..(a + 1) * rows * wpp]);
        }
        if hi <= lo {
            continue;
        }
        for img in 0..ng {
            let xc = &mut dx[(img * c_n + c) * g.h * g.w..(img * c_n + c + 1) * g.h * g.w];
            for ti in 0..th {
                let r0 = (m * (tl.ti0 + ti)) as isize - pt;
                add_row_adjoint(g, &e[(img * th + ti) * wpp..], rows * wpp, (lo, hi), &mut rows6, xc, r0, pl);
            }
        }
    }
}

/// `y (ng, O, OH, OW)` from `M[ξ][o][t]`, through `epi`: both `A^T`
/// passes run over all `tg` tiles of the band at once (tiles are
/// contiguous in `M`), then one merge gives output row `i` of every tile row.
#[inline(always)]
fn output_transform_band<K: Alpha6, T: Elem>(g: &Geom, tl: &Tiles, mm: &[T], ng: usize, y: &mut [T], epi: &Epilogue<T>) {
    let (o_n, p, th, tw, m) = (g.o, g.p(), tl.th, tl.tw, K::M);
    let tg = ng * tl.t;
    let wq = m * tw;
    let mut s = vec![T::ZERO; m * 6 * tg]; // s[i][b][t]
    let mut z = vec![T::ZERO; m * tg]; // z[j][t]: output column m tj + j
    let mut yr = vec![T::ZERO; m * tg]; // output row i of every tile row, wq apart
    for o in 0..o_n {
        for b in 0..6 {
            K::at(tg, mm, (b * o_n + o) * tg, 6 * o_n * tg, &mut s, b * tg, 6 * tg);
        }
        for i in 0..m {
            K::at(tg, &s, i * 6 * tg, tg, &mut z, 0, tg);
            K::merge(&z, tg, &mut yr);
            for img in 0..ng {
                let yo = &mut y[(img * o_n + o) * p..(img * o_n + o + 1) * p];
                for ti in 0..th {
                    let oh = m * (tl.ti0 + ti) + i;
                    if oh >= g.oh {
                        break;
                    }
                    let row = img * th + ti;
                    epi.write(o, &yr[row * wq..][..g.ow], &mut yo[oh * g.ow..(oh + 1) * g.ow]);
                }
            }
        }
    }
}

/// `dM[ξ][o][t] = A dY A^T` from `dy (ng, O, OH, OW)`: the adjoint of
/// [`output_transform_band`], its `A` passes over all tiles of the band at once.
#[inline(always)]
fn output_transform_bwd_band<K: Alpha6, T: Elem>(g: &Geom, tl: &Tiles, dy: &[T], ng: usize, dm: &mut [T]) {
    let (o_n, p, th, tw, m) = (g.o, g.p(), tl.th, tl.tw, K::M);
    let tg = ng * tl.t;
    let (rows, wq) = (ng * th, m * tw);
    let n = rows * wq;
    let mut dz = vec![T::ZERO; m * n]; // dz[i][row][wq]: dY row m ti + i of each tile row
    let mut r6 = vec![T::ZERO; 6 * n];
    let mut ph = vec![T::ZERO; m * tg];
    for o in 0..o_n {
        for img in 0..ng {
            let yo = &dy[(img * o_n + o) * p..(img * o_n + o + 1) * p];
            for ti in 0..th {
                let row = img * th + ti;
                for i in 0..m {
                    load_output_row(yo, g, m * (tl.ti0 + ti) + i, &mut dz[(i * rows + row) * wq..(i * rows + row + 1) * wq]);
                }
            }
        }
        K::a(n, &dz, 0, n, &mut r6, 0, n);
        for a in 0..6 {
            K::split(&r6[a * n..(a + 1) * n], &mut ph, tg);
            K::a(tg, &ph, 0, tg, dm, (a * 6 * o_n + o) * tg, o_n * tg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::f34::F34;
    use super::super::f43::F43;
    use super::super::{transform, Tiles};
    use super::*;

    fn fill(len: usize, seed: usize) -> Vec<f64> {
        (0..len).map(|i| ((i * 7919 + seed * 104_729) % 2003) as f64 / 1001.0 - 1.0).collect()
    }

    /// Both forms of all four transforms, on every band of every group,
    /// give the same bits (the same sums in the same order).
    fn band_and_rows_agree<K: Alpha6>(m: usize) {
        let r = K::R;
        // (n, c, h, w, o, pad): odd sizes, asymmetric padding, several images a group, bands
        let cases = [
            (3, 2, 23, 21, 2, [1, 1, 1, 1]),
            (2, 3, 24, 24, 3, [1, 1, 1, 1]),
            (5, 2, 12, 12, 4, [1, 1, 1, 1]),
            (2, 1, 7, 30, 2, [0, 2, 1, 0]),
            (1, 2, 60, 19, 1, [2, 0, 0, 3]),
        ];
        for (i, &(n, c, h, w, o, pad)) in cases.iter().enumerate() {
            let g = Geom::new(&[n, c, h, w], &[o, c, r, r], pad, 1).unwrap();
            let tl = Tiles::new(&g, transform(m, r), true);
            let (x, chw, op) = (fill(n * g.chw(), i), g.chw(), o * g.p());
            let dy = fill(n * op, i + 7);
            for gi in 0..tl.groups {
                let (n0, ng) = tl.images(&g, gi);
                let (xg, dyg) = (&x[n0 * chw..(n0 + ng) * chw], &dy[n0 * op..(n0 + ng) * op]);
                for b in 0..tl.bands {
                    let bl = tl.band(b);
                    let tg = ng * bl.t;
                    let ctx = format!("F({m}, {r}) case {i} group {gi} band {b} (tw {})", bl.tw);
                    let (mut v1, mut v2) = (vec![0.0; 36 * c * tg], vec![0.0; 36 * c * tg]);
                    input_transform_rows::<K, f64>(&g, &bl, xg, ng, &mut v1);
                    input_transform_band::<K, f64>(&g, &bl, xg, ng, &mut v2);
                    assert_eq!(v1, v2, "{ctx}: input");
                    let (mut dx1, mut dx2) = (vec![0.0; ng * chw], vec![0.0; ng * chw]);
                    let dv = fill(36 * c * tg, i + 3);
                    input_transform_bwd_rows::<K, f64>(&g, &bl, &dv, ng, &mut dx1);
                    input_transform_bwd_band::<K, f64>(&g, &bl, &dv, ng, &mut dx2);
                    assert_eq!(dx1, dx2, "{ctx}: input bwd");
                    let mm = fill(36 * o * tg, i + 5);
                    let (bias, epi) = (fill(o, i), Epilogue::NONE);
                    for epi in [epi, Epilogue { bias: Some(&bias), relu: true }] {
                        let (mut y1, mut y2) = (vec![0.0; ng * op], vec![0.0; ng * op]);
                        output_transform_rows::<K, f64>(&g, &bl, &mm, ng, &mut y1, &epi);
                        output_transform_band::<K, f64>(&g, &bl, &mm, ng, &mut y2, &epi);
                        assert_eq!(y1, y2, "{ctx}: output");
                    }
                    let (mut dm1, mut dm2) = (vec![0.0; 36 * o * tg], vec![0.0; 36 * o * tg]);
                    output_transform_bwd_rows::<K, f64>(&g, &bl, dyg, ng, &mut dm1);
                    output_transform_bwd_band::<K, f64>(&g, &bl, dyg, ng, &mut dm2);
                    assert_eq!(dm1, dm2, "{ctx}: output bwd");
                }
            }
        }
    }

    #[test]
    fn band_and_row_transforms_agree_f43() {
        band_and_rows_agree::<F43>(4);
    }

    #[test]
    fn band_and_row_transforms_agree_f34() {
        band_and_rows_agree::<F34>(3);
    }
}
