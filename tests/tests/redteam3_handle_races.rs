//! Red team 3: typed interface handles and `Symbol`s racing reloads and the
//! loader's drop. The promise (`docs/plugins.md`, section 4): a call through
//! a `Plugin` handle goes to the newest live copy, and "a call that reaches
//! a copy already going is made again, once, on the newest live copy"; a
//! reload keeps a live copy at every moment ("both are live for a moment").
//! So a handle hammered during reloads must never see an error.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use usrcu_module_loader::usrcu_registry::example::Calc;
use usrcu_module_loader::{CallError, LoaderConfig, ModuleLoader, ModuleState};
use usrcu_tests::{fixture_path, in_child, Child, CHILD_ENV};

fn loader() -> ModuleLoader {
    ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_secs(20),
        ..LoaderConfig::default()
    })
}

/// Reload `name` from `path` `n` times while `threads` threads call
/// `compute` through clones of one typed handle; returns the errors seen
/// (at most 16 kept) and the number of calls made.
fn hammer_during_reloads(threads: usize, reloads: usize) -> (Vec<CallError>, u64, u64) {
    let path = fixture_path("redteam3-calc");
    let loader = loader();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    unsafe { loader.load(&path) }.expect("load");
    let handle = loader.interface::<dyn Calc>("redteam3-calc");
    assert_eq!(handle.compute(21), Ok(42));
    let stop = AtomicBool::new(false);
    let errors = Mutex::new(Vec::new());
    let (calls, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..threads {
            let h = handle.clone();
            let (stop, errors, calls, failed) = (&stop, &errors, &calls, &failed);
            s.spawn(move || {
                let mut x = 0u64;
                // Acquire: pairs with the Release store below (only ends the loop).
                while !stop.load(Ordering::Acquire) {
                    x += 1;
                    match h.compute(x) {
                        Ok(y) => assert_eq!(y, 2 * x),
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            let mut v = errors.lock().unwrap();
                            if v.len() < 16 {
                                v.push(e);
                            }
                        }
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        for i in 0..reloads {
            // SAFETY: as for `load`.
            let r = unsafe { loader.reload("redteam3-calc", &path) };
            if let Err(e) = r {
                stop.store(true, Ordering::Release);
                panic!("reload {i} failed: {e}");
            }
        }
        // Release: pairs with the Acquire loads in the callers.
        stop.store(true, Ordering::Release);
    });
    let live: Vec<_> = loader
        .list()
        .into_iter()
        .filter(|m| m.state == ModuleState::Live)
        .collect();
    assert_eq!(live.len(), 1, "exactly one live copy after the reloads: {live:?}");
    let errors = errors.into_inner().unwrap();
    (errors, calls.into_inner(), failed.into_inner())
}

/// Many callers through one typed handle while the module is reloaded 200
/// times: a live copy exists at every instant, so no call may fail.
///
/// The handle's lookup (`LiveGate::current`, module-loader/src/interface.rs)
/// turns every failure of its `find` -> `symbol` -> list call sequence into
/// an error returned at once (`self.current()?` in `LiveGate::enter`): a
/// copy that `find` returned and that went `Going` before `symbol` (or
/// before the list call) ends the call with `NoLiveModule` / `NotLive`
/// instead of being looked up again; and the one retry is spent even when a
/// second reload lands during it (interface.rs:183-190, the `Err(_) =>
/// return Err(no_module())` and the list call's `?`; :221 `self.current()?`).
/// Seen failing: 174 of 195,484 calls (8 callers, 200 reloads, 2 cores),
/// `NotLive { state: Going }` and `NotLive { state: Unloaded }`.
#[test]
fn calls_through_a_typed_handle_never_fail_while_the_module_is_reloaded_200_times() {
    let (errors, calls, failed) = hammer_during_reloads(8, 200);
    println!("{calls} calls, {failed} failed; first errors: {errors:?}");
    assert!(calls > 0);
    assert!(
        errors.is_empty(),
        "{failed} of {calls} calls failed while a live copy existed: {errors:?}"
    );
}

const DROP_CHILD: &str = "USRCU_REDTEAM3_DROP_CHILD";

/// The last `Arc<ModuleLoader>` dropped on another thread while threads keep
/// calling through `Symbol`s of its module: the drop unloads (waiting for
/// calls in flight) or leaves the module mapped; every call returns `Ok` or
/// `NotLive`, and nothing crashes. In a child, so a crash fails the test.
#[test]
fn symbols_called_while_the_last_loader_arc_drops_on_another_thread_only_fail_typed() {
    if std::env::var_os(DROP_CHILD).is_none() && !in_child(CHILD_ENV, None) {
        Child::new("symbols_called_while_the_last_loader_arc_drops_on_another_thread_only_fail_typed")
            .env(DROP_CHILD, "1")
            .run()
            .assert_passed("", "the child failed");
        return;
    }
    let loader = Arc::new(loader());
    // SAFETY: the fixture upholds the plugin contract.
    let m = unsafe { loader.load(fixture_path("redteam3-calc")) }.expect("load");
    // SAFETY: the fixture exports `fx_double` with this type.
    let double = unsafe { loader.symbol::<extern "C" fn(u64) -> u64>(m, "fx_double") }.expect("fx_double");
    let stop = Arc::new(AtomicBool::new(false));
    let not_live = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (d, stop, not_live) = (double.clone(), stop.clone(), not_live.clone());
            std::thread::spawn(move || {
                let mut x = 0u64;
                // Acquire: pairs with the Release store below.
                while !stop.load(Ordering::Acquire) {
                    x += 1;
                    match d.call(|f| f.call(x)) {
                        Ok(y) => assert_eq!(y, 2 * x),
                        Err(CallError::NotLive { .. }) => {
                            not_live.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("untyped failure: {e}"),
                    }
                }
            })
        })
        .collect();
    // Wait for calls to be in flight, then drop the last Arc elsewhere.
    while double.call(|f| f.call(1)) != Ok(2) {}
    std::thread::spawn(move || drop(loader))
        .join()
        .expect("the drop panicked");
    // After the drop a call is `NotLive` (unloaded) or still served (kept).
    while not_live.load(Ordering::Relaxed) == 0 && double.is_live() {
        std::thread::yield_now();
    }
    // Release: pairs with the callers' Acquire loads.
    stop.store(true, Ordering::Release);
    for c in callers {
        c.join().expect("a caller panicked");
    }
    match double.call(|f| f.call(3)) {
        Ok(6) | Err(CallError::NotLive { .. }) => {}
        other => panic!("after the drop: {other:?}"),
    }
}
