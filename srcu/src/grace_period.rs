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
//! # One grace period ([`GpState::advance`](GpState), one non-blocking step at a time)
//!
//! 1. scan 1: the *inactive* rank has no readers (stragglers that read the
//!    index before the previous flip but incremented after it);
//! 2. flip the index, making that rank active;
//! 3. scan 2: the previously active rank has no readers.
//!
//! A step never waits: a scan that finds readers leaves the phase where it
//! is ([`Phase`]) and returns. Callers of `synchronize` retry after a
//! backoff without holding the driver lock; the runtime's driver re-arms the
//! domain with a deadline. So one domain's sleeping reader costs one check
//! per backoff period, and never holds up another domain.
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
    fn completed(&self) {}
    /// A scan found readers holding up the grace period in progress (the
    /// caller holds the driver lock). Called only on that slow path, so
    /// that an idle grace period reads the clock only for the scan-cost
    /// statistic (`check_ranks`).
    fn blocked(&self) {}
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

/// Where the grace period in progress stands (held under `GpState::driver`).
///
/// | phase   | sequence word | next check                                   |
/// |---------|---------------|----------------------------------------------|
/// | `Idle`  | even          | none; a request starts a grace period        |
/// | `Scan1` | odd           | the rank that is inactive now has no readers |
/// | `Scan2` | odd           | the rank active before the flip has none     |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Phase {
    /// No grace period in progress.
    #[default]
    Idle,
    /// Started; waiting for the inactive rank to drain (step 1).
    Scan1,
    /// Flipped; waiting for the previously active rank to drain (step 3).
    Scan2,
}

/// Per-domain grace-period state.
#[derive(Debug)]
pub(crate) struct GpState {
    seq: AtomicU64,
    /// The phase of the grace period in progress. Whoever holds this lock
    /// may advance it; nobody sleeps while holding it (steps never wait).
    driver: Mutex<Phase>,
}

impl GpState {
    #[cfg(usrcu_loom)]
    pub(crate) fn new() -> GpState {
        GpState::starting_at(0)
    }

    /// Idle at sequence `seq` (even): cookies up to it read complete.
    pub(crate) fn starting_at(seq: u64) -> GpState {
        debug_assert_eq!(seq & 1, 0, "a state starts idle");
        GpState {
            seq: AtomicU64::new(seq),
            driver: Mutex::new(Phase::Idle),
        }
    }

    /// The sequence word now (for the floor a cleaned-up domain leaves).
    #[cfg(not(usrcu_loom))]
    pub(crate) fn seq_now(&self) -> u64 {
        // Acquire: as in `done`.
        self.seq.load(Ordering::Acquire)
    }

    /// The cookie of the first grace period that starts after this call.
    pub(crate) fn snap(&self) -> Cookie {
        // SeqCst fence: orders the caller's earlier stores (the update being
        // retired) before the read of the sequence, so the grace period this
        // cookie names starts after them; pairs with the SeqCst increment at
        // the start of a grace period (`advance`, `Idle` -> `Scan1`).
        fence(Ordering::SeqCst);
        self.snap_after_fence()
    }

    /// [`GpState::snap`] for a caller that has just issued the SeqCst fence
    /// itself (`Callbacks::enqueue`: the one after its ticket RMW), with
    /// nothing it must order before the read of the sequence after it.
    pub(crate) fn snap_after_fence(&self) -> Cookie {
        let s = self.seq.load(Ordering::SeqCst);
        Cookie((s + 3) & !1)
    }

    /// Has the grace period named by `c` completed?
    pub(crate) fn done(&self, c: Cookie) -> bool {
        // Acquire: pairs with the SeqCst (release) increment that ends a grace
        // period, so whatever the caller does next is ordered after it.
        self.seq.load(Ordering::Acquire) >= c.0
    }

    /// The completed-sequence value now: one snapshot, against which a pass
    /// of the runtime takes every callback it may run (`Cookie` <= it).
    pub(crate) fn completed(&self) -> Cookie {
        // Acquire: as in `done`.
        Cookie(self.seq.load(Ordering::Acquire) & !1)
    }

    /// Is a grace period running now?
    pub(crate) fn in_progress(&self) -> bool {
        self.seq.load(Ordering::Acquire) & 1 != 0
    }

    /// Advance grace periods toward `target` as far as the readers allow,
    /// without waiting: returns true once `target` is complete, false if a
    /// scan found readers (the caller retries later). The caller holds the
    /// driver lock and passes its phase.
    fn advance(&self, phase: &mut Phase, target: Cookie, pc: &PerCpu, mode: FenceMode, hooks: &dyn GpHooks) -> bool {
        loop {
            match *phase {
                Phase::Idle => {
                    if self.done(target) {
                        return true;
                    }
                    // SeqCst: the start is ordered after every snap that read
                    // the previous value (see `snap`) and before this grace
                    // period's scans.
                    self.seq.fetch_add(1, Ordering::SeqCst);
                    // Relaxed: only the driver (us, under `driver`) writes it.
                    let idx = pc.idx.load(Ordering::Relaxed);
                    // Scan 1, checking the active rank under the same heavy
                    // fence: if neither rank had a reader inside, no reader
                    // that began before this grace period is still inside,
                    // and every later one sees the updater's stores (step A),
                    // so the grace period is complete without a flip
                    // (docs/memory-model.md, "the idle fast path").
                    let gone = check_ranks(pc, &[0, 1], mode, hooks);
                    if gone[idx & 1] && gone[(idx & 1) ^ 1] && !crate::fault::second_scan_skipped() {
                        self.end(phase, hooks);
                        continue;
                    }
                    if !gone[(idx & 1) ^ 1] {
                        *phase = Phase::Scan1;
                        continue;
                    }
                    self.flip(pc, idx);
                    *phase = Phase::Scan2;
                }
                Phase::Scan1 => {
                    // Relaxed: only the driver (us, under `driver`) writes it.
                    let idx = pc.idx.load(Ordering::Relaxed);
                    // Scan 1: the inactive rank.
                    if !readers_gone(pc, (idx & 1) ^ 1, mode, hooks) {
                        hooks.blocked();
                        return false;
                    }
                    self.flip(pc, idx);
                    *phase = Phase::Scan2;
                }
                Phase::Scan2 => {
                    // Relaxed: as above. The rank active before the flip is
                    // the one inactive now.
                    let idx = pc.idx.load(Ordering::Relaxed);
                    if !crate::fault::second_scan_skipped() && !readers_gone(pc, (idx & 1) ^ 1, mode, hooks) {
                        hooks.blocked();
                        return false;
                    }
                    self.end(phase, hooks);
                }
            }
        }
    }

    /// Flip the index from `idx`. Caller holds the driver lock.
    fn flip(&self, pc: &PerCpu, idx: usize) {
        // SeqCst fence before (E): scan 1's sums are ordered before the flip;
        // SeqCst store and fence after (D): readers that see the new index
        // are ordered after it, and scan 2's sums after it.
        fence(Ordering::SeqCst);
        pc.idx.store(idx.wrapping_add(1), Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// End the grace period in progress. Caller holds the driver lock.
    fn end(&self, phase: &mut Phase, hooks: &dyn GpHooks) {
        // SeqCst (release): ends the grace period; pairs with the Acquire
        // load in `done`.
        self.seq.fetch_add(1, Ordering::SeqCst);
        *phase = Phase::Idle;
        hooks.completed();
    }

    /// One non-blocking attempt by the runtime's driver: `Some(true)` once
    /// `target` is complete, `Some(false)` if readers hold it up, `None` if a
    /// caller of `synchronize` holds the driver lock right now (it is making
    /// progress itself).
    #[cfg(not(usrcu_loom))]
    pub(crate) fn try_advance(
        &self,
        target: Cookie,
        pc: &PerCpu,
        mode: FenceMode,
        hooks: &dyn GpHooks,
    ) -> Option<bool> {
        if self.done(target) {
            return Some(true);
        }
        let mut phase = crate::sync::try_lock(&self.driver)?;
        Some(self.advance(&mut phase, target, pc, mode, hooks))
    }

    /// Wait until the grace period named by `c` has completed, driving grace
    /// periods as needed, or until `deadline`; true if `c` completed.
    /// Concurrent callers batch: whoever holds the driver lock advances the
    /// one grace period in progress for all of them; nobody sleeps holding
    /// it, so the runtime's driver and other callers are never stuck behind
    /// a sleeping caller.
    pub(crate) fn wait_for(
        &self,
        c: Cookie,
        pc: &PerCpu,
        mode: FenceMode,
        urgency: Urgency,
        hooks: &dyn GpHooks,
        deadline: Option<Deadline>,
    ) -> bool {
        let mut wait = Backoff::new(urgency);
        loop {
            if self.done(c) {
                return true;
            }
            {
                let mut phase = lock(&self.driver);
                if self.advance(&mut phase, c, pc, mode, hooks) {
                    return true;
                }
            }
            if !wait.pause(hooks, deadline) {
                return self.done(c);
            }
        }
    }

    /// `synchronize`: wait for every reader that began before the call.
    #[cfg(usrcu_loom)]
    pub(crate) fn synchronize(&self, pc: &PerCpu, mode: FenceMode, urgency: Urgency, hooks: &dyn GpHooks) {
        let c = self.snap();
        self.wait_for(c, pc, mode, urgency, hooks, None);
    }
}

/// A point in time after which a wait gives up.
#[cfg(not(usrcu_loom))]
pub(crate) type Deadline = std::time::Instant;
/// Loom models never time out.
#[cfg(usrcu_loom)]
pub(crate) type Deadline = ();

/// One check of rank `r`: are its readers gone? (Step A.)
pub(crate) fn readers_gone(pc: &PerCpu, r: usize, mode: FenceMode, hooks: &dyn GpHooks) -> bool {
    check_ranks(pc, &[r], mode, hooks)[r]
}

/// One check (step A) of each rank in `ranks`, under one heavy fence:
/// `gone[r]` is true if rank `r` had no reader inside when its unlock sum
/// began. Ranks not asked about read false.
pub(crate) fn check_ranks(pc: &PerCpu, ranks: &[usize], mode: FenceMode, hooks: &dyn GpHooks) -> [bool; 2] {
    #[cfg(not(usrcu_loom))]
    let t0 = std::time::Instant::now();
    let mut unlocks = [crate::percpu::Sum::default(); 2];
    for &r in ranks {
        unlocks[r] = pc.sum_unlocks(r);
    }
    // A: pairs with the reader fences B (after the lock add) and C (before
    // the unlock add). If a lock add is missed by the sums below, that
    // reader's critical section begins after this fence and sees everything
    // the updater stored before it.
    heavy_fence(mode);
    let mut gone = [false; 2];
    let mut slots = 0;
    for &r in ranks {
        // Walks the touched-chunk bitmap again, after A
        // (docs/memory-model.md, "Per-CPU chunks").
        let locks = pc.sum_locks(r);
        slots += unlocks[r].slots + locks.slots;
        gone[r] = locks.total == unlocks[r].total;
    }
    #[cfg(not(usrcu_loom))]
    hooks.scanned(slots, t0.elapsed().as_nanos() as u64);
    #[cfg(usrcu_loom)]
    hooks.scanned(slots, 0);
    gone
}

/// Spin briefly, then sleep with exponential backoff.
struct Backoff {
    step: u32,
    urgency: Urgency,
    /// When the caller first had to pause: set then, not when the wait
    /// began, so that a grace period that completes at the first attempt
    /// (an idle domain's) reads no clock for its wait.
    #[cfg(not(usrcu_loom))]
    start: Option<std::time::Instant>,
}

impl Backoff {
    fn new(urgency: Urgency) -> Backoff {
        Backoff {
            step: 0,
            urgency,
            #[cfg(not(usrcu_loom))]
            start: None,
        }
    }

    /// Wait a little before the next check; false if `deadline` passed.
    #[cfg(usrcu_loom)]
    fn pause(&mut self, _hooks: &dyn GpHooks, _deadline: Option<Deadline>) -> bool {
        self.step += 1;
        let _ = self.urgency;
        crate::sync::yield_now();
        true
    }

    /// Wait a little before the next check; false if `deadline` passed.
    #[cfg(not(usrcu_loom))]
    fn pause(&mut self, hooks: &dyn GpHooks, deadline: Option<Deadline>) -> bool {
        use std::time::{Duration, Instant};
        let (spins, first_sleep_us, max_sleep_us) = match self.urgency {
            Urgency::Expedited => (16, 2, 1_000),
            Urgency::Normal => (4, 20, 10_000),
        };
        self.step += 1;
        let start = *self.start.get_or_insert_with(Instant::now);
        if self.step <= spins {
            for _ in 0..(64 << self.step.min(6)) {
                crate::sync::spin_hint();
            }
            return deadline.is_none_or(|d| Instant::now() < d);
        }
        let k = (self.step - spins - 1).min(20);
        let mut sleep = Duration::from_micros((first_sleep_us << k).min(max_sleep_us));
        if let Some(d) = deadline {
            let now = Instant::now();
            if now >= d {
                return false;
            }
            sleep = sleep.min(d - now);
        }
        std::thread::sleep(sleep);
        hooks.waiting(start.elapsed().as_millis() as u64);
        true
    }
}
