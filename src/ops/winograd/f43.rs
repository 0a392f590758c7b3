//! Hand-written transforms for F(4x4, 3x3): 36 products per 16 outputs
//! (2.25 per output against F(2x2, 3x3)'s 4 and a direct convolution's 9),
//! for the large 3x3 layers. Lavin & Gray's matrices (interpolation at 0,
//! ±1, ±2, ∞), with the common subexpressions written out; same layouts and
//! band handling as [`super::f23`]: `V[ξ][c][t]`, `M[ξ][o][t]`,
//! `U[ξ][o][c]` with 36 planes, `ξ = 6 a + b`.

use super::super::conv::Geom;
use super::super::gemm::{zeros, Elem};
use super::{load_padded_row, Epilogue, Tiles};

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

/// `V[ξ][c][t]` (36, C, tg) for `ng` images `x (ng, C, H, W)`: the row
/// transform on six whole padded rows, then the column transform of each
/// tile writes the 36 planes contiguously along a tile row.
pub(super) fn input_transform<T: Elem>(g: &Geom, tl: &Tiles, x: &[T], ng: usize, v: &mut [T]) {
    let (c_n, tw) = (g.c, tl.tw);
    let tg = ng * tl.t;
    let wp = 4 * tw + 2;
    let (pt, pl) = (g.pad[0] as isize, g.pad[2]);
    let (two, four, five, _) = consts::<T>();
    let mut rows = vec![T::ZERO; 6 * wp];
    let mut tmp = vec![T::ZERO; 6 * wp];
    let mut out = vec![T::ZERO; 6 * tw];
    for img in 0..ng {
        for c in 0..c_n {
            let xc = &x[(img * c_n + c) * g.h * g.w..(img * c_n + c + 1) * g.h * g.w];
            for ti in 0..tl.th {
                let r0 = 4 * (tl.ti0 + ti) as isize - pt;
                for r in 0..6 {
                    load_padded_row(xc, g, r0 + r as isize, pl, &mut rows[r * wp..(r + 1) * wp]);
                }
                {
                    let d: [&[T]; 6] = std::array::from_fn(|r| &rows[r * wp..(r + 1) * wp]);
                    let mut t = tmp.chunks_exact_mut(wp);
                    let t: [&mut [T]; 6] = std::array::from_fn(|_| t.next().unwrap());
                    let [t0, t1, t2, t3, t4, t5] = t;
                    for j in 0..wp {
                        let o = bt([d[0][j], d[1][j], d[2][j], d[3][j], d[4][j], d[5][j]], two, four, five);
                        (t0[j], t1[j], t2[j], t3[j], t4[j], t5[j]) = (o[0], o[1], o[2], o[3], o[4], o[5]);
                    }
                }
                let t0 = img * tl.t + ti * tw;
                for a in 0..6 {
                    let ta = &tmp[a * wp..(a + 1) * wp];
                    for tj in 0..tw {
                        let o = bt(std::array::from_fn(|k| ta[4 * tj + k]), two, four, five);
                        for b in 0..6 {
                            out[b * tw + tj] = o[b];
                        }
                    }
                    for b in 0..6 {
                        let base = ((a * 6 + b) * c_n + c) * tg + t0;
                        v[base..base + tw].copy_from_slice(&out[b * tw..(b + 1) * tw]);
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
    let wp = 4 * tw + 2;
    let (pt, pl) = (g.pad[0] as isize, g.pad[2]);
    let (two, four, five, _) = consts::<T>();
    let mut e = vec![T::ZERO; 6 * wp];
    let mut rows = vec![T::ZERO; 6 * wp];
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
                    let ea = &mut e[a * wp..(a + 1) * wp];
                    ea.fill(T::ZERO);
                    let d: [&[T]; 6] = std::array::from_fn(|b| {
                        let base = ((a * 6 + b) * c_n + c) * tg + t0;
                        &dv[base..base + tw]
                    });
                    for tj in 0..tw {
                        let o = b6(std::array::from_fn(|b| d[b][tj]), two, four, five);
                        for k in 0..6 {
                            ea[4 * tj + k] += o[k];
                        }
                    }
                }
                if hi <= lo {
                    continue;
                }
                // row adjoint: padded row r0 + k gets (B e)[k]
                {
                    let es: [&[T]; 6] = std::array::from_fn(|a| &e[a * wp..(a + 1) * wp]);
                    let mut r = rows.chunks_exact_mut(wp);
                    let r: [&mut [T]; 6] = std::array::from_fn(|_| r.next().unwrap());
                    let [r0_, r1, r2, r3, r4, r5] = r;
                    for j in lo..hi {
                        let o = b6([es[0][j], es[1][j], es[2][j], es[3][j], es[4][j], es[5][j]], two, four, five);
                        (r0_[j], r1[j], r2[j], r3[j], r4[j], r5[j]) = (o[0], o[1], o[2], o[3], o[4], o[5]);
                    }
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
pub(super) fn output_transform<T: Elem>(g: &Geom, tl: &Tiles, m: &[T], ng: usize, y: &mut [T], epi: &Epilogue<T>) {
    let (o_n, p, tw) = (g.o, g.p(), tl.tw);
    let tg = ng * tl.t;
    let (two, four, _, eight) = consts::<T>();
    let mut s = vec![T::ZERO; 24 * tw]; // s[i][b][tj]
    let mut yr = vec![T::ZERO; 4 * tw];
    for img in 0..ng {
        for o in 0..o_n {
            let yo = &mut y[(img * o_n + o) * p..(img * o_n + o + 1) * p];
            for ti in 0..tl.th {
                let t0 = img * tl.t + ti * tw;
                for b in 0..6 {
                    let mab: [&[T]; 6] = std::array::from_fn(|a| {
                        let base = ((a * 6 + b) * o_n + o) * tg + t0;
                        &m[base..base + tw]
                    });
                    for tj in 0..tw {
                        let r = at(std::array::from_fn(|a| mab[a][tj]), two, four, eight);
                        for i in 0..4 {
                            s[(i * 6 + b) * tw + tj] = r[i];
                        }
                    }
                }
                for i in 0..4 {
                    let oh = 4 * (tl.ti0 + ti) + i;
                    if oh >= g.oh {
                        break;
                    }
                    let si = &s[i * 6 * tw..(i + 1) * 6 * tw];
                    for tj in 0..tw {
                        let r = at(std::array::from_fn(|b| si[b * tw + tj]), two, four, eight);
                        yr[4 * tj..4 * tj + 4].copy_from_slice(&r);
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
    let wq = 4 * tw;
    let (two, four, _, eight) = consts::<T>();
    let mut rows = vec![T::ZERO; 4 * wq];
    let mut r6 = vec![T::ZERO; 6 * wq];
    let mut out = vec![T::ZERO; 6 * tw];
    for img in 0..ng {
        for o in 0..o_n {
            let yo = &dy[(img * o_n + o) * p..(img * o_n + o + 1) * p];
            for ti in 0..tl.th {
                for i in 0..4 {
                    let row = &mut rows[i * wq..(i + 1) * wq];
                    let oh = 4 * (tl.ti0 + ti) + i;
                    if oh < g.oh {
                        row[..g.ow].copy_from_slice(&yo[oh * g.ow..(oh + 1) * g.ow]);
                        row[g.ow..].fill(T::ZERO);
                    } else {
                        row.fill(T::ZERO);
                    }
                }
                {
                    let y: [&[T]; 4] = std::array::from_fn(|i| &rows[i * wq..(i + 1) * wq]);
                    let mut t = r6.chunks_exact_mut(wq);
                    let t: [&mut [T]; 6] = std::array::from_fn(|_| t.next().unwrap());
                    let [a0, a1, a2, a3, a4, a5] = t;
                    for j in 0..wq {
                        let r = a6([y[0][j], y[1][j], y[2][j], y[3][j]], two, four, eight);
                        (a0[j], a1[j], a2[j], a3[j], a4[j], a5[j]) = (r[0], r[1], r[2], r[3], r[4], r[5]);
                    }
                }
                let t0 = img * tl.t + ti * tw;
                for a in 0..6 {
                    let ra = &r6[a * wq..(a + 1) * wq];
                    for tj in 0..tw {
                        let r = a6(std::array::from_fn(|j| ra[4 * tj + j]), two, four, eight);
                        for b in 0..6 {
                            out[b * tw + tj] = r[b];
                        }
                    }
                    for b in 0..6 {
                        let base = ((a * 6 + b) * o_n + o) * tg + t0;
                        dm[base..base + tw].copy_from_slice(&out[b * tw..(b + 1) * tw]);
                    }
                }
            }
        }
    }
}
