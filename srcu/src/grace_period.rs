//! Grace periods: the two scans around the flip, batching, waiting, cookies.
//!
//! # Sequence word
//!
//! | bits   | meaning                                                   |
//! |--------|-----------------------------------------------------------|
//! | 0      | 1 while a grace period is in progress                     |
//! | 1..64  | number of grace periods completed                         |
//!
//! Only the driver (the holder of `driver`) changes it: +1 at start, +1 at
//! end. A [`Cookie`] is the sequence value at which a grace period that began
//! after the cookie was taken has ended ([`GpState::snap`]); it is complete
//! once the word reaches it.
//!
//! # One grace period ([`GpState::run`])
//!
//! 1. scan 1: wait until the *inactive* rank has no readers (stragglers that
//!    read the index before the previous flip but incremented after it);
//! 2. flip the index, making that rank active;
//! 3. scan 2: wait until the previously active rank has no readers.
//!
//! Each scan check sums the unlock counters, issues the heavy fence (A), then
//! sums the lock counters; equal sums mean no reader of that rank was inside
//! when the unlock sum began. See `docs/memory-model.md`.

use crate::fence::{heavy_fence, FenceMode};
use crate::percpu::PerCpu;
use crate::sync::{fence, lock, AtomicU64, Mutex, Ordering};

/// A polled grace-period cookie (`get_state`, `start_poll`, `poll_state`).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cookie(pub(crate) u64);

impl Cookie {
    /// The raw sequence value (for logs and FFI).
    pub fn as_u64(self) -> u64 {
        self.0
    }
    /// Rebuild a cookie from [`Cookie::as_u64`].
    pub fn from_u64(v: u64) -> Cookie {
        Cookie(v)
    }
}

/// What the grace-period machinery reports to its domain (stats, stalls).
pub(crate) trait GpHooks {
    /// A check read `slots` slots (both sums), taking `nanos`.
    fn scanned(&self, _slots: usize, _nanos: u64) {}
    /// A scan has waited `waited_ms` so far for readers of the domain.
    fn waiting(&self, _waited_ms: u64) {}
    /// A grace period completed.
    fn completed(&self, _expedited: bool) {}
}

impl GpHooks for () {}

/// How long a scan spins and sleeps between checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Urgency {
    /// `synchronize_expedited`: spin a while, then short sleeps.
    Expedited,
    /// `synchronize` and the runtime's grace periods: sleep sooner, longer.
    Normal,
}

/// Per-domain grace-period state.
#[derive(Debug)]
pub(crate) struct GpState {
    seq: AtomicU64,
    driver: Mutex<()>,
}

impl GpState {
    pub(crate) fn new() -> GpState {
        GpState {
            seq: AtomicU64::new(0),
            driver: Mutex::new(()),
        }
    }

    /// The cookie of the first grace period that starts after this call.
    pub(crate) fn snap(&self) -> Cookie {
        // SeqCst fence: orders the caller's earlier stores (the update being
        // retired) before the read of the sequence, so the grace period this
        // cookie names starts after them; pairs with the SeqCst increment at
        // the start of `run`.
        fence(Ordering::SeqCst);
        let s = self.seq.load(Ordering::SeqCst);
        Cookie((s + 3) & !1)
    }

    /// Has the grace period named by `c` completed?
    pub(crate) fn done(&self, c: Cookie) -> bool {
        // Acquire: pairs with the SeqCst (release) increment that ends a grace
        // period, so whatever the caller does next is ordered after it.
        self.seq.load(Ordering::Acquire) >= c.0
    }

    /// Is a grace period running now?
    pub(crate) fn in_progress(&self) -> bool {
        self.seq.load(Ordering::Acquire) & 1 != 0
    }

    /// Wait until the grace period named by `c` has completed, driving grace
    /// periods as needed. Concurrent callers batch: whoever holds the driver
    /// lock runs a grace period that completes every cookie taken before it
    /// started; the others find theirs done when they get the lock.
    pub(crate) fn wait_for(&self, c: Cookie, pc: &PerCpu, mode: FenceMode, urgency: Urgency, hooks: &dyn GpHooks) {
        while !self.done(c) {
            let _driver = lock(&self.driver);
            if self.done(c) {
                break;
            }
            self.run(pc, mode, urgency, hooks);
        }
    }

    /// `synchronize`: wait for every reader that began before the call.
    pub(crate) fn synchronize(&self, pc: &PerCpu, mode: FenceMode, urgency: Urgency, hooks: &dyn GpHooks) {
        let c = self.snap();
        self.wait_for(c, pc, mode, urgency, hooks);
    }

    /// Run one grace period. Caller holds `driver`.
    fn run(&self, pc: &PerCpu, mode: FenceMode, urgency: Urgency, hooks: &dyn GpHooks) {
        // SeqCst: the start is ordered after every snap that read the previous
        // value (see `snap`) and before this grace period's scans.
        self.seq.fetch_add(1, Ordering::SeqCst);
        // Relaxed: only the driver (us, under `driver`) writes the index.
        let idx = pc.idx.load(Ordering::Relaxed);
        // Scan 1: the inactive rank.
        drain(pc, (idx & 1) ^ 1, mode, urgency, hooks);
        // Flip. SeqCst fence before (E): scan 1's sums are ordered before the
        // flip; SeqCst store and fence after (D): readers that see the new
        // index are ordered after it, and scan 2's sums after it.
        fence(Ordering::SeqCst);
        pc.idx.store(idx.wrapping_add(1), Ordering::SeqCst);
        fence(Ordering::SeqCst);
        // Scan 2: the rank that was active before the flip.
        if !crate::fault::second_scan_skipped() {
            drain(pc, idx & 1, mode, urgency, hooks);
        }
        // SeqCst (release): ends the grace period; pairs with the Acquire load
        // in `done`.
        self.seq.fetch_add(1, Ordering::SeqCst);
        hooks.completed(urgency == Urgency::Expedited);
    }
}

/// One check of rank `r`: are its readers gone? (Step A.)
pub(crate) fn readers_gone(pc: &PerCpu, r: usize, mode: FenceMode, hooks: &dyn GpHooks) -> bool {
    #[cfg(not(usrcu_loom))]
    let t0 = std::time::Instant::now();
    let unlocks = pc.sum_unlocks(r);
    // A: pairs with the reader fences B (after the lock add) and C (before
    // the unlock add). If a lock add is missed by the sum below, that
    // reader's critical section begins after this fence and sees everything
    // the updater stored before it.
    heavy_fence(mode);
    // Walks the touched-chunk bitmap again, after A (docs/memory-model.md,
    // "Per-CPU chunks").
    let locks = pc.sum_locks(r);
    #[cfg(not(usrcu_loom))]
    hooks.scanned(unlocks.slots + locks.slots, t0.elapsed().as_nanos() as u64);
    #[cfg(usrcu_loom)]
    hooks.scanned(unlocks.slots + locks.slots, 0);
    locks.total == unlocks.total
}

/// Wait until rank `r` has no readers.
fn drain(pc: &PerCpu, r: usize, mode: FenceMode, urgency: Urgency, hooks: &dyn GpHooks) {
    let mut wait = Backoff::new(urgency);
    while !readers_gone(pc, r, mode, hooks) {
        wait.pause(hooks);
    }
}

/// Spin briefly, then sleep with exponential backoff.
struct Backoff {
    step: u32,
    urgency: Urgency,
    #[cfg(not(usrcu_loom))]
    start: std::time::Instant,
}

impl Backoff {
    fn new(urgency: Urgency) -> Backoff {
        Backoff {
            step: 0,
            urgency,
            #[cfg(not(usrcu_loom))]
            start: std::time::Instant::now(),
        }
    }

    #[cfg(usrcu_loom)]
    fn pause(&mut self, _hooks: &dyn GpHooks) {
        self.step += 1;
        let _ = self.urgency;
        crate::sync::yield_now();
    }

    #[cfg(not(usrcu_loom))]
    fn pause(&mut self, hooks: &dyn GpHooks) {
        use std::time::Duration;
        let (spins, first_sleep_us, max_sleep_us) = match self.urgency {
            Urgency::Expedited => (16, 2, 1_000),
            Urgency::Normal => (4, 20, 10_000),
        };
        self.step += 1;
        if self.step <= spins {
            for _ in 0..(64 << self.step.min(6)) {
                crate::sync::spin_hint();
            }
            return;
        }
        let k = (self.step - spins - 1).min(20);
        let us = (first_sleep_us << k).min(max_sleep_us);
        std::thread::sleep(Duration::from_micros(us));
        hooks.waiting(self.start.elapsed().as_millis() as u64);
    }
}
