//! The wake-up handshake between producers of work (`call_srcu`, `barrier`,
//! `start_poll`) and the runtime's driver, which may be about to go idle.
//!
//! # Flag
//!
//! | `scheduled` | meaning                                 | set by                 | cleared by             |
//! |-------------|-----------------------------------------|------------------------|------------------------|
//! | `false`     | the driver will not look at the domain  | —                      | the driver, going idle |
//! | `true`      | the driver will look at it again        | a kick, or the driver  | —                      |
//!
//! A producer first makes its work visible through a read-modify-write
//! (the callback ticket, or the grace-period request), then issues a SeqCst
//! fence (for `call_srcu`, the one `Callbacks::enqueue` issues after its
//! ticket), then loads the flag and kicks if it reads `false`. The driver stores `false`, issues
//! a SeqCst fence, then re-reads the work counters. This is the
//! store-buffering pattern with a SeqCst fence on each side: the two fences
//! are ordered in the single total order S, and whichever side's fence
//! comes second sees the other side's write (C++ [atomics.fences]: a load
//! after fence Y sees a store before fence X, or a later one, when X
//! precedes Y in S). So either the producer reads `false` and kicks, or the
//! driver's re-read sees the work and it stays: the work is never stranded.
//! (A Relaxed store followed by a SeqCst load, with no fence, would order
//! nothing.) `loom/tests/runtime.rs` checks the handshake, and that it loses
//! a wake-up with the driver's fence removed.

use crate::sync::{fence, AtomicBool, Ordering};

/// The `scheduled` flag of one domain.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    scheduled: AtomicBool,
}

impl Wake {
    /// Producer: must it kick? The caller has made its work visible with an
    /// RMW and issued a SeqCst fence since (the pairing fence of `idle`).
    #[inline]
    pub(crate) fn needs_kick(&self) -> bool {
        // Relaxed: ordered by the caller's SeqCst fence; see the module docs.
        !self.scheduled.load(Ordering::Relaxed)
    }

    /// Is the domain scheduled (a racy snapshot, for `runtime::idle`)?
    pub(crate) fn is_scheduled(&self) -> bool {
        // Relaxed: a snapshot; see `runtime::idle`.
        self.scheduled.load(Ordering::Relaxed)
    }

    /// The driver (or a kick) marks the domain scheduled.
    pub(crate) fn set(&self) {
        // Relaxed: a `true` read late only costs a redundant kick.
        self.scheduled.store(true, Ordering::Relaxed);
    }

    /// The driver goes idle for this domain. `recheck` re-reads the work
    /// counters; true means work arrived and the caller must schedule the
    /// domain again.
    pub(crate) fn idle(&self, recheck: impl FnOnce() -> bool) -> bool {
        // Relaxed store, then the SeqCst fence that pairs with the
        // producer's (see the module docs).
        self.scheduled.store(false, Ordering::Relaxed);
        if !crate::fault::is_set(crate::fault::Fault::RelaxedWake) {
            fence(Ordering::SeqCst);
        }
        recheck()
    }
}
