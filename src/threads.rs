//! The thread pool every long native call runs in.
//!
//! fer owns its rayon pool instead of using rayon's global one for two
//! reasons: `set_num_threads` can resize it at any time (the global pool can
//! be sized only once), and a process forked after the pool started (Python
//! multiprocessing's "fork") gets a fresh pool instead of deadlocking on
//! worker threads that do not exist in the child. Work inside
//! `install` (rayon iterators, gemm's rayon parallelism) uses this pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::{Error, Result};

/// Makes candle's elementwise ops run on the calling thread.
///
/// candle 0.11 runs elementwise ops on a process-global pool of its own
/// threads. Those threads would compete with fer's pool for the cores, would
/// ignore `set_num_threads`, and do not exist in a forked child, where the
/// next op waits for them forever. With `CANDLE_NUM_THREADS=1` candle starts
/// no threads; fer parallelises the heavy ops itself. A value the user set
/// is kept. Must run before the first candle op (at module import).
pub fn configure_candle() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Called once at import, before any thread of ours reads the environment.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Requested thread count; 0 means rayon's default (RAYON_NUM_THREADS or all cores).
static REQUESTED: AtomicUsize = AtomicUsize::new(0);
static POOL: Mutex<Option<PoolEntry>> = Mutex::new(None);

struct PoolEntry {
    pid: u32,
    requested: usize,
    pool: Arc<ThreadPool>,
}

/// Sets the number of threads for later native calls (0: the default).
pub fn set_num_threads(n: usize) {
    REQUESTED.store(n, Ordering::SeqCst);
}

/// The number of threads native calls use now.
pub fn num_threads() -> Result<usize> {
    Ok(pool()?.current_num_threads())
}

fn pool() -> Result<Arc<ThreadPool>> {
    let requested = REQUESTED.load(Ordering::SeqCst);
    let pid = std::process::id();
    let mut guard = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(entry) = guard.as_ref() {
        if entry.pid == pid && entry.requested == requested {
            return Ok(entry.pool.clone());
        }
    }
    let pool = ThreadPoolBuilder::new()
        .num_threads(requested)
        .thread_name(|i| format!("fer-worker-{i}"))
        .build()
        .map_err(|e| Error::invalid(format!("cannot start {requested} worker threads: {e}")))?;
    let pool = Arc::new(pool);
    // A pool inherited through fork() has no threads in this process; it is
    // leaked rather than dropped, since dropping would wait on them.
    if let Some(old) = guard.take() {
        if old.pid != pid {
            std::mem::forget(old.pool);
        }
    }
    *guard = Some(PoolEntry { pid, requested, pool: pool.clone() });
    Ok(pool)
}

/// Runs `f` inside fer's pool.
pub fn install<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T> {
    Ok(pool()?.install(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resizes_on_request() {
        set_num_threads(1);
        assert_eq!(install(rayon::current_num_threads).unwrap(), 1);
        set_num_threads(2);
        assert_eq!(install(rayon::current_num_threads).unwrap(), 2);
        set_num_threads(0);
        assert!(num_threads().unwrap() >= 1);
    }
}
