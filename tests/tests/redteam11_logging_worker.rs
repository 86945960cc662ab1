//! Red team (round 11): a host worker thread that calls a plugin's hook in
//! a loop; the hook logs (a callout) and the host's logger writes slowly
//! (blocks about 1 ms per record); between calls the worker waits for its
//! next job (blocks about 1 ms, outside every hook and callout).
//!
//! The worker blocks outside callouts half of the time, and makes
//! voluntary switches there, yet its callout word changes on every
//! iteration. A Tasks grace period must still end: it may not count the
//! switches made inside the logger, but those made while the worker waits
//! for its next job are quiescent states. The unload of an idle plugin
//! whose hook is installed (it waits for one) must unmap it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{LoaderConfig, ModuleLoader};
use usrcu_tests::fixture_path;

static LOGGED: AtomicU64 = AtomicU64::new(0);

/// A slow sink: about 1 ms per record of the plugin's.
struct SlowWriter;

impl log::Log for SlowWriter {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target() == "rt9.reenter" {
            std::thread::sleep(Duration::from_millis(1));
            LOGGED.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn flush(&self) {}
}

static SLOW: SlowWriter = SlowWriter;
static LOG_HOOK: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();
static IDLE_HOOK: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

#[test]
fn grace_periods_end_while_a_worker_alternates_a_logging_hook_and_waiting_for_jobs() {
    log::set_logger(&SLOW).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_secs(10),
        ..LoaderConfig::default()
    });
    // SAFETY: the fixtures uphold the plugin contract.
    let idle = unsafe { loader.load(fixture_path("hook")) }.unwrap();
    // SAFETY: `fx_hook_add` has the slot's type in the fixture.
    unsafe { loader.install_hook(idle, &IDLE_HOOK, "fx_hook_add") }.unwrap();
    // SAFETY: as above.
    let busy = unsafe { loader.load(fixture_path("redteam9-reenter")) }.unwrap();
    // SAFETY: `fx_log_hook` has the slot's type in the fixture.
    unsafe { loader.install_hook(busy, &LOG_HOOK, "fx_log_hook") }.unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i = LOG_HOOK.call(i).unwrap_or(i);
                // Waiting for the next job: blocked, outside every hook.
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let t0 = Instant::now();
        while LOGGED.load(Ordering::Relaxed) < 20 {
            assert!(t0.elapsed() < Duration::from_secs(30), "the hook never logged");
            std::thread::sleep(Duration::from_millis(1));
        }
        let gp = usrcu::tasks::start_poll().wait_timeout(Duration::from_secs(10));
        let r = loader.unload(idle);
        stop.store(true, Ordering::Relaxed);
        assert!(gp, "no Tasks grace period in 10 s");
        let r = r.expect("the idle plugin's unload");
        assert!(r.unmapped && r.zombie_cause.is_none(), "{r:?}");
    });
    loader.unload(busy).unwrap();
}
