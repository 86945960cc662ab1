//! A global allocator that counts the bytes in use, for tests that check
//! what a run leaves on the heap: `srcu/tests/closure_slot_retention.rs` and
//! `tests/tests/reload_records.rs` (which includes this file by path; the
//! two crates share no test library). A test binary installs it with
//! `#[global_allocator] static A: Counting = Counting;` and reads
//! [`in_use`], or counts the live allocations of one size with
//! [`watch_size`] and [`watched_live`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// The system allocator, counting the bytes in use.
pub struct Counting;

static IN_USE: AtomicIsize = AtomicIsize::new(0);
/// The allocation size [`WATCHED`] counts (0: none).
static WATCH: AtomicUsize = AtomicUsize::new(0);
/// Live allocations of the size [`WATCH`] names.
static WATCHED: AtomicIsize = AtomicIsize::new(0);

/// Count an allocation (`d` = 1) or a free (`d` = -1) of `size` bytes.
fn note(size: usize, d: isize) {
    // Relaxed: statistics, read after the work measured has joined.
    IN_USE.fetch_add(d * size as isize, Ordering::Relaxed);
    if size == WATCH.load(Ordering::Relaxed) {
        WATCHED.fetch_add(d, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed to `System` unchanged; only a counter is
// added to.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            note(l.size(), 1);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            note(l.size(), 1);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(p, l) };
        note(l.size(), -1);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc`, passed on.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            note(l.size(), -1);
            note(new, 1);
        }
        q
    }
}

/// Bytes allocated through [`Counting`] and not yet freed.
#[allow(dead_code)] // not every test binary that includes this file uses it
pub fn in_use() -> isize {
    // Relaxed: a statistic, read by a test after the work it measures has
    // been joined.
    IN_USE.load(Ordering::Relaxed)
}

/// From now on, count the live allocations of exactly `size` bytes (from 0).
#[allow(dead_code)] // not every test binary that includes this file uses it
pub fn watch_size(size: usize) {
    // Relaxed: set before the work measured starts, on the test's thread.
    WATCH.store(size, Ordering::Relaxed);
    WATCHED.store(0, Ordering::Relaxed);
}

/// Allocations of the watched size made since [`watch_size`] and not freed
/// (negative when more of them were freed than made).
#[allow(dead_code)]
pub fn watched_live() -> isize {
    // Relaxed: as `in_use`.
    WATCHED.load(Ordering::Relaxed)
}

/// Wait (up to `limit`) for the bytes in use to come back within `slack` of
/// `base`; the bytes beyond it at the end, and the time waited.
#[allow(dead_code)] // not every test binary that includes this file uses it
pub fn settle(base: isize, slack: isize, limit: std::time::Duration) -> (isize, std::time::Duration) {
    settle_with(slack, limit, || in_use() - base)
}

/// Wait (up to `limit`) for `measure` (bytes) to come below `slack`; its
/// last value, and the time waited. Measure what the test asserts on (the
/// bytes beyond what `stats().runtime_bytes` accounts for, say): a wait on
/// another quantity that never comes below `slack` always runs to `limit`.
#[allow(dead_code)] // not every test binary that includes this file uses it
pub fn settle_with(
    slack: isize,
    limit: std::time::Duration,
    measure: impl Fn() -> isize,
) -> (isize, std::time::Duration) {
    let t0 = std::time::Instant::now();
    loop {
        let v = measure();
        if v < slack || t0.elapsed() > limit {
            return (v, t0.elapsed());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
