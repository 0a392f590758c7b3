//! glibc malloc tuning for training loops.
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
