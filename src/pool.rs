//! A small persistent thread pool for the forward pass: one call runs a closure on every
//! thread (the caller included) and returns when all are done.
//!
//! Decoding one token runs a few hundred parallel steps of tens of microseconds each, so the
//! cost of starting a step matters more than anything a general scheduler offers. Workers
//! spin on a generation counter for a short while after each step (so back-to-back steps
//! start within a fraction of a microsecond), then sleep on a condition variable (so an idle
//! process costs nothing). The closure gets `(thread index, thread count)` and splits its work
//! itself, statically or through an atomic counter ([`Chunks`]).
//!
//! One step at a time: a call made while another is running (from another thread, or from
//! inside a step) runs its closure alone on the calling thread as `(0, 1)`, which is always
//! correct, only slower.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps.
const SPIN: Duration = Duration::from_millis(2);

type Job<'a> = &'a (dyn Fn(usize, usize) + Sync);

struct Shared {
    /// The current step's closure, with its lifetime erased; valid while `pending > 0`.
    job: UnsafeCell<Option<Job<'static>>>,
    /// Bumped once per step; workers run the job when it changes.
    generation: AtomicUsize,
    /// Workers that have not finished the current step.
    pending: AtomicUsize,
    /// A worker's job panicked during the current step.
    panicked: AtomicBool,
    shutdown: AtomicBool,
    /// Workers asleep (or about to be), and the lock and condition variable they sleep on.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the thread holding `Pool::busy`, before it publishes the
// step through `generation` (release) and while no worker reads it (pending == 0); workers
// read it after observing the new generation (acquire) and before decrementing `pending`.
unsafe impl Sync for Shared {}

pub struct Pool {
    shared: Arc<Shared>,
    threads: usize,
    /// Held by the thread running a step.
    busy: Mutex<()>,
    handles: Vec<JoinHandle<()>>,
}

impl Pool {
    /// A pool of `threads` threads in all: the caller of [`Pool::run`] plus `threads - 1`
    /// workers.
    pub fn new(threads: usize) -> Pool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            job: UnsafeCell::new(None),
            generation: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut handles = Vec::new();
        for t in 1..threads {
            let s = Arc::clone(&shared);
            let h = std::thread::Builder::new()
                .name(format!("fastgen-pool-{t}"))
                .spawn(move || worker(&s, t, threads));
            match h {
                Ok(h) => handles.push(h),
                // Could not start a thread: run with the ones we have.
                Err(_) => break,
            }
        }
        let threads = handles.len() + 1;
        Pool {
            shared,
            threads,
            busy: Mutex::new(()),
            handles,
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(i, n)` for every thread index `i < n` at once and returns when all are done.
    /// `n` is the pool's size, or 1 when the pool is busy with another step.
    pub fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        let guard = match self.busy.try_lock() {
            Ok(g) if self.threads > 1 => g,
            _ => return f(0, 1),
        };
        let s = &*self.shared;
        let n_workers = self.threads - 1;
        // SAFETY (lifetime erasure): the reference is only used by workers until they
        // decrement `pending`, and this function does not return before `pending` is 0.
        let job: Job<'static> = unsafe { std::mem::transmute::<Job<'_>, Job<'static>>(f) };
        // SAFETY: no worker reads `job` now (pending is 0 between steps), see `Shared`.
        unsafe { *s.job.get() = Some(job) };
        s.pending.store(n_workers, Ordering::Relaxed);
        s.generation.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0, self.threads)));
        let mut spins = 0u32;
        while s.pending.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < 1 << 12 {
                std::hint::spin_loop();
            } else {
                // A worker was descheduled (busy machine): let it have this core.
                std::thread::yield_now();
            }
        }
        // SAFETY: all workers are done with this step.
        unsafe { *s.job.get() = None };
        let theirs = s.panicked.swap(false, Ordering::Relaxed);
        drop(guard);
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if theirs {
            panic!("a thread-pool worker panicked");
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.shutdown.store(true, Ordering::SeqCst);
        s.generation.fetch_add(1, Ordering::SeqCst);
        {
            let _l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn worker(s: &Shared, index: usize, threads: usize) {
    // The generation the pool started with (0), not the current one: a step published
    // before this thread got here must still be run.
    let mut seen = 0;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let g = s.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(256) || start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            // Sleep until the next step. `sleepers` is raised before the generation is
            // checked again under the lock, and `run` bumps the generation before it reads
            // `sleepers`, so a step cannot slip between the check and the wait.
            let mut l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            while s.generation.load(Ordering::SeqCst) == seen {
                l = s.wake.wait(l).unwrap_or_else(|e| e.into_inner());
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
            drop(l);
        }
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: published before the generation bump we observed; valid until `pending`
        // is decremented below.
        if let Some(job) = unsafe { *s.job.get() } {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(index, threads)));
            if r.is_err() {
                s.panicked.store(true, Ordering::Relaxed);
            }
        }
        s.pending.fetch_sub(1, Ordering::Release);
    }
}

/// The pool the forward pass uses, created on first use with as many threads as rayon's
/// global pool (so `--threads` governs both).
pub fn global() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool::new(rayon::current_num_threads()))
}

/// Work items `0..len` handed out in chunks through an atomic counter: threads that finish
/// early take more, which keeps a step balanced when a core is shared with other work.
pub struct Chunks {
    next: AtomicUsize,
    len: usize,
    chunk: usize,
}

impl Chunks {
    pub fn new(len: usize, chunk: usize) -> Chunks {
        Chunks {
            next: AtomicUsize::new(0),
            len,
            chunk: chunk.max(1),
        }
    }
    /// The next range of items, or `None` when all are taken.
    #[inline]
    pub fn next(&self) -> Option<std::ops::Range<usize>> {
        let start = self.next.fetch_add(self.chunk, Ordering::Relaxed);
        (start < self.len).then(|| start..(start + self.chunk).min(self.len))
    }
}

/// A barrier for the threads of one step (`n` from [`Pool::run`]): spins, since steps are
/// short and every thread of the step is running.
pub struct Barrier {
    count: AtomicUsize,
    generation: AtomicUsize,
}

impl Default for Barrier {
    fn default() -> Self {
        Barrier {
            count: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
        }
    }
}

impl Barrier {
    /// Waits until `n` threads have called `wait` (reusable).
    pub fn wait(&self, n: usize) {
        if n <= 1 {
            return;
        }
        let g = self.generation.load(Ordering::Acquire);
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == n {
            self.count.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == g {
            spins += 1;
            if spins < 1 << 12 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_runs_once_per_step() {
        let pool = Pool::new(3);
        for _ in 0..1000 {
            let hits = AtomicUsize::new(0);
            let mask = AtomicUsize::new(0);
            pool.run(&|i, n| {
                assert_eq!(n, pool.threads());
                hits.fetch_add(1, Ordering::Relaxed);
                mask.fetch_or(1 << i, Ordering::Relaxed);
            });
            assert_eq!(hits.load(Ordering::Relaxed), pool.threads());
            assert_eq!(mask.load(Ordering::Relaxed), (1 << pool.threads()) - 1);
        }
    }

    #[test]
    fn chunks_cover_everything_once() {
        let pool = Pool::new(2);
        let seen: Vec<AtomicUsize> = (0..1000).map(|_| AtomicUsize::new(0)).collect();
        let chunks = Chunks::new(seen.len(), 7);
        pool.run(&|_, _| {
            while let Some(r) = chunks.next() {
                for i in r {
                    seen[i].fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn nested_and_concurrent_steps_run_alone() {
        let pool = Arc::new(Pool::new(2));
        let total = AtomicUsize::new(0);
        pool.run(&|_, _| {
            pool.run(&|i, n| {
                assert_eq!((i, n), (0, 1));
                total.fetch_add(1, Ordering::Relaxed);
            })
        });
        assert_eq!(total.load(Ordering::Relaxed), pool.threads());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let p = Arc::clone(&pool);
                std::thread::spawn(move || {
                    let c = AtomicUsize::new(0);
                    for _ in 0..200 {
                        p.run(&|_, _| {
                            c.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                    c.load(Ordering::Relaxed)
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().unwrap() >= 200);
        }
    }

    #[test]
    fn barrier_orders_phases() {
        let pool = Pool::new(2);
        let b = Barrier::default();
        let phase1 = AtomicUsize::new(0);
        for _ in 0..100 {
            phase1.store(0, Ordering::Relaxed);
            pool.run(&|_, n| {
                phase1.fetch_add(1, Ordering::Relaxed);
                b.wait(n);
                assert_eq!(phase1.load(Ordering::Relaxed), n);
                b.wait(n);
            });
        }
    }

    #[test]
    fn a_panicking_step_is_reported_and_the_pool_survives() {
        let pool = Pool::new(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(&|i, _| {
                if i == 1 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err() || pool.threads() == 1);
        let hits = AtomicUsize::new(0);
        pool.run(&|_, _| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), pool.threads());
    }
}
