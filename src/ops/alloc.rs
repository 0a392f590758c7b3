//! Allocation for training loops: glibc malloc tuning, and large blocks
//! aligned to cache lines ([`CacheAligned`], the crate's global allocator).
//!
//! Activations and gradients here are tens of MB. By default glibc serves
//! such blocks with fresh `mmap`s and `munmap`s them on free, so every
//! training step page-faults all its big buffers again (and `munmap` shoots
//! down TLBs on every core: expensive in VMs). Raising the mmap and trim
//! thresholds keeps freed memory in the process for reuse. Worker threads
//! would also get arenas of their own, whose heaps cannot hold blocks over
//! 64 MB, so those still went through mmap (measured: 286k page faults in
//! 12 seed3x3 training steps, 104k with one arena); so there is one arena,
//! set when `fer._core` is imported, before rayon starts its threads. It is
//! process wide and means RSS stays at its peak; set `FER_NO_MALLOPT=1` to
//! opt out.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Once;

static TUNE: Once = Once::new();

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" {
    fn mallopt(param: i32, value: i32) -> i32;
}

/// Applies the tuning once per process (no-op off glibc).
pub fn tune_allocator() {
    TUNE.call_once(|| {
        if std::env::var_os("FER_NO_MALLOPT").is_some() {
            return;
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            const M_TRIM_THRESHOLD: i32 = -1;
            const M_MMAP_THRESHOLD: i32 = -3;
            const M_ARENA_MAX: i32 = -8;
            // SAFETY: plain glibc call with valid parameters; it only
            // changes thresholds used by later allocations.
            unsafe {
                mallopt(M_MMAP_THRESHOLD, 1 << 30);
                mallopt(M_TRIM_THRESHOLD, 1 << 30);
                mallopt(M_ARENA_MAX, 1);
            }
        }
    });
}

/// Rust allocations of at least [`ALIGN_FROM`] bytes start on a cache line.
///
/// glibc's heap hands out 16-byte aligned blocks, so whether a buffer's
/// 16-float vectors each sit in one cache line or all straddle two depended
/// on where the allocator happened to put it, which differs from process to
/// process. The Winograd plane products (`small_gemm_timing`, one thread,
/// 36 planes of 144 tiles, 15 interleaved pairs on a 2-core Xeon with
/// AVX-512) ran 2-9% slower, in every pair, with their tiles and outputs
/// 16 bytes off a cache line than on one. Layouts and arithmetic are
/// unchanged: only where blocks start.
pub struct CacheAligned;

const LINE: usize = 64;
const ALIGN_FROM: usize = 1024;

/// The layout `System` serves `layout` with (a pure function of its size
/// and alignment, the same at dealloc as at alloc).
#[inline(always)]
fn widened(layout: Layout) -> Layout {
    if layout.size() >= ALIGN_FROM && layout.align() < LINE {
        Layout::from_size_align(layout.size(), LINE).unwrap_or(layout)
    } else {
        layout
    }
}

// SAFETY: every block is allocated and freed by `System` under the same
// widened layout, a pure function of the caller's (size, align), which is
// the same at dealloc as at alloc; realloc keeps that rule by moving the
// block when the widened alignment changes.
unsafe impl GlobalAlloc for CacheAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        System.alloc(widened(layout))
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        System.alloc_zeroed(widened(layout))
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, widened(layout))
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old, new) = (widened(layout), widened(Layout::from_size_align_unchecked(new_size, layout.align())));
        if old.align() == new.align() {
            return System.realloc(ptr, old, new_size);
        }
        let moved = System.alloc(new);
        if !moved.is_null() {
            std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
            System.dealloc(ptr, old);
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    /// The crate's global allocator (set in `lib.rs`) serves these tests too.
    #[test]
    fn large_blocks_start_on_a_cache_line() {
        for len in [256usize, 1000, 4097, 100_000] {
            let v = vec![1.0f32; len];
            assert_eq!(v.as_ptr() as usize % super::LINE, 0, "{len} floats");
        }
    }

    #[test]
    fn growing_across_the_threshold_keeps_the_contents() {
        let mut v: Vec<u16> = Vec::new();
        for i in 0..5000u16 {
            v.push(i);
        }
        assert!(v.iter().enumerate().all(|(i, &x)| x as usize == i));
        assert_eq!(v.as_ptr() as usize % super::LINE, 0);
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(v, (0..10).collect::<Vec<u16>>());
    }
}
