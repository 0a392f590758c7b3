//! The transforms of the Winograd convolutions with hand-written 6x6 and
//! 7x7 tiles: F(4x4, 3x3) ([`super::f43`]) and F(3x3, 4x4)
//! ([`super::f34`]), which interpolate at 0, ±1, ±2 and ∞ (Lavin & Gray)
//! and so share their 6x6 `B^T` (it depends only on the points), and
//! F(4x4, 4x4) ([`super::f44`]) with 7x7 tiles. The [`Alpha`] impls give
//! `A^T`, `B^T`, `G` and the tile stride `m`; everything else is here. Same
//! layouts and band handling as [`super::f23`]: `V[ξ][c][t]`, `M[ξ][o][t]`,
//! `U[ξ][o][c]` with `α²` planes, `ξ = α a + b`, the tiles of a group in
//! `Tiles::row_start` order, so that the column passes of the input
//! transforms can run over one tile row of all the group's images at once.
//!
//! Tiles sit at stride `m`, so a tile row is first split into its `m`
//! phases (`ph[p][u] = row[m u + p]`): element `k` of tile `tj` is then
//! `ph[k % m][tj + k / m]` (`α <= 2 m`, so `k / m` is 0 or 1), and every
//! transform loop runs over `tj` on contiguous slices, which LLVM
//! vectorises (under `simd::dispatch`); the strided gathers are left to
//! the short split and merge passes. On maps with few tiles a row, the band
//! forms run those loops over the tiles of all tile rows of a band at once
//! (see [`band_outputs`]).

use super::super::conv::Geom;
use super::super::gemm::{zeros, Elem};
use super::{load_output_row, padded_row_inside, Epilogue, Tiles};

/// The largest tile side `α` of the hand-written transforms.
pub(super) const MAX_A: usize = 7;

/// The `α` input streams of one transform step; those past `α` are empty.
pub(super) type Ins<'a, T> = [&'a [T]; MAX_A];

/// The `α` output streams of one transform step; those past `α` are empty.
pub(super) type Outs<'a, T> = [&'a mut [T]; MAX_A];

/// What differs between the hand-written Winograd convolutions with 6x6
/// and 7x7 tiles. The methods that take `n` run over `n` contiguous
/// values of each of their streams or planes (plane `k` of `src` being
/// `src[sb + k ss..][..n]`).
pub(super) trait Alpha {
    /// Outputs per tile side.
    const M: usize;
    /// Kernel side.
    const R: usize;
    /// Tile side `α = M + R - 1`, at most [`MAX_A`].
    const A: usize;
    /// `G w` (`α` values into `out`) for one kernel column `w` (`R` taps),
    /// in f64: its fractions are not exact in f32, and this runs once per
    /// step per layer.
    fn g(w: &[f64], out: &mut [f64]);
    /// `G^T u` (the adjoint of [`Alpha::g`]): `R` values into `out`.
    fn gt(u: &[f64], out: &mut [f64]);
    /// `ph[p][u] = row[M u + p]` for `u < len` (zero past the row's end).
    fn split<T: Elem>(row: &[T], ph: &mut [T], len: usize);
    /// `row[M u + p] = ph[p][u]` (the inverse of `split`) for the whole row.
    fn merge<T: Elem>(ph: &[T], len: usize, row: &mut [T]);
    /// `A^T`: the `M` planes `dst[db + i ds..][..n]` from the `α` planes of `src`.
    fn at<T: Elem>(n: usize, src: &[T], sb: usize, ss: usize, dst: &mut [T], db: usize, ds: usize);
    /// `A` (the adjoint of `at`): `α` planes from `M`.
    fn a<T: Elem>(n: usize, src: &[T], sb: usize, ss: usize, dst: &mut [T], db: usize, ds: usize);
    // `B^T` depends only on the points: the defaults are the 6x6 tiles'
    // (0, ±1, ±2, ∞), which F(4x4, 3x3) and F(3x3, 4x4) share.
    /// `B^T`: the `α` planes `dst[db + k ds..][..n]` from the streams `d[..α]`.
    #[inline(always)]
    fn bt<T: Elem>(n: usize, d: Ins<T>, dst: &mut [T], db: usize, ds: usize) {
        debug_assert_eq!(Self::A, 6);
        let (two, four, five) = consts6::<T>();
        let [d0, d1, d2, d3, d4, d5, _] = d;
        let_planes!(mut dst, db, ds, n => o0, o1, o2, o3, o4, o5);
        streams!(n, [d0, d1, d2, d3, d4, d5] => [o0, o1, o2, o3, o4, o5], |d| bt6(d, two, four, five));
    }
    /// `B` (the adjoint of `bt`): `α` planes from `α` planes.
    #[inline(always)]
    fn b<T: Elem>(n: usize, src: &[T], sb: usize, ss: usize, dst: &mut [T], db: usize, ds: usize) {
        debug_assert_eq!(Self::A, 6);
        let (two, four, five) = consts6::<T>();
        let_planes!(src, sb, ss, n => d0, d1, d2, d3, d4, d5);
        let_planes!(mut dst, db, ds, n => o0, o1, o2, o3, o4, o5);
        streams!(n, [d0, d1, d2, d3, d4, d5] => [o0, o1, o2, o3, o4, o5], |d| b6(d, two, four, five));
    }
    /// `B` of the `α` planes of `src`, added into the streams `q[..α]`.
    #[inline(always)]
    fn b_add<T: Elem>(n: usize, src: &[T], sb: usize, ss: usize, q: Outs<T>) {
        debug_assert_eq!(Self::A, 6);
        let (two, four, five) = consts6::<T>();
        let_planes!(src, sb, ss, n => e0, e1, e2, e3, e4, e5);
        let [q0, q1, q2, q3, q4, q5, _] = q;
        streams!(n, [e0, e1, e2, e3, e4, e5] += [q0, q1, q2, q3, q4, q5], |d| b6(d, two, four, five));
    }
}

/// `B^T d` for one column of 6 values (points 0, ±1, ±2, ∞).
#[inline(always)]
fn bt6<T: Elem>(d: [T; 6], two: T, four: T, five: T) -> [T; 6] {
    let p = d[4] - four * d[2];
    let q = d[3] - four * d[1];
    let r = d[4] - d[2];
    let s = two * (d[3] - d[1]);
    [four * d[0] - five * d[2] + d[4], p + q, p - q, r + s, r - s, four * d[1] - five * d[3] + d[5]]
}

/// `B e` (the adjoint of [`bt6`]).
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

fn consts6<T: Elem>() -> (T, T, T) {
    (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(5.0))
}

/// The input streams `f(k)` for `k < al`, the rest empty.
#[inline(always)]
fn streams_of<'a, T>(al: usize, f: impl Fn(usize) -> &'a [T]) -> Ins<'a, T> {
    let mut d: Ins<T> = [&[]; MAX_A];
    for (k, d) in d[..al].iter_mut().enumerate() {
        *d = f(k);
    }
    d
}

/// Where tap `k` of tile `tj` sits in the phases of a row (`len` per
/// phase), less `tj`: `ph[k % M][tj + k / M]`.
#[inline(always)]
fn taps<K: Alpha>(len: usize) -> [usize; MAX_A] {
    std::array::from_fn(|k| (k % K::M) * len + k / K::M)
}

/// `U[ξ][o][c]` (α², O, C) from `w (O, C, R, R)`.
pub(super) fn filter_transform<K: Alpha, T: Elem>(g: &Geom, w: &[T]) -> Vec<T> {
    let (o_n, c_n, r, al) = (g.o, g.c, K::R, K::A);
    let mut u = zeros::<T>(al * al * o_n * c_n);
    let mut cols = [[0.0f64; MAX_A]; MAX_A];
    let (mut tap, mut row) = ([0.0f64; MAX_A], [0.0f64; MAX_A]);
    for o in 0..o_n {
        for c in 0..c_n {
            let k = &w[(o * c_n + c) * r * r..(o * c_n + c + 1) * r * r];
            for j in 0..r {
                for i in 0..r {
                    tap[i] = k[i * r + j].to_f64();
                }
                K::g(&tap[..r], &mut cols[j][..al]);
            }
            for a in 0..al {
                for j in 0..r {
                    tap[j] = cols[j][a];
                }
                K::g(&tap[..r], &mut row[..al]);
                for b in 0..al {
                    u[((a * al + b) * o_n + o) * c_n + c] = T::from_f64(row[b]);
                }
            }
        }
    }
    u
}

/// `dw (O, C, R, R)` from `dU[ξ][o][c]`: `G^T dU G`.
pub(super) fn filter_transform_bwd<K: Alpha, T: Elem>(g: &Geom, du: &[T]) -> Vec<T> {
    let (o_n, c_n, r, al) = (g.o, g.c, K::R, K::A);
    let mut dw = zeros::<T>(o_n * c_n * r * r);
    let mut cols = [[0.0f64; MAX_A]; MAX_A];
    let (mut u, mut out) = ([0.0f64; MAX_A], [0.0f64; MAX_A]);
    for o in 0..o_n {
        for c in 0..c_n {
            for (b, col) in cols[..al].iter_mut().enumerate() {
                for (a, u) in u[..al].iter_mut().enumerate() {
                    *u = du[((a * al + b) * o_n + o) * c_n + c].to_f64();
                }
                K::gt(&u[..al], &mut col[..r]);
            }
            let k = &mut dw[(o * c_n + c) * r * r..(o * c_n + c + 1) * r * r];
            for i in 0..r {
                for (b, u) in u[..al].iter_mut().enumerate() {
                    *u = cols[b][i];
                }
                K::gt(&u[..al], &mut out[..r]);
                for j in 0..r {
                    k[i * r + j] = T::from_f64(out[j]);
                }
            }
        }
    }
    dw
}

// The output transforms come in two forms, picked by the tiles per tile
// row `tw`: `*_rows` runs its column passes along one tile row at a time
// (`tw` long), `*_band` along all tile rows of the band at once, which pays
// for copies but keeps 16-lane vectors full when `tw` is small. Measured
// with `wino_ab` (F(4x4, 3x3), one thread, 64 images, best of 4-6
// interleaved rounds, ms fwd / bwd): 48x48 (tw 12): rows 34.9 / 72.4, band
// outputs 36.2 / 72.8; 24x24 (tw 6): rows 22.2 / 42.0, band outputs
// 19.8 / 41.2; 12x12 (tw 3, 16 images a group): rows 18.2 / 33.2, band
// outputs 15.4 / 31.0.
//
// The input transforms had a band form too, which won at 24x24 while the
// planes of `V` were 4 KB-aliased (see `Tiles::plane`). Without the
// aliasing the row form is faster at every size (2-core Xeon, best of 6
// alternating runs, ms fwd / bwd): F(4x4, 3x3) 64 -> 64 at 24x24 band
// 18.6 / 41.0, rows 17.5 / 36.5; F(3x3, 4x4) 64 -> 64 at 24x24 band
// 28.0 / 67.0, rows 23.2 / 56.3; at 12x12 band 10.1 / 19.3, rows 9.0 / 17.1.
// That band form carried a spare tile a row through its column passes and
// copied the tiles out; the group form (tiles ordered by tile row, then
// image) writes `V` in place and won where the band form lost
// (`transform_timing`, 64 images, one thread, best of 8 alternating runs,
// ms fwd / bwd): F(4x4, 3x3) 128 -> 128 at 12x12 rows 4.92 / 6.28, group
// 2.30 / 3.01; 64 -> 64 at 24x24 rows 4.84 / 7.16, group 3.92 / 4.35.

/// Whether the output transforms run band-wide.
fn band_outputs(tl: &Tiles) -> bool {
    tl.tw <= 8
}

/// `y (ng, O, OH, OW)` from `M[ξ][o][t]`, through `epi`.
#[inline(always)]
pub(super) fn output_transform<K: Alpha, T: Elem>(g: &Geom, tl: &Tiles, mm: &[T], ng: usize, y: &mut [T], epi: &Epilogue<T>) {
    if band_outputs(tl) {
        output_transform_band::<K, T>(g, tl, mm, ng, y, epi)
    } else {
        output_transform_rows::<K, T>(g, tl, mm, ng, y, epi)
    }
}

/// `dM[ξ][o][t] = A dY A^T` from `dy (ng, O, OH, OW)`.
#[inline(always)]
pub(super) fn output_transform_bwd<K: Alpha, T: Elem>(g: &Geom, tl: &Tiles, dy: &[T], ng: usize, dm: &mut [T]) {
    if band_outputs(tl) {
        output_transform_bwd_band::<K, T>(g, tl, dy, ng, dm)
    } else {
        output_transform_bwd_rows::<K, T>(g, tl, dy, ng, dm)
    }
}

/// Whether the input transform runs its column passes over tile rows of
/// all `ng` images at once (`*_group`) rather than over one tile row of
/// one image (`*_rows`). Both give the same bits; with one image they are
/// the same loops but for the tap gather, which the rows form vectorises
/// and the group form does not, so the group form pays only where it
/// fills vectors that the rows form would run 3-8 lanes wide. Its adjoint
/// has no gather (it scatters into rows either way), and its group form
/// won at every size measured (`transform_timing`, one thread, 64
/// images, input bwd ms rows / group: F(4x4, 3x3) 48x48 11.9-12.9 /
/// 10.0-11.5; F(4x4, 4x4) 48x48 20.0-21.7 / 16.8; F(3x3, 4x4) 48x48
/// 18.0-18.5 / 17.6-17.7), so [`input_transform_bwd`] always uses it.
fn group_inputs(tl: &Tiles, ng: usize) -> bool {
    ng > 1 && tl.tw <= 8
}

/// Tile rows per column pass of the group forms (`V` holds consecutive
/// tile rows of a group contiguously): the fewest that give at least 32
/// tiles, and a whole number of 16-lane vectors where that takes at most
/// 16 more rows, as the tail of a pass runs scalar. `transform_timing`,
/// F(4x4, 3x3), one thread, 64 images, input bwd ms at 48x48 (12 tiles a
/// row, one image a group) for 1 / 2 / 3 / 4 / 6 / 12 rows a pass:
/// 11.5-11.9 / 10.7-10.9 / 10.6-10.8 / 9.7-9.9 / 10.2-10.3 / 9.8-9.9; at
/// 24x24 (four images of 6 tiles) 4.4-4.5 with one row, 4.1-4.2 with two.
/// `FER_WINO_RP` overrides it (for A/B runs).
fn rows_per_pass(tl: &Tiles, ng: usize) -> usize {
    static RP: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let forced = *RP.get_or_init(|| std::env::var("FER_WINO_RP").ok().and_then(|v| v.parse().ok()).filter(|&r| r > 0));
    let row = (ng * tl.tw).max(1);
    let fewest = 32usize.div_ceil(row);
    let whole = (fewest..=fewest + 16).find(|r| r * row % 16 == 0).unwrap_or(fewest);
    forced.unwrap_or(whole).clamp(1, tl.th.max(1))
}

/// `V[ξ][c][t]` (α², C, tg) for `ng` images `x (ng, C, H, W)`.
#[inline(always)]
pub(super) fn input_transform<K: Alpha, T: Elem>(g: &Geom, tl: &Tiles, x: &[T], ng: usize, v: &mut [T]) {
    if group_inputs(tl, ng) {
        input_transform_group::<K, T>(g, tl, x, ng, v)
    } else {
        input_transform_rows::<K, T>(g, tl, x, ng, v)
    }
}

/// Scatter-adds `B dV B^T` of every tile into `dx (ng, C, H, W)`.
#[inline(always)]
pub(super) fn input_transform_bwd<K: Alpha, T: Elem>(g: &Geom, tl: &Tiles, dv: &[T], ng: usize, dx: &mut [T]) {
    input_transform_bwd_group::<K, T>(g, tl, dv, ng, dx)
}

/// [`input_transform`] a tile row of one image at a time: the row
/// transform on `α` whole padded rows, then the column transform of each
/// tile writes the `α²` planes contiguously along a tile row.
#[inline(always)]
fn input_transform_rows<K: Alpha, T: Elem>(g: &Geom, tl: &Tiles, x: &[T], ng: usize, v: &mut [T]) {
    let (c_n, tw, m, al) = (g.c, tl.tw, K::M, K::A);
    let tg = ng * tl.t;
    let pv = tl.plane(c_n);
    let wp = m * tw + K::R - 1;
    let len = tw + 1;
    let tap = taps::<K>(len);
    let (pt, pl) = (g.pad[0] as isize, g.pad[2]);
    // The image's columns of the padded rows; `tmp` stays zero outside them (see `bt_rows`).
    let (lo, hi) = (pl.min(wp), (pl + g.w).min(wp));
    let zero = vec![T::ZERO; g.w];
    let mut tmp = vec![T::ZERO; al * wp];
    let mut ph = vec![T::ZERO; m * len];
    for img in 0..ng {
        for c in 0..c_n {
            let xc = &x[(img * c_n + c) * g.h * g.w..(img * c_n + c + 1) * g.h * g.w];
            for ti in 0..tl.th {
                let r0 = (m * (tl.ti0 + ti)) as isize - pt;
                bt_rows::<K, T>(g, xc, &zero, r0, (lo, hi), pl, &mut tmp, wp);
                let t0 = tl.row_start(ng, img, ti);
                for a in 0..al {
                    K::split(&tmp[a * wp..(a + 1) * wp], &mut ph, len);
                    let d = streams_of(al, |k| &ph[tap[k]..][..tw]);
                    K::bt(tw, d, v, a * al * pv + c * tg + t0, pv);
                }
            }
        }
    }
}

/// [`input_transform_bwd`] a tile row of one image at a time: the
/// reference the tests hold the group form to.
#[cfg(test)]
fn input_transform_bwd_rows<K: Alpha, T: Elem>(g: &Geom, tl: &Tiles, dv: &[T], ng: usize, dx: &mut [T]) {
    let (c_n, tw, m, al) = (g.c, tl.tw, K::M, K::A);
    let tg = ng * tl.t;
    let pv = tl.plane(c_n);
    let wp = m * tw + K::R - 1;
    let len = tw + 1;
    let (pt, pl) = (g.pad[0] as isize, g.pad[2]);
    let mut e = vec![T::ZERO; al * wp];
    let mut rows = vec![T::ZERO; al * wp];
    let mut ot = vec![T::ZERO; al * tw];
    let mut ph = vec![T::ZERO; m * len];
    let lo = pl.min(wp);
    let hi = (pl + g.w).min(wp);
    for img in 0..ng {
        for c in 0..c_n {
            let xc = &mut dx[(img * c_n + c) * g.h * g.w..(img * c_n + c + 1) * g.h * g.w];
            for ti in 0..tl.th {
                let r0 = (m * (tl.ti0 + ti)) as isize - pt;
                let t0 = tl.row_start(ng, img, ti);
                // column adjoint on each tile row a of dV; neighbouring tiles overlap by R - 1
                for a in 0..al {
                    K::b(tw, dv, a * al * pv + c * tg + t0, pv, &mut ot, 0, tw);
                    // phase p holds taps p (at tj) and p + M (at tj + 1)
                    for p in 0..m {
                        let dst = &mut ph[p * len..(p + 1) * len];
                        dst[..tw].copy_from_slice(&ot[p * tw..(p + 1) * tw]);
                        dst[tw] = T::ZERO;
                        if p + m < al {
                            dst[1..].iter_mut().zip(&ot[(p + m) * tw..(p + m + 1) * tw]).for_each(|(d, &s)| *d += s);
                        }
                    }
                    K::merge(&ph, len, &mut e[a * wp..(a + 1) * wp]);
                }
                if hi <= lo {
                    continue;
                }
                add_row_adjoint::<K, T>(g, &e, wp, (lo, hi), &mut rows, xc, r0, pl);
            }
        }
    }
}

/// [`input_transform`] `rp` tile rows of all `ng` images at a time (see
/// [`rows_per_pass`]): the row transform of each image's `α` padded rows,
/// the taps of its tiles gathered into `tk[a][k][(ti * ng + img) * tw +
/// tj]`, then one column transform over the `rp * ng * tw` tiles, which
/// are contiguous in `V` (`Tiles::row_start`). On small maps this fills
/// vectors that the rows form runs 3-6 lanes wide.
#[inline(always)]
fn input_transform_group<K: Alpha, T: Elem>(g: &Geom, tl: &Tiles, x: &[T], ng: usize, v: &mut [T]) {
    let (c_n, tw, m, al) = (g.c, tl.tw, K::M, K::A);
    let tg = ng * tl.t;
    let pv = tl.plane(c_n);
    let wp = m * tw + K::R - 1;
    let rp = rows_per_pass(tl, ng);
    let np = rp * ng * tw;
    let (pt, pl) = (g.pad[0] as isize, g.pad[2]);
    // The image's columns of the padded rows; `tmp` stays zero outside them (see `bt_rows`).
    let (lo, hi) = (pl.min(wp), (pl + g.w).min(wp));
    let zero = vec![T::ZERO; g.w];
    let mut tmp = vec![T::ZERO; al * wp];
    let mut tk = vec![T::ZERO; al * al * np];
    for c in 0..c_n {
        for ti0 in (0..tl.th).step_by(rp) {
            let nr = rp.min(tl.th - ti0);
            for ti in ti0..ti0 + nr {
                let r0 = (m * (tl.ti0 + ti)) as isize - pt;
                for img in 0..ng {
                    let xc = &x[(img * c_n + c) * g.h * g.w..(img * c_n + c + 1) * g.h * g.w];
                    bt_rows::<K, T>(g, xc, &zero, r0, (lo, hi), pl, &mut tmp, wp);
                    let at = ((ti - ti0) * ng + img) * tw;
                    for a in 0..al {
                        gather_taps::<K, T>(&tmp[a * wp..(a + 1) * wp], tw, &mut tk[a * al * np + at..], np);
                    }
                }
            }
            let nt = nr * ng * tw;
            for a in 0..al {
                let d = streams_of(al, |k| &tk[(a * al + k) * np..][..nt]);
                K::bt(nt, d, v, a * al * pv + c * tg + tl.row_start(ng, 0, ti0), pv);
            }
        }
    }
}

/// `tk[k * nt + tj] = row[m tj + k]`: the `α` taps of each of the `tw`
/// tiles of a transformed row, one plane (`nt` apart) a tap.
#[inline(always)]
fn gather_taps<K: Alpha, T: Elem>(row: &[T], tw: usize, tk: &mut [T], nt: usize) {
    let m = K::M;
    debug_assert!(K::A == 6 || K::A == 7);
    if K::A == 6 {
        let_planes!(mut tk, 0, nt, tw => k0, k1, k2, k3, k4, k5);
        for tj in 0..tw {
            let d: &[T; 6] = row[m * tj..m * tj + 6].try_into().expect("six taps");
            (k0[tj], k1[tj], k2[tj], k3[tj], k4[tj], k5[tj]) = (d[0], d[1], d[2], d[3], d[4], d[5]);
        }
    } else {
        let_planes!(mut tk, 0, nt, tw => k0, k1, k2, k3, k4, k5, k6);
        for tj in 0..tw {
            let d: &[T; 7] = row[m * tj..m * tj + 7].try_into().expect("seven taps");
            (k0[tj], k1[tj], k2[tj], k3[tj], k4[tj], k5[tj], k6[tj]) = (d[0], d[1], d[2], d[3], d[4], d[5], d[6]);
        }
    }
}

/// [`input_transform_bwd`] `rp` tile rows of all `ng` images at a time:
/// the adjoint of [`input_transform_group`]. Each input column gets the
/// same one or two terms as in the rows form, so the same bits.
#[inline(always)]
fn input_transform_bwd_group<K: Alpha, T: Elem>(g: &Geom, tl: &Tiles, dv: &[T], ng: usize, dx: &mut [T]) {
    let (c_n, tw, m, al) = (g.c, tl.tw, K::M, K::A);
    let tg = ng * tl.t;
    let pv = tl.plane(c_n);
    let wp = m * tw + K::R - 1;
    let rp = rows_per_pass(tl, ng);
    let np = rp * ng * tw;
    let (pt, pl) = (g.pad[0] as isize, g.pad[2]);
    let mut tk = vec![T::ZERO; al * al * np]; // tk[a][k][(ti * ng + img) * tw + tj]: tap k of row a of each tile
    let mut e = vec![T::ZERO; al * wp];
    let mut rows = vec![T::ZERO; al * wp];
    let lo = pl.min(wp);
    let hi = (pl + g.w).min(wp);
    if hi <= lo {
        return;
    }
    for c in 0..c_n {
        for ti0 in (0..tl.th).step_by(rp) {
            let nr = rp.min(tl.th - ti0);
            for a in 0..al {
                K::b(nr * ng * tw, dv, a * al * pv + c * tg + tl.row_start(ng, 0, ti0), pv, &mut tk, a * al * np, np);
            }
            for ti in ti0..ti0 + nr {
                let r0 = (m * (tl.ti0 + ti)) as isize - pt;
                for img in 0..ng {
                    let xc = &mut dx[(img * c_n + c) * g.h * g.w..(img * c_n + c + 1) * g.h * g.w];
                    let at = ((ti - ti0) * ng + img) * tw;
                    for a in 0..al {
                        let row = &mut e[a * wp..(a + 1) * wp];
                        let taps = streams_of(al, |k| &tk[(a * al + k) * np + at..][..tw]);
                        // neighbouring tiles overlap by R - 1 = α - M columns:
                        // tap p of tile tj, then tap p + M of tile tj - 1
                        for tj in 0..tw {
                            for (p, tap) in taps[..m].iter().enumerate() {
                                row[m * tj + p] = tap[tj];
                            }
                        }
                        row[m * tw..].fill(T::ZERO);
                        for tj in 0..tw {
                            for (p, tap) in taps[m..al].iter().enumerate() {
                                row[m * (tj + 1) + p] += tap[tj];
                            }
                        }
                    }
                    add_row_adjoint::<K, T>(g, &e, wp, (lo, hi), &mut rows, xc, r0, pl);
                }
            }
        }
    }
}

/// The row transform of one tile row: rows `r0..r0 + α` of `xc` (zero
/// outside the image) to the `α` rows of `B^T d` in `tmp` (`wp` apart),
/// columns `lo..hi` (inside the image) only: the padding columns of `tmp`
/// stay as they are, zero, which is what the transform of zero padding gives.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn bt_rows<K: Alpha, T: Elem>(g: &Geom, xc: &[T], zero: &[T], r0: isize, (lo, hi): (usize, usize), pl: usize, tmp: &mut [T], wp: usize) {
    if hi <= lo {
        return;
    }
    let d = streams_of(K::A, |k| padded_row_inside(xc, zero, g, r0 + k as isize, (lo, hi), pl));
    K::bt(hi - lo, d, tmp, lo, wp);
}

/// The row adjoint of one tile row: input row `r0 + k` of `xc` gets
/// `(B e)[k]` added in place, where `e`'s `α` rows sit `stride` apart and
/// its columns `lo..hi` fall inside the image; the rows of `spare` (`α`
/// rows of at least `hi - lo`) take what falls on rows outside the image.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn add_row_adjoint<K: Alpha, T: Elem>(g: &Geom, e: &[T], stride: usize, (lo, hi): (usize, usize), spare: &mut [T], xc: &mut [T], r0: isize, pl: usize) {
    let n = hi - lo;
    let first = r0.clamp(0, g.h as isize) as usize;
    let mut inside = xc[first * g.w..].chunks_exact_mut(g.w);
    let mut outside = spare.chunks_exact_mut(spare.len() / K::A);
    let q: Outs<T> = std::array::from_fn(|k| {
        if k >= K::A {
            return Default::default();
        }
        let ih = r0 + k as isize;
        let spare = outside.next().expect("a spare row for each tap");
        match (0..g.h as isize).contains(&ih) {
            true => &mut inside.next().expect("row inside the image")[lo - pl..hi - pl],
            false => &mut spare[..n],
        }
    });
    K::b_add(n, e, lo, stride, q);
}

/// `y (ng, O, OH, OW)` from `M[ξ][o][t]`, through `epi`.
#[inline(always)]
fn output_transform_rows<K: Alpha, T: Elem>(g: &Geom, tl: &Tiles, mm: &[T], ng: usize, y: &mut [T], epi: &Epilogue<T>) {
    let (o_n, p, tw, m, al) = (g.o, g.p(), tl.tw, K::M, K::A);
    let tg = ng * tl.t;
    let pm = tl.plane(o_n);
    let mut s = vec![T::ZERO; m * al * tw]; // s[i][b][tj]
    let mut z = vec![T::ZERO; m * tw]; // z[j][tj]: output column m tj + j
    let mut yr = vec![T::ZERO; m * tw];
    for img in 0..ng {
        for o in 0..o_n {
            let yo = &mut y[(img * o_n + o) * p..(img * o_n + o + 1) * p];
            for ti in 0..tl.th {
                let t0 = tl.row_start(ng, img, ti);
                for b in 0..al {
                    K::at(tw, mm, b * pm + o * tg + t0, al * pm, &mut s, b * tw, al * tw);
                }
                for i in 0..m {
                    let oh = m * (tl.ti0 + ti) + i;
                    if oh >= g.oh {
                        break;
                    }
                    K::at(tw, &s, i * al * tw, tw, &mut z, 0, tw);
                    K::merge(&z, tw, &mut yr);
                    epi.write(o, &yr[..g.ow], &mut yo[oh * g.ow..(oh + 1) * g.ow]);
                }
            }
        }
    }
}

/// `dM[ξ][o][t] = A dY A^T` from `dy (ng, O, OH, OW)`.
#[inline(always)]
fn output_transform_bwd_rows<K: Alpha, T: Elem>(g: &Geom, tl: &Tiles, dy: &[T], ng: usize, dm: &mut [T]) {
    let (o_n, p, tw, m, al) = (g.o, g.p(), tl.tw, K::M, K::A);
    let tg = ng * tl.t;
    let pm = tl.plane(o_n);
    let wq = m * tw;
    let mut rows = vec![T::ZERO; m * wq];
    let mut ra = vec![T::ZERO; al * wq];
    let mut ph = vec![T::ZERO; m * tw];
    for img in 0..ng {
        for o in 0..o_n {
            let yo = &dy[(img * o_n + o) * p..(img * o_n + o + 1) * p];
            for ti in 0..tl.th {
                for i in 0..m {
                    load_output_row(yo, g, m * (tl.ti0 + ti) + i, &mut rows[i * wq..(i + 1) * wq]);
                }
                K::a(wq, &rows, 0, wq, &mut ra, 0, wq);
                let t0 = tl.row_start(ng, img, ti);
                for a in 0..al {
                    K::split(&ra[a * wq..(a + 1) * wq], &mut ph, tw);
                    K::a(tw, &ph, 0, tw, dm, a * al * pm + o * tg + t0, pm);
                }
            }
        }
    }
}

/// `y (ng, O, OH, OW)` from `M[ξ][o][t]`, through `epi`: both `A^T`
/// passes run over all `tg` tiles of the band at once (tiles are
/// contiguous in `M`), then one merge gives output row `i` of every tile row.
#[inline(always)]
fn output_transform_band<K: Alpha, T: Elem>(g: &Geom, tl: &Tiles, mm: &[T], ng: usize, y: &mut [T], epi: &Epilogue<T>) {
    let (o_n, p, th, tw, m, al) = (g.o, g.p(), tl.th, tl.tw, K::M, K::A);
    let tg = ng * tl.t;
    let pm = tl.plane(o_n);
    let wq = m * tw;
    let mut s = vec![T::ZERO; m * al * tg]; // s[i][b][t]
    let mut z = vec![T::ZERO; m * tg]; // z[j][t]: output column m tj + j
    let mut yr = vec![T::ZERO; m * tg]; // output row i of every tile row, wq apart
    for o in 0..o_n {
        for b in 0..al {
            K::at(tg, mm, b * pm + o * tg, al * pm, &mut s, b * tg, al * tg);
        }
        for i in 0..m {
            K::at(tg, &s, i * al * tg, tg, &mut z, 0, tg);
            K::merge(&z, tg, &mut yr);
            for img in 0..ng {
                let yo = &mut y[(img * o_n + o) * p..(img * o_n + o + 1) * p];
                for ti in 0..th {
                    let oh = m * (tl.ti0 + ti) + i;
                    if oh >= g.oh {
                        break;
                    }
                    let row = ti * ng + img;
                    epi.write(o, &yr[row * wq..][..g.ow], &mut yo[oh * g.ow..(oh + 1) * g.ow]);
                }
            }
        }
    }
}

/// `dM[ξ][o][t] = A dY A^T` from `dy (ng, O, OH, OW)`: the adjoint of
/// [`output_transform_band`], its `A` passes over all tiles of the band at once.
#[inline(always)]
fn output_transform_bwd_band<K: Alpha, T: Elem>(g: &Geom, tl: &Tiles, dy: &[T], ng: usize, dm: &mut [T]) {
    let (o_n, p, th, tw, m, al) = (g.o, g.p(), tl.th, tl.tw, K::M, K::A);
    let tg = ng * tl.t;
    let pm = tl.plane(o_n);
    let (rows, wq) = (ng * th, m * tw);
    let n = rows * wq;
    let mut dz = vec![T::ZERO; m * n]; // dz[i][row][wq]: dY row m ti + i of each tile row
    let mut ra = vec![T::ZERO; al * n];
    let mut ph = vec![T::ZERO; m * tg];
    for o in 0..o_n {
        for img in 0..ng {
            let yo = &dy[(img * o_n + o) * p..(img * o_n + o + 1) * p];
            for ti in 0..th {
                let row = ti * ng + img;
                for i in 0..m {
                    load_output_row(yo, g, m * (tl.ti0 + ti) + i, &mut dz[(i * rows + row) * wq..(i * rows + row + 1) * wq]);
                }
            }
        }
        K::a(n, &dz, 0, n, &mut ra, 0, n);
        for a in 0..al {
            K::split(&ra[a * n..(a + 1) * n], &mut ph, tg);
            K::a(tg, &ph, 0, tg, dm, a * al * pm + o * tg, pm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::f34::F34;
    use super::super::f43::F43;
    use super::super::f44::F44;
    use super::super::testing::{each_band, fill};
    use super::super::{transform, Tiles};
    use super::*;

    /// Both forms of the output transforms, on every band of every group,
    /// give the same bits (the same sums in the same order).
    fn band_and_rows_agree<K: Alpha>() {
        let (m, r) = (K::M, K::R);
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
            let op = o * g.p();
            let dy = fill(n * op, i + 7);
            each_band(&g, &tl, |n0, ng, bl, at| {
                let dyg = &dy[n0 * op..(n0 + ng) * op];
                let ctx = format!("F({m}, {r}) case {i} {at}");
                let mm = fill(K::A * K::A * bl.plane(o), i + 5);
                let (bias, epi) = (fill(o, i), Epilogue::NONE);
                for epi in [epi, Epilogue { bias: Some(&bias), relu: true }] {
                    let (mut y1, mut y2) = (vec![0.0; ng * op], vec![0.0; ng * op]);
                    output_transform_rows::<K, f64>(&g, bl, &mm, ng, &mut y1, &epi);
                    output_transform_band::<K, f64>(&g, bl, &mm, ng, &mut y2, &epi);
                    assert_eq!(y1, y2, "{ctx}: output");
                }
                let (mut dm1, mut dm2) = (vec![0.0; K::A * K::A * bl.plane(o)], vec![0.0; K::A * K::A * bl.plane(o)]);
                output_transform_bwd_rows::<K, f64>(&g, bl, dyg, ng, &mut dm1);
                output_transform_bwd_band::<K, f64>(&g, bl, dyg, ng, &mut dm2);
                assert_eq!(dm1, dm2, "{ctx}: output bwd");
            });
        }
    }

    /// Both forms of the input transforms give the same bits, also with
    /// one image a group (where only the group form's tap gather differs).
    fn group_and_rows_agree<K: Alpha>() {
        let (m, r) = (K::M, K::R);
        let cases = [
            (3, 2, 23, 21, 2, [1, 1, 1, 1]),
            (5, 3, 12, 12, 4, [1, 1, 1, 1]),
            (7, 2, 24, 24, 3, [1, 1, 1, 1]),
            (2, 1, 7, 30, 2, [0, 2, 1, 0]),
            (3, 2, 9, 11, 2, [2, 0, 0, 3]),
            (1, 2, 60, 19, 1, [2, 0, 0, 3]),
        ];
        for (i, &(n, c, h, w, o, pad)) in cases.iter().enumerate() {
            let g = Geom::new(&[n, c, h, w], &[o, c, r, r], pad, 1).unwrap();
            let tl = Tiles::new(&g, transform(m, r), true);
            let chw = g.chw();
            let x = fill(n * chw, i + 3);
            each_band(&g, &tl, |n0, ng, bl, at| {
                let xg = &x[n0 * chw..(n0 + ng) * chw];
                let ctx = format!("F({m}, {r}) case {i} {at}");
                let (mut v1, mut v2) = (vec![0.0; K::A * K::A * bl.plane(c)], vec![0.0; K::A * K::A * bl.plane(c)]);
                input_transform_rows::<K, f64>(&g, bl, xg, ng, &mut v1);
                input_transform_group::<K, f64>(&g, bl, xg, ng, &mut v2);
                assert_eq!(v1, v2, "{ctx}: input");
                let dv = fill(K::A * K::A * bl.plane(c), i + 11);
                let (mut dx1, mut dx2) = (vec![0.0; ng * chw], vec![0.0; ng * chw]);
                input_transform_bwd_rows::<K, f64>(&g, bl, &dv, ng, &mut dx1);
                input_transform_bwd_group::<K, f64>(&g, bl, &dv, ng, &mut dx2);
                assert_eq!(dx1, dx2, "{ctx}: input bwd");
            });
        }
    }

    #[test]
    fn group_and_row_input_transforms_agree() {
        group_and_rows_agree::<F43>();
        group_and_rows_agree::<F34>();
        group_and_rows_agree::<F44>();
    }

    #[test]
    fn band_and_row_transforms_agree() {
        band_and_rows_agree::<F43>();
        band_and_rows_agree::<F34>();
        band_and_rows_agree::<F44>();
    }
}

#[cfg(test)]
mod timing {
    use super::super::f34::F34;
    use super::super::f43::F43;
    use super::super::f44::F44;
    use super::super::super::simd;
    use super::super::{transform, Tiles};
    use super::*;
    use std::time::Instant;

    /// The four tile transforms of one layer alone, 64 images, C -> C
    /// channels, best of 5 (ms): `TT_CASES=64x24,128x12` (C x HW),
    /// `TT_KERNEL=f43|f34|f44` (F(4x4, 3x3) by default).
    /// `cargo test --release -- --ignored --nocapture transform_timing`
    #[test]
    #[ignore]
    fn transform_timing() {
        match std::env::var("TT_KERNEL").as_deref() {
            Ok("f34") => timing::<F34>(),
            Ok("f44") => timing::<F44>(),
            _ => timing::<F43>(),
        }
    }

    fn timing<K: Alpha>() {
        let (m, r) = (K::M, K::R);
        let cases = std::env::var("TT_CASES").unwrap_or_else(|_| "48x48,48x24,64x24,64x12,124x12".into());
        for case in cases.split(',') {
            let (c, hw) = case.split_once('x').expect("C x HW");
            let (c, hw): (usize, usize) = (c.parse().unwrap(), hw.parse().unwrap());
            let pad = [(r - 1) / 2, r / 2, (r - 1) / 2, r / 2];
            let g = Geom::new(&[64, c, hw, hw], &[c, c, r, r], pad, 1).unwrap();
            let tl = Tiles::new(&g, transform(m, r), true);
            let x: Vec<f32> = (0..64 * g.chw()).map(|i| (i % 97) as f32 / 97.0).collect();
            let mut y = vec![0f32; 64 * g.chw()];
            let mut v: Vec<f32> = (0..K::A * K::A * tl.plane(c)).map(|i| (i % 89) as f32 / 89.0).collect();
            let mut best = [f64::MAX; 4];
            for _ in 0..5 {
                for (k, best) in best.iter_mut().enumerate() {
                    let t = Instant::now();
                    for (gi, b) in (0..tl.groups).flat_map(|gi| (0..tl.bands).map(move |b| (gi, b))) {
                        let (n0, ng) = tl.images(&g, gi);
                        let (xg, yg) = (&x[n0 * g.chw()..(n0 + ng) * g.chw()], &mut y[n0 * g.chw()..(n0 + ng) * g.chw()]);
                        let bl = tl.band(b);
                        simd::dispatch(#[inline(always)] || match k {
                            0 => input_transform::<K, f32>(&g, &bl, xg, ng, &mut v),
                            1 => output_transform::<K, f32>(&g, &bl, &v, ng, yg, &Epilogue::NONE),
                            2 => input_transform_bwd::<K, f32>(&g, &bl, &v, ng, yg),
                            _ => output_transform_bwd::<K, f32>(&g, &bl, xg, ng, &mut v),
                        });
                    }
                    *best = best.min(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            let [i, o, ib, ob] = best;
            println!("F({m}, {r}) {c} channels {hw}x{hw} (tw {}): input {i:.2}, output {o:.2}, input bwd {ib:.2}, output bwd {ob:.2}", tl.tw);
        }
    }
}
