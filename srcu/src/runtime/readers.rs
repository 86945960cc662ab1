//! Debug builds: where each reader entered, for stall warnings.
//!
//! One process-wide table, keyed by the address of the domain's state (which
//! stays put; the `Srcu` itself may be moved after its first use), so that
//! neither recording nor removing a reader touches the domain's state: `read_lock`
//! records *before* its lock add and the guard removes *after* its unlock
//! add, so no lock of this table sits between a counter add and the critical
//! section (where it would act as the reader fence and hide a missing one
//! from debug tests), and a cleanup that frees the state right after the
//! unlock add finds nothing of it here. The file name is copied: a plugin's
//! `.rodata` goes away at unload.

use crate::diagnostics::ReaderInfo;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

struct Record {
    domain: usize,
    tid: i64,
    thread_name: String,
    location: String,
    since: Instant,
}

/// Keyed by token: a reader's exit finds its record in O(log n) however many
/// readers are inside (a `Vec` searched linearly made 100,000 nested guards
/// take 30 s to drop in a debug build).
static RECORDS: Mutex<BTreeMap<u64, Record>> = Mutex::new(BTreeMap::new());
// Relaxed: a unique number, nothing else.
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

fn records() -> std::sync::MutexGuard<'static, BTreeMap<u64, Record>> {
    RECORDS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The reader table, held across a `fork` by the fork handler (`fork.rs`):
/// every debug-build `read_lock` and guard drop takes it.
pub(super) struct ForkGuard(#[allow(dead_code)] std::sync::MutexGuard<'static, BTreeMap<u64, Record>>);

/// The reader table, for the fork handler (`fork.rs`).
pub(super) fn lock_for_fork() -> ForkGuard {
    ForkGuard(records())
}

thread_local! {
    // Const-initialised `Cell`: no destructor is registered.
    /// This thread is inside the bookkeeping below: a signal handler that
    /// interrupted it and enters a section itself skips its record rather
    /// than wait for the table lock its own thread holds.
    static BUSY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` marked busy; `None` (skipped) if this thread already is.
fn not_nested<R>(f: impl FnOnce() -> R) -> Option<R> {
    if BUSY.with(|b| b.replace(true)) {
        return None;
    }
    let r = f();
    BUSY.with(|b| b.set(false));
    Some(r)
}

/// Record a reader of `domain` entering at `file:line:col`; returns its
/// token (0: not recorded, when nested in this thread's own bookkeeping by
/// a signal handler).
pub(super) fn enter(domain: usize, file: &[u8], line: u32, col: u32) -> u64 {
    not_nested(|| enter_unnested(domain, file, line, col)).unwrap_or(0)
}

fn enter_unnested(domain: usize, file: &[u8], line: u32, col: u32) -> u64 {
    let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
    let (tid, thread_name) = this_thread();
    let location = format!("{}:{line}:{col}", String::from_utf8_lossy(file));
    records().insert(
        token,
        Record {
            domain,
            tid,
            thread_name,
            location,
            since: Instant::now(),
        },
    );
    token
}

/// The reader with `token` left (0: it was not recorded).
pub(super) fn exit(token: u64) {
    if token != 0 {
        // A nested exit (a handler's section inside this thread's own
        // bookkeeping) leaves its record, for the stall report's sake only.
        not_nested(|| records().remove(&token));
    }
}

/// The oldest reader of `domain` still recorded.
pub(super) fn oldest(domain: usize) -> Option<ReaderInfo> {
    not_nested(|| oldest_unnested(domain)).flatten()
}

fn oldest_unnested(domain: usize) -> Option<ReaderInfo> {
    let rs = records();
    let r = rs.values().filter(|r| r.domain == domain).min_by_key(|r| r.since)?;
    Some(ReaderInfo {
        tid: r.tid,
        thread_name: r.thread_name.clone(),
        location: r.location.clone(),
        held_for: r.since.elapsed(),
    })
}

/// Kernel thread id and name of the calling thread, without touching
/// `std::thread::current()` (which a plugin must never do).
pub(crate) fn this_thread() -> (i64, String) {
    let tid = crate::diagnostics::current_tid();
    let mut buf = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into `buf`.
    unsafe { libc::prctl(libc::PR_GET_NAME, buf.as_mut_ptr() as libc::c_ulong, 0, 0, 0) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    (tid, String::from_utf8_lossy(&buf[..end]).into_owned())
}
