//! Red team 16: the plugin log bridge after commit 7c79401 (the plugin's
//! own `log::max_level()` is `Trace`; the bridge drops a record above the
//! host's level per record).
//!
//! * A plugin with heavy `trace!` logging, host at `Info`: what does a
//!   disabled record cost now, against the old filter (the plugin's own
//!   `max_level` at `Info`, which the fixture sets around a loop to compare)?
//!   Printed, never asserted (run with `--no-capture` to see the numbers).
//! * Records above the host's level never reach the host's logger; a raised
//!   host level reaches the plugin.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use usrcu_module_loader::ModuleLoader;
use usrcu_tests::fixture_path;

static TRACE_SEEN: AtomicU64 = AtomicU64::new(0);
static INFO_SEEN: AtomicU64 = AtomicU64::new(0);

struct Counting;

impl log::Log for Counting {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        match r.level() {
            log::Level::Trace => TRACE_SEEN.fetch_add(1, Ordering::SeqCst),
            _ => INFO_SEEN.fetch_add(1, Ordering::SeqCst),
        };
    }
    fn flush(&self) {}
}

static LOGGER: Counting = Counting;

type TraceLoop = extern "C" fn(u64, u32) -> u64;
type Info = extern "C" fn(u64);

#[test]
fn disabled_trace_records_of_a_plugin_cost_and_never_reach_the_host() {
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract.
    let h = unsafe { loader.load(fixture_path("redteam16-plugin-tp")) }.unwrap();
    // SAFETY: exported with these signatures.
    let lp = unsafe { loader.symbol::<TraceLoop>(h, "fx_trace_loop") }.unwrap();
    // SAFETY: as above.
    let info = unsafe { loader.symbol::<Info>(h, "fx_info") }.unwrap();
    let n = 2_000_000u64;
    let mut best = [f64::MAX; 2];
    let mut seen_level = 0;
    for _ in 0..3 {
        for (k, old) in [(0, 0u32), (1, 1u32)] {
            let t0 = Instant::now();
            seen_level = seen_level.max(lp.call(|p| p.call(n, old)).unwrap());
            let ns = t0.elapsed().as_nanos() as f64 / n as f64;
            best[k] = best[k].min(ns);
        }
    }
    println!(
        "RT16-LOG-COST disabled trace! in a plugin, host at Info: bridge (now) {:.2} ns/record, plugin filter at Info (before) {:.2} ns/record, ratio {:.1}x; plugin max_level seen {seen_level}",
        best[0],
        best[1],
        best[0] / best[1]
    );
    assert_eq!(
        TRACE_SEEN.load(Ordering::SeqCst),
        0,
        "a trace record reached a host at Info"
    );
    // The plugin's filter is Trace (5) while the host is at Info.
    assert_eq!(seen_level, log::LevelFilter::Trace as u64);
    info.call(|p| p.call(1)).unwrap();
    assert_eq!(INFO_SEEN.load(Ordering::SeqCst), 1);
    // Raised after load: reaches the plugin.
    log::set_max_level(log::LevelFilter::Trace);
    lp.call(|p| p.call(10, 0)).unwrap();
    assert_eq!(TRACE_SEEN.load(Ordering::SeqCst), 10);
    // Lowered to Off: nothing at all.
    log::set_max_level(log::LevelFilter::Off);
    info.call(|p| p.call(2)).unwrap();
    lp.call(|p| p.call(10, 0)).unwrap();
    assert_eq!(INFO_SEEN.load(Ordering::SeqCst), 1);
    assert_eq!(TRACE_SEEN.load(Ordering::SeqCst), 10);
    drop((lp, info));
    let r = loader.unload(h).unwrap();
    assert!(r.unmapped, "{r}");
}
