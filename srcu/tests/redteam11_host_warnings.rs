//! Red team (round 11): `usrcu::diagnostics::emit` marks its whole
//! duration as a *callout* (`runtime::callouts`), and a Tasks grace period
//! does not count a thread blocked inside a callout as quiescent. The mark
//! is there for a plugin's hook or probe below the logger; but `emit` is
//! also reached from plain host code with no hook below it:
//!
//! * a host thread's own `usrcu::diagnostics::catch_panic` (public API)
//!   that catches a panic of host code;
//! * an SRCU callback of the host's that panics, on a runtime invoker
//!   thread.
//!
//! A host logger that takes the host's configuration lock (to read its
//! output settings) then blocks on it while another host thread, holding
//! that lock, waits for a Tasks grace period (it retires one of its own
//! hooks, `HookSlot::set_sync`/`clear_sync`, or polls a cookie). Neither
//! thread is in a hook: the grace period should count the logging thread
//! (blocked, outside every hook) as quiescent. With the callout rule it
//! waits for it, and it waits for the lock: a deadlock (here bounded by a
//! poll with a timeout).
//!
//! Each scenario runs in a child (a hang dies by SIGALRM).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use usrcu::tasks::HookSlot;
use usrcu::Srcu;

#[path = "common/child.rs"]
mod child;

const CHILD_ENV: &str = "USRCU_REDTEAM11_WARNINGS_CHILD";

/// The host's configuration, read by its logger.
static CONFIG: Mutex<u32> = Mutex::new(0);
/// Set by the logger just before it takes `CONFIG` for a `usrcu` record.
static LOGGER_WAITING: AtomicBool = AtomicBool::new(false);

struct ConfigLogger;

impl log::Log for ConfigLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target() != "usrcu" {
            return;
        }
        LOGGER_WAITING.store(true, Ordering::SeqCst);
        let level = *CONFIG.lock().unwrap_or_else(|p| p.into_inner());
        std::hint::black_box(level);
    }
    fn flush(&self) {}
}

static LOGGER: ConfigLogger = ConfigLogger;

extern "C" fn host_hook(x: u64) -> u64 {
    x + 1
}

static HOOK: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

/// Install the logger and a host hook (so Tasks grace periods are real).
fn setup() {
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    // SAFETY: `host_hook` never blocks, touches nothing, stores no pointer.
    unsafe { HOOK.set_sync(Some(host_hook)) };
    assert_eq!(HOOK.call(1), Some(2));
}

/// With `CONFIG` held, start `warn` (which makes a `usrcu` warning on some
/// thread), wait until the logger blocks on `CONFIG`, then wait (bounded)
/// for a Tasks grace period while still holding the lock, as a host that
/// retires a hook under its configuration lock would.
fn scenario(warn: impl FnOnce()) {
    let guard = CONFIG.lock().unwrap();
    warn();
    let t0 = Instant::now();
    while !LOGGER_WAITING.load(Ordering::SeqCst) {
        assert!(t0.elapsed() < Duration::from_secs(20), "no usrcu warning was logged");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50)); // blocked on CONFIG now
    let done = usrcu::tasks::start_poll().wait_timeout(Duration::from_secs(10));
    drop(guard);
    assert!(
        done,
        "a Tasks grace period waited for a host thread blocked in the host's logger with no hook below it"
    );
}

#[test]
fn a_host_threads_own_catch_panic_warning_is_not_a_tasks_reader() {
    child::Child::new("catch_panic_entry")
        .env(CHILD_ENV, "1")
        .must_pass("RT11-CATCH-PANIC-OK");
}

#[test]
fn catch_panic_entry() {
    if !child::in_child(CHILD_ENV, Some(60)) {
        return;
    }
    setup();
    let mut t = None;
    scenario(|| {
        t = Some(std::thread::spawn(|| {
            usrcu::diagnostics::catch_panic("rt11: host job", || panic!("host job failed"));
        }));
    });
    t.unwrap().join().unwrap();
    println!("RT11-CATCH-PANIC-OK");
}

#[test]
fn a_panicking_host_srcu_callbacks_warning_is_not_a_tasks_reader() {
    child::Child::new("invoker_entry")
        .env(CHILD_ENV, "1")
        .must_pass("RT11-INVOKER-OK");
}

#[test]
fn invoker_entry() {
    if !child::in_child(CHILD_ENV, Some(60)) {
        return;
    }
    setup();
    let d: &'static Srcu = Box::leak(Box::new(Srcu::new("rt11-host")));
    scenario(|| d.call_srcu(|| panic!("host callback failed")));
    d.barrier();
    println!("RT11-INVOKER-OK");
}

/// The control: the same host thread logging a `usrcu`-target record with
/// `log::warn!` itself (no callout): the grace period ends.
#[test]
fn control_a_host_threads_own_log_record_is_not_a_tasks_reader() {
    child::Child::new("control_entry")
        .env(CHILD_ENV, "1")
        .must_pass("RT11-CONTROL-OK");
}

#[test]
fn control_entry() {
    if !child::in_child(CHILD_ENV, Some(60)) {
        return;
    }
    setup();
    let mut t = None;
    scenario(|| {
        t = Some(std::thread::spawn(|| {
            log::warn!(target: "usrcu", "the host's own record");
        }));
    });
    t.unwrap().join().unwrap();
    println!("RT11-CONTROL-OK");
}
