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

/// `V[ξ][c][t]` (16, C, tg) for `ng` images `x (ng, C, H, W)`.
/// Row transform on whole padded rows, then the column transform writes
/// each of the 16 planes contiguously along a tile row.
pub(super) fn input_transform<T: Elem>(g: &Geom, tl: &Tiles, x: &[T], ng: usize, v: &mut [T]) {
    let (c_n, tw) = (g.c, tl.tw);
    let tg = ng * tl.t;
    let pv = tl.plane(c_n);
    let wp = 2 * tw + 2;
    let (pt, pl) = (g.pad[0] as isize, g.pad[2]);
    // The row transform reads the image rows in place and writes only the
    // columns inside the image: `tmp`'s padding columns stay zero, which is
    // what the transform of zero padding gives.
    let (lo, hi) = (pl.min(wp), (pl + g.w).min(wp));
    let zero = vec![T::ZERO; g.w];
    let mut tmp = vec![T::ZERO; 4 * wp];
    for img in 0..ng {
        for c in 0..c_n {
            let xc = &x[(img * c_n + c) * g.h * g.w..(img * c_n + c + 1) * g.h * g.w];
            for ti in 0..tl.th {
                let r0 = 2 * (tl.ti0 + ti) as isize - pt;
                if hi > lo {
                    let n = hi - lo;
                    let row = |r: isize| padded_row_inside(xc, &zero, g, r0 + r, (lo, hi), pl);
                    let (d0, d1, d2, d3) = (row(0), row(1), row(2), row(3));
                    let (t0, rest) = tmp.split_at_mut(wp);
                    let (t1, rest) = rest.split_at_mut(wp);
                    let (t2, t3) = rest.split_at_mut(wp);
                    let (t0, t1, t2, t3) = (&mut t0[lo..hi], &mut t1[lo..hi], &mut t2[lo..hi], &mut t3[lo..hi]);
                    for j in 0..n {
                        t0[j] = d0[j] - d2[j];
                        t1[j] = d1[j] + d2[j];
                        t2[j] = d2[j] - d1[j];
                        t3[j] = d1[j] - d3[j];
                    }
                }
                let t0 = img * tl.t + ti * tw;
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

/// Scatter-adds `B dV B^T` of every tile into `dx (ng, C, H, W)`.
pub(super) fn input_transform_bwd<T: Elem>(g: &Geom, tl: &Tiles, dv: &[T], ng: usize, dx: &mut [T]) {
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
                let t0 = img * tl.t + ti * tw;
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
                // row pass: rows of B e
                let (e0, rest) = e.split_at(wp);
                let (e1, rest) = rest.split_at(wp);
                let (e2, e3) = rest.split_at(wp);
                for r in 0..4 {
                    let ih = r0 + r as isize;
                    if ih < 0 || ih >= g.h as isize {
                        continue;
                    }
                    let xr = &mut xc[ih as usize * g.w..(ih as usize + 1) * g.w];
                    let lo = pl.min(wp);
                    let hi = (pl + g.w).min(wp);
                    let xs = &mut xr[lo - pl..hi - pl];
                    let (e0, e1, e2, e3) = (&e0[lo..hi], &e1[lo..hi], &e2[lo..hi], &e3[lo..hi]);
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
        }
    }
}

/// `y (ng, O, OH, OW)` from `M[ξ][o][t]`, through `epi`.
pub(super) fn output_transform<T: Elem>(g: &Geom, tl: &Tiles, m: &[T], ng: usize, y: &mut [T], epi: &Epilogue<T>) {
    let (o_n, p, tw) = (g.o, g.p(), tl.tw);
    let tg = ng * tl.t;
    let pm = tl.plane(o_n);
    let mut s = vec![T::ZERO; 8 * tw]; // s[i][b][tj]
    let mut yr = vec![T::ZERO; 2 * tw];
    for img in 0..ng {
        for o in 0..o_n {
            let yo = &mut y[(img * o_n + o) * p..(img * o_n + o + 1) * p];
            for ti in 0..tl.th {
                let t0 = img * tl.t + ti * tw;
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

/// `dM[ξ][o][t] = A dY A^T` from `dy (ng, O, OH, OW)`.
pub(super) fn output_transform_bwd<T: Elem>(g: &Geom, tl: &Tiles, dy: &[T], ng: usize, dm: &mut [T]) {
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
                let t0 = img * tl.t + ti * tw;
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
