//! F(3x3, 4x4): 36 products per 9 outputs (4 per output against a direct
//! convolution's 16), for the 4x4 layers of the study's 4x4 model. The
//! same points as F(4x4, 3x3) (0, ±1, ±2, ∞), hence the same `B^T`; `A^T`
//! and `G` are the Toom-Cook ones for 3 outputs and 4 taps, with the
//! common subexpressions written out. The transforms are [`super::alpha`]'s.

use super::super::gemm::Elem;
use super::alpha::Alpha;

/// F(3x3, 4x4)'s matrices and tile stride.
pub(super) struct F34;

impl Alpha for F34 {
    const M: usize = 3;
    const R: usize = 4;
    const A: usize = 6;

    fn g(w: &[f64], out: &mut [f64]) {
        let (w0, w1, w2, w3) = (w[0], w[1], w[2], w[3]);
        let (even, odd) = (w0 + w2, w1 + w3);
        let (even4, odd4) = (w0 + 4.0 * w2, 2.0 * w1 + 8.0 * w3);
        out.copy_from_slice(&[w0 / 4.0, -(even + odd) / 6.0, -(even - odd) / 6.0, (even4 + odd4) / 24.0, (even4 - odd4) / 24.0, w3]);
    }

    fn gt(u: &[f64], out: &mut [f64]) {
        let (s12, d21) = (u[1] + u[2], u[2] - u[1]);
        let (s34, d34) = (u[3] + u[4], u[3] - u[4]);
        out[0] = u[0] / 4.0 - s12 / 6.0 + s34 / 24.0;
        out[1] = d21 / 6.0 + d34 / 12.0;
        out[2] = (s34 - s12) / 6.0;
        out[3] = d21 / 6.0 + d34 / 3.0 + u[5];
    }

    #[inline(always)]
    fn split<T: Elem>(row: &[T], ph: &mut [T], len: usize) {
        let (p0, rest) = ph.split_at_mut(len);
        let (p1, p2) = rest.split_at_mut(len);
        let full = (row.len() / 3).min(len);
        deinterleave3(full, row, p0, p1, p2);
        for u in full..len {
            let at = |p: usize| row.get(3 * u + p).copied().unwrap_or(T::ZERO);
            (p0[u], p1[u], p2[u]) = (at(0), at(1), at(2));
        }
    }

    #[inline(always)]
    fn merge<T: Elem>(ph: &[T], len: usize, row: &mut [T]) {
        let full = (row.len() / 3).min(len);
        let (head, tail) = row.split_at_mut(3 * full);
        interleave3(full, &ph[..len], &ph[len..2 * len], &ph[2 * len..3 * len], head);
        for (j, d) in tail.iter_mut().enumerate() {
            *d = ph[j * len + full];
        }
    }

    #[inline(always)]
    fn at<T: Elem>(n: usize, src: &[T], sb: usize, ss: usize, dst: &mut [T], db: usize, ds: usize) {
        let (two, four) = (T::from_f64(2.0), T::from_f64(4.0));
        let_planes!(src, sb, ss, n => m0, m1, m2, m3, m4, m5);
        let_planes!(mut dst, db, ds, n => o0, o1, o2);
        streams!(n, [m0, m1, m2, m3, m4, m5] => [o0, o1, o2], |m| {
            let (s12, d12) = (m[1] + m[2], m[1] - m[2]);
            let (s34, d34) = (m[3] + m[4], m[3] - m[4]);
            [m[0] + s12 + s34, d12 + two * d34, s12 + four * s34 + m[5]]
        });
    }

    #[inline(always)]
    fn a<T: Elem>(n: usize, src: &[T], sb: usize, ss: usize, dst: &mut [T], db: usize, ds: usize) {
        let (two, four) = (T::from_f64(2.0), T::from_f64(4.0));
        let_planes!(src, sb, ss, n => y0, y1, y2);
        let_planes!(mut dst, db, ds, n => o0, o1, o2, o3, o4, o5);
        streams!(n, [y0, y1, y2] => [o0, o1, o2, o3, o4, o5], |y| {
            let (e, e4, o2) = (y[0] + y[2], y[0] + four * y[2], two * y[1]);
            [y[0], e + y[1], e - y[1], e4 + o2, e4 - o2, y[2]]
        });
    }
}

/// The stride-3 loop of `split`, in a function of its own so that its
/// outputs are known not to overlap (LLVM then turns it into shuffles).
#[inline(always)]
fn deinterleave3<T: Elem>(n: usize, row: &[T], p0: &mut [T], p1: &mut [T], p2: &mut [T]) {
    let row = &row[..3 * n];
    let (p0, p1, p2) = (&mut p0[..n], &mut p1[..n], &mut p2[..n]);
    for u in 0..n {
        p0[u] = row[3 * u];
        p1[u] = row[3 * u + 1];
        p2[u] = row[3 * u + 2];
    }
}

#[inline(always)]
fn interleave3<T: Elem>(n: usize, p0: &[T], p1: &[T], p2: &[T], row: &mut [T]) {
    let row = &mut row[..3 * n];
    let (p0, p1, p2) = (&p0[..n], &p1[..n], &p2[..n]);
    for u in 0..n {
        row[3 * u] = p0[u];
        row[3 * u + 1] = p1[u];
        row[3 * u + 2] = p2[u];
    }
}
