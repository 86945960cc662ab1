//! Counters for the crate's own tests, not for users: what a test needs to
//! check that a path really ran (hidden from the docs, no stability promise).

use crate::domain::Srcu;

/// How many read sections of `d` entered through the rseq path so far (the
/// rseq lock counters, both ranks, every slot). Attaches `d` if needed.
pub fn rseq_lock_count(d: &Srcu) -> usize {
    // Relaxed: a statistic read after the sections being counted, ordered by
    // the caller (a join or the same thread).
    d.percpu_or_attach()
        .touched_chunks()
        .flat_map(|(_, slots)| slots.iter())
        .flat_map(|s| s.rseq_lock.iter())
        .fold(0usize, |n, c| {
            n.wrapping_add(c.load(std::sync::atomic::Ordering::Relaxed))
        })
}

/// This thread's `rseq->rseq_cs` now (0 without rseq, or cleared).
pub fn rseq_descriptor() -> u64 {
    crate::reader::rseq::descriptor()
}

/// A runtime thread that can be paused on its way to sleep
/// ([`arm_sleep_pause`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sleeper {
    /// A callback invoker, holding the pool's queue lock.
    Invoker,
    /// The grace-period driver, holding its heap lock.
    Driver,
    /// The Tasks Trace callback thread (`usrcu-trace`), holding its queue
    /// lock.
    Trace,
    /// The Tasks RCU thread (`usrcu-tasks`), holding its engine's lock.
    Tasks,
    /// A thread that used Tasks Trace, exiting, holding the record table's
    /// lock as it frees its record (not a way to sleep: its way out).
    TraceExit,
}

/// Test-only: the next time `who` goes back to sleep it pauses, holding
/// its lock (an invoker the pool's queue, the driver its heap,
/// `usrcu-trace` its queue, `usrcu-tasks` its engine's lock; for
/// `TraceExit`, the next thread to exit that used Tasks Trace, the record
/// table), once the rest of its flavor is idle: the fork window of `runtime::idle()` (or of
/// [`crate::trace::idle`], [`crate::tasks::idle`]), held open. [`sleep_pause_inside`] says when it is there; it lets go when a
/// fork's prepare handler starts, or at [`release_sleep_pause`]. One pause
/// per call. Costs one relaxed load on each way to sleep when not armed.
pub fn arm_sleep_pause(who: Sleeper) {
    crate::runtime::arm_pause(match who {
        Sleeper::Invoker => crate::runtime::Sleeper::Invoker,
        Sleeper::Driver => crate::runtime::Sleeper::Driver,
        Sleeper::Trace => crate::runtime::Sleeper::Trace,
        Sleeper::Tasks => crate::runtime::Sleeper::Tasks,
        Sleeper::TraceExit => crate::runtime::Sleeper::TraceExit,
    });
}

/// Test-only: is a thread paused by [`arm_sleep_pause`] inside its window?
pub fn sleep_pause_inside() -> bool {
    crate::runtime::pause_inside()
}

/// Test-only: end the pause (and disarm it if it has not started).
pub fn release_sleep_pause() {
    crate::runtime::release_pause();
}

/// Test-only: never register the runtime's fork handler in this process,
/// to show what it prevents. Effective only before the runtime's first
/// attach of a domain or first thread start (runtime, `usrcu-trace` or
/// `usrcu-tasks`); the process's children of `fork` may then hang.
pub fn skip_fork_handler() {
    crate::runtime::skip_handler();
}
