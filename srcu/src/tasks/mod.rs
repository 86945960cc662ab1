//! Tasks RCU: a flavor whose readers cost nothing, for code that never
//! voluntarily blocks (hot hooks called through a [`HookSlot`], generated
//! code, tiny plugin functions). The userspace twin of the kernel's Tasks
//! RCU, which exists to free tracing trampolines.
//!
//! # Readers
//!
//! There is no read-side marker at all. A "reader" is any stretch of code
//! that never blocks, never faults on non-resident memory, and never stores
//! the pointer it was reached through (the contract on [`HookSlot`]).
//!
//! # Grace periods
//!
//! A grace period ends when every thread that existed when it began has been
//! seen quiescent (steps T1 to T5 in `grace_period.rs` and
//! `docs/memory-model.md`):
//!
//! * a sample of `/proc/self/task/<tid>/status` shows it blocked (`S`, `D`);
//! * its `voluntary_ctxt_switches` moved since the start, it is neither
//!   stopped nor traced, and no stop may have intervened (a stop counts as
//!   a voluntary switch, yet the thread resumes where it was: the stop
//!   canary detects group stops, `TracerPid` tracers);
//! * or it passed an explicit quiescent point, [`quiescent`] (the kernel's
//!   `cond_resched_tasks_rcu_qs`), which threads that spin should call.
//!
//! Threads born after the start are ignored; the calling thread, threads
//! waiting in [`synchronize`] and the runtime's own threads are quiescent.
//! Stopped threads (`T`, `t`) are holdouts. Holdouts are re-checked with
//! back-off; past the stall timeout (`USRCU_STALL_TIMEOUT_MS`, or
//! [`set_stall_timeout`]) a [`WarningKind::TasksStall`](crate::diagnostics::WarningKind::TasksStall)
//! warning names each holdout's tid, name and state. A full `membarrier` at
//! the start and at the end orders the updater's unpublish against the
//! threads' later loads, and their accesses against the updater's free.
//!
//! Grace periods are slow (a `/proc` read per thread, milliseconds with many
//! threads) and shared: concurrent callers batch onto one.
//!
//! # The runtime
//!
//! Grace periods and callbacks ([`call`]) run on the host's `usrcu-tasks`
//! thread (started lazily; not the SRCU pool), reached through
//! [`TasksVTable`] from `RuntimeVTable::tasks`, so a plugin's copy of this
//! crate uses the host's engine, records and hook-slot registry. The
//! per-thread quiescent record is allocated by the host and cached in a
//! const-initialised `Cell` thread-local: no TLS destructor.
//!
//! # Caveats (the contract's fine print)
//!
//! * A signal handler that blocks while it interrupts a hook makes the thread
//!   read as blocked while the hook's frame is live: hooks must run where no
//!   such handler can interrupt them, or the handler must not block. The
//!   plugin loader checks for this before it unmaps a plugin (its
//!   "interrupted" proof: blocked threads' stacks are searched for signal
//!   frames over the plugin's code); a host that retires hooks itself gets
//!   no such check, and even the loader's misses a handler installed with
//!   `SA_NODEFER` that every scan sees running between its sleeps, or a
//!   second such signal during its last grace period.
//! * A CPU-bound thread that never blocks and never calls [`quiescent`]
//!   holds every grace period (the kernel counts user mode as quiescent; a
//!   process cannot tell its own user mode from a hook).
//! * A tracer that seizes a thread, interrupts it and detaches, all between
//!   two readings of one grace period, is not seen (no group stop, and
//!   `TracerPid` is back to 0). The cgroup v2 freezer shows a frozen thread
//!   as `S`; freezing a process while a grace period runs is not covered.
//! * After `fork`, a child's thread keeps its parent's cached record
//!   pointer, so its explicit quiescent points are not seen (samples and
//!   switch counts still are).
//! * Fork while the flavor is idle, as for the SRCU runtime
//!   ([`runtime::idle`](crate::runtime::idle)): no other thread inside a
//!   call of it, every callback run ([`barrier`] returned), no polled grace
//!   period pending. The child then starts its own `usrcu-tasks` thread on
//!   first use ([`call`], [`synchronize`], [`start_poll`]); the thread's way
//!   back to sleep, when it takes its engine's lock once more, is covered
//!   by the crate's `pthread_atfork` handler. A grace period running at the
//!   fork leaves the child unable to run one; callbacks queued but not run
//!   at the fork are not supported (whether they run in the child depends
//!   on what the parent's thread was doing).

pub(crate) mod engine;
pub(crate) mod grace_period;
pub mod hook_slot;
mod membarrier;
mod proc;
pub(crate) mod record;
pub(crate) mod vtable;

pub use hook_slot::{HookFn, HookSlot, HookValue};
pub use record::TasksRecord;
pub use vtable::{TasksVTable, HOST_TASKS_VTABLE, TASKS_ABI_VERSION, WAIT_REFUSED};

use std::ffi::c_void;
use std::ops::Range;
use std::time::Duration;

/// The `domain` field of Tasks warnings.
pub const DOMAIN_NAME: &str = "tasks";

/// A Tasks grace-period cookie (from [`get_state`] or [`start_poll`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cookie(pub u64);

impl Cookie {
    /// Has its grace period completed?
    pub fn poll(self) -> bool {
        poll_state(self)
    }

    /// Wait until its grace period completes (polling with back-off, up to
    /// `timeout`); true if it did.
    pub fn wait_timeout(self, timeout: Duration) -> bool {
        let t0 = std::time::Instant::now();
        let mut nap = Duration::from_micros(20);
        loop {
            if self.poll() {
                return true;
            }
            let waited = t0.elapsed();
            if waited >= timeout {
                return false;
            }
            std::thread::sleep(nap.min(timeout - waited));
            nap = (nap * 2).min(Duration::from_millis(5));
        }
    }
}

/// Wait for a Tasks grace period: every thread that existed at the call has
/// been quiescent since (see the module docs). Must not be called from a
/// hook (it blocks) or from a Tasks callback (it would wait for itself; it
/// panics).
pub fn synchronize() {
    // SAFETY: a vtable function with no arguments.
    let r = unsafe { (vtable::current().synchronize)() };
    refused_panics(r, "synchronize");
}

/// Panic, on this side of the vtable, if the host refused a wait made from
/// a Tasks callback (a panic inside its `extern "C"` function would abort).
#[track_caller]
fn refused_panics(r: u32, what: &str) {
    if r == vtable::WAIT_REFUSED {
        panic!("usrcu::tasks::{what} called from a Tasks callback: it would wait for itself");
    }
}

/// Run `f` on the host's `usrcu-tasks` thread after a Tasks grace period.
/// Callbacks run in the order they were queued.
pub fn call<F: FnOnce() + Send + 'static>(f: F) {
    unsafe extern "C" fn trampoline<F: FnOnce() + Send + 'static>(p: *mut c_void) {
        // SAFETY: `p` is the `Box<F>` leaked below, run once.
        let f = unsafe { Box::from_raw(p as *mut F) };
        crate::runtime::run_catching_panic("usrcu::tasks", f);
    }
    let p = Box::into_raw(Box::new(f)) as *mut c_void;
    // SAFETY: `trampoline::<F>` consumes exactly this box, once.
    unsafe { (vtable::current().call)(trampoline::<F>, p) }
}

/// Wait until every callback queued by [`call`] before this call has run.
/// Panics if called from a Tasks callback.
pub fn barrier() {
    // SAFETY: a vtable function with no arguments.
    let r = unsafe { (vtable::current().barrier)() };
    refused_panics(r, "barrier");
}

/// [`barrier`], giving up after `timeout`; true if every callback queued
/// before the call has run. Panics if called from a Tasks callback.
pub fn barrier_timeout(timeout: Duration) -> bool {
    let ms = crate::sync::timeout_ms_rounded_up(timeout);
    // SAFETY: a vtable function taking an integer.
    let r = unsafe { (vtable::current().barrier_timeout_ms)(ms) };
    refused_panics(r, "barrier_timeout");
    r != 0
}

/// An explicit quiescent point: the calling thread is not inside any hook
/// here. Threads that loop calling hooks without ever blocking call this
/// between calls, so grace periods can end. Never call it from inside a
/// hook (or a normal tracepoint's probe): it would end the thread's part
/// of a grace period that must wait for that hook. Costs a thread-local load, a
/// load and a store (plus one call into the host on a thread's first use).
#[inline]
pub fn quiescent() {
    let r = record::mine(|| {
        // SAFETY: a vtable function with no arguments.
        unsafe { (vtable::current().record)() }
    });
    record::pass(r);
}

/// A cookie for the next grace period, without starting it.
pub fn get_state() -> Cookie {
    // SAFETY: a vtable function taking an integer.
    Cookie(unsafe { (vtable::current().get_state)(0) })
}

/// A cookie for the next grace period, which is started.
///
/// The `usrcu-tasks` thread both drives grace periods and runs callbacks:
/// a poll started from a Tasks callback does not advance until that
/// callback returns, so polling for it there (or [`Cookie::wait_timeout`])
/// waits for nothing but its timeout.
pub fn start_poll() -> Cookie {
    // SAFETY: a vtable function taking an integer.
    Cookie(unsafe { (vtable::current().get_state)(1) })
}

/// Has the cookie's grace period completed?
pub fn poll_state(c: Cookie) -> bool {
    // SAFETY: a vtable function taking an integer.
    unsafe { (vtable::current().poll_state)(c.0) != 0 }
}

/// Set the stall timeout of Tasks grace periods (the default is
/// `USRCU_STALL_TIMEOUT_MS`, else 10 s).
pub fn set_stall_timeout(d: Duration) {
    let ms = d.as_millis().clamp(1, u64::MAX as u128) as u64;
    // SAFETY: a vtable function taking an integer.
    unsafe { (vtable::current().set_stall_timeout_ms)(ms) }
}

/// Host only: empty every registered [`HookSlot`] whose function lies in
/// `ranges`, and forget every slot that itself lies in `ranges`; returns how
/// many were emptied. The caller then waits for a grace period
/// ([`synchronize`]) before it unmaps the ranges.
///
/// # Safety
/// Every non-empty slot that was ever set is still live: a slot in an object
/// that was unmapped without passing its ranges here first would be written.
pub unsafe fn clear_hooks_into(ranges: &[Range<usize>]) -> usize {
    // SAFETY: the caller's promise.
    unsafe { hook_slot::registry::clear_into(ranges) }
}

/// Host only: the threads (kernel tid, name) that the Tasks grace period
/// in progress still waits for: threads neither seen blocked outside a
/// callout nor switched voluntarily nor at [`quiescent`] since it began.
/// Empty when none is in progress. For a message naming who holds it up:
/// a thread that computes without ever blocking holds every Tasks grace
/// period until it calls [`quiescent`].
pub fn holdouts() -> Vec<(i32, String)> {
    grace_period::holdouts()
}

/// Host only: has any [`HookSlot`] in the process ever held a function?
/// A hint only: a loader asks [`hooks_ever_into`] about the object it
/// unloads.
pub fn hooks_ever_set() -> bool {
    hook_slot::registry::ever_set()
}

/// Host only: may code or data in `ranges` have been reached through a
/// [`HookSlot`], that is, did a slot ever hold a function that lies in
/// `ranges`, or did a slot that lies in `ranges` ever hold a function
/// (since the last [`forget_hooks_ever_into`] of these ranges)? Recorded by
/// the host's runtime at every store into a slot, whichever copy of this
/// crate made it (a plugin setting a host slot itself included). When it
/// is false, no thread can be inside the object's code through a slot, so
/// a loader needs no Tasks grace period for the object's hooks.
///
/// Not recorded: what a hook calls. A host hook that calls an object's
/// code through a table of the host's own makes that code run under Tasks
/// RCU without any slot pointing into it: the host removes the object's
/// entries and waits with [`synchronize`] itself before the object is
/// unmapped (in its loader's `Going` notifier).
pub fn hooks_ever_into(ranges: &[Range<usize>]) -> bool {
    hook_slot::registry::ever_into(ranges)
}

/// Record that code or data at `addrs` may run as a Tasks reader with no
/// marker and no [`HookSlot`] pointing at it: a library that calls such
/// code from reader sections of its own (`usrcu-registry`'s normal
/// tracepoints note each probe's trampoline, function and data when they
/// publish it). Kept by the host's runtime, whichever copy of this crate
/// calls it, and read by [`hooks_ever_into`]: a loader then waits for a
/// Tasks grace period, and proves no signal handler sleeps over that code,
/// before it unmaps the object that holds it. Cheap enough for an attach,
/// not for a hot path.
pub fn note_reader_code(addrs: &[usize]) {
    // SAFETY: a vtable function taking a pointer and a length of a slice.
    unsafe { (vtable::current().note_reader_code)(addrs.as_ptr(), addrs.len()) }
}

/// Host only: a number that changes whenever [`hooks_ever_into`] records
/// something new in `ranges` (a slot set to a function there, or a slot
/// there set; [`note_reader_code`] there); 0 if nothing is recorded. A
/// loader that reuses a grace period asked for at an earlier unload attempt
/// does so only while this is unchanged: a hook of the object set and
/// emptied since may have been entered after that grace period began.
pub fn hooks_last_into(ranges: &[Range<usize>]) -> u64 {
    hook_slot::registry::last_into(ranges)
}

/// Host only: forget what [`hooks_ever_into`] recorded for `ranges`, whose
/// object is about to be unmapped once no thread runs its code (its slots
/// cleared, [`clear_hooks_into`], and a grace period waited for since), so
/// that an object mapped there next starts with a clean record. Called
/// with the object still mapped, so that no other object can be at these
/// addresses yet.
pub fn forget_hooks_ever_into(ranges: &[Range<usize>]) {
    hook_slot::registry::forget_ever_into(ranges)
}

/// Host only: is Tasks RCU idle — no callback queued or running, no grace
/// period requested or running, no thread waiting in [`synchronize`] or
/// [`barrier`]? A snapshot (work queued right after may make it false);
/// false while another thread is inside a call of this flavor.
///
/// This is the state in which a process may `fork`, together with
/// [`crate::runtime::idle`] and [`crate::trace::idle`]: the child then
/// starts its own `usrcu-tasks` thread on first use. Forked outside it, a
/// grace period in progress at the fork leaves the child's Tasks grace
/// periods, callbacks and barriers waiting forever. The answer is about
/// the engine of the copy that calls it, which is the host's: a plugin's
/// copy runs no engine (its calls go to the host's).
///
/// Each call is also a [`quiescent`] point for the calling thread, so that
/// a thread that waits for idle in a loop that never blocks (as below) does
/// not itself hold the grace period it waits for. So, like `quiescent`,
/// never call it from inside a hook or a normal tracepoint's probe.
///
/// ```
/// usrcu::tasks::call(|| {});
/// usrcu::tasks::barrier();
/// while !usrcu::tasks::idle() {
///     std::thread::yield_now();
/// }
/// ```
pub fn idle() -> bool {
    // A thread spinning here on `sched_yield` stays runnable and never
    // switches voluntarily: without this it is never seen quiescent
    // (srcu/tests/redteam7_idle_yield.rs, seen failing).
    quiescent();
    engine::idle()
}

/// Is the calling thread the host's `usrcu-tasks-cb` thread, that is, is
/// it running a Tasks callback? A wait for Tasks callbacks or grace
/// periods from there would wait for itself ([`synchronize`] and
/// [`barrier`] panic there); code that may run in a callback checks this
/// first (the plugin loader refuses an unload from there). In a plugin
/// too: the answer is the host's.
///
/// ```
/// let (tx, rx) = std::sync::mpsc::channel();
/// usrcu::tasks::call(move || tx.send(usrcu::tasks::on_callback_thread()).unwrap());
/// assert!(rx.recv().unwrap());
/// assert!(!usrcu::tasks::on_callback_thread());
/// ```
pub fn on_callback_thread() -> bool {
    // SAFETY: the runtime's `on_callback_thread` has no preconditions.
    unsafe { (vtable::current().on_callback_thread)() != 0 }
}

/// Host only: has any callback been queued with [`call`] and not yet run?
pub fn callbacks_pending() -> u64 {
    engine::engine().pending_callbacks()
}

/// What the last completed grace period of this host saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpReport {
    /// Threads examined.
    pub threads: usize,
    /// Re-checks of holdouts.
    pub rechecks: u32,
    /// Re-checks where a stop may have intervened, which restarted the
    /// switch count.
    pub restarts: u32,
}

/// Host only: the report of the last completed grace period.
pub fn last_grace_period() -> GpReport {
    let o = engine::engine().last_outcome();
    GpReport {
        threads: o.threads,
        rechecks: o.rechecks,
        restarts: o.restarts,
    }
}

/// Tid of the stop canary thread (started on the first grace period).
#[doc(hidden)]
pub fn __canary_tid() -> i32 {
    grace_period::canary_tid()
}
