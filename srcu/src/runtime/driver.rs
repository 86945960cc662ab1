//! The grace-period driver: one thread that advances every domain needing a
//! grace period, one non-blocking step at a time, and hands ready callbacks
//! to the invokers.
//!
//! Domains wait in a binary heap of next-check times. Servicing a domain:
//!
//! 1. if a grace period is needed (`gp_needed`), one `GpState::try_advance`;
//!    readers holding it up re-arm the domain after a back-off (a few tens
//!    of microseconds at first, up to 50 ms after a second of waiting);
//! 2. if callbacks are pending and something changed since the last
//!    dispatch (a grace period completed, new tickets, a gap to retry),
//!    dispatch the domain to an invoker;
//! 3. otherwise go idle for the domain through the wake-up handshake
//!    (`wake.rs`), or, while callbacks are pending that nobody is running,
//!    keep a slow safety poll.
//!
//! Besides the heap, the driver keeps a short list of domains whose last
//! invoker pass left the queue empty with buffers (`trim_later`): it frees
//! them once nothing was queued for `TRIM_AFTER`, looking again every
//! `TRIM_AFTER` while the domain is busy. These are not heap entries, so
//! they never count against the runtime being idle.
//!
//! Nothing here sleeps inside one domain: a domain with a stuck reader costs
//! one check per back-off period, and every other domain is served between.

use super::invoke;
use super::state::DomainState;
use crate::callbacks::Trimmed;
use crate::grace_period::Cookie;
use crate::sync::{lock, AtomicBool, Condvar, Mutex, MutexGuard, Ordering};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Per-domain driver bookkeeping (under `DomainState::sched`).
#[derive(Debug, Default)]
pub(crate) struct Sched {
    /// The earliest heap entry of this domain that is still valid.
    next_due: Option<Instant>,
    /// Back-off step while readers hold up a grace period.
    gp_backoff: u32,
    /// Back-off step while an invoker finds a ticket gap.
    gap_backoff: u32,
    /// (completed sequence, tickets) at the last dispatch.
    last_dispatch: (u64, u64),
    /// The last invoker pass found a gap: dispatch again even if nothing
    /// else changed.
    retry: bool,
}

struct Entry {
    due: Instant,
    seq: u64,
    st: Arc<DomainState>,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(o.due, o.seq))
    }
}

/// A domain whose invoker buffers the driver frees at `due` if nothing was
/// queued since its last pass saw `tickets` (`Callbacks::trim_if_quiet`).
/// `Weak`: a trim does not keep a cleaned-up domain's state. At most one
/// per domain (`DomainState::trim_pending`).
struct Trim {
    due: Instant,
    seq: u64,
    st: Weak<DomainState>,
    tickets: u64,
}

impl PartialEq for Trim {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Trim {}
impl PartialOrd for Trim {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Trim {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(o.due, o.seq))
    }
}

/// How long a domain's queue stays empty before the driver frees its
/// invoker's buffers (`callbacks::TRIM_FLOOR`): longer than a
/// steady stream's pauses between batches (a benchmark's `barrier` and
/// its next burst), so that a stream does not reallocate them per batch.
pub(crate) const TRIM_AFTER: Duration = Duration::from_millis(100);

#[derive(Default)]
pub(super) struct Heap {
    entries: BinaryHeap<Reverse<Entry>>,
    /// Pending trims, at most one per domain, by due time (a heap: 3,000
    /// busy domains each with a trim pending made a list's scans double
    /// the driver's CPU time, red team 15).
    trims: BinaryHeap<Reverse<Trim>>,
    seq: u64,
    /// The process whose driver thread runs (0: none yet). A child of
    /// `fork` has no thread of its parent's: it starts its own.
    started_in: libc::pid_t,
    /// The last start failed (`spawn.rs`): retry at the next schedule, even
    /// one that pushes nothing. Mirrored in [`START_FAILED`] for `kick`.
    start_failed: bool,
    /// While `start_failed`: no new attempt before this time, so that a
    /// stream of producers (each `kick` schedules while the start fails)
    /// costs one `pthread_create` per [`START_RETRY_MIN`], not one each.
    next_retry: Option<Instant>,
}

/// Least time between two attempts to start the driver while starts fail.
const START_RETRY_MIN: Duration = Duration::from_millis(10);

/// `Heap::start_failed`, readable without the lock: `kick` retries the
/// start too while it is set.
static START_FAILED: AtomicBool = AtomicBool::new(false);

struct Driver {
    heap: Mutex<Heap>,
    cv: Condvar,
}

fn driver() -> &'static Driver {
    static D: OnceLock<Driver> = OnceLock::new();
    D.get_or_init(|| Driver {
        heap: Mutex::new(Heap::default()),
        cv: Condvar::new(),
    })
}

/// Producer side, after a grace-period request: issue the handshake's
/// producer fence (`wake.rs`), then [`kick`].
pub(crate) fn kick_fenced(st: &DomainState) {
    crate::sync::fence(Ordering::SeqCst);
    kick(st);
}

/// Producer side: make sure the driver will look at `st` (cheap when it
/// already will). Call after the work is visible and a SeqCst fence since
/// (`wake.rs`); `Callbacks::enqueue` issues that fence.
#[inline]
pub(crate) fn kick(st: &DomainState) {
    // Relaxed `START_FAILED`: set under the heap's lock when the driver
    // could not be started; a stale `false` only leaves the retry to the
    // next schedule (a `barrier` always schedules).
    if st.wake.needs_kick() || START_FAILED.load(Ordering::Relaxed) {
        schedule_at(st.arc(), Instant::now());
    }
}

/// Look at `st` no later than `due`.
pub(crate) fn schedule_at(st: Arc<DomainState>, due: Instant) {
    let d = driver();
    let mut h = lock(&d.heap);
    st.wake.set();
    let earliest = {
        let mut s = lock(&st.sched);
        if s.next_due.is_some_and(|n| n <= due) {
            drop(s);
            // Already due in time; but a driver that could not be started
            // would never get to it: retry the start.
            let failed = if h.start_failed { start(&mut h) } else { None };
            drop(h);
            if let Some(e) = failed {
                super::spawn::report_failure(&st.name, "the grace-period driver thread", &e);
            }
            return;
        }
        s.next_due = Some(due);
        h.entries.peek().is_none_or(|Reverse(e)| due < e.due)
    };
    // The thread, if it starts, waits for the lock until the push is done.
    let failed = start(&mut h).map(|e| (e, st.name.clone()));
    h.seq += 1;
    let seq = h.seq;
    h.entries.push(Reverse(Entry { due, seq, st }));
    drop(h);
    if earliest {
        d.cv.notify_one();
    }
    if let Some((e, name)) = failed {
        super::spawn::report_failure(&name, "the grace-period driver thread", &e);
    }
}

/// In a child of `fork` (its fork handler, heap's lock held): the parent's
/// driver thread does not run here, whatever the pids say.
pub(super) fn forget_threads(h: &mut Heap) {
    h.started_in = 0;
}

/// Start the driver thread unless it runs in this process (heap's lock
/// held). `Some(e)`: the start failed and the episode is new, to be
/// reported once the lock is dropped; the start is retried at the next
/// schedule or kick (`spawn.rs`).
fn start(h: &mut MutexGuard<'_, Heap>) -> Option<std::io::Error> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    if h.started_in == pid {
        return None;
    }
    if h.start_failed && h.next_retry.is_some_and(|t| Instant::now() < t) {
        return None; // tried less than `START_RETRY_MIN` ago
    }
    match super::spawn::start("usrcu-gp".into(), run) {
        Ok(()) => {
            h.started_in = pid;
            h.start_failed = false;
            h.next_retry = None;
            // Relaxed: see `kick`.
            START_FAILED.store(false, Ordering::Relaxed);
            None
        }
        Err(e) => {
            h.next_retry = Some(Instant::now() + START_RETRY_MIN);
            let new = !std::mem::replace(&mut h.start_failed, true);
            START_FAILED.store(true, Ordering::Relaxed);
            new.then_some(e)
        }
    }
}

/// The last attempt to start the driver failed (`spawn.rs`) and no start
/// succeeded since: a caller that waits for the driver (`barrier`,
/// `poll_state`) retries the start ([`retry_start`]) while this holds.
pub(super) fn start_failed() -> bool {
    // Relaxed: see `kick`; the caller's own `schedule_at` set it under the
    // heap's lock, and program order makes that store visible to it.
    START_FAILED.load(Ordering::Relaxed)
}

/// Retry starting the driver (at most one attempt per `START_RETRY_MIN`)
/// and make sure it will look at `st` once it runs.
pub(super) fn retry_start(st: &DomainState) {
    schedule_at(st.arc(), Instant::now());
}

/// An invoker's pass over `st` left its queue empty with buffers to trim:
/// free them once the domain has been quiet for [`TRIM_AFTER`]. A domain
/// with a trim pending keeps it (the driver re-arms it while the domain is
/// busy, `run`), so a steady stream costs one look per `TRIM_AFTER`, not
/// one per pass.
pub(super) fn trim_later(st: &Arc<DomainState>) {
    if push_trim_unless_pending(st) {
        // The driver may be asleep with no deadline: give it this one.
        driver().cv.notify_one();
    }
}

/// Queue a trim of `st` for [`TRIM_AFTER`] from now, unless one is pending
/// (`trim_pending`); true if it queued one. The flag is set under `heap`,
/// with the push: a `fork` (whose handler takes `heap`) never copies it set
/// without its entry, which would keep the child from ever trimming the
/// domain again.
fn push_trim_unless_pending(st: &Arc<DomainState>) -> bool {
    let mut h = lock(&driver().heap);
    // SeqCst: see `run`, which clears the flag before it looks at the
    // domain, so that a pass ending after that look asks again.
    if st.trim_pending.swap(true, Ordering::SeqCst) {
        return false;
    }
    let tickets = st.cbs.tickets();
    h.seq += 1;
    let seq = h.seq;
    h.trims.push(Reverse(Trim {
        due: Instant::now() + TRIM_AFTER,
        seq,
        st: Arc::downgrade(st),
        tickets,
    }));
    true
}

/// An invoker finished a pass over `st`.
pub(super) fn after_pass(st: &DomainState, again: invoke::Again) {
    let delay = {
        let mut s = lock(&st.sched);
        s.retry |= again != invoke::Again::No;
        match again {
            invoke::Again::Soon => {
                s.gap_backoff = (s.gap_backoff + 1).min(6);
                Duration::from_micros(10 << s.gap_backoff)
            }
            invoke::Again::AfterOrphans => {
                s.gap_backoff = 0;
                ORPHAN_POLL
            }
            invoke::Again::No => {
                s.gap_backoff = 0;
                Duration::ZERO
            }
        }
    };
    schedule_at(st.arc(), Instant::now() + delay);
}

fn run() {
    let d = driver();
    let mut due: Vec<Arc<DomainState>> = Vec::new();
    let mut trims: Vec<(Trim, Arc<DomainState>)> = Vec::new();
    loop {
        {
            let mut h = lock(&d.heap);
            loop {
                let now = Instant::now();
                while h.entries.peek().is_some_and(|Reverse(e)| e.due <= now) {
                    let Some(Reverse(e)) = h.entries.pop() else { break };
                    let mut s = lock(&e.st.sched);
                    if s.next_due != Some(e.due) {
                        continue; // superseded by an earlier entry
                    }
                    s.next_due = None;
                    drop(s);
                    due.push(e.st);
                }
                while h.trims.peek().is_some_and(|Reverse(t)| t.due <= now) {
                    let Some(Reverse(t)) = h.trims.pop() else { break };
                    let Some(st) = t.st.upgrade() else { continue };
                    // SeqCst: cleared before the look below (`trims`), so
                    // that a pass that ends after it (one running now, or
                    // one that will take what is queued) sees it clear and
                    // asks again (`trim_later`): a trim is dropped only
                    // where such a pass is certain. Cleared under `heap`,
                    // with the pop: a `fork` never copies it set without
                    // its entry (`push_trim_unless_pending`).
                    st.trim_pending.store(false, Ordering::SeqCst);
                    trims.push((t, st));
                }
                if !due.is_empty() || !trims.is_empty() {
                    break;
                }
                let next_trim = h.trims.peek().map(|Reverse(t)| t.due);
                let next_entry = h.entries.peek().map(|Reverse(e)| e.due);
                let next = match (next_entry, next_trim) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                h = match next {
                    Some(next) => {
                        let wait = next.saturating_duration_since(now);
                        match d.cv.wait_timeout(h, wait) {
                            Ok((g, _)) => g,
                            Err(p) => p.into_inner().0,
                        }
                    }
                    None => {
                        super::fork::pause_on_way_to_sleep(super::fork::Sleeper::Driver);
                        match d.cv.wait(h) {
                            Ok(g) => g,
                            Err(p) => p.into_inner(),
                        }
                    }
                };
            }
        }
        for (t, st) in trims.drain(..) {
            // The look, and the taking of the buffers, under `heap`: the
            // fork handler takes `heap` first (`fork.rs`), so a `fork`
            // while the runtime is idle never finds the domain's queue
            // lock held by this thread (red team 15: a child whose queue
            // lock was copied held never ran a callback of that domain).
            // Freed after both locks are dropped.
            let trimmed = {
                let _h = lock(&d.heap);
                st.cbs.trim_if_quiet(t.tickets, &st.invoking)
            };
            match trimmed {
                Trimmed::Taken(buffers) => drop(buffers),
                Trimmed::QuietNotLongEnough => {
                    // Queued and run since, by a pass that ended while
                    // this trim was pending and so asked for none: measure
                    // the quiet from now (unless that pass's successor
                    // asked already).
                    push_trim_unless_pending(&st);
                }
                _ => {}
            }
        }
        for st in due.drain(..) {
            match service(&st) {
                Some(after) => schedule_at(st, Instant::now() + after),
                None => go_idle(st),
            }
        }
    }
}

/// One look at a domain; `Some(d)`: look again after `d`.
fn service(st: &Arc<DomainState>) -> Option<Duration> {
    let mut rearm = None;
    // SeqCst: the driver's side of the wake-up handshake (`wake.rs`).
    let target = Cookie(st.gp_needed.load(Ordering::SeqCst));
    if !st.gp.done(target) {
        match st.gp.try_advance(target, &st.pc, st.mode, &**st) {
            Some(true) => lock(&st.sched).gp_backoff = 0,
            Some(false) => {
                st.driver_waiting();
                rearm = Some(gp_backoff(st));
            }
            // A `synchronize` caller is advancing it right now.
            None => rearm = Some(Duration::from_micros(100)),
        }
    }
    if st.cbs.pending() > 0 && !st.invoking.load(Ordering::SeqCst) {
        let key = (st.gp.completed().0, st.cbs.tickets());
        let dispatch = {
            let mut s = lock(&st.sched);
            let go = key != s.last_dispatch || std::mem::take(&mut s.retry);
            if go {
                s.last_dispatch = key;
            }
            go
        };
        if dispatch {
            invoke::dispatch(st);
        } else if rearm.is_none() {
            // Pending callbacks that nothing will move but time: a safety
            // poll (a ticket whose push is still in flight, say).
            rearm = Some(Duration::from_millis(1));
        }
    }
    rearm
}

fn gp_backoff(st: &DomainState) -> Duration {
    let mut s = lock(&st.sched);
    s.gp_backoff = s.gp_backoff.saturating_add(1);
    let waited_long = st.blocked_for().is_some_and(|d| d > Duration::from_secs(1));
    if waited_long {
        Duration::from_millis(50)
    } else {
        // 20 us, doubling, at most 10 ms.
        Duration::from_micros((20u64 << s.gp_backoff.min(9)).min(10_000))
    }
}

/// Stop looking at `st` unless work arrived meanwhile (`wake.rs`).
fn go_idle(st: Arc<DomainState>) {
    // SeqCst: an invoker serving `st` reschedules it when its pass ends
    // (`after_pass`), after clearing `invoking` (SeqCst); until then the
    // flag stays set, so producers need not kick.
    if st.invoking.load(Ordering::SeqCst) {
        if invoke::starved_after_retry() {
            // `st` waits in the pool for an invoker that could not be
            // started (`spawn.rs`): look again later, retrying the start.
            schedule_at(st, Instant::now() + INVOKER_RETRY);
        }
        return;
    }
    {
        let h = lock(&driver().heap);
        if lock(&st.sched).next_due.is_some() {
            return; // rescheduled while we serviced it
        }
        drop(h);
    }
    let again = st.wake.idle(|| {
        // SeqCst loads: see `wake.rs`.
        !st.gp.done(Cookie(st.gp_needed.load(Ordering::SeqCst)))
            || (st.cbs.pending() > 0 && !st.invoking.load(Ordering::SeqCst))
    });
    if !again {
        // A domain cleaned up from inside its own callback goes now.
        super::state::release_orphan_if_idle(&st);
    }
    if again {
        schedule_at(st, Instant::now());
    }
}

/// The backstop poll of a domain whose callbacks wait for those of a state
/// it orphaned (`invoke::Again::AfterOrphans`); the orphan's release
/// reschedules it at once (`state::release_orphan_if_idle`).
const ORPHAN_POLL: Duration = Duration::from_millis(20);

/// How often the driver retries starting an invoker while none runs and
/// domains wait for one.
const INVOKER_RETRY: Duration = Duration::from_millis(10);

/// No domain waits in the driver's heap.
pub(super) fn heap_empty() -> bool {
    lock(&driver().heap).entries.is_empty()
}

/// [`heap_empty`] if the lock is free right now (`None`: it is not).
pub(super) fn try_heap_empty() -> Option<bool> {
    crate::sync::try_lock(&driver().heap).map(|h| h.entries.is_empty())
}

/// The heap's lock, for the fork handler (`fork.rs`).
pub(super) fn lock_heap() -> MutexGuard<'static, Heap> {
    lock(&driver().heap)
}
