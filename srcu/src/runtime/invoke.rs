//! Callback invocation: a pool of threads separate from the grace-period
//! driver, grown on demand.
//!
//! A domain is handed to at most one invoker at a time (`invoking`), which
//! takes its ready callbacks against one snapshot of the completed sequence
//! per pass and runs them in ticket order (`callbacks.rs`). A domain whose
//! callbacks block holds only the invoker running them; the pool starts
//! another thread whenever queued domains outnumber idle invokers, so other
//! domains are served. The count of idle invokers is kept under the pool's
//! lock and compared with the queue length, so two dispatches in a row
//! never both rely on the same idle thread.

use super::driver;
use super::state::DomainState;
use crate::sync::{lock, AtomicBool, Condvar, Mutex, MutexGuard, Ordering};
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

/// Most invoker threads: past this, domains wait for a free invoker (only
/// reachable when that many domains' callbacks block at once; 256 was
/// reached by a chain of 300 domains whose callbacks each wait for the
/// next domain's `barrier`, and every callback of the process stopped: red
/// team 7). Threads past [`KEEP_INVOKERS`] exit after [`IDLE_EXIT`] without
/// work, so a burst of blocked callbacks does not leave them all behind.
const MAX_INVOKERS: usize = 4096;

/// Invokers kept however long they idle.
const KEEP_INVOKERS: usize = 4;

/// How long an invoker past [`KEEP_INVOKERS`] waits for work before it exits.
const IDLE_EXIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Callbacks one pass runs before it lets other domains have the invoker.
const PASS_LIMIT: usize = 1 << 16;

#[derive(Default)]
pub(super) struct Queue {
    domains: VecDeque<Arc<DomainState>>,
    threads: usize,
    idle: usize,
    /// The process whose invokers these are (a child of `fork` starts its own).
    pid: libc::pid_t,
    /// The last start failed (`spawn.rs`) while queued domains outnumbered
    /// idle invokers: queued domains may wait for the driver's retry
    /// (`starved_after_retry`). With invokers running this matters too: each
    /// may be blocked in a callback (one waiting for a callback of a domain
    /// in the queue, say).
    start_failed: bool,
}

struct Pool {
    q: Mutex<Queue>,
    cv: Condvar,
}

fn pool() -> &'static Pool {
    static P: OnceLock<Pool> = OnceLock::new();
    P.get_or_init(|| Pool {
        q: Mutex::new(Queue::default()),
        cv: Condvar::new(),
    })
}

thread_local! {
    // A `Cell` of a raw pointer, const-initialised: no destructor.
    static SERVING: Cell<*const DomainState> = const { Cell::new(std::ptr::null()) };
}

/// Is the calling thread running a callback of `st` right now?
pub(super) fn serving(st: &DomainState) -> bool {
    SERVING.with(|c| std::ptr::eq(c.get(), st))
}

/// The domain whose callback the calling thread is running, if any.
pub(super) fn serving_name() -> Option<String> {
    let p = SERVING.with(|c| c.get());
    // SAFETY: set by the invoker around a pass over a domain it holds an
    // `Arc` of; this runs inside that pass, on that thread.
    (!p.is_null()).then(|| unsafe { (*p).name.clone() })
}

/// Hand `st` to an invoker, unless one already has it.
pub(super) fn dispatch(st: &Arc<DomainState>) {
    // SeqCst: pairs with the driver's SeqCst load in `go_idle`/`service`.
    if st.invoking.swap(true, Ordering::SeqCst) {
        return;
    }
    let p = pool();
    let mut q = lock(&p.q);
    this_process(&mut q);
    q.domains.push_back(st.clone());
    let failed = grow(&mut q);
    drop(q);
    p.cv.notify_one();
    if let Some(e) = failed {
        super::spawn::report_failure(&st.name, "a callback invoker thread", &e);
    }
}

/// In a child of `fork` (its fork handler, pool lock held): the parent's
/// invokers do not run here, whatever the pids say; the next dispatch
/// resets the counts (`this_process`).
pub(super) fn forget_threads(q: &mut Queue) {
    q.pid = 0;
}

/// Reset the pool's counts if this is a child of `fork` (the parent's
/// invokers do not exist here). Pool lock held.
fn this_process(q: &mut Queue) {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    if q.pid != pid {
        q.pid = pid;
        q.threads = 0;
        q.idle = 0;
        set_start_failed(q, false);
    }
}

/// `Queue::start_failed`, readable without the lock: the driver's retry
/// (`starved_after_retry`) costs one load while nothing failed.
static START_FAILED: AtomicBool = AtomicBool::new(false);

fn set_start_failed(q: &mut Queue, failed: bool) -> bool {
    // Relaxed: a hint for `starved_after_retry`, which re-reads the flag
    // under the lock; a stale `false` only delays the retry to the
    // driver's next look at a domain the pool holds.
    START_FAILED.store(failed, Ordering::Relaxed);
    std::mem::replace(&mut q.start_failed, failed)
}

/// Start an invoker if queued domains outnumber idle ones. `Some(e)`: the
/// start failed and the episode is new, to be reported once the lock is
/// dropped. A failed start is retried by the driver (`starved_after_retry`)
/// even while other invokers run: they may all be blocked in callbacks.
fn grow(q: &mut Queue) -> Option<std::io::Error> {
    if q.domains.len() <= q.idle || q.threads >= MAX_INVOKERS {
        if q.start_failed {
            // Nothing waits for a new invoker any more: the episode ends.
            set_start_failed(q, false);
        }
        return None;
    }
    let n = q.threads;
    match super::spawn::start(format!("usrcu-cb-{n}"), invoker) {
        Ok(()) => {
            q.threads += 1;
            set_start_failed(q, false);
            None
        }
        Err(e) => (!set_start_failed(q, true)).then_some(e),
    }
}

/// The driver, about to leave a domain that the pool holds (`invoking`):
/// if no invoker could be started, try again. True if domains still wait
/// for an invoker that does not exist (the driver then looks again later).
pub(super) fn starved_after_retry() -> bool {
    // Relaxed: see `set_start_failed`.
    if !START_FAILED.load(Ordering::Relaxed) {
        return false;
    }
    let mut q = lock(&pool().q);
    this_process(&mut q);
    if !q.start_failed {
        return false;
    }
    // The failure was reported when the episode began.
    let _ = grow(&mut q);
    q.start_failed
}

fn invoker() {
    let p = pool();
    loop {
        let st = {
            let mut q = lock(&p.q);
            loop {
                if let Some(st) = q.domains.pop_front() {
                    break st;
                }
                super::fork::pause_on_way_to_sleep(super::fork::Sleeper::Invoker);
                q.idle += 1;
                let timed_out;
                (q, timed_out) = match p.cv.wait_timeout(q, IDLE_EXIT) {
                    Ok((g, t)) => (g, t.timed_out()),
                    Err(e) => {
                        let (g, t) = e.into_inner();
                        (g, t.timed_out())
                    }
                };
                q.idle -= 1;
                if timed_out && q.domains.is_empty() && q.threads > KEEP_INVOKERS {
                    // Counted out under the lock, as `grow` counts in.
                    q.threads -= 1;
                    return;
                }
            }
        };
        let end = pass(&st);
        // SeqCst: see `dispatch`; cleared before the driver is told.
        st.invoking.store(false, Ordering::SeqCst);
        if end.spare {
            driver::trim_later(&st);
        }
        driver::after_pass(&st, end.again);
    }
}

/// Why the driver should dispatch a domain again although nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Again {
    /// Nothing: it dispatches when a grace period completes or callbacks
    /// are queued.
    No,
    /// A ticket gap (a push still in flight) or the callback limit stopped
    /// the pass: soon.
    Soon,
    /// Callbacks of a state this domain orphaned are still pending: when
    /// that state is released (`state::release_orphan_if_idle` reschedules
    /// its successors), with a slow poll as the backstop.
    AfterOrphans,
}

/// How a pass ended.
struct PassEnd {
    again: Again,
    /// The pass left the queue empty with buffers to trim
    /// (`Callbacks::quiet_with_buffers`).
    spare: bool,
}

/// Run what is ready.
fn pass(st: &DomainState) -> PassEnd {
    // Callbacks left on a state this domain orphaned (a cleanup from one of
    // its own callbacks, `state::orphan_state`) run before any queued on the
    // state that replaced it: wait until they have. Not as at a ticket gap,
    // whose back-off is short: the orphan's callback may run for long, and
    // the driver and an invoker then polled each other every 640 us (red
    // team 15: ~3,200 wake-ups a second).
    // SeqCst: see `state::release_orphan_if_idle`.
    if !st.orphan.load(Ordering::SeqCst) && !super::state::orphans_of(st.srcu).is_empty() {
        return PassEnd {
            again: Again::AfterOrphans,
            spare: false,
        };
    }
    SERVING.with(|c| c.set(st));
    let mut ran = 0;
    let mut gap = false;
    while ran < PASS_LIMIT {
        let take = st.cbs.take_ready(st.gp.completed());
        if take.ready == 0 {
            gap = take.gap;
            break;
        }
        ran += st.cbs.run_batch(&st.stats.callbacks_invoked);
    }
    SERVING.with(|c| c.set(std::ptr::null()));
    // Asked however the pass ended: one that stopped at `PASS_LIMIT` with
    // the queue empty is followed by no other pass (nothing is pending),
    // and kept a 70,000-callback batch's buffers for good (red team 14).
    PassEnd {
        again: if gap || ran >= PASS_LIMIT {
            Again::Soon
        } else {
            Again::No
        },
        spare: st.cbs.quiet_with_buffers(),
    }
}

/// No domain waits for an invoker.
pub(super) fn queue_empty() -> bool {
    lock(&pool().q).domains.is_empty()
}

/// [`queue_empty`] if the lock is free right now (`None`: it is not).
pub(super) fn try_queue_empty() -> Option<bool> {
    crate::sync::try_lock(&pool().q).map(|q| q.domains.is_empty())
}

/// The pool's lock, for the fork handler (`fork.rs`).
pub(super) fn lock_queue() -> MutexGuard<'static, Queue> {
    lock(&pool().q)
}
