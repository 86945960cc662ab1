//! Red team (round 10): more threads inside callouts than the callout
//! table's 256 slots (`usrcu::runtime::callouts`) makes the interrupted
//! proof treat *every* running thread as possibly inside one, so as a
//! suspect; and a suspect stays one for as long as it is seen running.
//!
//! 300 threads call plugin B's hook, which logs; the host's logger holds
//! them (a slow sink: they wait on a condvar). Meanwhile an unrelated
//! compute thread of the host, which never logs and never calls any
//! plugin, runs (passing `usrcu::tasks::quiescent`, as the docs ask of a
//! thread that never blocks). The unload of an idle plugin A should unmap
//! it; it waited the whole `unload_timeout` and left a Zombie
//! (`InterruptedInObject` naming the compute thread). Seen unmapping with
//! 200 threads in the logger. Fixed in session 11 (callouts are counted in
//! Tasks records; see the assertion for what an unload may still do while
//! B's hooks wait).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{LoaderConfig, ModuleLoader};
use usrcu_tests::fixture_path;

const LOGGERS: usize = 300;

static IN_LOGGER: AtomicUsize = AtomicUsize::new(0);
static RELEASE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

/// The host's logger: records of the plugin wait until released.
struct Slow;

impl log::Log for Slow {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target() != "rt9.reenter" {
            return;
        }
        IN_LOGGER.fetch_add(1, Ordering::SeqCst);
        let mut released = RELEASE.0.lock().unwrap_or_else(|p| p.into_inner());
        while !*released {
            released = RELEASE.1.wait(released).unwrap_or_else(|p| p.into_inner());
        }
    }
    fn flush(&self) {}
}

static SLOW: Slow = Slow;
static LOG_HOOK: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

#[test]
fn an_idle_plugin_unmaps_while_300_threads_wait_in_the_logger_and_another_computes() {
    log::set_logger(&SLOW).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_secs(2),
        ..LoaderConfig::default()
    });
    // SAFETY: the fixtures uphold the plugin contract.
    let idle = unsafe { loader.load(fixture_path("hook")) }.unwrap();
    // SAFETY: as above.
    let busy = unsafe { loader.load(fixture_path("redteam9-reenter")) }.unwrap();
    // SAFETY: `fx_log_hook` has the slot's type in the fixture.
    unsafe { loader.install_hook(busy, &LOG_HOOK, "fx_log_hook") }.unwrap();
    let stop = AtomicBool::new(false);
    let r = std::thread::scope(|s| {
        for _ in 0..LOGGERS {
            std::thread::Builder::new()
                .stack_size(128 << 10)
                .spawn_scoped(s, || {
                    let _ = LOG_HOOK.call(1);
                })
                .unwrap();
        }
        s.spawn(|| {
            let mut x = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..1000 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
                usrcu::tasks::quiescent();
            }
        });
        let t0 = Instant::now();
        while IN_LOGGER.load(Ordering::SeqCst) < LOGGERS {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the threads never reached the logger"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50)); // all waiting now
        let r = loader.unload(idle);
        stop.store(true, Ordering::Relaxed);
        *RELEASE.0.lock().unwrap() = true;
        RELEASE.1.notify_all();
        r
    });
    let r = r.expect("the idle plugin's unload");
    // Since session 11 the interrupted proof scans no callout (the table is
    // gone: callouts are counted in each thread's Tasks record), so no
    // compute thread is a suspect. But the 300 threads are inside B's hook
    // (its logger is part of it), and a Tasks grace period is process-wide:
    // while they wait, every unload that needs one is held, as a hook that
    // spins would hold it. So A is either unmapped (the grace period was
    // not needed) or kept as `HooksBusy`, never `InterruptedInObject`; and
    // once they are released, a retry unmaps it.
    assert!(
        r.unmapped || r.zombie_cause == Some(usrcu_module_loader::ZombieCause::HooksBusy),
        "the idle plugin was kept for another reason: {r:?}"
    );
    if !r.unmapped {
        let again = loader.unload(idle).unwrap();
        assert!(again.unmapped, "{again:?}");
    }
    loader.unload(busy).unwrap();
}
