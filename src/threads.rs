//! CPU threading set once per process, before any worker thread exists.
//!
//! candle asks for its thread count on every matmul and, unless
//! `RAYON_NUM_THREADS` is set, works it out again each time by reading
//! `/proc/cpuinfo`: thousands of file reads per training step on a small
//! model (measured: a fifth of the step). Fixing the variable once at start-up
//! removes that cost without changing which thread count is used.

use std::sync::Once;

static CONFIGURE: Once = Once::new();

/// Pins `RAYON_NUM_THREADS` to candle's own choice, or a Slurm task's
/// `SLURM_CPUS_PER_TASK` (the user's value wins),
/// and tunes the allocator for tensors ([`crate::heap`]).
/// Call first thing in `main`; later calls do nothing.
pub fn configure() {
    CONFIGURE.call_once(|| {
        // The allocator's arena count is fixed when threads first allocate.
        crate::heap::tune();
        let user_set = std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .is_some_and(|n| n > 0);
        if !user_set {
            // A Slurm task gets the cores it asked for, not the node's.
            let slurm = std::env::var("SLURM_CPUS_PER_TASK")
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|n| *n > 0);
            let n = slurm.unwrap_or_else(|| candle_core::utils::get_num_threads().max(1));
            // Safe in practice: called before any thread is spawned (Once, first in main).
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        }
    });
}

/// Runs `f` on a worker of the global thread pool.
///
/// candle spreads convolutions (and gemm) over rayon. Called from an outside
/// thread, every such op is injected into the pool and the caller sleeps until
/// a worker finishes it: two thread hand-offs per op, which on a small model
/// cost more than the op. From inside the pool the same ops split by work
/// stealing instead.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}
