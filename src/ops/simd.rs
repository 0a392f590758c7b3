//! Runs a closure compiled for the widest vector extension the CPU has.
//!
//! The crate is built for baseline x86-64 (SSE2) so the wheel runs
//! anywhere; `gemm` dispatches its own kernels at run time, and this does
//! the same for our loops: the closure (and the `#[inline(always)]` code it
//! calls) is inlined into a `#[target_feature]` function, where LLVM
//! vectorises it with AVX2/FMA or AVX-512. `FER_SIMD=baseline` or
//! `FER_SIMD=avx2` caps the level (for A/B runs).

use std::sync::OnceLock;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Level {
    Baseline,
    V3,
    V4,
}

fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let v3 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            let v4 = v3
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512dq");
            match std::env::var("FER_SIMD").as_deref() {
                Ok("baseline") => return Level::Baseline,
                Ok("avx2") if v3 => return Level::V3,
                _ => {}
            }
            if v4 {
                return Level::V4;
            }
            if v3 {
                return Level::V3;
            }
        }
        Level::Baseline
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
#[inline]
fn run_v4<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn run_v3<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Whether [`dispatch`] runs its closure with AVX-512 (kernels written
/// for 32 vector registers check this and fall back otherwise).
pub fn has_avx512() -> bool {
    level() == Level::V4
}

/// `f()`, compiled for AVX-512 or AVX2+FMA when the CPU has them.
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        match level() {
            // SAFETY: the features were detected at run time.
            Level::V4 => return unsafe { run_v4(f) },
            Level::V3 => return unsafe { run_v3(f) },
            Level::Baseline => {}
        }
    }
    f()
}
