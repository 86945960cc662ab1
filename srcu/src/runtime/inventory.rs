//! Inventory by address: what the runtime holds that lies in an address
//! range, and a bounded drain of exactly that.
//!
//! A plugin loader asks, before it unmaps an object: is any callback queued
//! or running (on *any* domain: the plugin's listed or unlisted statics,
//! its dynamic domains, the host's) whose function, whose callback head, or
//! whose domain lies in the object? Are readers inside a domain of the
//! object? The runtime owns every domain state and every queued callback,
//! so it answers from what the process holds, not from what the plugin
//! declared.
//!
//! A boxed `call_srcu` closure runs through a trampoline monomorphised in
//! the copy of this crate that queued it, so its function lies in the
//! plugin when plugin code queued it. A closure queued by host code that
//! merely calls into the plugin is not seen: the host must not do that.
//!
//! ```
//! use usrcu::{runtime::inventory, Srcu};
//! static D: Srcu = Srcu::new_static("inventory-doc");
//! D.call_srcu(|| {});
//! let here = &D as *const Srcu as usize;
//! let found = inventory::query(&[here..here + std::mem::size_of::<Srcu>()]);
//! assert_eq!(found.domains.len(), 1);
//! D.barrier();
//! assert_eq!(inventory::query(&[here..here + 1]).callbacks, 0);
//! ```

use super::state::{registered, DomainState};
use std::ops::Range;
use std::time::{Duration, Instant};

/// What lies in the ranges asked about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Callbacks (any domain) queued or running whose function, callback
    /// head, or domain lies in one of the ranges.
    pub callbacks: usize,
    /// Attached domains whose `Srcu` lies in one of the ranges, or that were
    /// created by code of a copy of this crate that does.
    pub domains: Vec<DomainUse>,
    /// Names of the other domains (a host's) on which callbacks of the
    /// ranges are queued or running, each once: what a report names when
    /// no domain of the ranges is busy.
    pub holding: Vec<String>,
}

/// One domain of the ranges, and what still uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainUse {
    /// The domain's name.
    pub name: String,
    /// Address of its `Srcu`.
    pub addr: usize,
    /// Readers inside a section now.
    pub readers: isize,
    /// Callbacks queued on it and not yet finished.
    pub callbacks_pending: usize,
    /// Has `call_srcu` been used on it since its state was attached?
    pub call_srcu_used: bool,
    /// A grace period running or requested.
    pub grace_period_in_flight: bool,
}

impl Inventory {
    /// Nothing runs code of, or reads through, the ranges.
    pub fn is_idle(&self) -> bool {
        self.callbacks == 0 && self.domains.iter().all(|d| d.readers == 0 && d.callbacks_pending == 0)
    }
}

fn inside(ranges: &[Range<usize>], a: usize) -> bool {
    ranges.iter().any(|r| r.contains(&a))
}

fn owned_by(st: &DomainState, ranges: &[Range<usize>]) -> bool {
    inside(ranges, st.srcu) || inside(ranges, st.origin)
}

/// What the runtime holds in `ranges`. Cheap when nothing is pending: a
/// domain with no pending callback is not walked.
pub fn query(ranges: &[Range<usize>]) -> Inventory {
    let mut inv = Inventory::default();
    for st in registered() {
        let mut pending = st.cbs.pending() as usize;
        if owned_by(&st, ranges) {
            if pending > 0 {
                // Callbacks, not the markers of barriers (a timed-out
                // barrier leaves one; it waits for no grace period, cookie
                // 0, and runs no code of the ranges).
                pending = 0;
                st.cbs.for_each_pending(|it| pending += usize::from(it.cookie != 0));
            }
            inv.callbacks += pending;
            // The domain struct itself may be gone (a dynamic domain dropped
            // with work pending leaks its state): ask the state only.
            let used = st.cbs.queued_callbacks() > 0;
            inv.domains.push(DomainUse {
                name: st.name.clone(),
                addr: st.srcu,
                readers: st.readers_inside(),
                callbacks_pending: pending,
                call_srcu_used: used,
                grace_period_in_flight: st.gp_in_flight(),
            });
        } else if pending > 0 {
            let before = inv.callbacks;
            st.cbs.for_each_pending(|it| {
                if inside(ranges, it.func as usize) || inside(ranges, it.head as usize) {
                    inv.callbacks += 1;
                }
            });
            if inv.callbacks > before && !inv.holding.contains(&st.name) {
                inv.holding.push(st.name.clone());
            }
        }
    }
    inv
}

/// Wait until no callback in `ranges` is queued or running, for at most
/// `timeout`; on time-out, what is still there. Grace periods and
/// invocations are driven by the runtime meanwhile; readers are not waited
/// for (see [`Inventory::domains`]).
pub fn drain(ranges: &[Range<usize>], timeout: Duration) -> Result<(), Inventory> {
    // None: a timeout past what an `Instant` can hold (`Duration::MAX`)
    // waits without limit instead of overflowing.
    let deadline = Instant::now().checked_add(timeout);
    let mut sleep = Duration::from_micros(20);
    loop {
        let inv = query(ranges);
        if inv.callbacks == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let left = match deadline {
            Some(d) if now >= d => return Err(inv),
            Some(d) => d - now,
            None => Duration::MAX,
        };
        // Make sure every domain with pending callbacks is being driven.
        for st in registered() {
            if st.cbs.pending() > 0 {
                super::driver::kick_fenced(&st);
            }
        }
        std::thread::sleep(sleep.min(left));
        sleep = (sleep * 2).min(Duration::from_millis(5));
    }
}

/// What the process's three flavors hold in the ranges at one instant: the
/// SRCU inventory, and the Tasks Trace and Tasks callbacks queued or
/// running whose function or argument (callback head) lies in them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deferred {
    /// SRCU ([`query`]).
    pub srcu: Inventory,
    /// `usrcu::trace` callbacks queued or running.
    pub trace_callbacks: usize,
    /// `usrcu::tasks` callbacks queued or running.
    pub tasks_callbacks: usize,
    /// Always true: the SRCU walk holds the invokers (see [`deferred`]).
    /// Kept for callers that still check it.
    pub stable: bool,
}

impl Deferred {
    /// Nothing in the ranges is queued or running in any flavor, and no
    /// reader is inside a domain of the ranges.
    pub fn is_idle(&self) -> bool {
        self.srcu.is_idle() && self.trace_callbacks == 0 && self.tasks_callbacks == 0
    }
}

/// Host only: a snapshot of what every flavor of the process holds in
/// `ranges` ([`Deferred`]), for a loader's last check before it unmaps an
/// object: callbacks of the object hop between flavors and domains (an SRCU
/// callback that queues a Tasks Trace callback, or an SRCU callback on
/// another domain; a chain of Tasks callbacks), so a barrier of each
/// flavor in turn does not prove that none is left.
///
/// Callbacks hop only from a callback that is running. Every Tasks Trace
/// and Tasks callback is queued, or recorded as running until it has
/// returned, under its engine's lock; both locks are held for the whole
/// snapshot, so a hop into either flavor is seen, in the queue it reached
/// or as the callback still running. A hop into SRCU (a lock-free push)
/// from a Tasks Trace or Tasks callback that has returned happened before
/// that return, which the held lock orders before the SRCU walk.
///
/// Within SRCU the walk of the domains is not atomic: a callback could
/// queue on a domain already walked and return before its own domain is
/// walked. So the snapshot *holds* the SRCU invokers: none starts a
/// callback while it walks (each checks before every callback; see
/// `hold_point` in `runtime/inventory.rs`). Before the walk it notes, in every domain, the one
/// callback that may be running or about to run; only those can finish
/// (and so have hopped) during the walk, and each that lies in the ranges
/// counts. Every other callback stays where the walk finds it. `stable`
/// is always true (it said, before the hold, whether an undisturbed walk
/// was found).
///
/// Readers are counted as in [`query`]; they are not waited for.
pub fn deferred(ranges: &[Range<usize>]) -> Deferred {
    // In the fork handler's order (`fork.rs`): the trace queue, then the
    // Tasks engine. No path of the crate holds either while it takes the
    // SRCU locks the walk takes (callbacks run with no lock held).
    let trace = crate::trace::engine::lock_queue_if_exists();
    // Before anything else is looked at: a Tasks Trace callback seen
    // returned here has made its hops visible to the walk below; one that
    // returns later is counted as running (`Queue::returned`).
    let trace_returned = trace.as_ref().map_or(0, |q| q.returned());
    let tasks = crate::tasks::engine::lock_if_exists();
    let hold = Hold::new();
    let running = registered()
        .iter()
        .filter_map(|st| st.cbs.current())
        .filter(|it| inside(ranges, it.func as usize) || inside(ranges, it.head as usize))
        .count();
    let mut srcu = query(ranges);
    drop(hold);
    // A callback noted running is counted by the walk too if it was still
    // running when its domain was walked: count it once.
    srcu.callbacks = srcu.callbacks.max(running);
    let hit = |a: usize| inside(ranges, a);
    Deferred {
        srcu,
        trace_callbacks: trace.as_ref().map_or(0, |q| q.count_in(&hit, trace_returned)),
        tasks_callbacks: tasks.as_ref().map_or(0, |s| s.count_in(&hit)),
        stable: true,
    }
}

/// Host only: the Tasks Trace and Tasks callbacks queued or running whose
/// function or argument lies in `ranges`, as `(trace, tasks)`: the flavors'
/// part of [`deferred`], under both engines' locks, without the SRCU walk
/// (which reads every domain of the ranges' per-CPU counters).
pub fn flavor_callbacks_in(ranges: &[Range<usize>]) -> (usize, usize) {
    let hit = |a: usize| inside(ranges, a);
    // In the fork handler's order, as `deferred`.
    let trace = crate::trace::engine::lock_queue_if_exists();
    // As in `deferred`: before the Tasks queue is looked at.
    let trace_returned = trace.as_ref().map_or(0, |q| q.returned());
    let tasks = crate::tasks::engine::lock_if_exists();
    (
        trace.as_ref().map_or(0, |q| q.count_in(&hit, trace_returned)),
        tasks.as_ref().map_or(0, |s| s.count_in(&hit)),
    )
}

/// Where the Tasks Trace and Tasks callbacks of an address range stood when
/// [`flavor_callbacks_mark`] was taken: the queueing number of the newest
/// one queued or running in each flavor (`None`: none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlavorMark {
    /// Tasks Trace.
    pub trace: Option<u64>,
    /// Tasks.
    pub tasks: Option<u64>,
}

/// Host only: mark the Tasks Trace and Tasks callbacks queued or running
/// now whose function or argument `inside` accepts, for
/// [`flavor_mark_passed`]: a barrier of each flavor restricted to the
/// callbacks of an address range. Waiting for the mark waits for those
/// callbacks, and so for every callback queued before them (each flavor
/// runs its callbacks in queueing order on one thread), but neither for
/// unrelated callbacks queued after them, nor for the range's callbacks
/// queued after the mark (work that keeps coming while, say, an unloading
/// plugin's probes still fire: waiting for none of them to be left could
/// wait forever, as waiting for a count of zero did).
pub fn flavor_callbacks_mark(inside: &dyn Fn(usize) -> bool) -> FlavorMark {
    // In the fork handler's order, as `deferred`.
    let trace = crate::trace::engine::lock_queue_if_exists();
    let tasks = crate::tasks::engine::lock_if_exists();
    FlavorMark {
        trace: trace.as_ref().and_then(|q| q.newest_in(inside)),
        tasks: tasks.as_ref().and_then(|s| s.newest_in(inside)),
    }
}

/// Host only: have the callbacks of `mark` ([`flavor_callbacks_mark`]) all
/// run and returned?
pub fn flavor_mark_passed(mark: &FlavorMark) -> bool {
    let trace_done = mark
        .trace
        .is_none_or(|n| crate::trace::engine::lock_queue_if_exists().is_none_or(|q| q.ran_past(n)));
    let tasks_done = mark
        .tasks
        .is_none_or(|n| crate::tasks::engine::lock_if_exists().is_none_or(|s| s.ran_past(n)));
    trace_done && tasks_done
}

/// Host only: wait until the callbacks of `mark` ([`flavor_callbacks_mark`])
/// have all run and returned, or until `deadline`; true if they have.
/// Polls [`flavor_mark_passed`] with a nap that doubles from 20 µs to 2 ms
/// (the engines keep no per-mark waiter to wake: a mark is taken only on
/// unload paths, where a millisecond is nothing and a wake-up on every
/// callback would be a cost on the hot path).
pub fn wait_flavor_mark(mark: &FlavorMark, deadline: std::time::Instant) -> bool {
    let mut nap = std::time::Duration::from_micros(20);
    loop {
        if flavor_mark_passed(mark) {
            return true;
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(nap.min(deadline - now));
        nap = (nap * 2).min(std::time::Duration::from_millis(2));
    }
}

/// Snapshots holding the SRCU invokers now (`deferred`).
static HOLDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The fence pair of the hold, chosen once for the process: 0 not yet,
/// 1 compiler fence / `membarrier`, 2 SeqCst / SeqCst.
static HOLD_FENCE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Is the hold's fence pair the SeqCst one? Decided once (the first caller
/// wins), so that both sides always use the same pair even if `membarrier`
/// fails later (the membarrier side then falls back to
/// `MEMBARRIER_CMD_GLOBAL`, which still pairs with a compiler fence,
/// `fence.rs`).
#[inline(always)]
fn hold_seqcst() -> bool {
    use std::sync::atomic::Ordering;
    // Relaxed: every thread reads the value the one CAS below installed.
    match HOLD_FENCE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => decide_hold_fence(),
    }
}

#[cold]
fn decide_hold_fence() -> bool {
    use std::sync::atomic::Ordering;
    let mine = if crate::fence::default_mode() == crate::fence::FenceMode::Membarrier {
        1
    } else {
        2
    };
    // Relaxed: a single value, agreed on through this one location.
    match HOLD_FENCE.compare_exchange(0, mine, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => mine == 2,
        Err(now) => now == 2,
    }
}

/// An SRCU invoker, about to run the item its `batch_pos` names: wait while
/// a snapshot holds the invokers.
///
/// The pairing (store buffering, as the readers' against a grace period,
/// `docs/memory-model.md`): the invoker stores `batch_pos` (Relaxed, in
/// `Callbacks::finished` or `take_ready`), issues the light fence, then loads
/// `HOLDS`; the snapshot increments `HOLDS`, issues the heavy fence, then
/// reads every `batch_pos`. Either the invoker sees the hold and waits, or
/// the snapshot sees the `batch_pos` that names this item, and notes it.
#[inline(always)]
pub(crate) fn hold_point() {
    use std::sync::atomic::Ordering;
    crate::fence::reader_fence(hold_seqcst());
    // Relaxed: ordered by the fences above and in `Hold::new`.
    if HOLDS.load(Ordering::Relaxed) != 0 {
        held();
    }
}

#[cold]
#[inline(never)]
fn held() {
    use std::sync::atomic::Ordering;
    // Acquire: pairs with the Release decrement in `Hold::drop` (nothing
    // needs it but tidiness: the walk only read).
    while HOLDS.load(Ordering::Acquire) != 0 {
        std::thread::yield_now();
    }
}

/// The snapshot's side of the hold.
struct Hold;

impl Hold {
    fn new() -> Hold {
        use std::sync::atomic::Ordering;
        HOLDS.fetch_add(1, Ordering::SeqCst);
        // Pairs with the light fence in `hold_point` of every invoker.
        crate::fence::heavy_fence(if hold_seqcst() {
            crate::fence::FenceMode::SeqCst
        } else {
            crate::fence::FenceMode::Membarrier
        });
        Hold
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        HOLDS.fetch_sub(1, Ordering::Release);
    }
}

/// A child of `fork` has no snapshot in progress: a thread that forks while
/// another thread's snapshot holds the invokers (possible when neither
/// engine exists, so the snapshot holds no lock the fork handler takes)
/// would leave the count behind in a child where no one drops it.
pub(crate) fn forget_holds() {
    use std::sync::atomic::Ordering;
    HOLDS.store(0, Ordering::Relaxed);
}

/// Attached domains in the process (for diagnostics and tests).
pub fn domains_attached() -> usize {
    registered().len()
}

/// Threads the runtime runs: the grace-period driver and the invokers.
pub fn runtime_thread(tid_name: &str) -> bool {
    tid_name.starts_with("usrcu-gp") || tid_name.starts_with("usrcu-cb-")
}
