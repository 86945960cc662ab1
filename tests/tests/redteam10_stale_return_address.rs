//! Red team (round 10): a thread that called plugin A's hook earlier (the
//! call returned long ago) now waits in the host's logger on behalf of
//! plugin B's hook (a callout). The interrupted proof searches the stack
//! of a thread blocked inside a callout for *any* word that lies in the
//! object being unloaded, from its stack pointer up. Stale words (return
//! addresses into A left in the holes of live frames) count: A's unload
//! may become a Zombie (`InterruptedInObject`) though no code of A is on
//! that thread's stack. Seen: Zombie 3 of 3 (test profile); unmapped when
//! the thread never called A's hook. Fixed in session 11 (no callout scan).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{LoaderConfig, ModuleLoader};
use usrcu_tests::fixture_path;

type HostFn = extern "C" fn(u64) -> u64;

static CALLS_HOST: HookSlot<extern "C" fn(HostFn, u64) -> u64> = HookSlot::new();
static LOG_HOOK: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();
static IN_LOGGER: AtomicBool = AtomicBool::new(false);
static RELEASE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

extern "C" fn host_work(x: u64) -> u64 {
    std::hint::black_box(x.wrapping_mul(3))
}

/// The host's logger: B's records wait until released (a slow sink).
struct Slow;

impl log::Log for Slow {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target() != "rt9.reenter" {
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

static SLOW: Slow = Slow;

#[test]
fn a_thread_that_once_called_a_hook_and_now_waits_in_the_logger_for_another_plugin_does_not_keep_it() {
    log::set_logger(&SLOW).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_secs(2),
        ..LoaderConfig::default()
    });
    // SAFETY: the fixtures uphold the plugin contract.
    let a = unsafe { loader.load(fixture_path("redteam7-plain")) }.unwrap();
    // SAFETY: as above.
    let b = unsafe { loader.load(fixture_path("redteam9-reenter")) }.unwrap();
    // SAFETY: `fx_calls_host: extern "C" fn(HostFn, u64) -> u64` calls the
    // host function it is given and adds one; it stores nothing.
    unsafe { loader.install_hook(a, &CALLS_HOST, "fx_calls_host") }.unwrap();
    // SAFETY: `fx_log_hook` has the slot's type in the fixture.
    unsafe { loader.install_hook(b, &LOG_HOOK, "fx_log_hook") }.unwrap();
    let t = std::thread::spawn(|| {
        for i in 0..1000 {
            assert_eq!(CALLS_HOST.call(host_work, i), Some(i * 3 + 1));
        }
        let _ = LOG_HOOK.call(1);
    });
    let t0 = Instant::now();
    while !IN_LOGGER.load(Ordering::SeqCst) {
        assert!(t0.elapsed() < Duration::from_secs(30), "B never logged");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(20)); // waiting now
    let r = loader.unload(a);
    *RELEASE.0.lock().unwrap() = true;
    RELEASE.1.notify_all();
    t.join().unwrap();
    let r = r.expect("A's unload");
    // Since session 11 no stack is searched for callouts, so no stale word
    // keeps A (`InterruptedInObject`). The waiting thread is inside B's
    // hook, though (its logger is part of it), and a Tasks grace period is
    // process-wide: A's hook step may be held (`HooksBusy`) as by a hook
    // that spins; a retry after the release unmaps it.
    assert!(
        r.unmapped || r.zombie_cause == Some(usrcu_module_loader::ZombieCause::HooksBusy),
        "A (its hook long returned) was kept for another reason: {r:?}"
    );
    if !r.unmapped {
        let again = loader.unload(a).unwrap();
        assert!(again.unmapped, "{again:?}");
    }
    loader.unload(b).unwrap();
}
