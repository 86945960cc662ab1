//! Unload of the three-domain fixture: the barrier runs for exactly the
//! domain with callbacks, every callback runs before `dlclose`, the object
//! leaves the address space; calls in flight delay the unload.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use usrcu_module_loader::{BarrierOutcome, CallError, ModuleLoader, ModuleState};
use usrcu_tests::{fixture_path, leak, object_is_mapped};

type QueueFn = unsafe extern "C" fn(usize, u64, *const AtomicUsize);
type GatedFn = unsafe extern "C" fn(usize, *const AtomicBool, *const AtomicUsize);
type ReadFn = extern "C" fn(u64) -> u64;
type AddFn = extern "C" fn(u64, u64) -> u64;
type BlockFn = unsafe extern "C" fn(*const AtomicBool, *const AtomicBool, *const AtomicU64, *const AtomicU64);
type ProbeFn = unsafe extern "C" fn(*const AtomicU64, *const AtomicU64);

const QUEUED: usize = 6;

#[test]
fn unload_barriers_only_the_domain_with_callbacks() {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    let ran = leak(AtomicUsize::new(0));
    // SAFETY: the fixture exports these with these signatures.
    let (queue, read) = unsafe {
        (
            loader.symbol::<QueueFn>(m, "fx_queue_callbacks").unwrap(),
            loader.symbol::<ReadFn>(m, "fx_read").unwrap(),
        )
    };
    // SAFETY: `ran` lives for the process.
    queue.call(|f| unsafe { f.call(QUEUED, 30, ran) }).unwrap();
    assert_eq!(read.call(|f| f.call(10)).unwrap(), 45);

    let report = loader.unload(m).unwrap();

    let queue_d = report.domain("callbacks.queue").unwrap();
    let readers = report.domain("callbacks.readers").unwrap();
    let idle = report.domain("callbacks.idle").unwrap();
    assert_eq!(report.domains.len(), 3);
    assert_eq!(queue_d.barrier, BarrierOutcome::Issued);
    assert_eq!(readers.barrier, BarrierOutcome::Skipped);
    assert_eq!(idle.barrier, BarrierOutcome::Skipped);
    assert_eq!((report.barriers_issued(), report.barriers_skipped()), (1, 2));
    // The skipped domains are not scanned at all. The barriered domain may
    // or may not be: a barrier's marker waits for the callbacks before it,
    // not for a grace period of its own, so if their grace periods ended
    // before the unload, nothing is scanned inside it.
    assert_eq!(
        (queue_d.possible_cpus, readers.possible_cpus, idle.possible_cpus),
        (8, 16, 32)
    );
    // After the barrier, every callback queued has run, and only those are
    // counted (not the barrier's marker).
    assert_eq!(queue_d.callbacks_invoked, queue_d.callbacks_queued, "{queue_d:?}");
    assert_eq!((readers.slots_scanned, idle.slots_scanned), (0, 0));
    assert_eq!(report.slots_scanned(), queue_d.slots_scanned);
    for d in &report.domains {
        assert_eq!(d.cleanup, Ok(()), "{d:?}");
    }
    assert!(report.unmapped && report.dlclosed, "{report}");
    assert_eq!(report.state, ModuleState::Unloaded);
}

#[test]
fn every_pending_callback_runs_before_dlclose() {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    let (gate, ran) = (leak(AtomicBool::new(false)), leak(AtomicUsize::new(0)));
    // SAFETY: the fixture exports it with this signature.
    let queue = unsafe { loader.symbol::<GatedFn>(m, "fx_queue_gated").unwrap() };
    // SAFETY: the atomics live for the process.
    queue.call(|f| unsafe { f.call(QUEUED, gate, ran) }).unwrap();

    let report = thread::scope(|s| {
        let unloader = s.spawn(|| loader.unload(m));
        // The callbacks cannot run before the gate opens, and it opens only
        // once the unload has begun: all of them are pending at unload.
        while loader.state(m) == Some(ModuleState::Live) {
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        gate.store(true, Ordering::SeqCst);
        unloader.join().unwrap().unwrap()
    });

    // Counted as invoked by the runtime before the loader closed the object,
    // and the host's counter agrees once unload returns.
    let d = report.domain("callbacks.queue").unwrap();
    assert_eq!(d.barrier, BarrierOutcome::Issued);
    assert_eq!(d.callbacks_queued, QUEUED as u64);
    assert_eq!(d.callbacks_invoked, QUEUED as u64, "{d:?}");
    assert_eq!(ran.load(Ordering::SeqCst), QUEUED);
    assert!(report.unmapped);
}

#[test]
fn unloaded_object_leaves_the_address_space() {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    let path = loader.info(m).unwrap().loaded_path;
    assert!(object_is_mapped(&path));
    let report = loader.unload(m).unwrap();
    assert!(report.unmapped);
    assert!(!object_is_mapped(&path), "{} is still mapped", path.display());
    // The name it was loaded under is gone (with `reuse_copies`, the
    // default, the sealed copy itself may stay idle in the loader's bounded
    // pool, under a name of the pool's: `loader_reuse.rs`).
    assert!(!path.exists(), "the name of the unique copy is gone");
    assert_eq!(loader.state(m), Some(ModuleState::Unloaded));
}

#[test]
fn calls_in_flight_delay_unload_until_they_return() {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    let seq = leak(AtomicU64::new(1));
    let (call_ended_at, exit_at) = (leak(AtomicU64::new(0)), leak(AtomicU64::new(0)));
    let (entered, release) = (leak(AtomicBool::new(false)), leak(AtomicBool::new(false)));
    // SAFETY: the fixture exports these with these signatures.
    let (block, probe, add) = unsafe {
        (
            loader.symbol::<BlockFn>(m, "fx_block").unwrap(),
            loader.symbol::<ProbeFn>(m, "fx_probe_exit").unwrap(),
            loader.symbol::<AddFn>(m, "fx_add").unwrap(),
        )
    };
    // SAFETY: the counters live for the process.
    probe.call(|f| unsafe { f.call(seq, exit_at) }).unwrap();

    thread::scope(|s| {
        let caller = s.spawn(|| {
            // SAFETY: the atomics live for the process.
            block.call(|f| unsafe { f.call(entered, release, seq, call_ended_at) })
        });
        while !entered.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(1));
        }
        let unloader = s.spawn(|| loader.unload(m));
        // Once the module is going, new calls are refused...
        while loader.state(m) == Some(ModuleState::Live) {
            thread::sleep(Duration::from_millis(1));
        }
        assert!(matches!(
            add.call(|f| f.call(1, 2)),
            Err(CallError::NotLive {
                state: ModuleState::Going,
                ..
            }) | Err(CallError::NotLive {
                state: ModuleState::Unloaded,
                ..
            })
        ));
        // ...while the one in flight still runs: exit has not been called.
        assert_eq!(exit_at.load(Ordering::SeqCst), 0);
        release.store(true, Ordering::SeqCst);
        caller.join().unwrap().unwrap();
        let report = unloader.join().unwrap().unwrap();
        assert!(report.unmapped);
    });
    let (ended, exited) = (call_ended_at.load(Ordering::SeqCst), exit_at.load(Ordering::SeqCst));
    assert!(
        ended > 0 && exited > ended,
        "call ended at {ended}, exit ran at {exited}"
    );
}

#[test]
fn unload_gives_up_on_a_call_that_never_returns_and_module_stays_usable() {
    let loader = ModuleLoader::with_config(usrcu_module_loader::LoaderConfig {
        unload_timeout: Duration::from_millis(100),
        ..Default::default()
    });
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    let (entered, release) = (leak(AtomicBool::new(false)), leak(AtomicBool::new(false)));
    // SAFETY: the fixture exports these with these signatures.
    let (block, add) = unsafe {
        (
            loader.symbol::<BlockFn>(m, "fx_block").unwrap(),
            loader.symbol::<AddFn>(m, "fx_add").unwrap(),
        )
    };
    thread::scope(|s| {
        let caller = s.spawn(|| {
            // SAFETY: the atomics live for the process; null probes are allowed.
            block.call(|f| unsafe { f.call(entered, release, std::ptr::null(), std::ptr::null()) })
        });
        while !entered.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(1));
        }
        let err = loader.unload(m).unwrap_err();
        assert!(
            matches!(err, usrcu_module_loader::UnloadError::CallsInFlight { .. }),
            "{err}"
        );
        assert_eq!(loader.state(m), Some(ModuleState::Live));
        assert_eq!(add.call(|f| f.call(2, 3)), Ok(5));
        release.store(true, Ordering::SeqCst);
        caller.join().unwrap().unwrap();
    });
    assert!(loader.unload(m).unwrap().unmapped);
}

type DynQueueFn = unsafe extern "C" fn(usize, u64, *const AtomicUsize, *const AtomicUsize);

#[test]
fn dynamic_domain_of_a_plugin_runs_callbacks_on_the_host_runtime_and_drains_at_exit() {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("dynamic-domain")) }.unwrap();
    let (ran, on_runtime) = (leak(AtomicUsize::new(0)), leak(AtomicUsize::new(0)));
    // SAFETY: the fixture exports it with this signature.
    let queue = unsafe { loader.symbol::<DynQueueFn>(m, "fx_dyn_queue").unwrap() };
    // SAFETY: the counters live for the process.
    queue.call(|f| unsafe { f.call(4, 30, ran, on_runtime) }).unwrap();

    let report = loader.unload(m).unwrap();

    // `exit` issued the dynamic domain's barrier before dropping it.
    assert_eq!(ran.load(Ordering::SeqCst), 4);
    // Every callback ran on a thread of the host's runtime: the plugin's
    // copy of usrcu started none of its own.
    assert_eq!(on_runtime.load(Ordering::SeqCst), 4);
    assert!(report.domains.is_empty(), "{report}");
    assert_eq!(report.zombie_cause, None);
    assert!(report.unmapped, "{report}");
}

/// An unload that runs inside a `call_srcu` callback of another (host)
/// domain, on a runtime invoker thread, still drains the module: callbacks
/// of different domains run on different invokers, so its `barrier` waits as
/// usual and the report says it was issued. (Only a barrier of a domain from
/// inside that same domain's callback returns early: `srcu/tests/runtime.rs`.)
#[test]
fn unload_inside_a_callback_of_another_domain_issues_the_barrier() {
    use std::sync::mpsc;
    use usrcu::Srcu;
    let loader: &'static ModuleLoader = leak(ModuleLoader::new());
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    let ran = leak(AtomicUsize::new(0));
    // SAFETY: the fixture exports it with this signature.
    let queue = unsafe { loader.symbol::<QueueFn>(m, "fx_queue_callbacks").unwrap() };
    // SAFETY: `ran` lives for the process.
    queue.call(|f| unsafe { f.call(1, 0, ran) }).unwrap();
    // Let the module's callback run first, so that only the barrier's
    // classification is in question.
    while ran.load(Ordering::SeqCst) < 1 {
        thread::sleep(Duration::from_millis(1));
    }
    let host = leak(Srcu::new("host-unloads-inside-a-callback"));
    let (tx, rx) = mpsc::channel();
    host.call_srcu(move || {
        let _ = tx.send(loader.unload(m));
    });
    let report = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the unload inside a callback did not finish")
        .unwrap();
    let d = report.domain("callbacks.queue").unwrap();
    assert_eq!(d.barrier, BarrierOutcome::Issued, "{report}");
    assert_eq!(report.barriers_issued(), 1, "{report}");
    assert!(report.unmapped, "{report}");
}
