//! What might still run a module's code keeps it mapped as a `Zombie`, with
//! a warning, instead of crashing the host: callbacks left pending with the
//! automatic barrier off (the kernel's behaviour), a dynamic domain dropped
//! without its barrier, a reader that never leaves a static domain.
//!
//! A test binary of its own: missed-barrier warnings are process-wide.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use usrcu::diagnostics::{Capture, WarningKind};
use usrcu_module_loader::{BarrierOutcome, LoaderConfig, ModuleLoader, ModuleState, ZombieCause};
use usrcu_tests::{fixture_path, leak, object_is_mapped};

type GatedQueueFn = unsafe extern "C" fn(usize, *const AtomicBool, *const AtomicUsize);
type DynQueueFn = unsafe extern "C" fn(usize, u64, *const AtomicUsize, *const AtomicUsize);
type VoidFn = extern "C" fn();

/// Wait until `c` reaches `n` (bounded only so that a bug fails instead of
/// hanging; the sleep is a polling interval, nothing waits on time).
fn wait_until(c: &AtomicUsize, n: usize) -> bool {
    let end = Instant::now() + Duration::from_secs(60);
    while c.load(Ordering::SeqCst) < n {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

#[test]
fn auto_barrier_off_reports_missed_barrier_and_keeps_module_as_zombie() {
    let capture = Capture::start();
    let loader = ModuleLoader::with_config(LoaderConfig {
        auto_barrier: false,
        ..Default::default()
    });
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    let path = loader.info(m).unwrap().loaded_path;
    let (gate, ran) = (leak(AtomicBool::new(false)), leak(AtomicUsize::new(0)));
    // SAFETY: the fixture exports it with this signature.
    let queue = unsafe { loader.symbol::<GatedQueueFn>(m, "fx_queue_gated").unwrap() };
    // The callbacks wait for `gate`, so they are certainly pending at unload.
    // SAFETY: `gate` and `ran` live for the process.
    queue.call(|f| unsafe { f.call(4, gate, ran) }).unwrap();

    let report = loader.unload(m).unwrap();

    assert_eq!(report.state, ModuleState::Zombie);
    assert!(report.domains.iter().all(|d| d.barrier == BarrierOutcome::Disabled));
    match &report.zombie_cause {
        Some(ZombieCause::DomainBusy { domain, error }) => {
            assert_eq!(domain, "callbacks.queue");
            assert!(error.callbacks_pending > 0, "{error:?}");
        }
        c => panic!("expected a busy callbacks.queue, got {c:?}"),
    }
    assert!(!report.dlclosed && !report.unmapped);
    assert!(!capture.find("callbacks.queue", WarningKind::MissedBarrier).is_empty());
    assert!(
        !capture.find("callbacks", WarningKind::Other).is_empty(),
        "the zombie warning"
    );
    assert!(object_is_mapped(&path), "a zombie stays mapped");
    assert_eq!(loader.state(m), Some(ModuleState::Zombie));

    // The callbacks run later, in code that is still mapped: no crash.
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "a gated callback ran before the gate opened"
    );
    gate.store(true, Ordering::SeqCst);
    assert!(wait_until(ran, 4));
    // Unloading the zombie again, once nothing is pending, unmaps it. With
    // no barrier, a retry right after the last body returned may still find
    // that callback counted pending (the runtime counts it done after its
    // body returns): retried, bounded.
    let retry = usrcu_tests::unload_until_unmapped(&loader, m);
    assert!(retry.unmapped, "{retry}");
    assert!(!object_is_mapped(&path));
}

#[test]
fn dynamic_domain_dropped_without_barrier_keeps_module_as_zombie() {
    let capture = Capture::start();
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("dynamic-domain")) }.unwrap();
    let path = loader.info(m).unwrap().loaded_path;
    let (ran, on_runtime) = (leak(AtomicUsize::new(0)), leak(AtomicUsize::new(0)));
    // SAFETY: the fixture exports these with these signatures.
    let (queue, forget) = unsafe {
        (
            loader.symbol::<DynQueueFn>(m, "fx_dyn_queue").unwrap(),
            loader.symbol::<VoidFn>(m, "fx_dyn_forget_barrier").unwrap(),
        )
    };
    // With the barrier forgotten, the callbacks wait until `exit` has dropped
    // the domain (the fixture's own flag), so they are certainly pending at
    // the drop; no sleep is needed.
    forget.call(|f| f.call()).unwrap();
    // SAFETY: the counters live for the process.
    queue.call(|f| unsafe { f.call(3, 0, ran, on_runtime) }).unwrap();

    let report = loader.unload(m).unwrap();

    assert_eq!(report.state, ModuleState::Zombie);
    assert_eq!(
        report.zombie_cause,
        Some(ZombieCause::DynamicDomainMissedBarrier {
            domain: "dynamic-domain.dyn".to_owned()
        })
    );
    assert!(!capture
        .find("dynamic-domain.dyn", WarningKind::MissedBarrier)
        .is_empty());
    assert!(object_is_mapped(&path));
    // The leaked domain's callbacks still run, on the host runtime, in
    // mapped code.
    assert!(wait_until(ran, 3));
    assert_eq!(on_runtime.load(Ordering::SeqCst), 3);
    // A dynamic domain's drain cannot be checked: the module stays a zombie.
    let retry = loader.unload(m).unwrap();
    assert_eq!(retry.state, ModuleState::Zombie);
    assert!(object_is_mapped(&path));
}

#[test]
fn reader_that_never_leaves_a_static_domain_keeps_module_as_zombie() {
    let capture = Capture::start();
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_millis(100),
        ..Default::default()
    });
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    let path = loader.info(m).unwrap().loaded_path;
    // SAFETY: the fixture exports it with this signature.
    let hold = unsafe { loader.symbol::<VoidFn>(m, "fx_hold_reader").unwrap() };
    hold.call(|f| f.call()).unwrap();

    let report = loader.unload(m).unwrap();

    assert_eq!(report.state, ModuleState::Zombie);
    match &report.zombie_cause {
        Some(ZombieCause::DomainBusy { domain, error }) => {
            assert_eq!(domain, "callbacks.readers");
            assert!(error.readers_active > 0, "{error:?}");
        }
        c => panic!("expected a busy callbacks.readers, got {c:?}"),
    }
    assert!(!capture.find("callbacks.readers", WarningKind::ReadersActive).is_empty());
    assert!(object_is_mapped(&path));
}
