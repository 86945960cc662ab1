//! The runtime: the one per process that drives grace periods for callbacks,
//! invokes them, and detects stalls; and the `#[repr(C)]` vtable through
//! which a plugin's copy of this crate uses the host's runtime.
//!
//! Every operation that blocks, allocates runtime state or reports goes
//! through [`RuntimeVTable`]. A plain process uses its own copy's vtable
//! ([`host_vtable`]); a plugin loader calls the plugin's install hook with
//! the host's vtable before anything in the plugin runs ([`install`]), so
//! that no thread ever runs plugin code the host did not call, and no
//! plugin code parks a thread or touches a thread-local with a destructor.
//!
//! The runtime's threads (`usrcu-runtime-N`, at most four) start lazily on
//! the first `call_srcu`, `barrier` with work, or `start_poll`.

use crate::callbacks::{CallbackHead, Callbacks};
use crate::diagnostics::{self, ReaderInfo, Warning, WarningKind};
use crate::domain::Srcu;
use crate::fence::{heavy_fence, FenceMode};
use crate::grace_period::{Cookie, GpHooks, GpState, Urgency};
use crate::percpu::PerCpu;
use crate::stats::{Counters, SrcuStats};
use crate::sync::{lock, AtomicBool, AtomicPtr, AtomicU64, Condvar, Mutex, Ordering};
use std::cell::Cell;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// ABI version of [`RuntimeVTable`]; bumped on any layout or meaning change.
pub const RUNTIME_ABI_VERSION: u32 = 1;

/// The runtime's operations, as `extern "C"` functions over the shared,
/// `#[repr(C)]` [`Srcu`] layout.
#[repr(C)]
#[derive(Debug)]
pub struct RuntimeVTable {
    /// [`RUNTIME_ABI_VERSION`] of the copy that built this table.
    pub abi_version: u32,
    /// `size_of::<RuntimeVTable>()` of that copy.
    pub size: u32,
    /// Attach per-CPU state if needed; returns the per-CPU block.
    pub attach: unsafe extern "C" fn(*const Srcu) -> *const PerCpu,
    /// Wait for a grace period (`expedited` non-zero: expedited).
    pub synchronize: unsafe extern "C" fn(*const Srcu, u32),
    /// Queue a callback.
    pub call_srcu: unsafe extern "C" fn(*const Srcu, *mut CallbackHead, unsafe extern "C" fn(*mut CallbackHead)),
    /// Wait for every callback queued before the call.
    pub barrier: unsafe extern "C" fn(*const Srcu),
    /// A cookie; with `start` non-zero, also make sure the grace period runs.
    pub get_state: unsafe extern "C" fn(*const Srcu, u32) -> u64,
    /// Non-zero if the cookie's grace period completed.
    pub poll_state: unsafe extern "C" fn(*const Srcu, u64) -> u32,
    /// Cleanup; returns `CleanupError` bits, 0 on success.
    pub cleanup: unsafe extern "C" fn(*const Srcu) -> u32,
    /// Fill in the domain's counters.
    pub stats: unsafe extern "C" fn(*const Srcu, *mut SrcuStats),
    /// Debug builds: a reader entered at `file:line:col`; returns a token.
    pub reader_enter: unsafe extern "C" fn(*const Srcu, *const u8, usize, u32, u32) -> u64,
    /// Debug builds: the reader with this token left.
    pub reader_exit: unsafe extern "C" fn(*const Srcu, u64),
    /// Emit a warning of kind `kind` (see `WarningKind`) with a UTF-8 message.
    pub report: unsafe extern "C" fn(*const Srcu, u32, *const u8, usize),
}

static HOST_VTABLE: RuntimeVTable = RuntimeVTable {
    abi_version: RUNTIME_ABI_VERSION,
    size: std::mem::size_of::<RuntimeVTable>() as u32,
    attach: rt_attach,
    synchronize: rt_synchronize,
    call_srcu: rt_call_srcu,
    barrier: rt_barrier,
    get_state: rt_get_state,
    poll_state: rt_poll_state,
    cleanup: rt_cleanup,
    stats: rt_stats,
    reader_enter: rt_reader_enter,
    reader_exit: rt_reader_exit,
    report: rt_report,
};

/// The runtime installed by a loader, if any. Acquire/Release: the table is
/// a `'static` in the host, fully built before the pointer is published.
static INSTALLED: AtomicPtr<RuntimeVTable> = AtomicPtr::new(std::ptr::null_mut());

/// This copy's own runtime vtable: what a host hands to its plugins.
pub fn host_vtable() -> &'static RuntimeVTable {
    &HOST_VTABLE
}

/// The runtime this copy of the crate uses: the installed one, else its own.
pub fn current() -> &'static RuntimeVTable {
    let p = INSTALLED.load(Ordering::Acquire);
    if p.is_null() {
        &HOST_VTABLE
    } else {
        // SAFETY: `install` only publishes pointers to `'static` tables whose
        // version and size it checked.
        unsafe { &*p }
    }
}

/// Why [`install`] refused a vtable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallError {
    /// Null pointer.
    Null,
    /// `abi_version` differs: (theirs, ours).
    Version(u32, u32),
    /// `size` differs: (theirs, ours).
    Size(u32, u32),
}

/// Make this copy of the crate use `vt` (the host's runtime). Called by a
/// plugin's install hook before any of the plugin's domains is used.
///
/// # Safety
/// `vt` must point at a vtable that outlives every use of this copy of the
/// crate (the host's `'static` table).
pub unsafe fn install(vt: *const RuntimeVTable) -> Result<(), InstallError> {
    if vt.is_null() {
        return Err(InstallError::Null);
    }
    // SAFETY: non-null, and the caller promises it is a live vtable; the
    // first two fields are read before anything else is trusted.
    let (ver, size) = unsafe { ((*vt).abi_version, (*vt).size) };
    if ver != RUNTIME_ABI_VERSION {
        return Err(InstallError::Version(ver, RUNTIME_ABI_VERSION));
    }
    if size as usize != std::mem::size_of::<RuntimeVTable>() {
        return Err(InstallError::Size(size, std::mem::size_of::<RuntimeVTable>() as u32));
    }
    // Release: pairs with the Acquire in `current`.
    INSTALLED.store(vt as *mut RuntimeVTable, Ordering::Release);
    Ok(())
}

// ---------------------------------------------------------------------------
// Per-domain runtime state (host side, behind `Srcu::private`).

/// Debug record of one reader inside a section.
struct ReaderRecord {
    token: u64,
    tid: i64,
    thread_name: String,
    file: (*const u8, usize),
    line: u32,
    col: u32,
    since: Instant,
}

// SAFETY: `file` points at a `'static` string of the reader's object, which
// stays mapped while the reader is inside (unload waits for readers).
unsafe impl Send for ReaderRecord {}

/// Everything a domain needs beyond the shared header: owned by the runtime.
pub(crate) struct DomainState {
    pub(crate) name: String,
    pub(crate) pc: Box<PerCpu>,
    pub(crate) mode: FenceMode,
    pub(crate) gp: GpState,
    pub(crate) cbs: Callbacks,
    pub(crate) stats: Counters,
    stall_timeout_ms: u64,
    next_stall_ms: AtomicU64,
    poll_target: AtomicU64,
    queued: AtomicBool,
    readers: Mutex<Vec<ReaderRecord>>,
    next_token: AtomicU64,
}

impl DomainState {
    fn new(name: String, nr: usize, mode: FenceMode, stall_timeout_ms: u64) -> DomainState {
        DomainState {
            name,
            pc: Box::new(PerCpu::new(nr, mode == FenceMode::SeqCst)),
            mode,
            gp: GpState::new(),
            cbs: Callbacks::new(nr),
            stats: Counters::default(),
            stall_timeout_ms,
            next_stall_ms: AtomicU64::new(stall_timeout_ms),
            poll_target: AtomicU64::new(0),
            queued: AtomicBool::new(false),
            readers: Mutex::new(Vec::new()),
            next_token: AtomicU64::new(1),
        }
    }

    fn oldest_reader(&self) -> Option<ReaderInfo> {
        let rs = lock(&self.readers);
        let r = rs.iter().min_by_key(|r| r.since)?;
        // SAFETY: see `ReaderRecord`: the string is mapped while the reader
        // is inside, and its record is removed before it leaves.
        let file = unsafe { std::slice::from_raw_parts(r.file.0, r.file.1) };
        Some(ReaderInfo {
            tid: r.tid,
            thread_name: r.thread_name.clone(),
            location: format!("{}:{}:{}", String::from_utf8_lossy(file), r.line, r.col),
            held_for: r.since.elapsed(),
        })
    }

    /// Is a grace period running or requested?
    pub(crate) fn gp_in_flight(&self) -> bool {
        self.gp.in_progress() || !self.gp.done(Cookie(self.poll_target.load(Ordering::Acquire)))
    }

    pub(crate) fn possible_cpus(&self) -> usize {
        self.pc.nr_slots()
    }

    /// Readers inside a section of either rank, after a heavy fence so that
    /// every reader that already left is seen as gone.
    pub(crate) fn readers_inside(&self) -> isize {
        heavy_fence(self.mode);
        let t0 = Instant::now();
        let (n, slots) = self.pc.active_readers();
        Counters::add(&self.stats.slots_scanned, slots as u64);
        Counters::add(&self.stats.scan_nanos, t0.elapsed().as_nanos() as u64);
        n
    }
}

impl GpHooks for DomainState {
    fn scanned(&self, slots: usize, nanos: u64) {
        Counters::add(&self.stats.slots_scanned, slots as u64);
        Counters::add(&self.stats.scan_nanos, nanos);
    }

    fn waiting(&self, waited_ms: u64) {
        let next = self.next_stall_ms.load(Ordering::Relaxed);
        if waited_ms < next {
            return;
        }
        // Relaxed CAS: only decides which waiter reports this threshold.
        if self
            .next_stall_ms
            .compare_exchange(next, next.saturating_mul(2), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let oldest = self.oldest_reader();
        let who = match &oldest {
            Some(r) => format!(
                "; oldest reader: thread {} ({}) since {:?} at {}",
                r.tid, r.thread_name, r.held_for, r.location
            ),
            None => String::from("; reader locations are tracked in debug builds only"),
        };
        diagnostics::emit(Warning {
            kind: WarningKind::Stall,
            domain: self.name.clone(),
            message: format!(
                "usrcu: grace-period stall on domain '{}': waited {} ms for readers{}",
                self.name, waited_ms, who
            ),
            oldest_reader: oldest,
            tid: diagnostics::current_tid(),
        });
    }

    fn completed(&self, expedited: bool) {
        Counters::add(&self.stats.grace_periods, 1);
        if expedited {
            Counters::add(&self.stats.expedited_grace_periods, 1);
        }
        self.next_stall_ms.store(self.stall_timeout_ms, Ordering::Relaxed);
    }
}

/// Default stall timeout: `USRCU_STALL_TIMEOUT_MS`, else 10 s.
fn default_stall_ms() -> u64 {
    static V: OnceLock<u64> = OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("USRCU_STALL_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000)
    })
}

/// The domain's runtime state, attaching it if needed.
///
/// # Safety
/// `s` points at a live `Srcu`.
unsafe fn state<'a>(s: *const Srcu) -> &'a DomainState {
    // SAFETY: caller guarantees `s` is live; attach publishes `private`
    // before `percpu`, and both stay valid until a successful cleanup, which
    // the caller does not race (see `Srcu::cleanup`).
    unsafe {
        let s = &*s;
        s.percpu_or_attach();
        &*s.private_ptr()
    }
}

/// Build the state of `s` (called once per attach, by the CAS winner).
pub(crate) fn build_state(s: &Srcu) -> *mut PerCpu {
    let cfg = s.config();
    let nr = if cfg.possible_cpus != 0 {
        cfg.possible_cpus as usize
    } else {
        crate::percpu::possible_cpus()
    };
    let mode = if cfg.force_seqcst_fence_set() {
        FenceMode::SeqCst
    } else {
        crate::fence::default_mode()
    };
    let stall = if cfg.stall_timeout_ms != 0 {
        cfg.stall_timeout_ms as u64
    } else {
        default_stall_ms()
    };
    let st = Arc::new(DomainState::new(s.name().to_owned(), nr, mode, stall));
    let pc: *const PerCpu = &*st.pc;
    s.set_private(Arc::into_raw(st) as *mut DomainState);
    pc as *mut PerCpu
}

unsafe extern "C" fn rt_attach(s: *const Srcu) -> *const PerCpu {
    // SAFETY: the caller passes a live domain.
    unsafe {
        let s = &*s;
        s.set_runtime_if_unset(&HOST_VTABLE);
        crate::attach::attach_once(s.state_word(), s.percpu_word(), || build_state(s))
    }
}

unsafe extern "C" fn rt_synchronize(s: *const Srcu, expedited: u32) {
    // SAFETY: the caller passes a live domain.
    let st = unsafe { state(s) };
    let urgency = if expedited != 0 {
        Urgency::Expedited
    } else {
        Urgency::Normal
    };
    st.gp.synchronize(&st.pc, st.mode, urgency, st);
}

unsafe extern "C" fn rt_call_srcu(
    s: *const Srcu,
    head: *mut CallbackHead,
    func: unsafe extern "C" fn(*mut CallbackHead),
) {
    // SAFETY: the caller passes a live domain.
    let st = unsafe { state(s) };
    let cpu = crate::percpu::current_cpu();
    // SAFETY: `call_srcu_raw`'s contract hands `head` to us.
    unsafe { st.cbs.enqueue(cpu, head, func, || st.gp.snap()) };
    kick(st);
}

unsafe extern "C" fn rt_barrier(s: *const Srcu) {
    // SAFETY: the caller passes a live domain.
    let st = unsafe { state(s) };
    if IS_RUNTIME_THREAD.with(|c| c.get()) {
        diagnostics::warn(
            WarningKind::IllegalSynchronize,
            &st.name,
            format!(
                "usrcu: barrier() on domain '{}' from inside a callback would wait for itself; skipped",
                st.name
            ),
        );
        return;
    }
    Counters::add(&st.stats.barriers_issued, 1);
    let t0 = Instant::now();
    let b = st.cbs.barrier_begin(|| st.gp.snap());
    Counters::add(&st.stats.slots_scanned, st.cbs.nr_queues() as u64);
    Counters::add(&st.stats.scan_nanos, t0.elapsed().as_nanos() as u64);
    if let Some(b) = b {
        kick(st);
        b.wait();
    }
}

unsafe extern "C" fn rt_get_state(s: *const Srcu, start: u32) -> u64 {
    // SAFETY: the caller passes a live domain.
    let st = unsafe { state(s) };
    let c = st.gp.snap();
    if start != 0 && !st.gp.done(c) {
        // AcqRel: the runtime's Acquire load of the target sees this request.
        st.poll_target.fetch_max(c.0, Ordering::AcqRel);
        kick(st);
    }
    c.0
}

unsafe extern "C" fn rt_poll_state(s: *const Srcu, c: u64) -> u32 {
    // SAFETY: the caller passes a live domain.
    let st = unsafe { state(s) };
    st.gp.done(Cookie(c)) as u32
}

unsafe extern "C" fn rt_cleanup(s: *const Srcu) -> u32 {
    // SAFETY: the caller passes a live domain and does not race new readers
    // with cleanup (`Srcu::cleanup`'s contract).
    unsafe { crate::cleanup::cleanup_in_runtime(&*s) }
}

unsafe extern "C" fn rt_stats(s: *const Srcu, out: *mut SrcuStats) {
    // SAFETY: the caller passes a live domain and a writable `out`.
    unsafe {
        let s = &*s;
        let p = s.private_ptr();
        let snap = if p.is_null() {
            SrcuStats::default()
        } else {
            let mut x = (*p).stats.snapshot((*p).possible_cpus());
            x.callbacks_queued = (*p).cbs.queued_callbacks();
            x.percpu_bytes = (*p).pc.bytes() as u64;
            x.percpu_chunks = (*p).pc.chunks_touched() as u64;
            x
        };
        *out = snap;
    }
}

unsafe extern "C" fn rt_reader_enter(s: *const Srcu, file: *const u8, len: usize, line: u32, col: u32) -> u64 {
    // SAFETY: the caller passes a live, attached domain.
    let st = unsafe { state(s) };
    // Relaxed: a unique number, nothing else.
    let token = st.next_token.fetch_add(1, Ordering::Relaxed);
    let (tid, thread_name) = this_thread();
    lock(&st.readers).push(ReaderRecord {
        token,
        tid,
        thread_name,
        file: (file, len),
        line,
        col,
        since: Instant::now(),
    });
    token
}

unsafe extern "C" fn rt_reader_exit(s: *const Srcu, token: u64) {
    // SAFETY: the caller passes a live, attached domain.
    let st = unsafe { state(s) };
    let mut rs = lock(&st.readers);
    if let Some(i) = rs.iter().position(|r| r.token == token) {
        rs.swap_remove(i);
    }
}

unsafe extern "C" fn rt_report(s: *const Srcu, kind: u32, msg: *const u8, len: usize) {
    // SAFETY: the caller passes a UTF-8 message of `len` bytes.
    let msg = unsafe { String::from_utf8_lossy(std::slice::from_raw_parts(msg, len)).into_owned() };
    let domain = if s.is_null() {
        CURRENT_DOMAIN.with(|c| {
            let p = c.get();
            if p.is_null() {
                String::new()
            } else {
                // SAFETY: set by the runtime thread around invocations of a
                // live domain's callbacks; this runs inside such an invocation.
                unsafe { (*p).name.clone() }
            }
        })
    } else {
        // SAFETY: non-null pointers passed here are live domains.
        unsafe { (*s).name().to_owned() }
    };
    diagnostics::warn(WarningKind::from_u32(kind), &domain, msg);
}

/// Kernel thread id and name of the calling thread, without touching
/// `std::thread::current()` (which a plugin must never do).
fn this_thread() -> (i64, String) {
    let tid = diagnostics::current_tid();
    let mut buf = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into `buf`.
    unsafe { libc::prctl(libc::PR_GET_NAME, buf.as_mut_ptr() as libc::c_ulong, 0, 0, 0) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    (tid, String::from_utf8_lossy(&buf[..end]).into_owned())
}

// ---------------------------------------------------------------------------
// The runtime's threads.
//
// A small pool, grown lazily: a domain whose grace period waits for a
// sleeping reader must not hold up the callbacks of other domains. A domain
// is on the work list at most once (its `queued` flag), so one worker at a
// time serves it and its callbacks keep their order.

/// Most worker threads the runtime starts.
const MAX_WORKERS: usize = 4;

struct Work {
    queue: std::collections::VecDeque<Arc<DomainState>>,
    workers: usize,
    idle: usize,
}

struct Runtime {
    work: Mutex<Work>,
    cv: Condvar,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

thread_local! {
    // Cells of Copy types, const-initialised: no destructor is registered.
    static IS_RUNTIME_THREAD: Cell<bool> = const { Cell::new(false) };
    static CURRENT_DOMAIN: Cell<*const DomainState> = const { Cell::new(std::ptr::null()) };
}

fn runtime() -> &'static Runtime {
    RUNTIME.get_or_init(|| Runtime {
        work: Mutex::new(Work {
            queue: std::collections::VecDeque::new(),
            workers: 0,
            idle: 0,
        }),
        cv: Condvar::new(),
    })
}

/// Hand `st` to the runtime (no-op if it is already queued).
fn kick(st: &DomainState) {
    // SeqCst: as the swap below; a domain already queued needs nothing more
    // (the common case under a stream of call_srcu), so skip the Arc work.
    if st.queued.load(Ordering::SeqCst) {
        return;
    }
    let st: *const DomainState = st;
    // SAFETY: every `DomainState` a domain points at lives in the Arc that
    // `build_state` made; we take one more reference for the work list.
    let arc = unsafe {
        Arc::increment_strong_count(st);
        Arc::from_raw(st)
    };
    // SeqCst: pairs with the SeqCst store of `false` + re-check in `service`
    // so that work queued while a worker finishes is never stranded.
    if arc.queued.swap(true, Ordering::SeqCst) {
        return;
    }
    let rt = runtime();
    let mut w = lock(&rt.work);
    w.queue.push_back(arc);
    if w.idle == 0 && w.workers < MAX_WORKERS {
        let spawned = std::thread::Builder::new()
            .name(format!("usrcu-runtime-{}", w.workers))
            .spawn(worker);
        match spawned {
            Ok(_) => w.workers += 1,
            Err(e) if w.workers == 0 => panic!("usrcu: cannot start the runtime thread: {e}"),
            Err(_) => {} // the running workers will get to it
        }
    }
    drop(w);
    rt.cv.notify_one();
}

fn worker() {
    IS_RUNTIME_THREAD.with(|c| c.set(true));
    let rt = runtime();
    loop {
        let st = {
            let mut w = lock(&rt.work);
            loop {
                if let Some(st) = w.queue.pop_front() {
                    break st;
                }
                w.idle += 1;
                w = match rt.cv.wait(w) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                w.idle -= 1;
            }
        };
        service(&st);
    }
}

/// Drive grace periods for `st`'s callbacks and polls, invoke what is ready,
/// until nothing is left.
fn service(st: &DomainState) {
    loop {
        if let Some(c) = st.cbs.oldest_cookie() {
            st.gp.wait_for(c, &st.pc, st.mode, Urgency::Normal, st);
        }
        let target = Cookie(st.poll_target.load(Ordering::Acquire));
        st.gp.wait_for(target, &st.pc, st.mode, Urgency::Normal, st);
        let ready = st.cbs.take_ready(|c| st.gp.done(c));
        if !ready.is_empty() {
            CURRENT_DOMAIN.with(|c| c.set(st));
            let n = st.cbs.invoke(ready);
            CURRENT_DOMAIN.with(|c| c.set(std::ptr::null()));
            Counters::add(&st.stats.callbacks_invoked, n as u64);
            continue;
        }
        if st.cbs.pending() > 0 {
            continue;
        }
        // SeqCst: see `kick`.
        st.queued.store(false, Ordering::SeqCst);
        crate::sync::fence(Ordering::SeqCst);
        let more = st.cbs.pending() > 0 || !st.gp.done(Cookie(st.poll_target.load(Ordering::SeqCst)));
        if !more || st.queued.swap(true, Ordering::SeqCst) {
            return;
        }
    }
}

/// Release the runtime's reference to a cleaned-up domain's state.
///
/// # Safety
/// `p` came from `build_state` and the domain no longer points at it.
pub(crate) unsafe fn release_state(p: *mut DomainState) {
    // SAFETY: the caller hands back the reference `build_state` created.
    drop(unsafe { Arc::from_raw(p) });
}

/// The state behind a domain, if attached.
pub(crate) fn attached_state(s: &Srcu) -> Option<&DomainState> {
    let p = s.private_ptr();
    // SAFETY: non-null private pointers are live until a successful cleanup.
    (!p.is_null()).then(|| unsafe { &*p })
}
