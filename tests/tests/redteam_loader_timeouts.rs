//! Red team of `LoaderConfig::unload_timeout` through the public API: every
//! `Duration` a host can write is a valid timeout. `Duration::MAX` ("wait as
//! long as it takes") unloads like the default, on the unload path and on a
//! failed load's rollback, and never panics in the host; zero returns at
//! once with an honest outcome (an idle module unmapped, one with callbacks
//! pending a Zombie naming the domain, never unmapped under them).
//!
//! Each case runs on a thread with a bounded wait, so a hang fails the test
//! instead of hanging CI.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use usrcu_module_loader::{LoadError, LoaderConfig, ModuleLoader, ModuleState, ZombieCause};
use usrcu_tests::{bounded, fixture_path, leak};

type QueueFn = unsafe extern "C" fn(usize, u64, *const AtomicUsize);

fn loader(timeout: Duration) -> ModuleLoader {
    ModuleLoader::with_config(LoaderConfig {
        unload_timeout: timeout,
        ..LoaderConfig::default()
    })
}

#[test]
fn an_unload_timeout_of_duration_max_drains_and_unmaps_without_panicking() {
    let (ran, report) = bounded("unload with Duration::MAX", || {
        let loader = loader(Duration::MAX);
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
        let ran = leak(AtomicUsize::new(0));
        // SAFETY: the fixture exports it with this signature.
        let queue = unsafe { loader.symbol::<QueueFn>(m, "fx_queue_callbacks").unwrap() };
        // SAFETY: `ran` lives for the process.
        queue.call(|f| unsafe { f.call(4, 1, ran) }).unwrap();
        let report = loader.unload(m).unwrap();
        (ran.load(Ordering::SeqCst), report)
    });
    assert_eq!(ran, 4, "every pending callback ran before dlclose");
    assert!(report.unmapped && report.zombie_cause.is_none(), "{report}");
    assert_eq!(report.state, ModuleState::Unloaded);
}

#[test]
fn a_failed_load_rolls_back_under_an_unload_timeout_of_duration_max() {
    let e = bounded("rollback with Duration::MAX", || {
        let loader = loader(Duration::MAX);
        // SAFETY: the fixture upholds the plugin contract (its init fails).
        unsafe { loader.load(fixture_path("init-fails")) }.unwrap_err()
    });
    match e {
        LoadError::InitFailed { rollback, .. } => assert!(rollback.unmapped, "{rollback}"),
        e => panic!("expected InitFailed, got {e}"),
    }
}

#[test]
fn a_failed_coming_notifier_rolls_back_under_an_unload_timeout_of_duration_max() {
    let e = bounded("notifier rollback with Duration::MAX", || {
        let loader = loader(Duration::MAX);
        loader.register_notifier("refuses", |_, _| Err("no"));
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        unsafe { loader.load(fixture_path("callbacks")) }.unwrap_err()
    });
    match e {
        LoadError::NotifierFailed { rollback, .. } => assert!(rollback.unmapped, "{rollback}"),
        e => panic!("expected NotifierFailed, got {e}"),
    }
}

#[test]
fn an_unload_timeout_of_zero_unmaps_an_idle_module_and_never_unmaps_under_pending_callbacks() {
    let (idle, busy, ran) = bounded("unload with a zero timeout", || {
        let loader = loader(Duration::ZERO);
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let idle = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
        let idle = loader.unload(idle).unwrap();
        // SAFETY: as above.
        let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
        let ran = leak(AtomicUsize::new(0));
        // SAFETY: the fixture exports it with this signature.
        let queue = unsafe { loader.symbol::<QueueFn>(m, "fx_queue_callbacks").unwrap() };
        // The callbacks sleep 200 ms each: still pending when the unload checks.
        // SAFETY: `ran` lives for the process.
        queue.call(|f| unsafe { f.call(4, 200, ran) }).unwrap();
        let busy = loader.unload(m).unwrap();
        (idle, busy, ran)
    });
    assert!(idle.unmapped, "{idle}");
    if busy.unmapped {
        // Only if every callback had already run.
        assert_eq!(ran.load(Ordering::SeqCst), 4, "{busy}");
    } else {
        assert_eq!(busy.state, ModuleState::Zombie, "{busy}");
        match &busy.zombie_cause {
            Some(ZombieCause::CallbacksInObject { domain, .. }) => assert_eq!(domain, "callbacks.queue"),
            c => panic!("the zombie names the domain with callbacks: {c:?}"),
        }
    }
}
