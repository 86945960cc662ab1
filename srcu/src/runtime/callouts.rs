//! Threads inside a *callout*: a call from code that may be a plugin's
//! (a hook, a tracepoint probe, a callback) into host code that runs the
//! host's own user code, the logger: `usrcu::diagnostics::emit` and the
//! plugin loader's log bridge mark themselves here for the duration.
//!
//! Host only (a plugin's copy of this crate keeps its own, unused list).
//! The plugin loader reads it before it unmaps an object: a thread blocked
//! inside a callout may have the object's frames above the host's logger
//! on its stack, and Tasks RCU, which has no read-side marker, reads a
//! blocked thread as having left every hook and probe (red team 9: a host
//! logger that blocks on a lock while a plugin's probe logs). The loader
//! searches such threads' stacks for the object's addresses
//! (`module-loader/src/proofs/interrupted.rs`).
//!
//! A fixed table of thread ids, claimed with one compare-and-swap and
//! released with one store: no lock (a callout may run in a child of
//! `fork`, or nest), no allocation. When every slot is taken, a count of
//! the untracked callouts makes readers treat every thread as possibly
//! inside one.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

/// Slots in the table: more threads than this inside callouts at once are
/// counted, not named.
const SLOTS: usize = 256;

static TIDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];
static UNTRACKED: AtomicUsize = AtomicUsize::new(0);

/// One callout in progress on this thread; ends on drop (unwinding
/// included).
#[derive(Debug)]
#[must_use = "the callout ends when this is dropped"]
pub struct Callout {
    slot: Option<usize>,
}

/// Mark the calling thread as inside a callout until the result is
/// dropped.
pub fn enter() -> Callout {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let start = tid.unsigned_abs() as usize % SLOTS;
    for i in (start..SLOTS).chain(0..start) {
        // SeqCst: a single total order with the loader's reads of the table
        // and of `/proc` (a thread marked before it blocks is seen marked by
        // a scan that sees it blocked).
        if TIDS[i]
            .compare_exchange(0, tid, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            return Callout { slot: Some(i) };
        }
    }
    // SeqCst: as above.
    UNTRACKED.fetch_add(1, Ordering::SeqCst);
    Callout { slot: None }
}

impl Drop for Callout {
    fn drop(&mut self) {
        // SeqCst: as in `enter`.
        match self.slot {
            Some(i) => TIDS[i].store(0, Ordering::SeqCst),
            None => {
                UNTRACKED.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// The threads inside a callout now, and whether some callouts are not
/// named (the table was full): then any thread may be inside one.
pub fn snapshot() -> (Vec<i32>, bool) {
    // SeqCst: as in `enter`.
    let tids = TIDS
        .iter()
        .map(|t| t.load(Ordering::SeqCst))
        .filter(|&t| t != 0)
        .collect();
    (tids, UNTRACKED.load(Ordering::SeqCst) > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callout_names_its_thread_until_it_ends_and_nests() {
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        let count = || snapshot().0.iter().filter(|&&t| t == me).count();
        assert_eq!(count(), 0);
        let outer = enter();
        let inner = enter();
        assert_eq!(count(), 2);
        drop(inner);
        assert_eq!(count(), 1);
        drop(outer);
        assert_eq!(count(), 0);
    }
}
