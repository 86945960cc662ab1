//! Red team (round 11): unloads around *callouts* (the log bridge's
//! `host_log`, `usrcu::diagnostics::emit`), which a Tasks grace period
//! counts as part of a hook (`usrcu::runtime::callouts`).
//!
//! The rule is there for a plugin's hook or probe below the host's logger.
//! These scenarios have no hook below it:
//!
//! * a host thread whose own `usrcu::diagnostics::catch_panic` (host code,
//!   no plugin) logs a warning through a logger that blocks (a slow sink);
//! * a host thread in a plugin's plain function, called through
//!   `ModuleLoader::symbol` (a counted call into the plugin, not a hook),
//!   whose `log` record reaches the same logger.
//!
//! Meanwhile the host unloads an unrelated, idle plugin. Its Tasks grace
//! period waits for the blocked logging thread; past `unload_timeout` the
//! idle plugin is kept as a Zombie.
//!
//! And what should be allowed: a host thread that unloads after its logging
//! ended, and a logger reached by host code's own `log` record (not a
//! callout) that unloads.
//!
//! Each scenario runs in a child (one logger per process; a hang dies by
//! SIGALRM).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{LoaderConfig, ModuleLoader};
use usrcu_tests::{fixture_path, in_child, Child};

const CHILD: &str = "RT11_CALLOUT_CHILD";

fn parent(test: &str, fixtures: &[&str], marker: &str) {
    for f in fixtures {
        let _ = fixture_path(f);
    }
    Child::new(test).env(CHILD, "1").run().assert_passed(marker, test);
}

/// Block the next record that the logger sees (until released).
static ARMED: AtomicBool = AtomicBool::new(false);
static BLOCKED: AtomicBool = AtomicBool::new(false);
static RELEASE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

/// The host's logger: a slow sink (here: one that waits for the test).
struct SlowSink;

impl log::Log for SlowSink {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, _: &log::Record<'_>) {
        if !ARMED.swap(false, Ordering::SeqCst) {
            return;
        }
        BLOCKED.store(true, Ordering::SeqCst);
        let mut released = RELEASE.0.lock().unwrap_or_else(|p| p.into_inner());
        while !*released {
            released = RELEASE.1.wait(released).unwrap_or_else(|p| p.into_inner());
        }
    }
    fn flush(&self) {}
}

static SLOW: SlowSink = SlowSink;

fn release() {
    *RELEASE.0.lock().unwrap() = true;
    RELEASE.1.notify_all();
}

fn wait_blocked() {
    let t0 = Instant::now();
    while !BLOCKED.load(Ordering::SeqCst) {
        assert!(t0.elapsed() < Duration::from_secs(20), "the logger never blocked");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
}

fn loader() -> ModuleLoader {
    log::set_logger(&SLOW).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_secs(2),
        ..LoaderConfig::default()
    })
}

static HOOK: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();
static IDLE_HOOK: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

/// Unload an idle plugin while `block` (run on another thread) is blocked
/// in the slow logger; it must be unmapped, not kept.
fn idle_unload_while(loader: &ModuleLoader, block: impl FnOnce() + Send) {
    // SAFETY: the fixture upholds the plugin contract.
    let idle = unsafe { loader.load(fixture_path("hook")) }.unwrap();
    // A hook of the idle plugin, installed and never called: its unload
    // empties the slot and waits for a Tasks grace period.
    // SAFETY: `fx_hook_add` has the slot's type in the fixture.
    unsafe { loader.install_hook(idle, &IDLE_HOOK, "fx_hook_add") }.unwrap();
    std::thread::scope(|s| {
        ARMED.store(true, Ordering::SeqCst);
        let t = s.spawn(block);
        wait_blocked();
        let r = loader.unload(idle);
        release();
        t.join().unwrap();
        let r = r.expect("the idle plugin's unload");
        println!("idle unload: {r:?}");
        assert!(r.hook_slots.waited_grace_period, "{r:?}");
        assert!(
            r.unmapped && r.zombie_cause.is_none() && !r.hook_slots.timed_out,
            "an idle plugin was kept while a host thread (no hook) waited in the logger: {r:?}"
        );
    });
}

#[test]
fn an_idle_plugin_unmaps_while_a_host_catch_panic_warning_waits_in_the_logger() {
    if !in_child(CHILD, Some(60)) {
        return parent(
            "an_idle_plugin_unmaps_while_a_host_catch_panic_warning_waits_in_the_logger",
            &["hook"],
            "RT11-HOST-WARNING-OK",
        );
    }
    let loader = loader();
    idle_unload_while(&loader, || {
        usrcu::diagnostics::catch_panic("rt11: host job", || panic!("host job failed"));
    });
    println!("RT11-HOST-WARNING-OK");
}

#[test]
#[ignore = "FINDING: an idle plugin is kept as a Zombie while another plugin's plain function (a counted symbol call, no hook) waits in a slow logger"]
fn an_idle_plugin_unmaps_while_a_symbol_call_logs_into_a_slow_logger() {
    if !in_child(CHILD, Some(60)) {
        return parent(
            "an_idle_plugin_unmaps_while_a_symbol_call_logs_into_a_slow_logger",
            &["hook", "redteam7-plain"],
            "RT11-SYMBOL-LOG-OK",
        );
    }
    let loader = loader();
    // SAFETY: the fixture upholds the plugin contract.
    let plain = unsafe { loader.load(fixture_path("redteam7-plain")) }.unwrap();
    // SAFETY: the fixture's signature.
    let f = unsafe { loader.symbol::<extern "C" fn()>(plain, "fx_log") }.unwrap();
    idle_unload_while(&loader, || {
        f.call(|f| f.call()).unwrap();
    });
    drop(f);
    loader.unload(plain).unwrap();
    println!("RT11-SYMBOL-LOG-OK");
}

/// The control: the same thread blocked in the same logger on the host's
/// own `log` record (not a callout): the idle plugin unmaps.
#[test]
fn control_an_idle_plugin_unmaps_while_a_host_record_waits_in_the_logger() {
    if !in_child(CHILD, Some(60)) {
        return parent(
            "control_an_idle_plugin_unmaps_while_a_host_record_waits_in_the_logger",
            &["hook"],
            "RT11-CONTROL-OK",
        );
    }
    let loader = loader();
    idle_unload_while(&loader, || {
        log::error!(target: "rt11.host", "host job failed");
    });
    println!("RT11-CONTROL-OK");
}

#[test]
fn a_thread_unloads_after_its_own_logging_and_a_plugins_log_records_ended() {
    if !in_child(CHILD, Some(60)) {
        return parent(
            "a_thread_unloads_after_its_own_logging_and_a_plugins_log_records_ended",
            &["hook", "redteam9-reenter"],
            "RT11-AFTER-LOGGING-OK",
        );
    }
    let loader = loader();
    // SAFETY: the fixtures uphold the plugin contract.
    let idle = unsafe { loader.load(fixture_path("hook")) }.unwrap();
    // SAFETY: as above.
    let logging = unsafe { loader.load(fixture_path("redteam9-reenter")) }.unwrap();
    // SAFETY: `fx_log_hook` has the slot's type in the fixture.
    unsafe { loader.install_hook(logging, &HOOK, "fx_log_hook") }.unwrap();
    assert_eq!(HOOK.call(1), Some(2));
    usrcu::diagnostics::catch_panic("rt11: host job", || panic!("host job failed"));
    usrcu::diagnostics::emit(usrcu::diagnostics::Warning::new(
        usrcu::diagnostics::WarningKind::Other,
        "rt11",
        "a host warning".to_owned(),
    ));
    let r = loader.unload(idle).expect("unload after logging");
    assert!(r.unmapped, "{r:?}");
    let r = loader.unload(logging).expect("unload of the plugin that logged");
    assert!(r.unmapped, "{r:?}");
    println!("RT11-AFTER-LOGGING-OK");
}

static UNLOAD_FROM_LOGGER: Mutex<Option<(&'static ModuleLoader, usrcu_module_loader::ModuleHandle)>> = Mutex::new(None);
static UNLOAD_RESULT: Mutex<Option<Result<bool, String>>> = Mutex::new(None);

/// A logger that, on the host's own record of target `rt11.retire`,
/// unloads the plugin it names (a host that retires a plugin from its log
/// pipeline).
struct Retiring;

impl log::Log for Retiring {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target() != "rt11.retire" && record.target() != "usrcu" {
            return;
        }
        let Some((loader, h)) = UNLOAD_FROM_LOGGER.lock().unwrap().take() else {
            return;
        };
        let r = loader.unload(h);
        *UNLOAD_RESULT.lock().unwrap() = Some(match r {
            Ok(r) => Ok(r.unmapped),
            Err(e) => Err(format!("{e:?}")),
        });
    }
    fn flush(&self) {}
}

static RETIRING: Retiring = Retiring;

#[test]
fn a_logger_reached_by_host_code_unloads_a_plugin() {
    if !in_child(CHILD, Some(60)) {
        return parent(
            "a_logger_reached_by_host_code_unloads_a_plugin",
            &["hook"],
            "RT11-RETIRE-OK",
        );
    }
    log::set_logger(&RETIRING).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let loader: &'static ModuleLoader = Box::leak(Box::new(ModuleLoader::new()));
    // SAFETY: the fixture upholds the plugin contract.
    let idle = unsafe { loader.load(fixture_path("hook")) }.unwrap();
    *UNLOAD_FROM_LOGGER.lock().unwrap() = Some((loader, idle));
    log::warn!(target: "rt11.retire", "retire the plugin");
    let r = UNLOAD_RESULT.lock().unwrap().take();
    assert_eq!(r, Some(Ok(true)), "the host's logger could not unload from host code");
    println!("RT11-RETIRE-OK");
}

#[test]
fn a_logger_reached_by_a_host_warning_unloads_a_plugin() {
    if !in_child(CHILD, Some(60)) {
        return parent(
            "a_logger_reached_by_a_host_warning_unloads_a_plugin",
            &["hook"],
            "RT11-RETIRE-WARNING-OK",
        );
    }
    log::set_logger(&RETIRING).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let loader: &'static ModuleLoader = Box::leak(Box::new(ModuleLoader::new()));
    // SAFETY: the fixture upholds the plugin contract.
    let idle = unsafe { loader.load(fixture_path("hook")) }.unwrap();
    *UNLOAD_FROM_LOGGER.lock().unwrap() = Some((loader, idle));
    usrcu::diagnostics::catch_panic("rt11: plugin job", || panic!("retire the plugin"));
    let r = UNLOAD_RESULT.lock().unwrap().take();
    assert_eq!(r, Some(Ok(true)), "the host's logger could not unload from host code");
    println!("RT11-RETIRE-WARNING-OK");
}
