//! A GEMM without packing for the Winograd planes: `c (m x n) (+)= a (m x k)
//! b (k x n)` where `b`'s rows and `c`'s rows are contiguous and `n` (the
//! tiles, about 144) is the vectorised dimension. `a` (a plane of the
//! transformed filters, a few KB) is read as broadcast scalars at any
//! strides, so `U` and `U^T` need no copy either.

use super::gemm::{gemm, max_index, Elem, Mat, Parallelism};
use super::simd;

/// Rows of `c` per register block.
const MR: usize = 8;
/// Columns of `c` per register block: three 16-lane vectors.
const NR: usize = 48;

/// The `R x W` block of `c` at rows `i0..` of `a` and columns `j0..` of
/// `b`; `c` starts at the block's first row, its columns at `cj`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block<T: Elem, const R: usize, const W: usize>(k: usize, a: &Mat<'_, T>, i0: usize, b: &[T], ldb: usize, j0: usize, c: &mut [T], ldc: usize, cj: usize, accumulate: bool) {
    let mut acc = [[T::ZERO; W]; R];
    if accumulate {
        for (r, row) in acc.iter_mut().enumerate() {
            row.copy_from_slice(&c[r * ldc + cj..][..W]);
        }
    }
    // rows `..i0 + R` of `a` and columns `..j0 + W` of `b`
    assert!(a.data.len() >= max_index(i0 + R, k, a.rs, a.cs) && b.len() >= max_index(k, j0 + W, ldb, 1));
    // SAFETY: the assert above: every `a` and `b` element read is in bounds.
    unsafe {
        // (offsets taken inside the loop: with k = 0 they may lie past an empty `a`)
        let (ap, bp) = (a.data.as_ptr(), b.as_ptr());
        for p in 0..k {
            // Loaded once into registers: indexed (and bounds-checked)
            // inside the row loop, `b` was reloaded for every row, and the
            // kernel ran at 56 GFLOP/s instead of 137.
            let bv: [T; W] = std::ptr::read_unaligned(bp.add(p * ldb + j0) as *const [T; W]);
            let ak = ap.add(i0 * a.rs + p * a.cs);
            for (r, row) in acc.iter_mut().enumerate() {
                let av = *ak.add(r * a.rs);
                for j in 0..W {
                    row[j] = av.mul_add(bv[j], row[j]);
                }
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        c[r * ldc + cj..][..W].copy_from_slice(row);
    }
}

/// [`block`] for `rows <= MR` rows (a `match` over the constant).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rows_block<T: Elem, const W: usize>(rows: usize, k: usize, a: &Mat<'_, T>, i0: usize, b: &[T], ldb: usize, j0: usize, c: &mut [T], ldc: usize, cj: usize, accumulate: bool) {
    match rows {
        8 => block::<T, 8, W>(k, a, i0, b, ldb, j0, c, ldc, cj, accumulate),
        7 => block::<T, 7, W>(k, a, i0, b, ldb, j0, c, ldc, cj, accumulate),
        6 => block::<T, 6, W>(k, a, i0, b, ldb, j0, c, ldc, cj, accumulate),
        5 => block::<T, 5, W>(k, a, i0, b, ldb, j0, c, ldc, cj, accumulate),
        4 => block::<T, 4, W>(k, a, i0, b, ldb, j0, c, ldc, cj, accumulate),
        3 => block::<T, 3, W>(k, a, i0, b, ldb, j0, c, ldc, cj, accumulate),
        2 => block::<T, 2, W>(k, a, i0, b, ldb, j0, c, ldc, cj, accumulate),
        _ => block::<T, 1, W>(k, a, i0, b, ldb, j0, c, ldc, cj, accumulate),
    }
}

/// All row blocks of the `W` columns of `c` from `j0`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn column_panel<T: Elem, const W: usize>(m: usize, k: usize, a: &Mat<'_, T>, b: &[T], ldb: usize, j0: usize, c: &mut [T], ldc: usize, accumulate: bool) {
    for i0 in (0..m).step_by(MR) {
        rows_block::<T, W>((m - i0).min(MR), k, a, i0, b, ldb, j0, &mut c[i0 * ldc..], ldc, j0, accumulate);
    }
}

/// `c (m x n, row stride ldc) (+)= a (m x k) * b (k x n, row stride ldb)`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_rows<T: Elem>(m: usize, n: usize, k: usize, c: &mut [T], ldc: usize, accumulate: bool, a: Mat<'_, T>, b: &[T], ldb: usize) {
    if m == 0 || n == 0 {
        return;
    }
    // `gemm`'s checks
    assert!(c.len() >= max_index(m, n, ldc, 1), "gemm_rows: dst too small");
    assert!(a.data.len() >= max_index(m, k, a.rs, a.cs), "gemm_rows: lhs too small");
    assert!(b.len() >= max_index(k, n, ldb, 1), "gemm_rows: rhs too small");
    if simd::has_avx512() {
        simd::dispatch(#[inline(always)] || gemm_rows_body(m, n, k, c, ldc, accumulate, a, b, ldb))
    } else {
        // 24 accumulators need AVX-512's 32 registers; with 16 they spill.
        gemm(m, n, k, c, ldc, accumulate, a, Mat { data: b, rs: ldb, cs: 1 }, Parallelism::None)
    }
}

/// [`gemm_rows`]'s loops, inlined into the `simd::dispatch` closure: panels
/// of 48 columns, then one of 32 and one of 16 for the rest, then the last
/// `n % 16` columns through a zero-padded copy, so they are vectorised too.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gemm_rows_body<T: Elem>(m: usize, n: usize, k: usize, c: &mut [T], ldc: usize, accumulate: bool, a: Mat<'_, T>, b: &[T], ldb: usize) {
    let mut j0 = 0;
    while n - j0 >= NR {
        column_panel::<T, NR>(m, k, &a, b, ldb, j0, c, ldc, accumulate);
        j0 += NR;
    }
    if n - j0 >= 32 {
        column_panel::<T, 32>(m, k, &a, b, ldb, j0, c, ldc, accumulate);
        j0 += 32;
    }
    if n - j0 >= 16 {
        column_panel::<T, 16>(m, k, &a, b, ldb, j0, c, ldc, accumulate);
        j0 += 16;
    }
    let rest = n - j0;
    if rest == 0 {
        return;
    }
    let mut bt = vec![T::ZERO; k * 16];
    for p in 0..k {
        bt[p * 16..][..rest].copy_from_slice(&b[p * ldb + j0..][..rest]);
    }
    let mut ct = [T::ZERO; MR * 16];
    for i0 in (0..m).step_by(MR) {
        let rows = (m - i0).min(MR);
        if accumulate {
            for r in 0..rows {
                ct[r * 16..][..rest].copy_from_slice(&c[(i0 + r) * ldc + j0..][..rest]);
            }
        }
        rows_block::<T, 16>(rows, k, &a, i0, &bt, 16, 0, &mut ct, 16, 0, accumulate);
        for r in 0..rows {
            c[(i0 + r) * ldc + j0..][..rest].copy_from_slice(&ct[r * 16..][..rest]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn data(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * 37 + seed * 11) % 101) as f32 / 50.0 - 1.0).collect()
    }

    /// Against `gemm`, with both operand forms and `accumulate` (without
    /// AVX-512, `gemm_rows` is `gemm` and this checks nothing new).
    #[test]
    fn matches_gemm() {
        for &(m, n, k) in &[(48, 144, 48), (5, 17, 3), (13, 50, 7), (124, 144, 64), (1, 1, 1), (9, 33, 0), (17, 100, 9), (8, 5, 4), (3, 47, 130)] {
            let a = data(m * k, 1);
            let b = data(k * n, 2);
            for (at, acc) in [(false, false), (true, true), (false, true)] {
                let am = if at { Mat::transposed(&a, m) } else { Mat::row_major(&a, k) };
                let mut c0 = data(m * n, 3);
                let mut c1 = c0.clone();
                gemm(m, n, k, &mut c0, n, acc, am, Mat::row_major(&b, n), Parallelism::None);
                gemm_rows(m, n, k, &mut c1, n, acc, am, &b, n);
                for (x, y) in c0.iter().zip(&c1) {
                    if acc {
                        // gemm adds the finished product to c; this sums onto c
                        assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs()), "{m}x{n}x{k}: {x} vs {y}");
                    } else {
                        // the same FMAs in the same order: the Winograd
                        // layers give the bits they gave on gemm alone
                        assert_eq!(x.to_bits(), y.to_bits(), "{m}x{n}x{k} (lhs transposed: {at}): {x} vs {y}");
                    }
                }
            }
        }
    }

    /// The 36 plane products of one image group (tg = 144 tiles) on one
    /// thread, `gemm` against `gemm_rows`, best of 20, GFLOP/s:
    /// `cargo test --release -- --ignored --nocapture small_gemm_timing`
    #[test]
    #[ignore]
    fn small_gemm_timing() {
        for &(m, n, k, at) in &[(48, 144, 48, false), (48, 144, 48, true), (64, 144, 64, false), (124, 144, 124, false), (124, 144, 64, true)] {
            let a = data(m * k, 1);
            let b = data(36 * k * n, 2);
            let mut c = data(36 * m * n, 3);
            let am = if at { Mat::transposed(&a, m) } else { Mat::row_major(&a, k) };
            let mut best = [f64::MAX; 2];
            for _ in 0..20 {
                for (which, best) in best.iter_mut().enumerate() {
                    let t = Instant::now();
                    for _ in 0..20 {
                        for xi in 0..36 {
                            let (bx, cx) = (&b[xi * k * n..][..k * n], &mut c[xi * m * n..][..m * n]);
                            if which == 0 {
                                gemm(m, n, k, cx, n, false, am, Mat::row_major(bx, n), Parallelism::None);
                            } else {
                                gemm_rows(m, n, k, cx, n, false, am, bx, n);
                            }
                        }
                    }
                    *best = best.min(t.elapsed().as_secs_f64());
                }
            }
            let gf = |t: f64| 20.0 * 36.0 * 2.0 * (m * n * k) as f64 / t / 1e9;
            println!("{m}x{n}x{k} at={at}: gemm {:.1} GFLOP/s, gemm_rows {:.1} GFLOP/s", gf(best[0]), gf(best[1]));
        }
    }
}
