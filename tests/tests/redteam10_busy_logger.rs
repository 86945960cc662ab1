//! Red team (round 10): false positives of the "interrupted" unload proof
//! (`module-loader/src/proofs/interrupted.rs`).
//!
//! A host thread that is *running* inside a callout (the plugin log bridge,
//! `usrcu::diagnostics::emit`) is a suspect for every object, and a suspect
//! stays one for as long as each later scan sees it running. A host whose
//! worker thread calls plugin B's hook in a loop, the hook logging through
//! the host's logger (which formats the record: CPU work, no blocking),
//! never has that thread blocked (it passes `usrcu::tasks::quiescent`
//! between calls, as the `usrcu::tasks` docs ask of such a thread, so Tasks
//! grace periods end): the unload of an unrelated, idle plugin
//! A waits out its whole `unload_timeout` and ends as a Zombie
//! (`InterruptedInObject`), though no code of A ever ran on that thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{LoaderConfig, ModuleLoader};
use usrcu_tests::fixture_path;

static LOGGED: AtomicU64 = AtomicU64::new(0);

/// The host's logger: formats every record (into a buffer it keeps on the
/// stack) and counts it; never blocks.
struct Formatting;

impl log::Log for Formatting {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        use std::io::Write;
        let mut buf = [0u8; 256];
        for _ in 0..64 {
            let _ = write!(&mut buf[..], "{} {}", record.target(), record.args());
            std::hint::black_box(&mut buf);
        }
        LOGGED.fetch_add(1, Ordering::Relaxed);
    }
    fn flush(&self) {}
}

static FORMATTING: Formatting = Formatting;
static LOG_HOOK: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

#[test]
fn an_idle_plugin_unmaps_while_another_plugins_hook_logs_in_a_busy_loop() {
    log::set_logger(&FORMATTING).unwrap();
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
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i = LOG_HOOK.call(i).unwrap_or(i);
                // Outside every hook: the explicit quiescent point the
                // `usrcu::tasks` docs ask of a thread that never blocks.
                usrcu::tasks::quiescent();
            }
        });
        let t0 = Instant::now();
        while LOGGED.load(Ordering::Relaxed) < 100 {
            assert!(t0.elapsed() < Duration::from_secs(30), "the hook never logged");
            std::thread::yield_now();
        }
        let r = loader.unload(idle);
        stop.store(true, Ordering::Relaxed);
        let r = r.expect("the idle plugin's unload");
        assert!(
            r.unmapped && r.zombie_cause.is_none(),
            "the idle plugin was kept while another plugin's hook logged: {r:?}"
        );
    });
    loader.unload(busy).unwrap();
}
