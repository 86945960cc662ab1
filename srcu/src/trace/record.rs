//! A thread's record: the only memory a Tasks Trace reader writes.
//!
//! # Record words
//!
//! | word      | meaning                                          | written by                 | read by                     |
//! |-----------|--------------------------------------------------|----------------------------|-----------------------------|
//! | `nesting` | read sections this thread is inside (0: none)    | the owning thread only     | the grace period's scans    |
//! | `seqcst`  | 1: fences are SeqCst on both sides (no membarrier) | the host, before publication; never after | the owning thread   |
//! | `exits`   | outermost exits so far; never reset, not on reuse | the owning thread only (and its exit destructor) | the scans      |
//!
//! The owner writes with plain loads and stores (Relaxed atomics: one `mov`
//! each) and a reader fence at the outermost entry (B) and exit (C); it never
//! issues a read-modify-write. The argument that this is enough is
//! `docs/memory-model.md`, "Tasks Trace".

use crate::fault::{self, Fault};
use crate::sync::{compiler_fence, fence, AtomicU32, AtomicU64, Ordering};

/// One thread's read-side state, shared by every copy of `usrcu` in the
/// process (`#[repr(C)]`: a plugin's copy writes the host's records).
///
/// Records are allocated by the host runtime, one per thread that ever
/// entered a Tasks Trace section, recycled after the thread exits, and never
/// freed.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct ThreadRecord {
    nesting: AtomicU32,
    seqcst: u32,
    exits: AtomicU64,
}

impl ThreadRecord {
    /// A record whose readers use the SeqCst fence pair if `seqcst`.
    pub(crate) fn new(seqcst: bool) -> ThreadRecord {
        ThreadRecord {
            nesting: AtomicU32::new(0),
            seqcst: seqcst as u32,
            exits: AtomicU64::new(0),
        }
    }

    /// Enter a read section (the kernel's `rcu_read_lock_trace`).
    #[inline(always)]
    pub(crate) fn enter(&self) {
        // Relaxed: only this thread writes `nesting`.
        let n = self.nesting.load(Ordering::Relaxed);
        // Relaxed: step L of "Tasks Trace"; ordered against the section by B.
        self.nesting.store(n + 1, Ordering::Relaxed);
        // B: pairs with the grace period's heavy fence A.
        self.reader_fence();
    }

    /// Leave a read section (the kernel's `rcu_read_unlock_trace`).
    #[inline(always)]
    pub(crate) fn exit(&self) {
        // Relaxed: only this thread writes `nesting`.
        let n = self.nesting.load(Ordering::Relaxed);
        debug_assert!(n > 0, "usrcu::trace: read_unlock without read_lock");
        if n == 1 {
            // C: pairs with the grace period's heavy fence E.
            self.reader_fence();
            // Relaxed: only this thread writes `exits`; C orders the section
            // before this store (step X of "Tasks Trace").
            let e = self.exits.load(Ordering::Relaxed);
            self.exits.store(e + 1, Ordering::Relaxed);
        }
        // Relaxed: as above.
        self.nesting.store(n - 1, Ordering::Relaxed);
    }

    /// Sections this thread is inside.
    #[inline]
    pub(crate) fn nesting(&self) -> u32 {
        // Relaxed: read by the owner, or by a scan (ordered by A/E).
        self.nesting.load(Ordering::Relaxed)
    }

    /// The scans' view: (nesting, outermost exits).
    #[inline]
    pub(crate) fn sample(&self) -> (u32, u64) {
        // Relaxed: both loads follow the heavy fence A of the grace period
        // and precede its fence E; see "Tasks Trace" in the memory model.
        (self.nesting.load(Ordering::Relaxed), self.exits.load(Ordering::Relaxed))
    }

    /// The owning thread is gone: whatever section it left open is over
    /// (its exit destructor runs on that thread, after its last section).
    pub(crate) fn thread_exited(&self) -> u32 {
        let n = self.nesting();
        if n != 0 {
            // SeqCst fence: the dead thread's sections happen before the
            // scans that see the stores below (as C does for `exit`).
            fence(Ordering::SeqCst);
            // Relaxed: written by the owning thread (this is its destructor).
            self.exits
                .store(self.exits.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            self.nesting.store(0, Ordering::Relaxed);
        }
        n
    }

    /// The reader fence, B or C.
    #[inline(always)]
    fn reader_fence(&self) {
        if cfg!(usrcu_loom) || self.seqcst != 0 {
            if fault::is_set(Fault::TraceNoReaderFence) {
                return;
            }
            // SeqCst: pairs with the SeqCst fences A and E (fallback mode,
            // and always under loom).
            fence(Ordering::SeqCst);
        } else {
            // Compiler fence only: the grace period's membarrier supplies
            // the CPU-level ordering (`fence.rs`, "Semantics").
            compiler_fence(Ordering::SeqCst);
        }
    }
}
