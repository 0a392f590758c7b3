//! Hand-written transforms for F(2x2, 3x3), the common case: fewer
//! passes and buffers than the general F(m, r) ones in the parent module,
//! and not slower end to end for 3x3 kernels in `bench_speed.py` (the
//! general F(3x3)/F(4x4) were faster only in isolation). Same layouts:
//! `V[ξ][c][t]`, `M[ξ][o][t]`, `U[ξ][o][c]` with 16 planes. Compiled for
//! baseline x86-64: running them under `simd::dispatch` (AVX2 or AVX-512)
//! made no difference that stood out of this VM's ±10% run-to-run noise
//! (interleaved A/B of seed3x3 predict, 5 runs each).

use super::super::conv::Geom;
use super::super::gemm::{zeros, Elem};
use super::{load_output_row, padded_row_inside, Epilogue, Tiles};

// 1D transforms on 4 (or 3 / 2) values.

// B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]], A^T = [[1,1,1,0],[0,1,-1,-1]]
// (applied inline, row-vectorised, in the transforms below).

#[inline(always)]
fn g3<T: Elem>(w: [T; 3], half: T) -> [T; 4] {
    // G = [[1,0,0],[.5,.5,.5],[.5,-.5,.5],[0,0,1]]
    let s = w[0] + w[2];
    [w[0], (s + w[1]) * half, (s - w[1]) * half, w[2]]
}

#[inline(always)]
fn gt4<T: Elem>(u: [T; 4], half: T) -> [T; 3] {
    // G^T
    [u[0] + (u[1] + u[2]) * half, (u[1] - u[2]) * half, (u[1] + u[2]) * half + u[3]]
}

/// `U[ξ][o][c]` (16, O, C) from `w (O, C, 3, 3)`.
pub(super) fn filter_transform<T: Elem>(g: &Geom, w: &[T]) -> Vec<T> {
    let (o_n, c_n) = (g.o, g.c);
    let half = T::from_f64(0.5);
    let mut u = zeros::<T>(16 * o_n * c_n);
    for o in 0..o_n {
        for c in 0..c_n {
            let k = &w[(o * c_n + c) * 9..(o * c_n + c) * 9 + 9];
            // rows of G g: tmp (4, 3)
            let cols: [[T; 4]; 3] = std::array::from_fn(|j| g3([k[j], k[3 + j], k[6 + j]], half));
            for a in 0..4 {
                let r = g3([cols[0][a], cols[1][a], cols[2][a]], half);
                for b in 0..4 {
                    u[((a * 4 + b) * o_n + o) * c_n + c] = r[b];
                }
            }
        }
    }
    u
}

/// `dw (O, C, 3, 3)` from `dU[ξ][o][c]`.
pub(super) fn filter_transform_bwd<T: Elem>(g: &Geom, du: &[T]) -> Vec<T> {
    let (o_n, c_n) = (g.o, g.c);
    let half = T::from_f64(0.5);
    let mut dw = zeros::<T>(o_n * c_n * 9);
    for o in 0..o_n {
        for c in 0..c_n {
            let at = |a: usize, b: usize| du[((a * 4 + b) * o_n + o) * c_n + c];
            // G^T dU: (3, 4), then (G^T dU) G: (3, 3)
            let cols: [[T; 3]; 4] = std::array::from_fn(|b| gt4([at(0, b), at(1, b), at(2, b), at(3, b)], half));
            let k = &mut dw[(o * c_n + c) * 9..(o * c_n + c) * 9 + 9];
            for i in 0..3 {
                let r = gt4([cols[0][i], cols[1][i], cols[2][i], cols[3][i]], half);
                k[i * 3..i * 3 + 3].copy_from_slice(&r);
            }
        }
    }
    dw
}

/// Whether a group's transforms run their column passes over one tile
/// row of all `ng` images at once (`*_group`, on `ng * tw` tiles, which
/// `Tiles::row_start` makes contiguous) rather than of one image (`*_rows`,
/// `tw` tiles: 3 on the 6x6 maps this transform mostly serves). Both give
/// the same bits.
fn grouped(tl: &Tiles, ng: usize) -> bool {
    ng > 1 && tl.tw <= 8
}

/// `V[ξ][c][t]` (16, C, tg) for `ng` images `x (ng, C, H, W)`.
pub(super) fn input_transform<T: Elem>(g: &Geom, tl: &Tiles, x: &[T], ng: usize, v: &mut [T]) {
    if grouped(tl, ng) {
        input_transform_group(g, tl, x, ng, v)
    } else {
        input_transform_rows(g, tl, x, ng, v)
    }
}

/// Scatter-adds `B dV B^T` of every tile into `dx (ng, C, H, W)`.
pub(super) fn input_transform_bwd<T: Elem>(g: &Geom, tl: &Tiles, dv: &[T], ng: usize, dx: &mut [T]) {
    if grouped(tl, ng) {
        input_transform_bwd_group(g, tl, dv, ng, dx)
    } else {
        input_transform_bwd_rows(g, tl, dv, ng, dx)
    }
}

/// `y (ng, O, OH, OW)` from `M[ξ][o][t]`, through `epi`.
pub(super) fn output_transform<T: Elem>(g: &Geom, tl: &Tiles, m: &[T], ng: usize, y: &mut [T], epi: &Epilogue<T>) {
    if grouped(tl, ng) {
        output_transform_group(g, tl, m, ng, y, epi)
    } else {
        output_transform_rows(g, tl, m, ng, y, epi)
    }
}

/// `dM[ξ][o][t] = A dY A^T` from `dy (ng, O, OH, OW)`.
pub(super) fn output_transform_bwd<T: Elem>(g: &Geom, tl: &Tiles, dy: &[T], ng: usize, dm: &mut [T]) {
    if grouped(tl, ng) {
        output_transform_bwd_group(g, tl, dy, ng, dm)
    } else {
        output_transform_bwd_rows(g, tl, dy, ng, dm)
    }
}

/// [`input_transform`] a tile row of one image at a time: row transform
/// on whole padded rows, then the column transform writes each of the 16
/// planes contiguously along a tile row.
fn input_transform_rows<T: Elem>(g: &Geom, tl: &Tiles, x: &[T], ng: usize, v: &mut [T]) {
    let (c_n, tw) = (g.c, tl.tw);
    let tg = ng * tl.t;
    let pv = tl.plane(c_n);
    let wp = 2 * tw + 2;
    let (pt, pl) = (g.pad[0] as isize, g.pad[2]);
    // The image's columns of the padded rows; `tmp` stays zero outside them (see `bt_rows`).
    let (lo, hi) = (pl.min(wp), (pl + g.w).min(wp));
    let zero = vec![T::ZERO; g.w];
    let mut tmp = vec![T::ZERO; 4 * wp];
    for img in 0..ng {
        for c in 0..c_n {
            let xc = &x[(img * c_n + c) * g.h * g.w..(img * c_n + c + 1) * g.h * g.w];
            for ti in 0..tl.th {
                let r0 = 2 * (tl.ti0 + ti) as isize - pt;
                bt_rows(g, xc, &zero, r0, (lo, hi), pl, &mut tmp, wp);
                let t0 = tl.row_start(ng, img, ti);
                for a in 0..4 {
                    let ta = &tmp[a * wp..(a + 1) * wp];
                    let base = |b: usize| (a * 4 + b) * pv + c * tg + t0;
                    for (tj, o) in v[base(0)..base(0) + tw].iter_mut().enumerate() {
                        *o = ta[2 * tj] - ta[2 * tj + 2];
                    }
                    for (tj, o) in v[base(1)..base(1) + tw].iter_mut().enumerate() {
                        *o = ta[2 * tj + 1] + ta[2 * tj + 2];
                    }
                    for (tj, o) in v[base(2)..base(2) + tw].iter_mut().enumerate() {
                        *o = ta[2 * tj + 2] - ta[2 * tj + 1];
                    }
                    for (tj, o) in v[base(3)..base(3) + tw].iter_mut().enumerate() {
                        *o = ta[2 * tj + 1] - ta[2 * tj + 3];
                    }
                }
            }
        }
    }
}

/// [`input_transform_bwd`] a tile row of one image at a time.
fn input_transform_bwd_rows<T: Elem>(g: &Geom, tl: &Tiles, dv: &[T], ng: usize, dx: &mut [T]) {
    let (c_n, tw) = (g.c, tl.tw);
    let tg = ng * tl.t;
    let pv = tl.plane(c_n);
    let wp = 2 * tw + 2;
    let (pt, pl) = (g.pad[0] as isize, g.pad[2]);
    let mut e = vec![T::ZERO; 4 * wp];
    for img in 0..ng {
        for c in 0..c_n {
            let xc = &mut dx[(img * c_n + c) * g.h * g.w..(img * c_n + c + 1) * g.h * g.w];
            for ti in 0..tl.th {
                let r0 = 2 * (tl.ti0 + ti) as isize - pt;
                let t0 = tl.row_start(ng, img, ti);
                // column pass (B on each tile row of dV), overlapping tiles add
                for a in 0..4 {
                    let ea = &mut e[a * wp..(a + 1) * wp];
                    ea.fill(T::ZERO);
                    let d = |b: usize| &dv[(a * 4 + b) * pv + c * tg + t0..][..tw];
                    let (d0, d1, d2, d3) = (d(0), d(1), d(2), d(3));
                    for tj in 0..tw {
                        ea[2 * tj] += d0[tj];
                        ea[2 * tj + 1] += d1[tj] - d2[tj] + d3[tj];
                        ea[2 * tj + 2] += d1[tj] + d2[tj] - d0[tj];
                        ea[2 * tj + 3] -= d3[tj];
                    }
                }
                let (lo, hi) = (pl.min(wp), (pl + g.w).min(wp));
                add_rows_adjoint(g, &e, wp, (lo, hi), xc, r0, pl);
            }
        }
    }
}

/// [`output_transform`] a tile row of one image at a time.
fn output_transform_rows<T: Elem>(g: &Geom, tl: &Tiles, m: &[T], ng: usize, y: &mut [T], epi: &Epilogue<T>) {
    let (o_n, p, tw) = (g.o, g.p(), tl.tw);
    let tg = ng * tl.t;
    let pm = tl.plane(o_n);
    let mut s = vec![T::ZERO; 8 * tw]; // s[i][b][tj]
    let mut yr = vec![T::ZERO; 2 * tw];
    for img in 0..ng {
        for o in 0..o_n {
            let yo = &mut y[(img * o_n + o) * p..(img * o_n + o + 1) * p];
            for ti in 0..tl.th {
                let t0 = tl.row_start(ng, img, ti);
                let mab = |a: usize, b: usize| &m[(a * 4 + b) * pm + o * tg + t0..][..tw];
                for b in 0..4 {
                    let (m0, m1, m2, m3) = (mab(0, b), mab(1, b), mab(2, b), mab(3, b));
                    let (s0, s1) = s.split_at_mut(4 * tw);
                    let s0 = &mut s0[b * tw..(b + 1) * tw];
                    let s1 = &mut s1[b * tw..(b + 1) * tw];
                    for tj in 0..tw {
                        s0[tj] = m0[tj] + m1[tj] + m2[tj];
                        s1[tj] = m1[tj] - m2[tj] - m3[tj];
                    }
                }
                for i in 0..2 {
                    let oh = 2 * (tl.ti0 + ti) + i;
                    if oh >= g.oh {
                        break;
                    }
                    let si = &s[i * 4 * tw..(i + 1) * 4 * tw];
                    let (q0, q1, q2, q3) = (&si[..tw], &si[tw..2 * tw], &si[2 * tw..3 * tw], &si[3 * tw..]);
                    for tj in 0..tw {
                        yr[2 * tj] = q0[tj] + q1[tj] + q2[tj];
                        yr[2 * tj + 1] = q1[tj] - q2[tj] - q3[tj];
                    }
                    epi.write(o, &yr[..g.ow], &mut yo[oh * g.ow..(oh + 1) * g.ow]);
                }
            }
        }
    }
}

/// [`output_transform_bwd`] a tile row of one image at a time.
fn output_transform_bwd_rows<T: Elem>(g: &Geom, tl: &Tiles, dy: &[T], ng: usize, dm: &mut [T]) {
    let (o_n, p, tw) = (g.o, g.p(), tl.tw);
    let tg = ng * tl.t;
    let pm = tl.plane(o_n);
    let wq = 2 * tw;
    let mut rows = vec![T::ZERO; 2 * wq];
    let mut r4 = vec![T::ZERO; 4 * wq];
    for img in 0..ng {
        for o in 0..o_n {
            let yo = &dy[(img * o_n + o) * p..(img * o_n + o + 1) * p];
            for ti in 0..tl.th {
                for i in 0..2 {
                    load_output_row(yo, g, 2 * (tl.ti0 + ti) + i, &mut rows[i * wq..(i + 1) * wq]);
                }
                {
                    let (y0, y1) = rows.split_at(wq);
                    let (a0, rest) = r4.split_at_mut(wq);
                    let (a1, rest) = rest.split_at_mut(wq);
                    let (a2, a3) = rest.split_at_mut(wq);
                    for j in 0..wq {
                        a0[j] = y0[j];
                        a1[j] = y0[j] + y1[j];
                        a2[j] = y0[j] - y1[j];
                        a3[j] = T::ZERO - y1[j];
                    }
                }
                let t0 = tl.row_start(ng, img, ti);
                for a in 0..4 {
                    let ra = &r4[a * wq..(a + 1) * wq];
                    let base = |b: usize| (a * 4 + b) * pm + o * tg + t0;
                    for (tj, d) in dm[base(0)..base(0) + tw].iter_mut().enumerate() {
                        *d = ra[2 * tj];
                    }
                    for (tj, d) in dm[base(1)..base(1) + tw].iter_mut().enumerate() {
                        *d = ra[2 * tj] + ra[2 * tj + 1];
                    }
                    for (tj, d) in dm[base(2)..base(2) + tw].iter_mut().enumerate() {
                        *d = ra[2 * tj] - ra[2 * tj + 1];
                    }
                    for (tj, d) in dm[base(3)..base(3) + tw].iter_mut().enumerate() {
                        *d = T::ZERO - ra[2 * tj + 1];
                    }
                }
            }
        }
    }
}

/// [`input_transform`] a tile row of all `ng` images at a time: each
/// image's row transform, the taps of its tiles gathered into
/// `tk[a][k][img * tw + tj]`, then the column transform over all `ng * tw`
/// tiles, written in place.
fn input_transform_group<T: Elem>(g: &Geom, tl: &Tiles, x: &[T], ng: usize, v: &mut [T]) {
    let (c_n, tw) = (g.c, tl.tw);
    let tg = ng * tl.t;
    let pv = tl.plane(c_n);
    let wp = 2 * tw + 2;
    let nt = ng * tw;
    let (pt, pl) = (g.pad[0] as isize, g.pad[2]);
    // The image's columns of the padded rows; `tmp` stays zero outside them (see `bt_rows`).
    let (lo, hi) = (pl.min(wp), (pl + g.w).min(wp));
    let zero = vec![T::ZERO; g.w];
    let mut tmp = vec![T::ZERO; 4 * wp];
    let mut tk = vec![T::ZERO; 16 * nt];
    for c in 0..c_n {
        for ti in 0..tl.th {
            let r0 = 2 * (tl.ti0 + ti) as isize - pt;
            for img in 0..ng {
                let xc = &x[(img * c_n + c) * g.h * g.w..(img * c_n + c + 1) * g.h * g.w];
                bt_rows(g, xc, &zero, r0, (lo, hi), pl, &mut tmp, wp);
                for a in 0..4 {
                    let ta = &tmp[a * wp..(a + 1) * wp];
                    let_planes!(mut tk, a * 4 * nt + img * tw, nt, tw => k0, k1, k2, k3);
                    for tj in 0..tw {
                        let d: &[T; 4] = ta[2 * tj..2 * tj + 4].try_into().expect("four taps");
                        (k0[tj], k1[tj], k2[tj], k3[tj]) = (d[0], d[1], d[2], d[3]);
                    }
                }
            }
            for a in 0..4 {
                let_planes!(tk, a * 4 * nt, nt, nt => k0, k1, k2, k3);
                let_planes!(mut v, a * 4 * pv + c * tg + tl.row_start(ng, 0, ti), pv, nt => o0, o1, o2, o3);
                for u in 0..nt {
                    o0[u] = k0[u] - k2[u];
                    o1[u] = k1[u] + k2[u];
                    o2[u] = k2[u] - k1[u];
                    o3[u] = k1[u] - k3[u];
                }
            }
        }
    }
}

/// [`input_transform_bwd`] a tile row of all `ng` images at a time: the
/// column adjoint of each tile over all `ng * tw` tiles, then each image's
/// overlapping tiles added into its row in the rows form's order (same bits).
fn input_transform_bwd_group<T: Elem>(g: &Geom, tl: &Tiles, dv: &[T], ng: usize, dx: &mut [T]) {
    let (c_n, tw) = (g.c, tl.tw);
    let tg = ng * tl.t;
    let pv = tl.plane(c_n);
    let wp = 2 * tw + 2;
    let nt = ng * tw;
    let (pt, pl) = (g.pad[0] as isize, g.pad[2]);
    let (lo, hi) = (pl.min(wp), (pl + g.w).min(wp));
    let mut tk = vec![T::ZERO; 16 * nt]; // tk[a][k][img * tw + tj]: what tile tj adds at column 2 tj + k of row a
    let mut e = vec![T::ZERO; 4 * wp];
    for c in 0..c_n {
        for ti in 0..tl.th {
            let r0 = 2 * (tl.ti0 + ti) as isize - pt;
            for a in 0..4 {
                let_planes!(dv, a * 4 * pv + c * tg + tl.row_start(ng, 0, ti), pv, nt => d0, d1, d2, d3);
                let_planes!(mut tk, a * 4 * nt, nt, nt => k0, k1, k2, k3);
                for u in 0..nt {
                    k0[u] = d0[u];
                    k1[u] = d1[u] - d2[u] + d3[u];
                    k2[u] = d1[u] + d2[u] - d0[u];
                    k3[u] = d3[u];
                }
            }
            if hi <= lo {
                continue;
            }
            for img in 0..ng {
                for a in 0..4 {
                    let ea = &mut e[a * wp..(a + 1) * wp];
                    ea.fill(T::ZERO);
                    let_planes!(tk, a * 4 * nt + img * tw, nt, tw => k0, k1, k2, k3);
                    for tj in 0..tw {
                        ea[2 * tj] += k0[tj];
                        ea[2 * tj + 1] += k1[tj];
                        ea[2 * tj + 2] += k2[tj];
                        ea[2 * tj + 3] -= k3[tj];
                    }
                }
                let xc = &mut dx[(img * c_n + c) * g.h * g.w..(img * c_n + c + 1) * g.h * g.w];
                add_rows_adjoint(g, &e, wp, (lo, hi), xc, r0, pl);
            }
        }
    }
}

/// The row pass of the input transform for one tile row: rows `r0..r0 + 4`
/// of `xc` (zero outside the image) to the four rows of `B^T d` in `tmp`
/// (`wp` apart), columns `lo..hi` (inside the image) only: the padding
/// columns of `tmp` stay as they are, zero, which is what the transform
/// of zero padding gives.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn bt_rows<T: Elem>(g: &Geom, xc: &[T], zero: &[T], r0: isize, (lo, hi): (usize, usize), pl: usize, tmp: &mut [T], wp: usize) {
    if hi <= lo {
        return;
    }
    let row = |r: isize| padded_row_inside(xc, zero, g, r0 + r, (lo, hi), pl);
    let (d0, d1, d2, d3) = (row(0), row(1), row(2), row(3));
    let_planes!(mut tmp, lo, wp, hi - lo => t0, t1, t2, t3);
    for j in 0..hi - lo {
        t0[j] = d0[j] - d2[j];
        t1[j] = d1[j] + d2[j];
        t2[j] = d2[j] - d1[j];
        t3[j] = d1[j] - d3[j];
    }
}

/// The row pass of the input transform's adjoint for one tile row: input
/// row `r0 + r` of `xc` gets row `r` of `B e` (`e`'s four rows `wp` apart,
/// columns `lo..hi` inside the image).
#[inline(always)]
fn add_rows_adjoint<T: Elem>(g: &Geom, e: &[T], wp: usize, (lo, hi): (usize, usize), xc: &mut [T], r0: isize, pl: usize) {
    let (e0, e1, e2, e3) = (&e[lo..hi], &e[wp + lo..wp + hi], &e[2 * wp + lo..2 * wp + hi], &e[3 * wp + lo..3 * wp + hi]);
    for r in 0..4 {
        let ih = r0 + r as isize;
        if ih < 0 || ih >= g.h as isize {
            continue;
        }
        let xs = &mut xc[ih as usize * g.w + lo - pl..ih as usize * g.w + hi - pl];
        match r {
            0 => xs.iter_mut().zip(e0).for_each(|(o, &a)| *o += a),
            1 => {
                for j in 0..xs.len() {
                    xs[j] += e1[j] - e2[j] + e3[j];
                }
            }
            2 => {
                for j in 0..xs.len() {
                    xs[j] += e1[j] + e2[j] - e0[j];
                }
            }
            _ => xs.iter_mut().zip(e3).for_each(|(o, &a)| *o -= a),
        }
    }
}

/// [`output_transform`] a tile row of all `ng` images at a time: both
/// `A^T` passes over the `ng * tw` tiles, then each image's two output rows.
fn output_transform_group<T: Elem>(g: &Geom, tl: &Tiles, m: &[T], ng: usize, y: &mut [T], epi: &Epilogue<T>) {
    let (o_n, p, tw) = (g.o, g.p(), tl.tw);
    let tg = ng * tl.t;
    let pm = tl.plane(o_n);
    let nt = ng * tw;
    let mut s = vec![T::ZERO; 8 * nt]; // s[i][b][u]
    let mut z = vec![T::ZERO; 2 * nt]; // z[j][u]: output column 2 tj + j of row i
    let mut yr = vec![T::ZERO; 2 * tw];
    for o in 0..o_n {
        for ti in 0..tl.th {
            let t0 = o * tg + tl.row_start(ng, 0, ti);
            for b in 0..4 {
                let mab = |a: usize| &m[(a * 4 + b) * pm + t0..][..nt];
                let (m0, m1, m2, m3) = (mab(0), mab(1), mab(2), mab(3));
                let (s0, s1) = s.split_at_mut(4 * nt);
                let s0 = &mut s0[b * nt..(b + 1) * nt];
                let s1 = &mut s1[b * nt..(b + 1) * nt];
                for u in 0..nt {
                    s0[u] = m0[u] + m1[u] + m2[u];
                    s1[u] = m1[u] - m2[u] - m3[u];
                }
            }
            for i in 0..2 {
                let oh = 2 * (tl.ti0 + ti) + i;
                if oh >= g.oh {
                    break;
                }
                let_planes!(s, i * 4 * nt, nt, nt => q0, q1, q2, q3);
                let (z0, z1) = z.split_at_mut(nt);
                for u in 0..nt {
                    z0[u] = q0[u] + q1[u] + q2[u];
                    z1[u] = q1[u] - q2[u] - q3[u];
                }
                for img in 0..ng {
                    let (z0, z1) = (&z0[img * tw..(img + 1) * tw], &z1[img * tw..(img + 1) * tw]);
                    for tj in 0..tw {
                        yr[2 * tj] = z0[tj];
                        yr[2 * tj + 1] = z1[tj];
                    }
                    let yo = &mut y[(img * o_n + o) * p..(img * o_n + o + 1) * p];
                    epi.write(o, &yr[..g.ow], &mut yo[oh * g.ow..(oh + 1) * g.ow]);
                }
            }
        }
    }
}

/// [`output_transform_bwd`] a tile row of all `ng` images at a time: each
/// image's `A` pass on its two dY rows, their columns gathered into
/// `r[a][j][img * tw + tj]`, then the column `A` pass over all tiles.
fn output_transform_bwd_group<T: Elem>(g: &Geom, tl: &Tiles, dy: &[T], ng: usize, dm: &mut [T]) {
    let (o_n, p, tw) = (g.o, g.p(), tl.tw);
    let tg = ng * tl.t;
    let pm = tl.plane(o_n);
    let nt = ng * tw;
    let wq = 2 * tw;
    let mut rows = vec![T::ZERO; 2 * wq];
    let mut r = vec![T::ZERO; 8 * nt]; // r[a][j][u]: column 2 tj + j of row a of A dY
    for o in 0..o_n {
        for ti in 0..tl.th {
            for img in 0..ng {
                let yo = &dy[(img * o_n + o) * p..(img * o_n + o + 1) * p];
                for i in 0..2 {
                    load_output_row(yo, g, 2 * (tl.ti0 + ti) + i, &mut rows[i * wq..(i + 1) * wq]);
                }
                let (y0, y1) = rows.split_at(wq);
                let_planes!(mut r, img * tw, nt, tw => a0e, a0o, a1e, a1o, a2e, a2o, a3e, a3o);
                for tj in 0..tw {
                    let (e0, e1, o0, o1) = (y0[2 * tj], y1[2 * tj], y0[2 * tj + 1], y1[2 * tj + 1]);
                    (a0e[tj], a0o[tj]) = (e0, o0);
                    (a1e[tj], a1o[tj]) = (e0 + e1, o0 + o1);
                    (a2e[tj], a2o[tj]) = (e0 - e1, o0 - o1);
                    (a3e[tj], a3o[tj]) = (T::ZERO - e1, T::ZERO - o1);
                }
            }
            let t0 = o * tg + tl.row_start(ng, 0, ti);
            for a in 0..4 {
                let_planes!(r, 2 * a * nt, nt, nt => re, ro);
                let_planes!(mut dm, a * 4 * pm + t0, pm, nt => d0, d1, d2, d3);
                for u in 0..nt {
                    d0[u] = re[u];
                    d1[u] = re[u] + ro[u];
                    d2[u] = re[u] - ro[u];
                    d3[u] = T::ZERO - ro[u];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{each_band, fill};
    use super::super::{transform, Tiles};
    use super::*;

    /// The group and rows forms of all four transforms give the same bits,
    /// on groups of one to several images, odd sizes and asymmetric padding.
    #[test]
    fn group_and_row_transforms_agree() {
        // (n, c, h, w, o, pad)
        let cases = [
            (5, 2, 6, 6, 3, [1, 1, 1, 1]),
            (3, 3, 7, 5, 2, [1, 1, 1, 1]),
            (40, 2, 6, 6, 2, [1, 1, 1, 1]),
            (4, 1, 9, 11, 2, [0, 2, 1, 0]),
            (2, 2, 12, 12, 2, [2, 0, 0, 1]),
            (1, 2, 30, 19, 1, [1, 1, 1, 1]),
        ];
        for (i, &(n, c, h, w, o, pad)) in cases.iter().enumerate() {
            let g = Geom::new(&[n, c, h, w], &[o, c, 3, 3], pad, 1).unwrap();
            let tl = Tiles::new(&g, transform(2, 3), true);
            let (chw, op) = (g.chw(), o * g.p());
            let (x, dy) = (fill(n * chw, i + 3), fill(n * op, i + 7));
            each_band(&g, &tl, |n0, ng, bl, at| {
                let (xg, dyg) = (&x[n0 * chw..(n0 + ng) * chw], &dy[n0 * op..(n0 + ng) * op]);
                let ctx = format!("case {i} {at}");
                let (mut v1, mut v2) = (vec![0.0; 16 * bl.plane(c)], vec![0.0; 16 * bl.plane(c)]);
                input_transform_rows(&g, bl, xg, ng, &mut v1);
                input_transform_group(&g, bl, xg, ng, &mut v2);
                assert_eq!(v1, v2, "{ctx}: input");
                let dv = fill(16 * bl.plane(c), i + 11);
                let (mut dx1, mut dx2) = (vec![0.0; ng * chw], vec![0.0; ng * chw]);
                input_transform_bwd_rows(&g, bl, &dv, ng, &mut dx1);
                input_transform_bwd_group(&g, bl, &dv, ng, &mut dx2);
                assert_eq!(dx1, dx2, "{ctx}: input bwd");
                let mm = fill(16 * bl.plane(o), i + 5);
                let bias = fill(o, i);
                for epi in [Epilogue::NONE, Epilogue { bias: Some(&bias), relu: true }] {
                    let (mut y1, mut y2) = (vec![0.0; ng * op], vec![0.0; ng * op]);
                    output_transform_rows(&g, bl, &mm, ng, &mut y1, &epi);
                    output_transform_group(&g, bl, &mm, ng, &mut y2, &epi);
                    assert_eq!(y1, y2, "{ctx}: output");
                }
                let (mut dm1, mut dm2) = (vec![0.0; 16 * bl.plane(o)], vec![0.0; 16 * bl.plane(o)]);
                output_transform_bwd_rows(&g, bl, dyg, ng, &mut dm1);
                output_transform_bwd_group(&g, bl, dyg, ng, &mut dm2);
                assert_eq!(dm1, dm2, "{ctx}: output bwd");
            });
        }
    }
}
