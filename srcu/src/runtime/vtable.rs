//! The `#[repr(C)]` vtable a plugin's copy of this crate calls through, and
//! the host's implementation of each entry.

use super::state::{self, DomainState};
use super::{driver, invoke, readers};
use crate::callbacks::CallbackHead;
use crate::diagnostics::{self, WarningKind};
use crate::domain::Srcu;
use crate::grace_period::{Cookie, Urgency};
use crate::percpu::PerCpu;
use crate::stats::{Counters, SrcuStats};
use crate::sync::{AtomicPtr, Ordering};
use std::time::{Duration, Instant};

/// ABI version of [`RuntimeVTable`]; bumped on any layout or meaning change.
/// 6: `emit` (a plugin's `diagnostics::emit` reached only its own copy's
/// captures: red team 12).
pub const RUNTIME_ABI_VERSION: u32 = 6;

/// How long the driver lets callbacks gather before it starts the grace
/// period they need (the kernel's SRCU waits a jiffy, liburcu's `call_rcu`
/// thread 10 ms). `barrier` and `synchronize` never wait for it. 1 ms, not
/// the 100 µs it was: a stream of 100,000 callbacks ran about one grace
/// period per 200 µs, each a `membarrier` IPI to every CPU running the
/// process; at 1 ms the two-thread `call_srcu_throughput` round was faster
/// in 7 of 8 alternated pairs (median of bests 33.3 -> 25.6 ms, one thread
/// 12.0 -> 11.3 ms; docs/benchmarks.md, "Session 16"). The cost: a stream's
/// callbacks (and what they free) wait up to 0.9 ms longer.
const CALLBACK_GP_DELAY: Duration = Duration::from_millis(1);

/// A timeout argument meaning "no timeout".
pub(crate) const FOREVER: u64 = u64::MAX;

/// `barrier`'s results.
pub(crate) const BARRIER_DONE: u32 = 0;
pub(crate) const BARRIER_TIMED_OUT: u32 = 1;
pub(crate) const BARRIER_REFUSED: u32 = 2;

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
    /// Wait for a grace period (`expedited` non-zero: expedited) for at most
    /// `timeout_ns` nanoseconds (`u64::MAX`: no limit); non-zero if it
    /// completed.
    pub synchronize: unsafe extern "C" fn(*const Srcu, u32, u64) -> u32,
    /// Queue a callback.
    pub call_srcu: unsafe extern "C" fn(*const Srcu, *mut CallbackHead, unsafe extern "C" fn(*mut CallbackHead)),
    /// Wait for every callback queued before the call, for at most
    /// `timeout_ns`: 0 done, 1 timed out, 2 refused (called from one of the
    /// domain's own callbacks, where it would wait for itself).
    pub barrier: unsafe extern "C" fn(*const Srcu, u64) -> u32,
    /// A cookie; with `start` non-zero, also make sure the grace period runs.
    pub get_state: unsafe extern "C" fn(*const Srcu, u32) -> u64,
    /// Non-zero if the cookie's grace period completed.
    pub poll_state: unsafe extern "C" fn(*const Srcu, u64) -> u32,
    /// Cleanup; returns `CleanupError` bits, 0 on success.
    pub cleanup: unsafe extern "C" fn(*const Srcu) -> u32,
    /// Fill in the domain's counters.
    pub stats: unsafe extern "C" fn(*const Srcu, *mut SrcuStats),
    /// Debug builds: a reader of this domain is about to enter at
    /// `file:line:col` (the runtime copies the name); returns a token.
    pub reader_enter: unsafe extern "C" fn(*const Srcu, *const u8, usize, u32, u32) -> u64,
    /// Debug builds: the reader with this token left (never touches the
    /// domain's state, which a cleanup may have freed by then).
    pub reader_exit: unsafe extern "C" fn(*const Srcu, u64),
    /// Emit a warning of kind `kind` (see `WarningKind`) with a UTF-8 message.
    pub report: unsafe extern "C" fn(*const Srcu, u32, *const u8, usize),
    /// The Tasks Trace flavor's operations (`usrcu::trace`).
    pub trace: &'static crate::trace::TraceVTable,
    /// The host's Tasks RCU operations (`usrcu::tasks`).
    pub tasks: &'static crate::tasks::TasksVTable,
    /// A callback slot for a small `call_srcu` closure, allocated by the
    /// runtime (freed by the runtime's function stored in its block).
    pub alloc_slot: unsafe extern "C" fn(*const Srcu) -> *mut CallbackHead,
    /// Emit a whole warning in the host (its logger and its captures): a
    /// plugin's [`diagnostics::emit`].
    pub emit: unsafe extern "C" fn(*const WarningRecord),
}

/// A [`diagnostics::Warning`] as it crosses the vtable: borrowed UTF-8
/// strings (pointer and length), valid for the call.
#[repr(C)]
#[derive(Debug)]
pub struct WarningRecord {
    /// `WarningKind::to_u32`.
    pub kind: u32,
    /// Non-zero if the `reader_*` fields hold the oldest reader.
    pub has_reader: u32,
    /// The emitting thread.
    pub tid: i64,
    /// The domain's name.
    pub domain: *const u8,
    /// Its length in bytes.
    pub domain_len: usize,
    /// The message.
    pub message: *const u8,
    /// Its length in bytes.
    pub message_len: usize,
    /// `ReaderInfo::tid`.
    pub reader_tid: i64,
    /// `ReaderInfo::thread_name`.
    pub reader_thread: *const u8,
    /// Its length in bytes.
    pub reader_thread_len: usize,
    /// `ReaderInfo::location`.
    pub reader_location: *const u8,
    /// Its length in bytes.
    pub reader_location_len: usize,
    /// `ReaderInfo::held_for`, in nanoseconds (saturated).
    pub reader_held_ns: u64,
}

impl WarningRecord {
    /// A record borrowing `w`'s strings.
    pub(crate) fn of(w: &diagnostics::Warning) -> WarningRecord {
        let r = w.oldest_reader.as_ref();
        let s = |x: Option<&String>| x.map_or((std::ptr::null(), 0), |x| (x.as_ptr(), x.len()));
        let (rt, rtl) = s(r.map(|r| &r.thread_name));
        let (rl, rll) = s(r.map(|r| &r.location));
        WarningRecord {
            kind: w.kind.to_u32(),
            has_reader: r.is_some() as u32,
            tid: w.tid,
            domain: w.domain.as_ptr(),
            domain_len: w.domain.len(),
            message: w.message.as_ptr(),
            message_len: w.message.len(),
            reader_tid: r.map_or(0, |r| r.tid),
            reader_thread: rt,
            reader_thread_len: rtl,
            reader_location: rl,
            reader_location_len: rll,
            reader_held_ns: r.map_or(0, |r| u64::try_from(r.held_for.as_nanos()).unwrap_or(u64::MAX)),
        }
    }

    /// The warning back, its strings copied.
    ///
    /// # Safety
    /// Every pointer with a non-zero length points at that many readable
    /// bytes.
    unsafe fn to_warning(&self) -> diagnostics::Warning {
        let text = |p: *const u8, len: usize| {
            if len == 0 {
                String::new()
            } else {
                // SAFETY: the caller's promise.
                String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(p, len) }).into_owned()
            }
        };
        diagnostics::Warning {
            kind: WarningKind::from_u32(self.kind),
            domain: text(self.domain, self.domain_len),
            message: text(self.message, self.message_len),
            oldest_reader: (self.has_reader != 0).then(|| diagnostics::ReaderInfo {
                tid: self.reader_tid,
                thread_name: text(self.reader_thread, self.reader_thread_len),
                location: text(self.reader_location, self.reader_location_len),
                held_for: Duration::from_nanos(self.reader_held_ns),
            }),
            tid: self.tid,
        }
    }
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
    trace: &crate::trace::HOST_TRACE_VTABLE,
    tasks: &crate::tasks::HOST_TASKS_VTABLE,
    alloc_slot: rt_alloc_slot,
    emit: rt_emit,
};

/// The runtime installed by a loader, if any. Acquire/Release: the table is
/// a `'static` in the host, fully built before the pointer is published.
static INSTALLED: AtomicPtr<RuntimeVTable> = AtomicPtr::new(std::ptr::null_mut());

/// This copy's own runtime vtable: what a host hands to its plugins.
pub fn host_vtable() -> &'static RuntimeVTable {
    // The loader asks for it before it loads a plugin: see `prime`.
    prime();
    &HOST_VTABLE
}

/// Detect now, outside any read side, what this copy of the crate would
/// otherwise detect on first use: the rseq offset, which takes `dlsym`
/// (glibc's loader lock, held by a concurrent `dlopen` or `dlclose`) and
/// the environment's lock. A thread that blocked on them inside a Tasks
/// read side (a probe's trampoline clears the rseq descriptor after the
/// probe, `usrcu::clear_rseq_descriptor`) counts as quiescent while it
/// waits; a plugin being unloaded was then unmapped under it, and it died
/// of SIGSEGV returning into the plugin's copy of this crate
/// (`tests/tests/redteam6_unload.rs`, hot reload under fire, 4 runs in 80
/// under load before this).
fn prime() {
    let _ = crate::reader::rseq::offset();
}

/// Is this copy of the crate a plugin's (another copy's vtable is
/// installed), not the host's?
pub(crate) fn is_plugin_copy() -> bool {
    !std::ptr::eq(current(), &HOST_VTABLE)
}

/// The runtime this copy of the crate uses: the installed one, else its own.
pub fn current() -> &'static RuntimeVTable {
    // Acquire: pairs with the Release in `install`.
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
    // Before the plugin's code can run anywhere (its `init` comes later):
    // see `prime`.
    prime();
    // Release: pairs with the Acquire in `current`.
    INSTALLED.store(vt as *mut RuntimeVTable, Ordering::Release);
    Ok(())
}

/// The domain's runtime state, attaching it if needed.
///
/// # Safety
/// `s` points at a live `Srcu`.
unsafe fn state<'a>(s: *const Srcu) -> &'a DomainState {
    // SAFETY: caller guarantees `s` is live; attach publishes `private`
    // before `percpu`, and both stay valid until a successful cleanup, which
    // nobody races (see `Srcu::cleanup`).
    unsafe {
        let s = &*s;
        s.percpu_or_attach();
        &*s.private_ptr()
    }
}

fn deadline(timeout_ns: u64) -> Option<Instant> {
    (timeout_ns != FOREVER).then(|| Instant::now() + Duration::from_nanos(timeout_ns))
}

unsafe extern "C" fn rt_attach(s: *const Srcu) -> *const PerCpu {
    // SAFETY: the caller passes a live domain.
    unsafe {
        let s = &*s;
        s.set_runtime_if_unset(&HOST_VTABLE);
        crate::attach::attach_once(s.state_word(), s.percpu_word(), || state::build_state(s))
    }
}

unsafe extern "C" fn rt_synchronize(s: *const Srcu, expedited: u32, timeout_ns: u64) -> u32 {
    // SAFETY: the caller passes a live domain.
    let st = unsafe { state(s) };
    let urgency = if expedited != 0 {
        Urgency::Expedited
    } else {
        Urgency::Normal
    };
    let c = st.gp.snap();
    if expedited != 0 && st.stats.expedite_upto.load(Ordering::Relaxed) < c.0 {
        // Counted in `completed` (runtime/stall.rs), once per grace period.
        // Relaxed load and store, not an RMW: a statistic, and this is the
        // expedited path's fast case (an RMW measured about 30 ns of a
        // 370 ns idle grace period). Two racing callers may leave the
        // smaller cookie; the grace period of the larger one then counts
        // as normal: the count can only come out low, never above
        // `grace_periods`.
        st.stats.expedite_upto.store(c.0, Ordering::Relaxed);
    }
    let done = st.gp.wait_for(c, &st.pc, st.mode, urgency, st, deadline(timeout_ns));
    if !done {
        // Leave no half-done grace period behind: the driver finishes it.
        st.request_gp(c);
        driver::schedule_at(st.arc(), Instant::now());
    }
    done as u32
}

unsafe extern "C" fn rt_call_srcu(
    s: *const Srcu,
    head: *mut CallbackHead,
    func: unsafe extern "C" fn(*mut CallbackHead),
) {
    // SAFETY: the caller passes a live domain.
    let st = unsafe { state(s) };
    let ticket_cookie = std::cell::Cell::new(Cookie(0));
    // SAFETY: `call_srcu_raw`'s contract hands `head` to us.
    unsafe {
        st.cbs.enqueue(crate::percpu::current_cpu(), head, func, || {
            // `enqueue` issued the snap's fence after the ticket.
            let c = st.gp.snap_after_fence();
            ticket_cookie.set(c);
            c
        })
    };
    if st.request_gp(ticket_cookie.get()) {
        // A new grace period is needed (once per grace period, not per
        // callback): have the driver start it after a short batching delay,
        // so that a stream of callbacks shares grace periods (and their
        // membarrier IPIs) instead of paying one each; `barrier` and
        // `synchronize` do not wait for this delay.
        driver::schedule_at(st.arc(), Instant::now() + CALLBACK_GP_DELAY);
    } else {
        // `enqueue`'s fence after the ticket was the handshake's producer fence.
        driver::kick(st);
    }
}

unsafe extern "C" fn rt_alloc_slot(s: *const Srcu) -> *mut CallbackHead {
    // SAFETY: the caller passes a live domain.
    let st = unsafe { state(s) };
    st.cbs.take_slot(crate::percpu::current_cpu())
}

unsafe extern "C" fn rt_barrier(s: *const Srcu, timeout_ns: u64) -> u32 {
    // SAFETY: the caller passes a live domain.
    let st = unsafe { state(s) };
    if invoke::serving(st) {
        diagnostics::warn(
            WarningKind::IllegalSynchronize,
            &st.name,
            format!(
                "usrcu: barrier() on domain '{}' from inside one of its own callbacks would wait for itself; refused",
                st.name
            ),
        );
        return BARRIER_REFUSED;
    }
    Counters::add(&st.stats.barriers_issued, 1);
    let end = deadline(timeout_ns);
    // Callbacks queued before a cleanup from one of this domain's own
    // callbacks stay on the state it left (`state::orphan_state`) until they
    // have run: wait for them first, as for callbacks queued here. Not from
    // one of those callbacks, which would wait for itself.
    for o in state::orphans_of(st.srcu) {
        if invoke::serving(&o) {
            continue;
        }
        if let Some(b) = o.cbs.barrier_begin(crate::percpu::current_cpu()) {
            driver::schedule_at(o.clone(), Instant::now());
            if wait_barrier(&o, b, end) == BARRIER_TIMED_OUT {
                return BARRIER_TIMED_OUT;
            }
        }
    }
    let Some(b) = st.cbs.barrier_begin(crate::percpu::current_cpu()) else {
        return BARRIER_DONE;
    };
    // Someone waits: no batching delay for the grace periods the callbacks
    // before the marker need.
    driver::schedule_at(st.arc(), Instant::now());
    wait_barrier(st, b, end)
}

/// Wait for `b`, a barrier of `st`, until `end`.
fn wait_barrier(st: &DomainState, b: crate::callbacks::Barrier, end: Option<Instant>) -> u32 {
    loop {
        // While the driver could not be started (`spawn.rs`), nothing else
        // may retry the start (no producer kicks): wake every
        // `START_RETRY` to retry it, as the Tasks flavors do.
        let slice = driver::start_failed().then(|| Instant::now() + START_RETRY);
        let until = match (end, slice) {
            (None, None) => {
                b.wait();
                return BARRIER_DONE;
            }
            (Some(e), None) => e,
            (None, Some(s)) => s,
            (Some(e), Some(s)) => e.min(s),
        };
        if b.wait_until(until) {
            return BARRIER_DONE;
        }
        if end.is_some_and(|e| Instant::now() >= e) {
            return BARRIER_TIMED_OUT;
        }
        driver::retry_start(st);
    }
}

/// How often a `barrier` or `poll_state` waiting on a driver that could not
/// be started retries the start.
const START_RETRY: Duration = Duration::from_millis(10);

unsafe extern "C" fn rt_get_state(s: *const Srcu, start: u32) -> u64 {
    // SAFETY: the caller passes a live domain.
    let st = unsafe { state(s) };
    let c = st.gp.snap();
    if start != 0 && !st.gp.done(c) && st.request_gp(c) {
        driver::schedule_at(st.arc(), Instant::now());
    }
    c.0
}

unsafe extern "C" fn rt_poll_state(s: *const Srcu, c: u64) -> u32 {
    // SAFETY: the caller passes a live domain.
    let st = unsafe { state(s) };
    let done = st.gp.done(Cookie(c));
    if !done && driver::start_failed() {
        // A `start_poll` whose driver could not be started: nothing else
        // may retry the start while the caller only polls (`spawn.rs`).
        // `retry_start` attempts it at most once per `START_RETRY`.
        driver::retry_start(st);
    }
    done as u32
}

unsafe extern "C" fn rt_cleanup(s: *const Srcu) -> u32 {
    // SAFETY: the caller passes a live domain and nobody else uses it
    // concurrently (`Srcu::cleanup`'s contract).
    unsafe { crate::cleanup::cleanup_in_runtime(&*s) }
}

unsafe extern "C" fn rt_stats(s: *const Srcu, out: *mut SrcuStats) {
    // SAFETY: the caller passes a live domain and a writable `out`.
    unsafe {
        let snap = match state::attached_state(&*s) {
            None => SrcuStats::default(),
            Some(st) => {
                let mut x = st.stats.snapshot(st.possible_cpus());
                x.callbacks_queued = st.cbs.queued_callbacks();
                x.runtime_bytes = st.footprint() as u64;
                x.percpu_bytes = st.pc.bytes() as u64;
                x.percpu_chunks = st.pc.chunks_touched() as u64;
                x
            }
        };
        *out = snap;
    }
}

unsafe extern "C" fn rt_reader_enter(s: *const Srcu, file: *const u8, len: usize, line: u32, col: u32) -> u64 {
    // SAFETY: the caller passes `len` bytes at `file`, valid for this call
    // (they are copied).
    let file = unsafe { std::slice::from_raw_parts(file, len) };
    // Keyed by the domain's state, which stays put, not by the `Srcu`'s
    // address, which changes if the domain is moved after its first use.
    // SAFETY: the caller passes a live domain, attached before this call.
    let st = unsafe { state(s) } as *const DomainState as usize;
    readers::enter(st, file, line, col)
}

unsafe extern "C" fn rt_reader_exit(_s: *const Srcu, token: u64) {
    readers::exit(token);
}

unsafe extern "C" fn rt_emit(w: *const WarningRecord) {
    // SAFETY: the caller (a plugin's `diagnostics::emit`) passes a record
    // borrowing live strings of the lengths it gives.
    let w = unsafe { (*w).to_warning() };
    diagnostics::emit_here(w);
}

unsafe extern "C" fn rt_report(s: *const Srcu, kind: u32, msg: *const u8, len: usize) {
    // SAFETY: the caller passes a UTF-8 message of `len` bytes.
    let msg = unsafe { String::from_utf8_lossy(std::slice::from_raw_parts(msg, len)).into_owned() };
    let domain = if s.is_null() {
        // The domain whose callback this thread runs; else the flavor whose
        // thread this is (Tasks and Tasks Trace callbacks run on their own).
        invoke::serving_name().unwrap_or_else(|| {
            let (_, thread) = readers::this_thread();
            if thread.starts_with("usrcu-tasks") {
                crate::tasks::DOMAIN_NAME.to_owned()
            } else if thread.starts_with("usrcu-trace") {
                crate::trace::DOMAIN_NAME.to_owned()
            } else {
                String::new()
            }
        })
    } else {
        // SAFETY: non-null pointers passed here are live domains.
        unsafe { (*s).name().to_owned() }
    };
    diagnostics::warn(WarningKind::from_u32(kind), &domain, msg);
}
