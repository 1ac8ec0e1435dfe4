//! The fused kernels' parallel sections on the threads candle's own CPU ops run on.
//!
//! candle keeps one pool of workers for its CPU ops (`candle_core::utils::barrier_pool`:
//! `CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`, else the physical cores, the calling
//! thread counted as one). After each op its workers spin for a while before they sleep, so
//! that the next op starts at once. Threads of a second pool (rayon's, or threads spawned
//! per call) would then compete with those spinning workers for the same cores: on two
//! cores a training step at B = 64, T = 100, I = 128, H = 256 took 40 to 46 ms on two
//! threads that way, 30 ms with candle's workers quiet. Running the kernels' sections on
//! candle's workers instead leaves one thread per core.

use candle_core::utils::barrier_pool;
use gru_core::seq::Team;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Mutex;

/// gru-core's [`Team`] on candle's CPU worker pool (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct CandlePool;

/// The pool, for [`gru_core::seq::Threads`].
pub static CANDLE_POOL: CandlePool = CandlePool;

thread_local! {
    /// Whether this thread runs a part of a section now.
    static IN_SECTION: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a section started on this thread would wait for the pool that runs it: inside a
/// part of a section, or on one of candle's workers (candle names them `candle-bp-N`), which
/// run candle's own ops. Such a section runs on the calling thread alone.
fn inside_pool() -> bool {
    IN_SECTION.with(|f| f.get())
        || std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("candle-bp-"))
}

/// Marks this thread as inside a section until dropped (also when a part panics).
struct SectionMark(bool);

impl SectionMark {
    fn enter() -> SectionMark {
        SectionMark(IN_SECTION.with(|f| f.replace(true)))
    }
}

impl Drop for SectionMark {
    fn drop(&mut self) {
        IN_SECTION.with(|f| f.set(self.0));
    }
}

impl Team for CandlePool {
    fn size(&self) -> usize {
        if inside_pool() {
            1
        } else {
            barrier_pool().n_workers() + 1
        }
    }

    fn run(&self, parts: usize, part: &(dyn Fn(usize) + Sync)) {
        let size = self.size();
        if parts <= 1 || size <= 1 {
            (0..parts).for_each(part);
            return;
        }
        let pool = barrier_pool();
        let caller = pool.n_workers();
        // A panic must not unwind through candle's pool: it would poison the pool's lock
        // and every later candle CPU op would fail. Each part's panic is caught, and the
        // first one resumes on the caller after the pool has finished.
        let first_panic = Mutex::new(None);
        // Every worker and the caller (index `caller`) run the closure at once; the caller
        // takes part 0 and worker w part w + 1, then each goes on by `size`.
        pool.execute(|tid| {
            let _mark = SectionMark::enter();
            let mut p = if tid == caller { 0 } else { tid + 1 };
            while p < parts {
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| part(p))) {
                    let mut slot = first_panic.lock().unwrap_or_else(|e| e.into_inner());
                    slot.get_or_insert(payload);
                }
                p += size;
            }
        });
        if let Some(payload) = first_panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
            resume_unwind(payload);
        }
    }

    fn name(&self) -> &'static str {
        "candle's CPU pool"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// Every part of a section of `size()` parts runs at once: each waits (with a deadline)
    /// until all have started.
    #[test]
    fn a_section_of_the_pools_size_runs_every_part_at_once() {
        let n = CANDLE_POOL.size();
        let started = AtomicUsize::new(0);
        let all_met = AtomicUsize::new(0);
        CANDLE_POOL.run(n, &|_| {
            started.fetch_add(1, Ordering::AcqRel);
            let deadline = Instant::now() + Duration::from_secs(10);
            while started.load(Ordering::Acquire) < n && Instant::now() < deadline {
                std::hint::spin_loop();
            }
            if started.load(Ordering::Acquire) == n {
                all_met.fetch_add(1, Ordering::AcqRel);
            }
        });
        assert_eq!(all_met.load(Ordering::Acquire), n);
    }

    /// More parts than threads: each part runs once; a part's panic reaches the caller and
    /// the pool runs the next section; a section started inside a part runs on that part's
    /// thread (waiting for the pool there would never end).
    #[test]
    fn parts_run_once_panics_reach_the_caller_and_nested_sections_run_inline(
    ) -> candle_core::Result<()> {
        let n = CANDLE_POOL.size();
        let parts = 3 * n + 1;
        let runs: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
        CANDLE_POOL.run(parts, &|p| {
            runs[p].fetch_add(1, Ordering::Relaxed);
        });
        assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1));

        let last = n.max(2) - 1;
        let caught = std::panic::catch_unwind(|| {
            CANDLE_POOL.run(n.max(2), &|p| {
                if p == last {
                    panic!("part {p} fails");
                }
            })
        });
        let payload = caught.expect_err("the part's panic reaches the caller");
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert_eq!(msg, format!("part {last} fails"));
        // candle's own ops still run on the pool (a panic through it would poison it).
        let big = candle_core::Tensor::ones(1 << 20, candle_core::DType::F32, &Device::Cpu)?;
        assert_eq!(
            (&big + &big)?.sum_all()?.to_scalar::<f32>()?,
            (2 << 20) as f32
        );

        let inner = AtomicUsize::new(0);
        CANDLE_POOL.run(n, &|_| {
            assert_eq!(CANDLE_POOL.size(), 1);
            CANDLE_POOL.run(2, &|_| {
                inner.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(inner.load(Ordering::Relaxed), 2 * n);
        Ok(())
    }
}
