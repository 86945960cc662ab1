//! Per-thread quiescent-point records (host side) and the thread-local
//! pointer each copy of the crate caches them in.
//!
//! | field | written by | read by | meaning |
//! |---|---|---|---|
//! | `qs` | its thread only (plain load + Release store) | grace periods (Acquire) | explicit quiescent points passed, ever |
//! | `callouts` | its thread only (SeqCst read-modify-writes) | grace periods (SeqCst) | low 32 bits: callouts the thread is inside now; high 32 bits: callouts entered or left, ever (`runtime::callouts`) |
//!
//! A record belongs to a tid. It is allocated by the host the first time a
//! thread passes `tasks::quiescent()` (through the vtable, so a plugin's
//! copy gets the host's record), and never freed: a later thread with the
//! same tid (tids are unique among live threads, so the old owner is dead)
//! gets the same record back. The counter only grows, so a new owner
//! starting from the old owner's value changes nothing. The memory is one
//! cache line per distinct tid that ever used `quiescent()`.
//!
//! The caching thread-local is a const-initialised `Cell` of a raw pointer:
//! no destructor is registered, so a plugin that calls `quiescent()` does not
//! pin its object (see DESIGN, "the runtime lives in the host").

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// One thread's record. `#[repr(C)]`: a plugin's copy holds a pointer to
/// the host's record and increments `qs` itself.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct TasksRecord {
    /// Explicit quiescent points passed (see the module's table).
    pub qs: AtomicU64,
    /// The tid the record was last handed to.
    pub tid: AtomicU64,
    /// The thread's callouts (`usrcu::runtime::callouts`): depth in the low
    /// 32 bits, entries and exits in the high 32 bits. A grace period does
    /// not count a thread blocked inside a callout, nor voluntary switches
    /// made while one was in progress, as quiescent.
    pub callouts: AtomicU64,
}

static RECORDS: Mutex<Option<HashMap<i32, &'static TasksRecord>>> = Mutex::new(None);

fn records() -> std::sync::MutexGuard<'static, Option<HashMap<i32, &'static TasksRecord>>> {
    RECORDS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The record table, for the fork handler (`runtime/fork.rs`).
pub(crate) struct ForkGuard(
    #[allow(dead_code)] std::sync::MutexGuard<'static, Option<HashMap<i32, &'static TasksRecord>>>,
);

/// The record table, held across a `fork` by the fork handler.
pub(crate) fn lock_for_fork() -> ForkGuard {
    ForkGuard(records())
}

/// Host side: the record of `tid`, allocating it on first use.
pub(crate) fn record_for(tid: i32) -> &'static TasksRecord {
    // Before the table is first taken (`runtime/fork.rs`).
    crate::runtime::register_fork_handler();
    let mut g = records();
    let map = g.get_or_insert_with(HashMap::new);
    map.entry(tid).or_insert_with(|| {
        Box::leak(Box::new(TasksRecord {
            qs: AtomicU64::new(0),
            tid: AtomicU64::new(tid as u64),
            callouts: AtomicU64::new(0),
        }))
    })
}

/// Host side: the current counts of `tids` (`None`: no record yet), read
/// under the registry lock so that a record registered after this call is
/// seen as new by the next one (the lock orders the two).
pub(crate) fn snapshot(tids: &[i32], out: &mut Vec<Option<u64>>) {
    let g = records();
    out.clear();
    out.extend(tids.iter().map(|t| {
        g.as_ref().and_then(|m| m.get(t)).map(|r| {
            // Acquire: pairs with the Release store in `quiescent`; the
            // thread's accesses before its quiescent point happen before
            // whatever the grace period's caller does after it ends.
            r.qs.load(Ordering::Acquire)
        })
    }));
}

/// Host side: the callout words of `tids` (0 for a thread without a
/// record: it never entered a callout), read under the registry lock.
pub(crate) fn callouts_snapshot(tids: &[i32], out: &mut Vec<u64>) {
    let g = records();
    out.clear();
    out.extend(tids.iter().map(|t| {
        g.as_ref()
            .and_then(|m| m.get(t))
            // SeqCst: the callout's read-modify-writes, the thread's block
            // and this grace period's `/proc` readings in one order (see
            // `grace_period.rs`, "callouts").
            .map_or(0, |r| r.callouts.load(Ordering::SeqCst))
    }));
}

/// Is a thread whose callout word is `w` inside a callout?
pub(crate) fn inside_callout(w: u64) -> bool {
    w & 0xFFFF_FFFF != 0
}

/// Enter a callout on `r` (the calling thread's record).
pub(crate) fn callout_enter(r: &TasksRecord) {
    // SeqCst: see `callouts_snapshot`. Depth + 1, count + 1.
    r.callouts.fetch_add((1 << 32) + 1, Ordering::SeqCst);
}

/// Leave a callout on `r`.
pub(crate) fn callout_exit(r: &TasksRecord) {
    // SeqCst: as above. Depth - 1 (it is at least 1: no borrow), count + 1.
    r.callouts.fetch_add((1 << 32) - 1, Ordering::SeqCst);
}

thread_local! {
    // Const-initialised, no Drop: registers no TLS destructor.
    static MINE: Cell<*const TasksRecord> = const { Cell::new(std::ptr::null()) };
}

/// This thread's record, registered through `register` on first use.
#[inline]
pub(crate) fn mine(register: impl FnOnce() -> *const TasksRecord) -> &'static TasksRecord {
    let p = MINE.with(|c| c.get());
    let p = if p.is_null() {
        let p = register();
        MINE.with(|c| c.set(p));
        p
    } else {
        p
    };
    // SAFETY: records are leaked by the host and never freed.
    unsafe { &*p }
}

/// Forget this thread's cached record (a child of `fork` whose cache holds
/// its parent's): the next [`mine`] registers again.
pub(crate) fn forget_mine() {
    MINE.with(|c| c.set(std::ptr::null()));
}

/// Pass an explicit quiescent point on `r` (the calling thread's record).
#[inline]
pub(crate) fn pass(r: &TasksRecord) {
    // Single writer: a plain load and a store, no locked instruction.
    let v = r.qs.load(Ordering::Relaxed);
    // Release: pairs with the Acquire in `snapshot`; everything this thread
    // did inside a hook before this point happens before a grace period
    // that sees the new count ends.
    r.qs.store(v.wrapping_add(1), Ordering::Release);
}
