//! Admission: at most `slots` requests generate at once, at most `queue` more wait (first
//! come, first served), and the KV bytes reserved by running requests stay within the
//! budget. Past the queue a request is refused (429); a request that could never fit the
//! budget is refused at once (400); a `fastgen` request that does not fit now at its T is
//! admitted at the highest lower T, down to the floor, that fits.
//!
//! A [`Permit`] holds the slot and the reservation; dropping it (the request finished, failed
//! or was cancelled) gives both back and wakes the queue. A waiting request that is dropped
//! (its client went away) leaves the queue.

use super::conversations::Conversations;
use super::kv::{recovery_adjustable, KvGrant, KvRequest};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::Notify;

/// Step between the recovery values tried when lowering T.
pub const RECOVERY_STEP: f64 = 0.01;

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub slots: usize,
    pub queue: usize,
    /// Bytes all running requests may reserve together (None: no limit).
    pub budget: Option<u64>,
    /// Lowest T a fastgen request may be lowered to.
    pub recovery_floor: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    QueueFull,
    /// Even at the floor the request needs more than the whole budget.
    OverBudget {
        need: u64,
        budget: u64,
    },
    ShuttingDown,
}

#[derive(Debug, Default)]
struct State {
    active: usize,
    reserved: u64,
    /// Tickets of waiting requests, oldest first.
    queue: VecDeque<u64>,
    next_ticket: u64,
    closed: bool,
}

pub struct Admission {
    cfg: Config,
    state: Mutex<State>,
    changed: Notify,
    /// Conversations kept between turns: their bytes give way to running requests.
    kept: OnceLock<Arc<Conversations>>,
}

/// Figures for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Snapshot {
    pub active: usize,
    pub waiting: usize,
    pub reserved: u64,
}

impl Admission {
    pub fn new(cfg: Config) -> Arc<Admission> {
        Arc::new(Admission {
            cfg,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            kept: OnceLock::new(),
        })
    }

    /// Makes kept conversations live within the budget: each admission drops the least
    /// recently used ones until they fit beside every reservation.
    pub fn set_kept(&self, kept: Arc<Conversations>) {
        let _ = self.kept.set(kept);
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent under every operation, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> Snapshot {
        let s = self.lock();
        Snapshot {
            active: s.active,
            waiting: s.queue.len(),
            reserved: s.reserved,
        }
    }

    /// Refuses every waiting and future request (shutdown); running ones keep their permits.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_waiters();
    }

    /// Waits for a slot and budget. `estimate(t)` is the KV bytes the request would hold at
    /// recovery `t`; it must not decrease as `t` rises.
    pub async fn admit(
        self: &Arc<Self>,
        kv: KvRequest,
        estimate: &(dyn Fn(f64) -> u64 + Sync),
    ) -> Result<Permit, Refusal> {
        let ticket = {
            let mut s = self.lock();
            if s.closed {
                return Err(Refusal::ShuttingDown);
            }
            if let Some(budget) = self.cfg.budget {
                let need = estimate(self.lowest_recovery(kv));
                if need > budget {
                    return Err(Refusal::OverBudget { need, budget });
                }
            }
            if s.queue.is_empty() {
                if let Some(grant) = self.try_grant(&s, kv, estimate) {
                    return Ok(self.take(&mut s, grant));
                }
            }
            if s.queue.len() >= self.cfg.queue {
                return Err(Refusal::QueueFull);
            }
            let t = s.next_ticket;
            s.next_ticket += 1;
            s.queue.push_back(t);
            t
        };
        let mut waiting = Waiting {
            adm: self,
            ticket,
            queued: true,
        };
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before looking, so no wake-up between the look and the wait is lost.
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if s.closed {
                    return Err(Refusal::ShuttingDown);
                }
                if s.queue.front() == Some(&ticket) {
                    if let Some(grant) = self.try_grant(&s, kv, estimate) {
                        s.queue.pop_front();
                        waiting.queued = false;
                        let permit = self.take(&mut s, grant);
                        drop(s);
                        // The next in line may fit too.
                        self.changed.notify_waiters();
                        return Ok(permit);
                    }
                }
            }
            notified.await;
        }
    }

    fn lowest_recovery(&self, kv: KvRequest) -> f64 {
        if recovery_adjustable(kv.kind) {
            kv.recovery.min(self.cfg.recovery_floor)
        } else {
            kv.recovery
        }
    }

    /// A grant if a slot is free and the request fits the free budget at some allowed T
    /// (the highest one).
    fn try_grant(
        &self,
        s: &State,
        kv: KvRequest,
        estimate: &(dyn Fn(f64) -> u64 + Sync),
    ) -> Option<KvGrant> {
        if s.active >= self.cfg.slots {
            return None;
        }
        let grant = |t: f64, bytes: u64| KvGrant {
            kind: kv.kind,
            recovery_requested: kv.recovery,
            recovery: t,
            compress_from: kv.compress_from,
            reserved_bytes: bytes,
        };
        let Some(budget) = self.cfg.budget else {
            return Some(grant(kv.recovery, estimate(kv.recovery)));
        };
        let free = budget.saturating_sub(s.reserved);
        let floor = self.lowest_recovery(kv);
        let mut t = kv.recovery;
        loop {
            let need = estimate(t);
            if need <= free {
                return Some(grant(t, need));
            }
            if t <= floor {
                return None;
            }
            // Round to the step so that T reads as 0.93, not 0.9299999.
            t = (((t - RECOVERY_STEP) / RECOVERY_STEP).round() * RECOVERY_STEP).max(floor);
        }
    }

    fn take(self: &Arc<Self>, s: &mut State, grant: KvGrant) -> Permit {
        s.active += 1;
        s.reserved += grant.reserved_bytes;
        if let (Some(budget), Some(kept)) = (self.cfg.budget, self.kept.get()) {
            kept.shrink_to(budget.saturating_sub(s.reserved));
        }
        Permit {
            adm: Arc::clone(self),
            grant,
        }
    }
}

/// A running request's slot and KV reservation.
pub struct Permit {
    adm: Arc<Admission>,
    pub grant: KvGrant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        {
            let mut s = self.adm.lock();
            s.active -= 1;
            s.reserved -= self.grant.reserved_bytes;
        }
        self.adm.changed.notify_waiters();
    }
}

/// Takes a waiting request out of the queue if it is dropped before admission.
struct Waiting<'a> {
    adm: &'a Admission,
    ticket: u64,
    queued: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.queued {
            self.adm.lock().queue.retain(|&t| t != self.ticket);
            self.adm.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::kv::KvKind;
    use std::time::Duration;
    use tokio::time::timeout;

    fn adm(slots: usize, queue: usize, budget: Option<u64>) -> Arc<Admission> {
        Admission::new(Config {
            slots,
            queue,
            budget,
            recovery_floor: 0.8,
        })
    }
    const FULL: KvRequest = KvRequest {
        kind: KvKind::Full,
        recovery: 0.95,
        compress_from: 0,
    };
    const FASTGEN: KvRequest = KvRequest {
        kind: KvKind::FastGen,
        recovery: 0.95,
        compress_from: 0,
    };
    fn flat(bytes: u64) -> impl Fn(f64) -> u64 + Sync {
        move |_| bytes
    }
    /// A stand-in for FastGen's estimate: 1000 bytes at T = 1, 10 fewer per 0.01 of T.
    fn by_t(t: f64) -> u64 {
        (t * 1000.0).round() as u64
    }
    const SHORT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn slots_then_queue_then_refusal() {
        let a = adm(2, 1, None);
        let p1 = a.admit(FULL, &flat(0)).await.unwrap();
        let _p2 = a.admit(FULL, &flat(0)).await.unwrap();
        let a2 = Arc::clone(&a);
        let waiter = tokio::spawn(async move { a2.admit(FULL, &flat(0)).await.map(|_| ()) });
        tokio::time::sleep(SHORT).await;
        assert_eq!(a.snapshot().waiting, 1);
        assert_eq!(
            a.admit(FULL, &flat(0)).await.err(),
            Some(Refusal::QueueFull)
        );
        drop(p1);
        timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            a.snapshot(),
            Snapshot {
                active: 1,
                waiting: 0,
                reserved: 0
            }
        );
    }

    #[tokio::test]
    async fn a_dropped_waiter_leaves_the_queue() {
        let a = adm(1, 1, None);
        let p = a.admit(FULL, &flat(0)).await.unwrap();
        assert!(timeout(SHORT, a.admit(FULL, &flat(0))).await.is_err());
        assert_eq!(a.snapshot().waiting, 0);
        drop(p);
        assert!(timeout(SHORT, a.admit(FULL, &flat(0))).await.is_ok());
    }

    #[tokio::test]
    async fn budget_is_shared_and_given_back() {
        let a = adm(4, 4, Some(100));
        let p1 = a.admit(FULL, &flat(60)).await.unwrap();
        assert_eq!(p1.grant.reserved_bytes, 60);
        // Fits the budget but not what is free now: waits.
        assert!(timeout(SHORT, a.admit(FULL, &flat(60))).await.is_err());
        assert_eq!(a.snapshot().reserved, 60);
        drop(p1);
        let p2 = timeout(SHORT, a.admit(FULL, &flat(60)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.snapshot().reserved, 60);
        drop(p2);
        assert_eq!(a.snapshot().reserved, 0);
    }

    #[tokio::test]
    async fn over_the_whole_budget_is_refused_at_once() {
        let a = adm(4, 4, Some(100));
        assert_eq!(
            a.admit(FULL, &flat(101)).await.err(),
            Some(Refusal::OverBudget {
                need: 101,
                budget: 100
            })
        );
        // fastgen is judged at its floor: 800 bytes at T = 0.8.
        assert_eq!(
            a.admit(FASTGEN, &by_t).await.err(),
            Some(Refusal::OverBudget {
                need: 800,
                budget: 100
            })
        );
    }

    #[tokio::test]
    async fn fastgen_is_admitted_at_a_lower_recovery() {
        let a = adm(4, 4, Some(1800));
        let p1 = a.admit(FASTGEN, &by_t).await.unwrap();
        assert_eq!(p1.grant.recovery, 0.95);
        assert_eq!(p1.grant.reserved_bytes, 950);
        // 850 bytes free: T = 0.85 is the highest that fits.
        let p2 = a.admit(FASTGEN, &by_t).await.unwrap();
        assert!((p2.grant.recovery - 0.85).abs() < 1e-6, "{:?}", p2.grant);
        assert_eq!(p2.grant.recovery_requested, 0.95);
        assert_eq!(a.snapshot().reserved, 1800);
        // Nothing free: waits even at the floor; full is never lowered.
        assert!(timeout(SHORT, a.admit(FASTGEN, &by_t)).await.is_err());
        drop(p2);
        // 850 bytes free again: fastgen would fit at 0.85, but full is never lowered.
        assert!(timeout(SHORT, a.admit(FULL, &by_t)).await.is_err());
        drop(p1);
        let p3 = a.admit(FULL, &by_t).await.unwrap();
        assert_eq!((p3.grant.recovery, p3.grant.reserved_bytes), (0.95, 950));
    }

    #[tokio::test]
    async fn requested_below_the_floor_is_kept() {
        let a = adm(1, 1, Some(1000));
        let p = a
            .admit(
                KvRequest {
                    kind: KvKind::FastGen,
                    recovery: 0.5,
                    compress_from: 0,
                },
                &by_t,
            )
            .await
            .unwrap();
        assert_eq!(p.grant.recovery, 0.5);
    }

    #[tokio::test]
    async fn queue_is_first_come_first_served() {
        let a = adm(1, 4, None);
        let p = a.admit(FULL, &flat(0)).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (a, order) = (Arc::clone(&a), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let permit = a.admit(FULL, &flat(0)).await.unwrap();
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(permit);
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(p);
        for t in tasks {
            timeout(Duration::from_secs(1), t).await.unwrap().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
    }

    #[tokio::test]
    async fn close_refuses_waiting_and_new_requests() {
        let a = adm(1, 2, None);
        let _p = a.admit(FULL, &flat(0)).await.unwrap();
        let a2 = Arc::clone(&a);
        let waiter = tokio::spawn(async move { a2.admit(FULL, &flat(0)).await.err() });
        tokio::time::sleep(SHORT).await;
        a.close();
        assert_eq!(waiter.await.unwrap(), Some(Refusal::ShuttingDown));
        assert_eq!(
            a.admit(FULL, &flat(0)).await.err(),
            Some(Refusal::ShuttingDown)
        );
    }
}
