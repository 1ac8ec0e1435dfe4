//! The threads a call's parallel parts run on.
//!
//! A call runs parts in parallel in three places: batch slices (each the whole sequence for
//! its rows), unit slices (which wait for each other at every step, so all of them must run
//! at once) and the blocks of a large matrix product. All of them go through a [`Team`], so
//! the caller decides which threads: the kernels add none of their own. gru-candle passes
//! the pool candle's own CPU ops run on; a second pool beside it would leave two sets of
//! spinning workers competing for the same cores.

use std::fmt;
use std::sync::Mutex;

/// Threads that run the parts of one parallel section.
pub trait Team: Sync {
    /// The most parts one [`Team::run`] from the calling thread runs at once, the calling
    /// thread included (1: the calling thread alone).
    fn size(&self) -> usize;

    /// Runs `part(p)` for every `p` in `0..parts` and returns when all have ended. Up to
    /// [`Team::size`] parts run at once, each on its own thread, the calling thread running
    /// part 0; further parts run after those on the same threads. A panic in a part resumes
    /// on the calling thread once every part has ended.
    fn run(&self, parts: usize, part: &(dyn Fn(usize) + Sync));

    /// A short name, for `Debug`.
    fn name(&self) -> &'static str;
}

/// Scoped threads spawned for each section (`std::thread::scope`): every part runs at once
/// on its own thread. Spawning costs tens of microseconds per thread, fine for whole-call
/// sections, costly for a product per step; a caller with a thread pool passes that instead.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScopedThreads;

impl Team for ScopedThreads {
    fn size(&self) -> usize {
        usize::MAX
    }

    fn run(&self, parts: usize, part: &(dyn Fn(usize) + Sync)) {
        if parts <= 1 {
            (0..parts).for_each(part);
            return;
        }
        let results: Vec<std::thread::Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (1..parts).map(|p| scope.spawn(move || part(p))).collect();
            let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| part(0)));
            std::iter::once(first)
                .chain(handles.into_iter().map(|h| h.join()))
                .collect()
        });
        for r in results {
            if let Err(payload) = r {
                std::panic::resume_unwind(payload);
            }
        }
    }

    fn name(&self) -> &'static str {
        "scoped threads"
    }
}

/// How many threads a call's matrix products use, and the team they run on.
#[derive(Clone, Copy)]
pub struct Threads {
    /// Threads for one step's products (1: the calling thread alone).
    pub count: usize,
    /// Threads for the products over all steps: the inputs' projection and the backward's
    /// weight and input gradients (1: the calling thread alone).
    pub all_steps: usize,
    /// The threads.
    pub team: &'static dyn Team,
}

impl Threads {
    /// The calling thread alone.
    pub const ONE: Threads = Threads {
        count: 1,
        all_steps: 1,
        team: &ScopedThreads,
    };

    /// `count` threads of `team` for every product.
    pub fn new(count: usize, team: &'static dyn Team) -> Threads {
        let count = count.max(1);
        Threads {
            count,
            all_steps: count,
            team,
        }
    }

    /// The same with `all_steps` threads for the products over all steps.
    pub fn with_all_steps(self, all_steps: usize) -> Threads {
        Threads {
            all_steps: all_steps.max(1),
            ..self
        }
    }

    /// The same team, one thread for every product (a part of a parallel section).
    pub fn one_thread(self) -> Threads {
        Threads::new(1, self.team)
    }

    /// The threads of one product over all steps.
    pub fn over_all_steps(self) -> Threads {
        Threads::new(self.all_steps, self.team)
    }

    /// The threads one section of `parts` parts runs at once: `parts`, at most the team's
    /// size.
    pub fn at_once(&self, parts: usize) -> usize {
        parts.min(self.team.size()).max(1)
    }
}

impl Default for Threads {
    fn default() -> Self {
        Threads::ONE
    }
}

impl fmt::Debug for Threads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (c, a, team) = (self.count, self.all_steps, self.team.name());
        write!(f, "{c} per step, {a} over all steps, on {team}")
    }
}

impl PartialEq for Threads {
    fn eq(&self, other: &Self) -> bool {
        (self.count, self.all_steps) == (other.count, other.all_steps)
            && std::ptr::addr_eq(self.team, other.team)
    }
}

/// Runs `f` on every job, job p as part p of one section on `team`; their results in job
/// order. None when a part left no result (it cannot: every part runs, and a part's panic
/// resumes on the caller).
pub fn run_each<J: Send, R: Send>(
    team: &dyn Team,
    jobs: impl IntoIterator<Item = J>,
    f: impl Fn(J) -> R + Sync,
) -> Option<Vec<R>> {
    let jobs: Vec<Mutex<Option<J>>> = jobs.into_iter().map(|j| Mutex::new(Some(j))).collect();
    let results: Vec<Mutex<Option<R>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    team.run(jobs.len(), &|p| {
        if let Some(job) = take(&jobs[p]) {
            let r = f(job);
            *results[p].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        }
    });
    results.iter().map(take).collect()
}

/// A slot's value (a lock poisoned by a panicking part still holds a valid slot).
fn take<V>(m: &Mutex<Option<V>>) -> Option<V> {
    m.lock().unwrap_or_else(|e| e.into_inner()).take()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    #[test]
    fn scoped_threads_run_every_part_at_once_and_resume_a_panic() {
        // A barrier of all parts completes only when every part runs at the same time.
        let barrier = Barrier::new(4);
        let seen = AtomicUsize::new(0);
        ScopedThreads.run(4, &|p| {
            barrier.wait();
            seen.fetch_add(1 << p, Ordering::Relaxed);
        });
        assert_eq!(seen.load(Ordering::Relaxed), 0b1111);
        let caught = std::panic::catch_unwind(|| {
            ScopedThreads.run(3, &|p| {
                if p == 2 {
                    panic!("part two");
                }
            })
        });
        let payload = caught.expect_err("the part's panic reaches the caller");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"part two"));
    }

    #[test]
    fn run_each_hands_each_part_its_job_and_returns_results_in_order() {
        let out = run_each(&ScopedThreads, vec![10, 20, 30], |j| j + 1);
        assert_eq!(out, Some(vec![11, 21, 31]));
        assert_eq!(
            run_each(&ScopedThreads, Vec::<i32>::new(), |j| j),
            Some(vec![])
        );
    }
}
