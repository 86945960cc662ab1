//! *Callouts*: calls from a plugin's code (a hook, a tracepoint probe, a
//! callback, any function) into host code that runs the host's own user
//! code, the logger: the `log` bridge of `usrcu-registry` (in the plugin,
//! formatting included), the plugin loader's `host_log`, and the report of
//! a plugin's caught panic mark themselves here for their whole duration.
//! The host's own warnings (`usrcu::diagnostics::emit` from host code) are
//! not callouts (red team 11: they held every Tasks grace period while a
//! host logger waited for a lock that a thread waiting for one held).
//!
//! Tasks RCU has no read-side marker: a thread counts as having left every
//! hook and probe once it is seen blocked or has switched voluntarily. A
//! host logger that blocks (a lock, a full channel, a slow write) under a
//! plugin's hook would make the thread look quiescent with the hook's frame
//! on its stack, and the plugin could be unmapped under it (red team 9 and
//! 10: `tests/tests/redteam9_blocking_logger.rs`,
//! `tests/tests/redteam10_logging_hook.rs`). So a Tasks grace period does
//! not count a thread blocked inside a callout as quiescent, nor the
//! voluntary switches it made while one was in progress
//! (`tasks/grace_period.rs`): a callout is part of the hook that called it.
//!
//! Each thread's callouts are counted in its Tasks record (the host's,
//! reached through the Tasks vtable from any copy of this crate): depth and
//! a count of entries and exits, one SeqCst read-modify-write each way.

use crate::tasks::record::{self, TasksRecord};

/// One callout in progress on this thread; ends on drop (unwinding
/// included).
#[derive(Debug)]
#[must_use = "the callout ends when this is dropped"]
pub struct Callout {
    record: &'static TasksRecord,
}

/// Mark the calling thread as inside a callout until the result is
/// dropped. Nests.
pub fn enter() -> Callout {
    let r = mine();
    record::callout_enter(r);
    Callout { record: r }
}

/// This thread's Tasks record, checked against its tid: a child of `fork`
/// keeps its parent's cached record, filed under the parent's tid, where a
/// grace period of the child never looks (red team 11).
fn mine() -> &'static TasksRecord {
    let register = || {
        // SAFETY: a vtable function with no arguments.
        unsafe { (crate::tasks::vtable::current().record)() }
    };
    let r = record::mine(register);
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u64;
    // Relaxed: the record's tid is written once per owner, by the host,
    // before the record is handed to that thread.
    if r.tid.load(std::sync::atomic::Ordering::Relaxed) == tid {
        r
    } else {
        record::forget_mine();
        record::mine(register)
    }
}

impl Drop for Callout {
    fn drop(&mut self) {
        record::callout_exit(self.record);
    }
}

/// Is the calling thread inside a callout?
pub fn inside() -> bool {
    let r = mine();
    // SeqCst: as in `record::callout_enter`.
    record::inside_callout(r.callouts.load(std::sync::atomic::Ordering::SeqCst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callout_is_counted_until_it_ends_and_nests() {
        assert!(!inside());
        let outer = enter();
        let inner = enter();
        assert!(inside());
        drop(inner);
        assert!(inside());
        drop(outer);
        assert!(!inside());
    }
}
