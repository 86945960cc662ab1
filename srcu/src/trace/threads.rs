//! The host's thread records: allocation, the exit destructor, reuse.
//!
//! Every copy of `usrcu` reaches the calling thread's record through its own
//! const-initialised thread-local pointer (a `Cell`, no destructor). When
//! that pointer is null the copy asks the host runtime ([`register`], through
//! [`TraceVTable::register`](super::TraceVTable)); the host answers with the
//! record its own thread-local already holds for the thread, or gives it one,
//! so that every object in the process shares one nesting count per thread.
//!
//! Thread exit is noticed by a pthread key created here, in the host, whose
//! destructor ([`release`]) lies in the host's code: never a plugin's, never
//! a Rust TLS destructor. It ends any section the thread left open and puts
//! the record on the free list.
//!
//! # Reuse
//!
//! Another pthread-key destructor of the exiting thread may still run after
//! ours and reach the record through some copy's stale thread-local pointer.
//! So a free record is handed to a new thread only once its last owner is
//! gone from the kernel's thread list (`tgkill(pid, tid, 0)` fails with
//! `ESRCH`, or the tid is the caller's own): by then no code of that thread
//! runs. A record whose owner is still finishing is skipped, not waited for.
//! Records are never freed, and a grace period may read a record while it is
//! recycled: its `exits` never goes backwards, which is all a scan needs.

use super::record::ThreadRecord;
use crate::diagnostics;
use crate::fence::FenceMode;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// A record with the host's bookkeeping (host only; readers see `rec`).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct HostRecord {
    pub(crate) rec: ThreadRecord,
    /// Kernel thread id of the owner (last owner, when free).
    pub(crate) tid: AtomicI64,
    /// Its name at registration (`PR_GET_NAME`).
    name: Mutex<String>,
}

impl AsRef<ThreadRecord> for &'static HostRecord {
    fn as_ref(&self) -> &ThreadRecord {
        &self.rec
    }
}

impl HostRecord {
    /// The owner's name: its current `comm`, else the one it had at
    /// registration.
    pub(crate) fn thread_name(&self) -> String {
        // Relaxed: the tid is only a label here.
        let tid = self.tid.load(Ordering::Relaxed);
        std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_else(|_| self.name.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

#[derive(Default)]
pub(crate) struct Table {
    /// Every record ever allocated, in allocation order.
    all: Vec<&'static HostRecord>,
    /// Records whose owner has exited.
    free: Vec<&'static HostRecord>,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    all: Vec::new(),
    free: Vec::new(),
});

/// Records allocated over the life of the process.
static ALLOCATED: AtomicU64 = AtomicU64::new(0);

fn table() -> MutexGuard<'static, Table> {
    TABLE.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fence pair of this process's Tasks Trace flavor, fixed at first use.
pub(crate) fn mode() -> FenceMode {
    static MODE: OnceLock<FenceMode> = OnceLock::new();
    *MODE.get_or_init(crate::fence::default_mode)
}

thread_local! {
    /// This copy's pointer to the calling thread's record. Const-initialised,
    /// `Copy`, no destructor: no TLS destructor is ever registered for it.
    pub(crate) static RECORD: Cell<*const ThreadRecord> = const { Cell::new(std::ptr::null()) };
}

/// The pthread key whose destructor releases a thread's record; `None`
/// while the process has no key to spare (`pthread_key_create` fails with
/// `EAGAIN` past `PTHREAD_KEYS_MAX`, or `ENOMEM`): the next registering
/// thread tries again. This runs inside `extern "C"` vtable functions, so a
/// failure is reported ([`no_release`]), never a panic, which would abort
/// the process.
fn key() -> Option<libc::pthread_key_t> {
    static KEY: OnceLock<libc::pthread_key_t> = OnceLock::new();
    static CREATING: Mutex<()> = Mutex::new(());
    if let Some(k) = KEY.get() {
        return Some(*k);
    }
    // One creator at a time, so that racing first users make one key.
    let _g = CREATING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = KEY.get() {
        return Some(*k);
    }
    let mut k: libc::pthread_key_t = 0;
    // SAFETY: `k` is writable; `release` is a host function that lives as
    // long as the process (this is the host's copy).
    let rc = unsafe { libc::pthread_key_create(&mut k, Some(release)) };
    if rc != 0 {
        no_release("pthread_key_create", rc);
        return None;
    }
    let _ = KEY.set(k);
    Some(k)
}

/// A thread's record could not be tied to its exit: say so, once per
/// process (the record is then never released, and a thread that exits
/// inside a read section leaves that section open for good).
#[cold]
fn no_release(what: &str, rc: i32) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    // Relaxed: only picks the one caller that warns.
    if WARNED.swap(true, Ordering::Relaxed) {
        return;
    }
    diagnostics::warn(
        diagnostics::WarningKind::Other,
        super::DOMAIN_NAME,
        format!(
            "usrcu::trace: {what} failed ({}): a thread's Tasks Trace record is not released when \
             the thread exits (it is leaked), and a thread that exits inside a read section leaves \
             it open, holding up grace periods for good",
            std::io::Error::from_raw_os_error(rc)
        ),
    );
}

/// The calling thread's record, registering it if this copy's thread-local
/// does not know it yet (runs in the host's copy).
pub(crate) fn register() -> *const ThreadRecord {
    let p = RECORD.with(|c| c.get());
    if !p.is_null() {
        return p;
    }
    // Before the record table is first taken (`runtime/fork.rs`).
    crate::runtime::register_fork_handler();
    let me = diagnostics::current_tid();
    let hr = take_free(me).unwrap_or_else(allocate);
    // Relaxed: a label, published to scans by the table's mutex.
    hr.tid.store(me, Ordering::Relaxed);
    *hr.name.lock().unwrap_or_else(|p| p.into_inner()) = this_thread_name();
    let p: *const ThreadRecord = &hr.rec;
    if let Some(k) = key() {
        // SAFETY: `k` is a live key; the value is a `'static` record.
        let rc = unsafe { libc::pthread_setspecific(k, hr as *const HostRecord as *const libc::c_void) };
        if rc != 0 {
            no_release("pthread_setspecific", rc);
        }
    }
    RECORD.with(|c| c.set(p));
    p
}

fn allocate() -> &'static HostRecord {
    let hr: &'static HostRecord = Box::leak(Box::new(HostRecord {
        rec: ThreadRecord::new(mode() == FenceMode::SeqCst),
        tid: AtomicI64::new(0),
        name: Mutex::new(String::new()),
    }));
    // Relaxed: a statistic.
    ALLOCATED.fetch_add(1, Ordering::Relaxed);
    // The mutex publishes the record to scans: a scan that does not see it
    // began before this thread's first section (see "Tasks Trace").
    table().all.push(hr);
    hr
}

/// A free record whose last owner is gone.
fn take_free(me: i64) -> Option<&'static HostRecord> {
    let mut t = table();
    let i = t.free.iter().position(|r| {
        // Relaxed: written by the last owner's destructor, published by the mutex.
        let tid = r.tid.load(Ordering::Relaxed);
        tid == me || thread_gone(tid)
    })?;
    Some(t.free.swap_remove(i))
}

/// Is thread `tid` of this process gone from the kernel's thread list?
fn thread_gone(tid: i64) -> bool {
    // SAFETY: signal 0 only checks that the thread exists.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid() as libc::c_long, tid as libc::c_long, 0) };
    rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// The pthread-key destructor: the thread is exiting.
unsafe extern "C" fn release(v: *mut libc::c_void) {
    // SAFETY: the only values stored under the key are `'static` records.
    let hr = unsafe { &*(v as *const HostRecord) };
    let open = hr.rec.thread_exited();
    RECORD.with(|c| c.set(std::ptr::null()));
    if open != 0 {
        diagnostics::warn(
            diagnostics::WarningKind::Other,
            super::DOMAIN_NAME,
            format!(
                "usrcu::trace: thread {} exited inside {open} read section(s); they are ended",
                diagnostics::current_tid()
            ),
        );
    }
    let mut t = table();
    crate::runtime::pause_on_way_to_sleep(crate::runtime::Sleeper::TraceExit);
    t.free.push(hr);
}

/// The table's lock, for the fork handler (`runtime/fork.rs`): a thread
/// that used Tasks Trace takes it once more as it exits ([`release`]).
pub(crate) fn lock_table_for_fork() -> MutexGuard<'static, Table> {
    table()
}

/// Every record, for a scan.
pub(crate) fn snapshot() -> Vec<&'static HostRecord> {
    table().all.clone()
}

/// (allocated, in use).
pub(crate) fn counts() -> (u64, u64) {
    let t = table();
    (ALLOCATED.load(Ordering::Relaxed), (t.all.len() - t.free.len()) as u64)
}

/// Name of the calling thread (`PR_GET_NAME`; no `std::thread::current()`).
fn this_thread_name() -> String {
    let mut buf = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into `buf`.
    unsafe { libc::prctl(libc::PR_GET_NAME, buf.as_mut_ptr() as libc::c_ulong, 0, 0, 0) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
