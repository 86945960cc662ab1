//! Red team (round 12): a plugin reports a problem with the public
//! `usrcu::diagnostics::emit`. Its documentation (srcu/src/diagnostics.rs):
//! "Emit a warning: log it and copy it to every open capture", and of
//! `Capture`: "Collects every warning emitted while it is open, from any
//! thread. Captures are process-wide". `emit` is not marked "Host only"
//! (as `tasks::idle` and others are), and `catch_panic`, its neighbour, goes
//! "through the runtime this copy uses (the host's, so that the host's
//! captures and logger see it)".
//!
//! The host's logger receives the plugin's warning (through the plugin's
//! `log` bridge), but the host's open `Capture` does not: `emit` copies the
//! warning into the sinks of the plugin's own copy of `usrcu`.
//!
//! One test binary of its own: it installs a process-wide logger.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use usrcu::diagnostics::{emit, Capture, Warning, WarningKind};
use usrcu_module_loader::ModuleLoader;
use usrcu_tests::fixture_path;

static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Recorder;
impl log::Log for Recorder {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        LOGGED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(r.args().to_string());
    }
    fn flush(&self) {}
}

fn logged(needle: &str) -> bool {
    LOGGED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|l| l.contains(needle))
}

#[test]
fn a_plugins_emitted_warning_reaches_the_hosts_capture() {
    let _ = log::set_logger(&Recorder);
    log::set_max_level(log::LevelFilter::Trace);
    let cap = Capture::start();
    // Control: the host's own `emit` reaches both.
    emit(Warning::new(WarningKind::Other, "rt12.host", "rt12 host warning"));
    assert!(logged("rt12 host warning"));
    assert_eq!(cap.find("rt12.host", WarningKind::Other).len(), 1);

    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let h = unsafe { loader.load(fixture_path("redteam12-emit")) }.unwrap();
    // SAFETY: the fixture exports `fx_emit` with this signature.
    let f = unsafe { loader.symbol::<extern "C" fn()>(h, "fx_emit") }.unwrap();
    f.call(|f| f.call()).unwrap();
    drop(f);
    assert!(loader.unload(h).unwrap().unmapped);
    let reached_logger = logged("rt12 plugin warning");
    let captured = cap.find("rt12.emit", WarningKind::Other);
    assert!(
        !captured.is_empty(),
        "the plugin's warning reached the host logger: {reached_logger}; the host's capture holds: {:?}",
        cap.warnings()
            .iter()
            .map(|w| (w.kind, w.domain.clone(), w.message.clone()))
            .collect::<Vec<_>>()
    );
}

/// `usrcu::trace::on_callback_thread`: "Is the calling thread the
/// `usrcu-trace` callback thread?" (srcu/src/trace/mod.rs), with no "Host
/// only" mark (its Tasks twin, `tasks::on_callback_thread`, has one). A
/// plugin's trace callback asking it (to avoid a `barrier` that would wait
/// for itself) is told false: the answer is a thread-local of the plugin's
/// own copy of `usrcu`, which only the host's engine sets.
#[test]
fn a_plugins_trace_callback_knows_it_runs_on_the_trace_thread() {
    // Control: the host's own callback is told true.
    let host = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let h2 = host.clone();
    usrcu::trace::call(move || h2.store(1 + u32::from(usrcu::trace::on_callback_thread()), Ordering::SeqCst));
    usrcu::trace::barrier();
    assert_eq!(host.load(Ordering::SeqCst), 2, "host callback");

    static OUT: AtomicU32 = AtomicU32::new(0);
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let h = unsafe { loader.load(fixture_path("redteam12-emit")) }.unwrap();
    // SAFETY: the fixture exports `fx_trace_cb_thread` with this signature.
    let f = unsafe { loader.symbol::<unsafe extern "C" fn(*const AtomicU32)>(h, "fx_trace_cb_thread") }.unwrap();
    // SAFETY: `OUT` is a static: it outlives the callback.
    f.call(|f| unsafe { f.call(&OUT) }).unwrap();
    drop(f);
    usrcu::trace::barrier();
    let seen = OUT.load(Ordering::SeqCst);
    assert!(loader.unload(h).unwrap().unmapped);
    assert_eq!(
        seen, 2,
        "1: the plugin's callback ran and was told it is not on the trace thread"
    );
}

/// The Tasks twin: a plugin's Tasks callback asking `tasks::on_callback_thread`
/// is told the host's answer (true), not its own copy's thread-local.
#[test]
fn a_plugins_tasks_callback_knows_it_runs_on_the_tasks_thread() {
    static OUT: AtomicU32 = AtomicU32::new(0);
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let h = unsafe { loader.load(fixture_path("redteam12-emit")) }.unwrap();
    // SAFETY: the fixture exports `fx_tasks_cb_thread` with this signature.
    let f = unsafe { loader.symbol::<unsafe extern "C" fn(*const AtomicU32)>(h, "fx_tasks_cb_thread") }.unwrap();
    // SAFETY: `OUT` is a static: it outlives the callback.
    f.call(|f| unsafe { f.call(&OUT) }).unwrap();
    drop(f);
    usrcu::tasks::barrier();
    let seen = OUT.load(Ordering::SeqCst);
    assert!(loader.unload(h).unwrap().unmapped);
    assert_eq!(
        seen, 2,
        "1: the plugin's Tasks callback was told it is not on the Tasks thread"
    );
    assert!(!usrcu::tasks::on_callback_thread());
}
