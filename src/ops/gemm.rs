//! Thin safe wrapper around `gemm::gemm` (the GEMM candle itself uses) and
//! the element trait shared by the fast ops.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::Mutex;

use candle_core::{bail, CpuStorage, Layout, Result, WithDType};
use rayon::prelude::*;
pub use gemm::Parallelism;

/// Float element types the fast ops support (f32, f64).
pub trait Elem: WithDType + Copy + Default + Send + Sync + 'static {
    const ZERO: Self;
    const ONE: Self;
    const NEG_INF: Self;
    /// `self * a + b` with one rounding (an FMA instruction under
    /// [`super::simd::dispatch`]).
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// Runs `f` on a per-thread scratch buffer of `len` elements (contents
    /// unspecified). Reusing it avoids mmap/munmap + page-fault churn (TLB
    /// shootdowns are expensive in VMs). Falls back to a fresh buffer when
    /// the thread's buffer is already borrowed (re-entrant rayon work).
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
    /// Spare buffers kept between training steps (see [`pooled`]).
    fn pool() -> &'static Mutex<Vec<Vec<Self>>>;
}

static POOL_F32: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
static POOL_F64: Mutex<Vec<Vec<f64>>> = Mutex::new(Vec::new());

thread_local! {
    static SCRATCH_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static SCRATCH_F64: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

macro_rules! impl_elem {
    ($t:ty, $scratch:ident, $pool:ident) => {
        impl Elem for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INF: Self = <$t>::NEG_INFINITY;
            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
            fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
                $scratch.with(|cell| match cell.try_borrow_mut() {
                    Ok(mut buf) => {
                        if buf.len() < len {
                            buf.resize(len, 0.0);
                        }
                        f(&mut buf[..len])
                    }
                    Err(_) => f(&mut zeros::<$t>(len)),
                })
            }
            fn pool() -> &'static Mutex<Vec<Vec<Self>>> {
                &$pool
            }
        }
    };
}
impl_elem!(f32, SCRATCH_F32, POOL_F32);
impl_elem!(f64, SCRATCH_F64, POOL_F64);

/// Buffers [`pooled`] keeps at most (a training step hands back one per
/// Winograd layer).
const POOL_SIZE: usize = 16;

/// A `len`-element buffer with unspecified (stale) contents, for data the
/// caller overwrites completely: a recycled one when the pool holds one big
/// enough, so the Winograd tiles a training step keeps from its forward for
/// its backward (hundreds of MB) are not zero-filled and page-faulted again
/// every step.
pub fn pooled<T: Elem>(len: usize) -> Vec<T> {
    let found = {
        let mut pool = T::pool().lock().unwrap_or_else(|e| e.into_inner());
        let best = (0..pool.len()).filter(|&i| pool[i].capacity() >= len).min_by_key(|&i| pool[i].capacity());
        best.map(|i| pool.swap_remove(i))
    };
    let mut v = found.unwrap_or_default();
    v.resize(len, T::ZERO);
    v
}

/// Returns a buffer to the [`pooled`] pool (dropped when the pool is full).
pub fn recycle<T: Elem>(v: Vec<T>) {
    let mut pool = T::pool().lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < POOL_SIZE {
        pool.push(v);
    }
}

/// Frees the pooled buffers (at the end of a fit).
pub fn clear_pool() {
    POOL_F32.lock().unwrap_or_else(|e| e.into_inner()).clear();
    POOL_F64.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// Values from which [`zeros`] fills in parallel (a one-thread fill of the
/// 28 MB outputs of a 48x48x48 layer took about 1% of a training step).
const PAR_ZEROS: usize = 1 << 18;

/// A zero-filled vector, written explicitly rather than `calloc`ed: lazily
/// zeroed pages that are read before being written get mapped to the shared
/// zero page and then copied-on-write with a TLB flush.
pub fn zeros<T: Copy + Default + Send>(len: usize) -> Vec<T> {
    if len < PAR_ZEROS {
        let mut v = Vec::with_capacity(len);
        v.resize(len, T::default());
        return v;
    }
    // SAFETY: every element of every piece is written.
    unsafe {
        par_filled(len, PAR_ZEROS / 4, |_, piece| {
            for v in piece {
                v.write(T::default());
            }
        })
    }
}

/// A `len`-element vector written in `chunk`-element pieces by `f(i, piece)`
/// in parallel, without a zero fill first (empty for `len == 0`, whatever
/// `chunk` is).
///
/// # Safety
/// `f` must write every element of every piece it is given.
pub unsafe fn par_filled<T: Send>(len: usize, chunk: usize, f: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    if len == 0 {
        return v;
    }
    v.spare_capacity_mut()[..len].par_chunks_mut(chunk).enumerate().for_each(|(i, piece)| f(i, piece));
    // SAFETY: the caller's `f` wrote all `len` elements.
    unsafe { v.set_len(len) };
    v
}

/// `s` zero-filled and returned as initialised values: for outputs made a
/// piece at a time, each piece zeroed just before it is written (in cache)
/// instead of the whole buffer in a pass of its own first.
pub fn zero_init<T: Elem>(s: &mut [MaybeUninit<T>]) -> &mut [T] {
    s.fill(MaybeUninit::new(T::ZERO));
    // SAFETY: every element was just written; `MaybeUninit<T>` has `T`'s layout.
    unsafe { &mut *(s as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// [`par_filled`] for two vectors written together: `f(i, a, b)` gets
/// piece `i` of each (`chunk.0` and `chunk.1` elements); both must have the
/// same number of pieces.
///
/// # Safety
/// `f` must write every element of both pieces it is given.
pub unsafe fn par_filled2<T: Send>(
    len: (usize, usize),
    chunk: (usize, usize),
    f: impl Fn(usize, &mut [MaybeUninit<T>], &mut [MaybeUninit<T>]) + Sync,
) -> (Vec<T>, Vec<T>) {
    let (mut a, mut b) = (Vec::with_capacity(len.0), Vec::with_capacity(len.1));
    if len.0 == 0 || len.1 == 0 {
        assert!(len.0 == 0 && len.1 == 0, "par_filled2: lengths {len:?}");
        return (a, b);
    }
    assert_eq!(len.0.div_ceil(chunk.0), len.1.div_ceil(chunk.1), "par_filled2: lengths {len:?} in pieces of {chunk:?}");
    let pieces = a.spare_capacity_mut()[..len.0].par_chunks_mut(chunk.0).zip(b.spare_capacity_mut()[..len.1].par_chunks_mut(chunk.1));
    pieces.enumerate().for_each(|(i, (pa, pb))| f(i, pa, pb));
    // SAFETY: the caller's `f` wrote all elements of both.
    unsafe {
        a.set_len(len.0);
        b.set_len(len.1);
    }
    (a, b)
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

/// Elements a `rows x cols` matrix at strides (`rs`, `cs`) spans.
pub(super) fn max_index(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
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
