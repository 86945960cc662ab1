//! Warnings: to the `log` crate and to captures that tests can assert on.
//!
//! Every warning the library emits (missed barrier, readers active at
//! cleanup, grace period in flight at cleanup, leak, stall, illegal
//! synchronize inside a read section, panicking callback) is a [`Warning`]
//! with a structured [`WarningKind`]. It is logged with `log::warn!` under
//! the target `usrcu`, and copied into every open [`Capture`].
//!
//! Warnings are emitted by the runtime of the process (the host's, in a
//! plugin host): open captures in the host.
//!
//! ```
//! use usrcu::{diagnostics::{Capture, WarningKind}, Srcu};
//!
//! let cap = Capture::start();
//! let d = Srcu::new("doc-capture");
//! let g = d.read_lock_raw();
//! // SAFETY: nothing else touches `d`; cleanup refuses while a reader is inside.
//! assert!(unsafe { d.cleanup() }.is_err());
//! assert!(cap.for_domain("doc-capture").iter().any(|w| w.kind == WarningKind::ReadersActive));
//! // SAFETY: `g` came from `d.read_lock_raw()` and is ended once.
//! unsafe { d.read_unlock_raw(g) };
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WarningKind {
    /// Cleanup found callbacks still pending: a `barrier` was missed
    /// (the kernel's "Forgot srcu_barrier(), so just leak it!").
    MissedBarrier,
    /// Cleanup found readers inside a section.
    ReadersActive,
    /// Cleanup found a grace period running or requested.
    GracePeriodInFlight,
    /// Per-CPU state was leaked instead of freed.
    Leak,
    /// A grace period waited longer than the stall timeout.
    Stall,
    /// `synchronize` or `barrier` inside a read section of the same domain.
    IllegalSynchronize,
    /// A callback panicked; the runtime caught it and went on.
    CallbackPanicked,
    /// Anything else worth a warning.
    Other,
    /// A Tasks Trace grace period waited longer than the stall timeout; the
    /// message and `oldest_reader` name the holdout threads.
    TraceStall,
    /// A Tasks grace period waited longer than the stall timeout; the
    /// message names each holdout's tid, name and state.
    TasksStall,
    /// The runtime could not start one of its threads (the grace-period
    /// driver or a callback invoker); the work stays queued and the start
    /// is retried. Reported once per episode of failures.
    ThreadStartFailed,
}

impl WarningKind {
    pub(crate) fn to_u32(self) -> u32 {
        match self {
            WarningKind::MissedBarrier => 1,
            WarningKind::ReadersActive => 2,
            WarningKind::GracePeriodInFlight => 3,
            WarningKind::Leak => 4,
            WarningKind::Stall => 5,
            WarningKind::IllegalSynchronize => 6,
            WarningKind::CallbackPanicked => 7,
            WarningKind::Other => 0,
            WarningKind::TraceStall => 8,
            WarningKind::TasksStall => 9,
            WarningKind::ThreadStartFailed => 10,
        }
    }

    pub(crate) fn from_u32(v: u32) -> WarningKind {
        match v {
            1 => WarningKind::MissedBarrier,
            2 => WarningKind::ReadersActive,
            3 => WarningKind::GracePeriodInFlight,
            4 => WarningKind::Leak,
            5 => WarningKind::Stall,
            6 => WarningKind::IllegalSynchronize,
            7 => WarningKind::CallbackPanicked,
            8 => WarningKind::TraceStall,
            9 => WarningKind::TasksStall,
            10 => WarningKind::ThreadStartFailed,
            _ => WarningKind::Other,
        }
    }
}

/// The oldest reader of a stalled grace period (debug builds of the reader's
/// code only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaderInfo {
    /// Kernel thread id.
    pub tid: i64,
    /// Thread name as the kernel knows it (15 bytes at most).
    pub thread_name: String,
    /// `file:line:column` of the `read_lock` call.
    pub location: String,
    /// How long the reader has been inside.
    pub held_for: Duration,
}

/// One warning.
#[derive(Clone, Debug)]
pub struct Warning {
    /// What kind.
    pub kind: WarningKind,
    /// The domain's name ("" if unknown).
    pub domain: String,
    /// The full message, as logged.
    pub message: String,
    /// For stalls: the oldest reader, where known.
    pub oldest_reader: Option<ReaderInfo>,
    /// Kernel thread id of the thread that emitted the warning (for
    /// attributing it, e.g. to a plugin's `exit` running on that thread).
    pub tid: i64,
}

impl Warning {
    /// A warning emitted by the calling thread.
    pub fn new(kind: WarningKind, domain: impl Into<String>, message: impl Into<String>) -> Warning {
        Warning {
            kind,
            domain: domain.into(),
            message: message.into(),
            oldest_reader: None,
            tid: current_tid(),
        }
    }
}

/// Kernel thread id of the calling thread (no `std::thread::current()`,
/// which plugin code must not touch).
pub fn current_tid() -> i64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i64 }
}

type Sink = Arc<Mutex<Vec<Warning>>>;

static SINKS: Mutex<Vec<Sink>> = Mutex::new(Vec::new());

fn sinks() -> std::sync::MutexGuard<'static, Vec<Sink>> {
    SINKS.lock().unwrap_or_else(|p| p.into_inner())
}

/// `SINKS`, held across a `fork` by the runtime's handler
/// (`runtime/fork.rs`): every use of a capture's own lock happens under
/// `SINKS` too, so a child never finds either held by a thread it does not
/// have.
pub(crate) struct SinksForkGuard(#[allow(dead_code)] std::sync::MutexGuard<'static, Vec<Sink>>);

/// Take `SINKS` for the fork handler (a leaf: nothing else is taken under it).
pub(crate) fn lock_sinks_for_fork() -> SinksForkGuard {
    SinksForkGuard(sinks())
}

/// Emit a warning: log it and copy it to every open capture. A logger that
/// panics loses that record and nothing else: the panic is caught here.
///
/// In a plugin, the warning goes to the host (its logger and its
/// captures, where a host's tests look), and to the captures opened by the
/// plugin's own code.
///
/// ```
/// use usrcu::diagnostics::{capture, emit, Warning, WarningKind};
///
/// let ((), seen) = capture(|| emit(Warning::new(WarningKind::Other, "doc-domain", "doc: hello")));
/// assert!(seen.iter().any(|w| w.domain == "doc-domain" && w.message == "doc: hello"));
/// ```
pub fn emit(w: Warning) {
    if crate::runtime::is_plugin_copy() {
        // The host's logger may block, with the plugin's frames below it: a
        // callout (`runtime::callouts`), as for the plugin's other warnings.
        let _callout = crate::runtime::callouts::enter();
        let rec = crate::runtime::WarningRecord::of(&w);
        // SAFETY: `rec` borrows `w`'s strings, alive across the call.
        unsafe { (crate::runtime::current().emit)(&rec) };
        push_to_captures(&w);
        return;
    }
    emit_here(w);
}

/// [`emit`] in this copy: its logger and its captures.
pub(crate) fn emit_here(w: Warning) {
    // The logger is user code, and warnings are emitted on the runtime's
    // threads and inside its `extern "C"` functions, where a panic would
    // kill the thread or abort the process. The payload is leaked, not
    // dropped: its drop is user code too.
    let logged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        log::warn!(target: "usrcu", "{}", w.message);
    }));
    if let Err(p) = logged {
        std::mem::forget(p);
    }
    push_to_captures(&w);
}

/// Copy `w` to every capture open in this copy of the crate.
fn push_to_captures(w: &Warning) {
    for s in sinks().iter() {
        s.lock().unwrap_or_else(|p| p.into_inner()).push(w.clone());
    }
}

/// Run `f`; if it panics, catch the panic and report it as a
/// [`WarningKind::CallbackPanicked`] warning whose message begins with
/// `context`, through the runtime this copy uses (the host's, so that the
/// host's captures and logger see it), and return normally.
///
/// For code that calls user code on another party's stack: a plugin's
/// function called from a host thread must not unwind into the host,
/// whose copy of `std` cannot catch a panic raised by the plugin's copy (it
/// aborts the process). Wrap the call on the plugin's side, as the
/// tracepoint probes of `usrcu-registry` are.
///
/// ```
/// use usrcu::diagnostics::{capture, catch_panic, WarningKind};
///
/// let ((), warnings) = capture(|| catch_panic("doc: my hook", || panic!("boom")));
/// assert!(warnings
///     .iter()
///     .any(|w| w.kind == WarningKind::CallbackPanicked && w.message.contains("doc: my hook")));
/// ```
pub fn catch_panic(context: &str, f: impl FnOnce()) {
    crate::runtime::run_catching_panic(context, f)
}

/// Build and emit a warning.
pub(crate) fn warn(kind: WarningKind, domain: &str, message: String) {
    emit(Warning::new(kind, domain, message));
}

/// Collects every warning emitted while it is open, from any thread.
///
/// Captures are process-wide: tests running side by side see each other's
/// warnings, so filter by domain name ([`Capture::for_domain`]).
#[derive(Debug)]
pub struct Capture {
    sink: Sink,
}

impl Capture {
    /// Start capturing.
    pub fn start() -> Capture {
        let sink: Sink = Arc::default();
        sinks().push(sink.clone());
        Capture { sink }
    }

    /// Everything captured so far.
    pub fn warnings(&self) -> Vec<Warning> {
        // Under `SINKS`, as `emit`'s pushes: see `lock_sinks_for_fork`.
        let all = sinks();
        let w = self.sink.lock().unwrap_or_else(|p| p.into_inner()).clone();
        drop(all);
        w
    }

    /// Captured warnings about the domain named `name`.
    pub fn for_domain(&self, name: &str) -> Vec<Warning> {
        self.warnings().into_iter().filter(|w| w.domain == name).collect()
    }

    /// Captured warnings of `kind` about the domain named `name`.
    pub fn find(&self, name: &str, kind: WarningKind) -> Vec<Warning> {
        self.for_domain(name).into_iter().filter(|w| w.kind == kind).collect()
    }

    /// Wait up to `timeout` for a warning of `kind` about `name`.
    pub fn wait_for(&self, name: &str, kind: WarningKind, timeout: Duration) -> Option<Warning> {
        // None: a timeout past what an `Instant` can hold waits without limit.
        let end = Instant::now().checked_add(timeout);
        loop {
            if let Some(w) = self.find(name, kind).into_iter().next() {
                return Some(w);
            }
            if end.is_some_and(|end| Instant::now() >= end) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        sinks().retain(|s| !Arc::ptr_eq(s, &self.sink));
    }
}

/// Run `f` under a capture and return its result with the warnings.
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Vec<Warning>) {
    let cap = Capture::start();
    let r = f();
    (r, cap.warnings())
}
