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
