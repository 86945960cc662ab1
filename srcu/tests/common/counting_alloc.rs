//! A global allocator that counts the bytes in use, for tests that check
//! what a run leaves on the heap: `srcu/tests/closure_slot_retention.rs` and
//! `tests/tests/reload_records.rs` (which includes this file by path; the
//! two crates share no test library). A test binary installs it with
//! `#[global_allocator] static A: Counting = Counting;` and reads
//! [`in_use`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

/// The system allocator, counting the bytes in use.
pub struct Counting;

static IN_USE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed to `System` unchanged; only a counter is
// added to.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            // Relaxed: a statistic, read after the work measured has joined.
            IN_USE.fetch_add(l.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            // Relaxed: as above.
            IN_USE.fetch_add(l.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(p, l) };
        // Relaxed: as above.
        IN_USE.fetch_sub(l.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc`, passed on.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            // Relaxed: as above.
            IN_USE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        }
        q
    }
}

/// Bytes allocated through [`Counting`] and not yet freed.
pub fn in_use() -> isize {
    // Relaxed: a statistic, read by a test after the work it measures has
    // been joined.
    IN_USE.load(Ordering::Relaxed)
}
