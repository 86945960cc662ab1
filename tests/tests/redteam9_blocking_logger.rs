//! Red team (round 9): a plugin's probe on a normal host tracepoint, or its
//! hook in a host `HookSlot`, logs (`log::error!`, which `docs/plugins.md`
//! says reaches the host's logger "as anywhere else"), and the host's
//! logger blocks for a while (a lock held by another thread, a full
//! channel, a slow pipe). Meanwhile another host thread unloads the plugin.
//!
//! Tasks RCU, which guards probes of normal tracepoints and hooks, counts a
//! thread blocked in the kernel as having left every probe and hook; the
//! plugin's frame is still on that thread's stack, under the logger's. An
//! unload that trusts the grace period unmaps the object, and the thread
//! returns into unmapped code when the logger returns.
//!
//! A probe that only panics does it too: the panic is caught and reported
//! as a usrcu warning, which reaches the host's logger on the same thread.
//!
//! The same on a faultable tracepoint holds (Tasks Trace marks the thread).
//!
//! Each scenario runs in a child (with an alarm against a hang); the parent
//! asserts that the child exited cleanly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{LoaderConfig, ModuleHandle, ModuleLoader};
use usrcu_registry::define_tracepoint;
use usrcu_registry::tracepoint::Tracepoint;
use usrcu_tests::{fixture_path, Child};

const CHILD: &str = "RT9_BLOCKING_CHILD";

static IN_LOGGER: AtomicBool = AtomicBool::new(false);
static RELEASE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

/// The host's logger: a record of target `rt9.reenter`, or usrcu's warning
/// about the probe that panicked, waits until the test releases it (a
/// logger blocked on something else).
struct Blocking;

impl log::Log for Blocking {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let panic_warning = record.target() == "usrcu" && record.args().to_string().contains("rt9-probe-panic");
        if record.target() != "rt9.reenter" && !panic_warning {
            return;
        }
        IN_LOGGER.store(true, Ordering::SeqCst);
        let mut released = RELEASE.0.lock().unwrap_or_else(|p| p.into_inner());
        while !*released {
            released = RELEASE.1.wait(released).unwrap_or_else(|p| p.into_inner());
        }
    }
    fn flush(&self) {}
}

static BLOCKING: Blocking = Blocking;

fn parent(test: &str) {
    // Built here, before the child arms its alarm.
    fixture_path("redteam9-reenter");
    Child::new(test)
        .env(CHILD, "1")
        .run()
        .assert_passed("", "the child host failed");
}

fn setup() -> (ModuleLoader, ModuleHandle) {
    log::set_logger(&BLOCKING).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_secs(2),
        ..LoaderConfig::default()
    });
    // SAFETY: the fixture upholds the plugin contract.
    let m = unsafe { loader.load(fixture_path("redteam9-reenter")) }.unwrap();
    // SAFETY: `alarm` only arms a timer: a hang dies of SIGALRM.
    unsafe { libc::alarm(60) };
    (loader, m)
}

/// Run `enter` (which reaches the plugin's logging code) on a thread, wait
/// until it is blocked in the logger, unload from this thread, release.
fn unload_while_blocked_in_logger(loader: &ModuleLoader, m: ModuleHandle, enter: fn()) {
    std::thread::scope(|s| {
        let t = s.spawn(enter);
        let t0 = Instant::now();
        while !IN_LOGGER.load(Ordering::SeqCst) {
            assert!(t0.elapsed() < Duration::from_secs(30), "the plugin never logged");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Let the logging thread reach its wait (it is blocked either way
        // once it waits on the condvar).
        std::thread::sleep(Duration::from_millis(50));
        let r = loader.unload(m);
        let unmapped = matches!(&r, Ok(rep) if rep.unmapped);
        println!("unload while the plugin's frame is under the blocked logger: unmapped {unmapped}: {r:?}");
        *RELEASE.0.lock().unwrap() = true;
        RELEASE.1.notify_all();
        t.join().unwrap();
    });
    let _ = loader.unload(m);
}

define_tracepoint!(static RT9_BLOCKING_NORMAL: Tracepoint<u64> = normal "rt9.blocking.normal");

#[test]
fn unload_while_plugin_probe_is_blocked_in_host_logger() {
    if std::env::var_os(CHILD).is_none() {
        return parent("unload_while_plugin_probe_is_blocked_in_host_logger");
    }
    let (loader, m) = setup();
    type AttachFn = unsafe extern "C" fn(*const Tracepoint<u64>) -> u32;
    // SAFETY: the fixture's signature.
    let attach = unsafe { loader.symbol::<AttachFn>(m, "fx_attach") }.unwrap();
    // SAFETY: the tracepoint is a static of the host.
    assert_eq!(attach.call(|f| unsafe { f.call(&RT9_BLOCKING_NORMAL) }).unwrap(), 1);
    drop(attach);
    unload_while_blocked_in_logger(&loader, m, || RT9_BLOCKING_NORMAL.fire(&1));
}

static HOOK: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

#[test]
fn unload_while_plugin_hook_is_blocked_in_host_logger() {
    if std::env::var_os(CHILD).is_none() {
        return parent("unload_while_plugin_hook_is_blocked_in_host_logger");
    }
    let (loader, m) = setup();
    // SAFETY: `fx_log_hook` has the slot's type in the fixture.
    unsafe { loader.install_hook(m, &HOOK, "fx_log_hook") }.unwrap();
    unload_while_blocked_in_logger(&loader, m, || {
        let _ = HOOK.call(1);
    });
}

define_tracepoint!(static RT9_BLOCKING_FAULTABLE: Tracepoint<u64> = faultable "rt9.blocking.faultable");

/// The same on a faultable tracepoint (Tasks Trace, whose read section
/// marks the thread): holds, the unload keeps the module (Zombie or error).
#[test]
fn unload_while_plugin_faultable_probe_is_blocked_in_host_logger() {
    if std::env::var_os(CHILD).is_none() {
        return parent("unload_while_plugin_faultable_probe_is_blocked_in_host_logger");
    }
    let (loader, m) = setup();
    type AttachFn = unsafe extern "C" fn(*const Tracepoint<u64>) -> u32;
    // SAFETY: the fixture's signature.
    let attach = unsafe { loader.symbol::<AttachFn>(m, "fx_attach_faultable") }.unwrap();
    // SAFETY: the tracepoint is a static of the host.
    assert_eq!(attach.call(|f| unsafe { f.call(&RT9_BLOCKING_FAULTABLE) }).unwrap(), 1);
    drop(attach);
    unload_while_blocked_in_logger(&loader, m, || RT9_BLOCKING_FAULTABLE.fire(&1));
}

define_tracepoint!(static RT9_PANICKING_NORMAL: Tracepoint<u64> = normal "rt9.panicking.normal");

/// No `log` call in the plugin at all: its probe panics, the panic is
/// caught and reported as a usrcu warning, which goes to the host's logger
/// (`diagnostics::emit`) on the firing thread, under the probe's frame.
#[test]
fn unload_while_panicking_plugin_probe_warning_is_blocked_in_host_logger() {
    if std::env::var_os(CHILD).is_none() {
        return parent("unload_while_panicking_plugin_probe_warning_is_blocked_in_host_logger");
    }
    let (loader, m) = setup();
    type AttachFn = unsafe extern "C" fn(*const Tracepoint<u64>) -> u32;
    // SAFETY: the fixture's signature.
    let attach = unsafe { loader.symbol::<AttachFn>(m, "fx_attach_panicking") }.unwrap();
    // SAFETY: the tracepoint is a static of the host.
    assert_eq!(attach.call(|f| unsafe { f.call(&RT9_PANICKING_NORMAL) }).unwrap(), 1);
    drop(attach);
    unload_while_blocked_in_logger(&loader, m, || RT9_PANICKING_NORMAL.fire(&1));
}
