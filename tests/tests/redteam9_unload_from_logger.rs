//! Red team (round 9): a host whose logger unloads a plugin that logs an
//! error (a "plugin reported a fatal error: drop it" policy), where the
//! record comes from plugin code that no `Symbol::call` frames:
//!
//! * an SRCU callback of the plugin's own static domain, run by a runtime
//!   invoker thread;
//! * a probe the plugin attached to a host *normal* tracepoint, run by the
//!   host thread that fires it;
//! * the plugin's hook in a host `HookSlot` (`install_hook`), run by the
//!   host thread that calls the slot.
//!
//! `unload` refuses from inside a call into the module (`FromInsideCall`),
//! from a Tasks or Tasks Trace callback, and from inside a Tasks Trace read
//! section (a faultable tracepoint's probes); these two frames are none of
//! those. The plugin's code is on the unloading thread's stack: an unload
//! that unmaps returns into unmapped code. A loader that keeps its promise
//! refuses, or keeps the module mapped (Zombie), with a typed result.
//!
//! Seen: the SRCU callback cases hold (Zombie after the unload timeout),
//! on the plugin's domain and on a host domain (whose Zombie cause names
//! the domain `""`);
//! the normal-probe and hook cases unmap the plugin in about 2 ms and the firing
//! thread dies of SIGSEGV when the logger returns into the probe (hook).
//! Both run under Tasks RCU, which has no read-side marker: the thread,
//! blocked in `unload`'s wait for a Tasks grace period, counts as having
//! left the probe (hook).
//!
//! Each scenario runs in a child (with an alarm against a hang); the parent
//! asserts that the child exited cleanly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use usrcu_module_loader::{LoaderConfig, ModuleHandle, ModuleLoader};
use usrcu_registry::define_tracepoint;
use usrcu_registry::tracepoint::Tracepoint;
use usrcu_tests::{fixture_path, Child};

const CHILD: &str = "RT9_LOGGER_CHILD";

static LOADER: OnceLock<ModuleLoader> = OnceLock::new();
static MODULE: Mutex<Option<ModuleHandle>> = Mutex::new(None);
static OUTCOME: Mutex<Option<String>> = Mutex::new(None);
/// The logger has another thread unload, and waits for it (the logging
/// thread stays inside the plugin's code, blocked in the logger).
static ELSEWHERE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The host's logger: a record of target `rt9.reenter` unloads the module.
struct Unloader;

impl log::Log for Unloader {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target() != "rt9.reenter" {
            return;
        }
        let m = MODULE.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(m) = m {
            println!("host logger: {} -> unloading", record.args());
            let r = if ELSEWHERE.load(Ordering::SeqCst) {
                std::thread::spawn(move || LOADER.get().unwrap().unload(m))
                    .join()
                    .unwrap()
            } else {
                LOADER.get().unwrap().unload(m)
            };
            let unmapped = matches!(&r, Ok(rep) if rep.unmapped);
            println!("host logger: unload returned (unmapped: {unmapped}): {r:?}");
            *OUTCOME.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("unmapped={unmapped} {r:?}"));
        }
    }
    fn flush(&self) {}
}

static UNLOADER: Unloader = Unloader;

fn parent(test: &str) {
    // Built here, before the child arms its alarm.
    fixture_path("redteam9-reenter");
    Child::new(test)
        .env(CHILD, "1")
        .run()
        .assert_passed("", "the child host failed");
}

/// Logger, loader (unload timeout 2 s) and the fixture, loaded.
fn setup() -> ModuleHandle {
    log::set_logger(&UNLOADER).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let loader = LOADER.get_or_init(|| {
        ModuleLoader::with_config(LoaderConfig {
            unload_timeout: Duration::from_secs(2),
            ..LoaderConfig::default()
        })
    });
    // SAFETY: the fixture upholds the plugin contract.
    let m = unsafe { loader.load(fixture_path("redteam9-reenter")) }.unwrap();
    // SAFETY: `alarm` only arms a timer: a hang dies of SIGALRM.
    unsafe { libc::alarm(60) };
    *MODULE.lock().unwrap() = Some(m);
    m
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(30), "still waiting: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

static AFTER: AtomicU64 = AtomicU64::new(0);

/// Holds: the unload's barrier cannot see the running callback finish, so
/// after `unload_timeout` (2 s) the module is a Zombie
/// (`CallbacksInObject`), and a retry once the callback returned unmaps it.
#[test]
fn unload_from_logger_called_by_plugin_srcu_callback() {
    if std::env::var_os(CHILD).is_none() {
        return parent("unload_from_logger_called_by_plugin_srcu_callback");
    }
    let m = setup();
    let loader = LOADER.get().unwrap();
    type QueueFn = unsafe extern "C" fn(*const AtomicU64);
    // SAFETY: the fixture's signature.
    let queue = unsafe { loader.symbol::<QueueFn>(m, "fx_log_from_callback") }.unwrap();
    // SAFETY: `AFTER` is a static of the host.
    queue.call(|f| unsafe { f.call(&AFTER) }).unwrap();
    drop(queue);
    wait_until("the logger's unload", || OUTCOME.lock().unwrap().is_some());
    println!("outcome: {:?}", OUTCOME.lock().unwrap());
    // The callback's code after the logger returned.
    let t0 = Instant::now();
    wait_until("the callback's end", || AFTER.load(Ordering::SeqCst) == 1);
    println!("callback ended after {:?}", t0.elapsed());
    // Whatever the unload decided, the module can be unloaded now.
    let t0 = Instant::now();
    let r = loader.unload(m);
    println!("retry after {:?}: {r:?}", t0.elapsed());
}

define_tracepoint!(static RT9_NORMAL: Tracepoint<u64> = normal "rt9.normal");

#[test]
fn unload_from_logger_called_by_plugin_normal_probe() {
    if std::env::var_os(CHILD).is_none() {
        return parent("unload_from_logger_called_by_plugin_normal_probe");
    }
    let m = setup();
    let loader = LOADER.get().unwrap();
    type AttachFn = unsafe extern "C" fn(*const Tracepoint<u64>) -> u32;
    // SAFETY: the fixture's signature.
    let attach = unsafe { loader.symbol::<AttachFn>(m, "fx_attach") }.unwrap();
    // SAFETY: `RT9_NORMAL` is a static of the host.
    assert_eq!(attach.call(|f| unsafe { f.call(&RT9_NORMAL) }).unwrap(), 1);
    drop(attach);
    RT9_NORMAL.fire(&1);
    println!("outcome: {:?}", OUTCOME.lock().unwrap());
    assert!(OUTCOME.lock().unwrap().is_some(), "the probe did not log");
    RT9_NORMAL.fire(&2);
    let _ = loader.unload(m);
}

static HOOK: usrcu::tasks::HookSlot<extern "C" fn(u64) -> u64> = usrcu::tasks::HookSlot::new();

#[test]
fn unload_from_logger_called_by_plugin_hook() {
    if std::env::var_os(CHILD).is_none() {
        return parent("unload_from_logger_called_by_plugin_hook");
    }
    let m = setup();
    let loader = LOADER.get().unwrap();
    // SAFETY: `fx_log_hook` has the slot's type in the fixture.
    unsafe { loader.install_hook(m, &HOOK, "fx_log_hook") }.unwrap();
    assert_eq!(HOOK.call(1), Some(2));
    println!("outcome: {:?}", OUTCOME.lock().unwrap());
    assert!(OUTCOME.lock().unwrap().is_some(), "the hook did not log");
    let _ = HOOK.call(2);
    let _ = loader.unload(m);
}

static HOST_DOMAIN: usrcu::Srcu = usrcu::Srcu::new_static("rt9.host-domain");
static AFTER_HOST: AtomicU64 = AtomicU64::new(0);

/// The plugin's closure on a host domain (the "callbacks, by address" row
/// of docs/abi.md: the runtime's inventory), running when it logs. Holds:
/// Zombie `CallbacksInObject` after the unload timeout.
#[test]
fn unload_from_logger_called_by_plugin_callback_on_host_domain() {
    if std::env::var_os(CHILD).is_none() {
        return parent("unload_from_logger_called_by_plugin_callback_on_host_domain");
    }
    host_domain_scenario();
}

/// A Zombie made by the plugin's callback on a host domain names that
/// domain (docs/abi.md: "Zombie `CallbacksInObject` naming the domain"):
/// seen naming `""`. The logger has another thread unload, and waits for
/// it: from the logging thread itself the unload is refused at once
/// (`FromInsideModuleCode`, the plugin's closure is on its stack).
#[test]
fn zombie_for_plugin_callback_on_host_domain_names_the_domain() {
    if std::env::var_os(CHILD).is_none() {
        return parent("zombie_for_plugin_callback_on_host_domain_names_the_domain");
    }
    ELSEWHERE.store(true, Ordering::SeqCst);
    let outcome = host_domain_scenario();
    assert!(outcome.contains("CallbacksInObject"), "{outcome}");
    assert!(
        outcome.contains("domain: \"rt9.host-domain\""),
        "the cause does not name the host domain: {outcome}"
    );
}

/// Queue the plugin's logging closure on `HOST_DOMAIN`; the logger unloads
/// while it runs. Returns the unload's outcome.
fn host_domain_scenario() -> String {
    let m = setup();
    let loader = LOADER.get().unwrap();
    type QueueFn = unsafe extern "C" fn(*const usrcu::Srcu, *const AtomicU64);
    // SAFETY: the fixture's signature.
    let queue = unsafe { loader.symbol::<QueueFn>(m, "fx_log_from_host_domain") }.unwrap();
    // SAFETY: both are statics of the host.
    queue.call(|f| unsafe { f.call(&HOST_DOMAIN, &AFTER_HOST) }).unwrap();
    drop(queue);
    wait_until("the logger's unload", || OUTCOME.lock().unwrap().is_some());
    let outcome = OUTCOME.lock().unwrap().clone().unwrap();
    println!("outcome: {outcome}");
    wait_until("the callback's end", || AFTER_HOST.load(Ordering::SeqCst) == 1);
    HOST_DOMAIN.barrier();
    let _ = loader.unload(m);
    outcome
}
