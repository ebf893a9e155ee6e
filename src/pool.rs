//! A small persistent thread pool for the forward pass: one call runs a closure on the
//! calling thread and on every worker that is free to join, and returns when all of them
//! are done.
//!
//! Decoding one token runs a few hundred parallel steps of tens of microseconds each, so the
//! cost of starting a step matters more than anything a general scheduler offers. Workers
//! spin on a generation counter for a short while after each step (so back-to-back steps
//! start within a fraction of a microsecond), then sleep on a condition variable (so an idle
//! process costs nothing).
//!
//! Workers *join* a step; they are not required for it. The caller runs the closure too, and
//! when it returns the step is closed: workers that had not joined by then skip it, and the
//! caller waits only for those that did. The closure must therefore split its work
//! dynamically (e.g. with [`Chunks`]), never assume that a given number of threads run it.
//! This keeps a step from waiting on a worker that the OS has descheduled, which on a busy
//! machine would otherwise cost a scheduler time slice per step.
//!
//! One step at a time: a call made while another is running (from another thread, or from
//! inside a step) runs its closure on the calling thread alone, which is always correct, only
//! slower.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps (`FASTGEN_SPIN_US` overrides), and how
/// long of that it spins without yielding its core (after that it yields now and then, so
/// that on a busy machine the threads with work, ours or not, get the core).
const SPIN_US: u64 = 2000;
const SPIN_HOT_US: u64 = 50;

fn spin_times() -> (Duration, Duration) {
    static T: OnceLock<(Duration, Duration)> = OnceLock::new();
    *T.get_or_init(|| {
        let us = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let spin = us("FASTGEN_SPIN_US", SPIN_US);
        let hot = us("FASTGEN_SPIN_HOT_US", SPIN_HOT_US).min(spin);
        (Duration::from_micros(hot), Duration::from_micros(spin))
    })
}

/// `joined` bit: the current step still accepts workers. The low bits count workers in it.
const OPEN: usize = 1 << (usize::BITS - 1);

/// A step's closure: called with the index of the thread running it (0 is the caller).
type Job<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    /// The current step's closure, with its lifetime erased; valid while the step is open
    /// or has workers in it.
    job: UnsafeCell<Option<Job<'static>>>,
    /// Bumped once per step; workers wake on a change.
    generation: AtomicUsize,
    /// `OPEN` while workers may join, plus the number of workers that joined and have not
    /// finished.
    joined: AtomicUsize,
    /// A worker's job panicked during the current step.
    panicked: AtomicBool,
    shutdown: AtomicBool,
    /// Workers asleep (or about to be), and the lock and condition variable they sleep on.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the thread holding `Pool::busy`, while no worker is in a
// step (joined count 0 and not `OPEN`), and before `OPEN` is published (release); a worker
// reads it only after joining with an acquire CAS that saw `OPEN`, and the caller does not
// clear it until the count is back to 0.
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
            joined: AtomicUsize::new(0),
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
                .spawn(move || worker(&s, t));
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

    /// Threads that may run a step (the caller included).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(i)` on the calling thread (`i == 0`) and on the workers that join (`i` from
    /// 1), and returns when every one of them is done. Any number of workers may join, and
    /// (rarely) one may run `f` twice.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        let guard = match self.busy.try_lock() {
            Ok(g) if self.threads > 1 => g,
            _ => return f(0),
        };
        let s = &*self.shared;
        // SAFETY (lifetime erasure): workers use the reference only while joined, and this
        // function does not return before the step is closed and no worker is joined.
        let job: Job<'static> = unsafe { std::mem::transmute::<Job<'_>, Job<'static>>(f) };
        // SAFETY: no worker is in a step, see `Shared`.
        unsafe { *s.job.get() = Some(job) };
        s.joined.store(OPEN, Ordering::Release);
        s.generation.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0)));
        // Close the step, then wait for the workers in it.
        s.joined.fetch_and(!OPEN, Ordering::AcqRel);
        let mut spins = 0u32;
        while s.joined.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < 1 << 12 {
                std::hint::spin_loop();
            } else {
                // The worker was descheduled mid-step (busy machine): let it have a core.
                std::thread::yield_now();
            }
        }
        // SAFETY: the step is closed and empty.
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

fn worker(s: &Shared, index: usize) {
    let mut seen = 0;
    loop {
        wait_for_step(s, &mut seen);
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        // Join the step if it is still open (it may be a later step than the one that woke
        // us; that is fine, the job read below is that step's).
        let mut v = s.joined.load(Ordering::Acquire);
        let joined = loop {
            if v & OPEN == 0 {
                break false;
            }
            match s
                .joined
                .compare_exchange_weak(v, v + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break true,
                Err(now) => v = now,
            }
        };
        if !joined {
            continue;
        }
        // SAFETY: joined, so the job is set and stays valid until we leave.
        if let Some(job) = unsafe { *s.job.get() } {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(index)));
            if r.is_err() {
                s.panicked.store(true, Ordering::Relaxed);
            }
        }
        s.joined.fetch_sub(1, Ordering::Release);
    }
}

/// Returns once the generation differs from `seen` (and updates it): spinning, then
/// yielding, then asleep.
fn wait_for_step(s: &Shared, seen: &mut usize) {
    let (spin_hot, spin) = spin_times();
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let g = s.generation.load(Ordering::Acquire);
        if g != *seen {
            *seen = g;
            return;
        }
        spins = spins.wrapping_add(1);
        if !spins.is_multiple_of(256) {
            std::hint::spin_loop();
            continue;
        }
        let idle = start.elapsed();
        if idle < spin_hot {
            continue;
        }
        if idle < spin {
            std::thread::yield_now();
            continue;
        }
        // Sleep until the next step. `sleepers` is raised before the generation is checked
        // again under the lock, and `run` bumps the generation before it reads `sleepers`,
        // so a step cannot slip between the check and the wait.
        let mut l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
        s.sleepers.fetch_add(1, Ordering::SeqCst);
        while s.generation.load(Ordering::SeqCst) == *seen {
            l = s.wake.wait(l).unwrap_or_else(|e| e.into_inner());
        }
        s.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The pool the forward pass uses, created on first use with as many threads as rayon's
/// global pool (so `--threads` governs both).
pub fn global() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool::new(rayon::current_num_threads()))
}

/// Work items `0..len` handed out in chunks through an atomic counter: threads that finish
/// early take more, and a thread that never comes leaves nothing undone.
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
        if self.next.load(Ordering::Relaxed) >= self.len {
            return None;
        }
        let start = self.next.fetch_add(self.chunk, Ordering::Relaxed);
        (start < self.len).then(|| start..(start + self.chunk).min(self.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_and_any_joining_workers_run_each_step() {
        let pool = Pool::new(3);
        for _ in 0..1000 {
            let hits = AtomicUsize::new(0);
            let mask = AtomicUsize::new(0);
            pool.run(&|i| {
                assert!(i < pool.threads());
                hits.fetch_add(1, Ordering::Relaxed);
                mask.fetch_or(1 << i, Ordering::Relaxed);
            });
            let h = hits.load(Ordering::Relaxed);
            assert!((1..=pool.threads()).contains(&h));
            assert_eq!(
                mask.load(Ordering::Relaxed) & 1,
                1,
                "the caller always runs"
            );
            assert_eq!(mask.load(Ordering::Relaxed).count_ones() as usize, h);
        }
    }

    #[test]
    fn chunks_cover_everything_once() {
        let pool = Pool::new(2);
        for _ in 0..100 {
            let seen: Vec<AtomicUsize> = (0..1000).map(|_| AtomicUsize::new(0)).collect();
            let chunks = Chunks::new(seen.len(), 7);
            pool.run(&|_| {
                while let Some(r) = chunks.next() {
                    for i in r {
                        seen[i].fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn workers_share_slow_steps() {
        let pool = Pool::new(2);
        if pool.threads() < 2 {
            return;
        }
        // A step long enough for the worker to join at least once in a few tries.
        let mut joined = false;
        for _ in 0..50 {
            let mask = AtomicUsize::new(0);
            pool.run(&|i| {
                mask.fetch_or(1 << i, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            });
            joined |= mask.load(Ordering::Relaxed) == 3;
        }
        assert!(joined);
    }

    #[test]
    fn nested_and_concurrent_steps_run_alone() {
        let pool = Arc::new(Pool::new(2));
        let inner = AtomicUsize::new(0);
        pool.run(&|_| {
            pool.run(&|i| {
                assert_eq!(i, 0);
                inner.fetch_add(1, Ordering::Relaxed);
            })
        });
        assert!(inner.load(Ordering::Relaxed) >= 1);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let p = Arc::clone(&pool);
                std::thread::spawn(move || {
                    let c = AtomicUsize::new(0);
                    for _ in 0..200 {
                        p.run(&|_| {
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
    fn a_panicking_step_is_reported_and_the_pool_survives() {
        let pool = Pool::new(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(&|i| {
                if i == 0 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        let hits = AtomicUsize::new(0);
        pool.run(&|_| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert!(hits.load(Ordering::Relaxed) >= 1);
    }
}
