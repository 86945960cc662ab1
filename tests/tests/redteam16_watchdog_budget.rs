//! Red team 16: the watchdog's fresh budget for a step that starts after
//! the unload's deadline was spent (commit ff1620f, `watchdog::watch`).
//! A step that starts *just before* the deadline gets only what is left of
//! it, so a short notifier is still blamed for the time spent before it ran
//! whenever the earlier steps end a little before the deadline rather than
//! a little after.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use usrcu_module_loader::{LoaderConfig, ModuleEvent, ModuleLoader};
use usrcu_tests::{fixture_path, leak};

const TIMEOUT_MS: u64 = 300;

/// Run the unload with "slow" ending `margin_ms` before the deadline (as
/// seen from just before `unload`), then "quick" (50 ms); the overruns.
fn overruns(margin_ms: i64) -> Vec<String> {
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_millis(TIMEOUT_MS),
        ..Default::default()
    });
    // Nanoseconds since `base` at which "slow" returns.
    let base = leak(Instant::now());
    let until = leak(AtomicU64::new(0));
    // Notifiers run newest first on `Going`: "slow", then "quick".
    loader.register_notifier("quick", |ev, _| {
        if ev == ModuleEvent::Going {
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok::<(), String>(())
    });
    loader.register_notifier("slow", move |ev, _| {
        if ev == ModuleEvent::Going {
            let end = *base + Duration::from_nanos(until.load(Ordering::SeqCst));
            while Instant::now() < end {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok::<(), String>(())
    });
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    let start = base.elapsed() + Duration::from_millis(TIMEOUT_MS);
    let end = if margin_ms >= 0 {
        start - Duration::from_millis(margin_ms as u64)
    } else {
        start + Duration::from_millis((-margin_ms) as u64)
    };
    until.store(end.as_nanos() as u64, Ordering::SeqCst);
    let report = loader.unload(m).unwrap();
    println!("margin {margin_ms} ms: {report}; overruns {:?}", report.overruns);
    report.overruns
}

/// Control (the fixed case): "slow" overruns by 20 ms, "quick" then starts
/// after the deadline with a fresh budget and is not listed.
#[test]
fn control_a_short_notifier_after_the_deadline_is_not_listed() {
    assert_eq!(overruns(-20), vec!["going notifier 'slow'".to_owned()]);
}

/// A host author expects the same 50 ms notifier not to be listed as an
/// overrun when the step before it ended 15 ms *before* the deadline
/// instead of 20 ms after (its own run is far within the 300 ms unload
/// timeout, and "slow" is not listed at all). Seen: `["going notifier
/// 'quick'"]`, 3 of 3 runs. Cause: `watchdog::watch` gives a fresh budget
/// only to a step that starts at or after the deadline; one that starts
/// just before gets the sliver left.
#[test]
fn a_short_notifier_starting_just_before_the_deadline_is_not_listed() {
    assert_eq!(overruns(15), Vec::<String>::new());
}
