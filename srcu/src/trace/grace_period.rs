//! A Tasks Trace grace period: the sequence word, and the scan of thread
//! records between two heavy fences.
//!
//! # Sequence word
//!
//! | bits   | meaning                                        |
//! |--------|------------------------------------------------|
//! | 0      | 1 while a grace period is in progress          |
//! | 1..64  | number of grace periods completed              |
//!
//! Only the driver (the holder of the engine's grace-period lock) changes
//! it: +1 at start, +1 at end. A cookie is the value at which a grace period
//! that began after the cookie was taken has ended.
//!
//! # One grace period ([`wait_for_readers`])
//!
//! 1. heavy fence A (`membarrier`, the userspace IPI);
//! 2. first scan: sample every record's (`nesting`, `exits`); a record with
//!    nesting 0 is quiescent, the others are holdouts, remembered with the
//!    `exits` they had;
//! 3. re-sample the holdouts with back-off: a holdout is quiescent once its
//!    nesting is 0 or its `exits` moved (it left the section it was in);
//! 4. heavy fence E.
//!
//! Step names refer to "Tasks Trace" in `docs/memory-model.md`.

use super::record::ThreadRecord;
use crate::fault::{self, Fault};
use crate::fence::{heavy_fence, FenceMode};
use crate::sync::{fence, AtomicU64, Ordering};

/// The grace-period sequence word.
#[derive(Debug, Default)]
pub(crate) struct Sequence {
    seq: AtomicU64,
}

impl Sequence {
    pub(crate) fn new() -> Sequence {
        Sequence { seq: AtomicU64::new(0) }
    }

    /// The cookie of the first grace period that starts after this call.
    pub(crate) fn snap(&self) -> u64 {
        // SeqCst fence and load: the caller's update (before this call) is
        // ordered before the SeqCst store `start` makes, or this load sees
        // that store and the cookie asks for the grace period after it.
        fence(Ordering::SeqCst);
        let s = self.seq.load(Ordering::SeqCst);
        (s + 3) & !1
    }

    /// Has the grace period of cookie `c` completed?
    pub(crate) fn done(&self, c: u64) -> bool {
        // Acquire: pairs with the Release in `end`, so the scan and the
        // fence E happen before whatever the caller does next.
        self.seq.load(Ordering::Acquire) >= c
    }

    /// Completed value (for stats).
    pub(crate) fn completed(&self) -> u64 {
        // Relaxed: a statistic.
        self.seq.load(Ordering::Relaxed) / 2
    }

    /// Mark a grace period started (driver only).
    pub(crate) fn start(&self) {
        // Relaxed load: only the driver writes the word.
        let s = self.seq.load(Ordering::Relaxed);
        debug_assert_eq!(s & 1, 0);
        // SeqCst: see `snap`.
        self.seq.store(s | 1, Ordering::SeqCst);
        // SeqCst fence: orders the store above before the heavy fence A and
        // the scans, so a `snap` that missed it is ordered before them.
        fence(Ordering::SeqCst);
    }

    /// Mark it ended (driver only).
    pub(crate) fn end(&self) {
        // Relaxed load: only the driver writes the word.
        let s = self.seq.load(Ordering::Relaxed);
        debug_assert_eq!(s & 1, 1);
        // Release: pairs with the Acquire in `done`.
        self.seq.store(s + 1, Ordering::Release);
    }
}

/// A thread that was inside a section at the first scan.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Holdout {
    /// Index into the records scanned.
    pub(crate) index: usize,
    /// Its `exits` at the first scan.
    exits: u64,
}

/// Wait until every thread inside a read section at the start has left it
/// (steps A to E above). `nap(holdouts, round)` is called between re-samples
/// and does the back-off and stall reporting.
pub(crate) fn wait_for_readers<R: AsRef<ThreadRecord>>(
    records: &[R],
    mode: FenceMode,
    mut nap: impl FnMut(&[Holdout], u32),
) {
    // A: pairs with every reader's fence B (and C of sections that ended).
    heavy_fence(mode);
    let mut holdouts: Vec<Holdout> = records
        .iter()
        .enumerate()
        .filter_map(|(index, r)| {
            let (nesting, exits) = r.as_ref().sample();
            (nesting != 0).then_some(Holdout { index, exits })
        })
        .collect();
    let mut round = 0;
    while !holdouts.is_empty() && !fault::is_set(Fault::TraceSkipHoldoutRecheck) {
        nap(&holdouts, round);
        round = round.saturating_add(1);
        holdouts.retain(|h| {
            let (nesting, exits) = records[h.index].as_ref().sample();
            nesting != 0 && exits == h.exits
        });
    }
    // E: pairs with the fence C of every section seen to have ended.
    heavy_fence(mode);
}
