//! F(4x4, 3x3): 36 products per 16 outputs (2.25 per output against
//! F(2x2, 3x3)'s 4 and a direct convolution's 9), for the large 3x3 layers.
//! Lavin & Gray's `A^T` and `G` (interpolation at 0, ±1, ±2, ∞), with the
//! common subexpressions written out; the transforms are [`super::alpha`]'s.

use super::super::gemm::Elem;
use super::alpha::Alpha;

/// F(4x4, 3x3)'s matrices and tile stride.
pub(super) struct F43;

impl Alpha for F43 {
    const M: usize = 4;
    const R: usize = 3;
    const A: usize = 6;

    fn g(w: &[f64], out: &mut [f64]) {
        out.copy_from_slice(&g6([w[0], w[1], w[2]]));
    }

    fn gt(u: &[f64], out: &mut [f64]) {
        out.copy_from_slice(&gt6([u[0], u[1], u[2], u[3], u[4], u[5]]));
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
        let (two, four, eight) = consts::<T>();
        let_planes!(src, sb, ss, n => m0, m1, m2, m3, m4, m5);
        let_planes!(mut dst, db, ds, n => o0, o1, o2, o3);
        streams!(n, [m0, m1, m2, m3, m4, m5] => [o0, o1, o2, o3], |v| at(v, two, four, eight));
    }

    #[inline(always)]
    fn a<T: Elem>(n: usize, src: &[T], sb: usize, ss: usize, dst: &mut [T], db: usize, ds: usize) {
        let (two, four, eight) = consts::<T>();
        let_planes!(src, sb, ss, n => y0, y1, y2, y3);
        let_planes!(mut dst, db, ds, n => o0, o1, o2, o3, o4, o5);
        streams!(n, [y0, y1, y2, y3] => [o0, o1, o2, o3, o4, o5], |v| a6(v, two, four, eight));
    }
}

#[inline(always)]
fn consts<T: Elem>() -> (T, T, T) {
    (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0))
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

/// `ph[p][u] = row[4 u + p]` for `u < len` (zero past the row's end).
#[inline(always)]
pub(super) fn split4<T: Elem>(row: &[T], ph: &mut [T], len: usize) {
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
pub(super) fn merge4<T: Elem>(ph: &[T], len: usize, row: &mut [T]) {
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
