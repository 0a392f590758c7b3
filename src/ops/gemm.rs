//! Thin safe wrapper around `gemm::gemm` (the GEMM candle itself uses) and
//! the element trait shared by the fast ops.

use candle_core::{bail, CpuStorage, Layout, Result, WithDType};
pub use gemm::Parallelism;

/// Float element types the fast ops support (f32, f64).
pub trait Elem: WithDType + Copy + Send + Sync + 'static {
    const ZERO: Self;
    const ONE: Self;
    const NEG_INF: Self;
}

impl Elem for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INF: Self = f32::NEG_INFINITY;
}

impl Elem for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INF: Self = f64::NEG_INFINITY;
}

/// The contiguous data of a storage/layout pair (errors on strided views;
/// the op wrappers call `.contiguous()` first).
pub fn contiguous_slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("fer ops: expected a contiguous tensor"),
    }
}

/// A matrix operand: data plus (row stride, column stride) in elements.
#[derive(Clone, Copy)]
pub struct Mat<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> Mat<'a, T> {
    pub fn row_major(data: &'a [T], cols: usize) -> Self {
        Mat { data, rs: cols, cs: 1 }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [T], cols: usize) -> Self {
        Mat { data, rs: 1, cs: cols }
    }
}

fn max_index(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// `c (m x n, row-major with row stride ldc) (+)= a (m x k) * b (k x n)`.
/// With `accumulate` the product is added to `c`, otherwise `c` is overwritten.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Elem>(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
    a: Mat<'_, T>,
    b: Mat<'_, T>,
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= max_index(m, n, ldc, 1), "gemm: dst too small");
    assert!(a.data.len() >= max_index(m, k, a.rs, a.cs), "gemm: lhs too small");
    assert!(b.data.len() >= max_index(k, n, b.rs, b.cs), "gemm: rhs too small");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(T::ZERO);
            }
        }
        return;
    }
    // SAFETY: bounds checked above; the three buffers do not alias (`c` is
    // a unique borrow).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            par,
        )
    }
}
