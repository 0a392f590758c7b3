//! F(4x4, 4x4): 49 products per 16 outputs (3.06 per output against
//! F(3x3, 4x4)'s 4 and a direct convolution's 16). Its 7x7 tiles cost
//! more to transform than the products save, so `choose_algo` keeps
//! F(3x3, 4x4) and this is reached through `FER_CONV=winograd4` (see
//! `choose_algo` for the measurements). Interpolation at 0, ±1, ±2 and
//! ±1/2, without the point at infinity: the points come in ± pairs, so
//! every row pair of `B^T`, `A^T` and `G` is an even part plus or minus an
//! odd one, which the transforms below share (about 23 operations for a
//! 7-value `B^T` column). Its float32 error was within 1.5x F(3x3, 4x4)'s
//! in a numpy simulation of one tile over 48 random channels (worst of 200:
//! 1.0e-5 relative against 7.6e-6). The transforms are [`super::alpha`]'s.

use super::super::gemm::Elem;
use super::alpha::{Alpha, Ins, Outs};
use super::f43::{merge4, split4};

/// F(4x4, 4x4)'s matrices and tile stride.
pub(super) struct F44;

/// The constants of the transforms, in the element type (all exact).
#[derive(Clone, Copy)]
struct Consts<T> {
    half: T,
    quarter: T,
    eighth: T,
    two: T,
    four: T,
    five: T,
    eight: T,
    five_halves: T,
    five_quarters: T,
    seventeen_quarters: T,
    twentyone_quarters: T,
}

#[inline(always)]
fn consts<T: Elem>() -> Consts<T> {
    Consts {
        half: T::from_f64(0.5),
        quarter: T::from_f64(0.25),
        eighth: T::from_f64(0.125),
        two: T::from_f64(2.0),
        four: T::from_f64(4.0),
        five: T::from_f64(5.0),
        eight: T::from_f64(8.0),
        five_halves: T::from_f64(2.5),
        five_quarters: T::from_f64(1.25),
        seventeen_quarters: T::from_f64(4.25),
        twentyone_quarters: T::from_f64(5.25),
    }
}

/// `B^T d` for one column of 7 values.
#[inline(always)]
fn bt7<T: Elem>(d: [T; 7], k: Consts<T>) -> [T; 7] {
    let (e1, o1) = (d[2] + d[6] - k.seventeen_quarters * d[4], d[1] + d[5] - k.seventeen_quarters * d[3]);
    let (e2, o2) = (k.quarter * d[2] - k.five_quarters * d[4] + d[6], k.half * d[1] - k.five_halves * d[3] + k.two * d[5]);
    let (e3, o3) = (k.four * d[2] - k.five * d[4] + d[6], k.two * d[1] - k.five_halves * d[3] + k.half * d[5]);
    [d[6] - d[0] + k.twentyone_quarters * (d[2] - d[4]), e1 + o1, e1 - o1, e2 + o2, e2 - o2, e3 + o3, e3 - o3]
}

/// `B e` (the adjoint of [`bt7`]).
#[inline(always)]
fn b7<T: Elem>(e: [T; 7], k: Consts<T>) -> [T; 7] {
    let (s1, d1) = (e[1] + e[2], e[1] - e[2]);
    let (s2, d2) = (e[3] + e[4], e[3] - e[4]);
    let (s3, d3) = (e[5] + e[6], e[5] - e[6]);
    [
        T::ZERO - e[0],
        d1 + k.half * d2 + k.two * d3,
        k.twentyone_quarters * e[0] + s1 + k.quarter * s2 + k.four * s3,
        T::ZERO - (k.seventeen_quarters * d1 + k.five_halves * (d2 + d3)),
        T::ZERO - (k.twentyone_quarters * e[0] + k.seventeen_quarters * s1 + k.five_quarters * s2 + k.five * s3),
        d1 + k.two * d2 + k.half * d3,
        e[0] + s1 + s2 + s3,
    ]
}

/// `A^T m`: 4 outputs from 7 values.
#[inline(always)]
fn at7<T: Elem>(m: [T; 7], k: Consts<T>) -> [T; 4] {
    let (s1, d1) = (m[1] + m[2], m[1] - m[2]);
    let (s2, d2) = (m[3] + m[4], m[3] - m[4]);
    let (s3, d3) = (m[5] + m[6], m[5] - m[6]);
    [m[0] + s1 + s2 + s3, d1 + k.two * d2 + k.half * d3, s1 + k.four * s2 + k.quarter * s3, d1 + k.eight * d2 + k.eighth * d3]
}

/// `A y` (the adjoint of [`at7`]).
#[inline(always)]
fn a7<T: Elem>(y: [T; 4], k: Consts<T>) -> [T; 7] {
    let (e1, o1) = (y[0] + y[2], y[1] + y[3]);
    let (e2, o2) = (y[0] + k.four * y[2], k.two * y[1] + k.eight * y[3]);
    let (e3, o3) = (y[0] + k.quarter * y[2], k.half * y[1] + k.eighth * y[3]);
    [y[0], e1 + o1, e1 - o1, e2 + o2, e2 - o2, e3 + o3, e3 - o3]
}

impl Alpha for F44 {
    const M: usize = 4;
    const R: usize = 4;
    const A: usize = 7;

    fn g(w: &[f64], out: &mut [f64]) {
        let (w0, w1, w2, w3) = (w[0], w[1], w[2], w[3]);
        let (e1, o1) = (w0 + w2, w1 + w3);
        let (e2, o2) = (w0 + 4.0 * w2, 2.0 * w1 + 8.0 * w3);
        let (e3, o3) = (32.0 * w0 + 8.0 * w2, 16.0 * w1 + 4.0 * w3);
        let ninth2 = -2.0 / 9.0;
        out.copy_from_slice(&[-w0, ninth2 * (e1 + o1), ninth2 * (e1 - o1), (e2 + o2) / 90.0, (e2 - o2) / 90.0, (e3 + o3) / 45.0, (e3 - o3) / 45.0]);
    }

    fn gt(u: &[f64], out: &mut [f64]) {
        let (s1, d1) = (u[1] + u[2], u[1] - u[2]);
        let (s2, d2) = (u[3] + u[4], u[3] - u[4]);
        let (s3, d3) = (u[5] + u[6], u[5] - u[6]);
        let ninth2 = -2.0 / 9.0;
        out[0] = -u[0] + ninth2 * s1 + s2 / 90.0 + 32.0 * s3 / 45.0;
        out[1] = ninth2 * d1 + 2.0 * d2 / 90.0 + 16.0 * d3 / 45.0;
        out[2] = ninth2 * s1 + 4.0 * s2 / 90.0 + 8.0 * s3 / 45.0;
        out[3] = ninth2 * d1 + 8.0 * d2 / 90.0 + 4.0 * d3 / 45.0;
    }

    #[inline(always)]
    fn split<T: Elem>(row: &[T], ph: &mut [T], len: usize) {
        split4(row, ph, len)
    }

    #[inline(always)]
    fn merge<T: Elem>(ph: &[T], len: usize, row: &mut [T]) {
        merge4(ph, len, row)
    }

    #[inline(always)]
    fn at<T: Elem>(n: usize, src: &[T], sb: usize, ss: usize, dst: &mut [T], db: usize, ds: usize) {
        let k = consts::<T>();
        let_planes!(src, sb, ss, n => m0, m1, m2, m3, m4, m5, m6);
        let_planes!(mut dst, db, ds, n => o0, o1, o2, o3);
        streams!(n, [m0, m1, m2, m3, m4, m5, m6] => [o0, o1, o2, o3], |v| at7(v, k));
    }

    #[inline(always)]
    fn a<T: Elem>(n: usize, src: &[T], sb: usize, ss: usize, dst: &mut [T], db: usize, ds: usize) {
        let k = consts::<T>();
        let_planes!(src, sb, ss, n => y0, y1, y2, y3);
        let_planes!(mut dst, db, ds, n => o0, o1, o2, o3, o4, o5, o6);
        streams!(n, [y0, y1, y2, y3] => [o0, o1, o2, o3, o4, o5, o6], |v| a7(v, k));
    }

    #[inline(always)]
    fn bt<T: Elem>(n: usize, d: Ins<T>, dst: &mut [T], db: usize, ds: usize) {
        let k = consts::<T>();
        let [d0, d1, d2, d3, d4, d5, d6] = d;
        let_planes!(mut dst, db, ds, n => o0, o1, o2, o3, o4, o5, o6);
        streams!(n, [d0, d1, d2, d3, d4, d5, d6] => [o0, o1, o2, o3, o4, o5, o6], |d| bt7(d, k));
    }

    #[inline(always)]
    fn b<T: Elem>(n: usize, src: &[T], sb: usize, ss: usize, dst: &mut [T], db: usize, ds: usize) {
        let k = consts::<T>();
        let_planes!(src, sb, ss, n => e0, e1, e2, e3, e4, e5, e6);
        let_planes!(mut dst, db, ds, n => o0, o1, o2, o3, o4, o5, o6);
        streams!(n, [e0, e1, e2, e3, e4, e5, e6] => [o0, o1, o2, o3, o4, o5, o6], |e| b7(e, k));
    }

    #[inline(always)]
    fn b_add<T: Elem>(n: usize, src: &[T], sb: usize, ss: usize, q: Outs<T>) {
        let k = consts::<T>();
        let_planes!(src, sb, ss, n => e0, e1, e2, e3, e4, e5, e6);
        let [q0, q1, q2, q3, q4, q5, q6] = q;
        streams!(n, [e0, e1, e2, e3, e4, e5, e6] += [q0, q1, q2, q3, q4, q5, q6], |e| b7(e, k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written matrices satisfy Winograd's identity
    /// `sum_k A^T[i][k] G[k][j] B^T[k][l] = [l == i + j]` (so they compute
    /// the 4-tap correlation of 7 inputs into 4 outputs), and `gt`, `b`
    /// and `a` are the adjoints of `g`, `bt` and `at`.
    #[test]
    #[allow(clippy::needless_range_loop)] // indices as in the matrix identities
    fn f44_matrices_are_exact_and_adjoint() {
        let k = consts::<f64>();
        let unit = |i: usize| -> [f64; 7] { std::array::from_fn(|l| if l == i { 1.0 } else { 0.0 }) };
        // columns of B^T, G and A^T from the transforms of unit vectors
        let bt: Vec<[f64; 7]> = (0..7).map(|l| bt7(unit(l), k)).collect(); // bt[l][k] = B^T[k][l]
        let at: Vec<[f64; 4]> = (0..7).map(|kk| at7(unit(kk), k)).collect(); // at[k][i] = A^T[i][k]
        let gm: Vec<[f64; 7]> = (0..4)
            .map(|j| {
                let mut w = [0.0; 4];
                w[j] = 1.0;
                let mut out = [0.0; 7];
                F44::g(&w, &mut out);
                out
            })
            .collect(); // gm[j][k] = G[k][j]
        for i in 0..4 {
            for j in 0..4 {
                for l in 0..7 {
                    let s: f64 = (0..7).map(|kk| at[kk][i] * gm[j][kk] * bt[l][kk]).sum();
                    let want = if l == i + j { 1.0 } else { 0.0 };
                    assert!((s - want).abs() < 1e-12, "i {i} j {j} l {l}: {s}");
                }
            }
        }
        for kk in 0..7 {
            for l in 0..7 {
                assert_eq!(b7(unit(kk), k)[l], bt[l][kk], "B is B^T's transpose at {kk}, {l}");
            }
            for i in 0..4 {
                let mut y = [0.0; 4];
                y[i] = 1.0;
                assert_eq!(a7(y, k)[kk], at[kk][i], "A is A^T's transpose at {kk}, {i}");
            }
            let mut gt = [0.0; 4];
            F44::gt(&unit(kk), &mut gt);
            for j in 0..4 {
                assert!((gt[j] - gm[j][kk]).abs() < 1e-15, "G^T is G's transpose at {kk}, {j}");
            }
        }
    }
}
