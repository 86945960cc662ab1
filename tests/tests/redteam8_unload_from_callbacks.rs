//! Red team (round 8): a host that defers an unload to a callback of a
//! process-wide flavor (`tasks::call(move || loader.unload(h))`), in a
//! process where a `HookSlot` has been set. Nothing documents `unload` as
//! forbidden there; it must either unmap the idle module or refuse with a
//! typed error at once, not wait out its whole timeout for a grace period
//! that cannot advance while the callback runs and leave a Zombie.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{LoaderConfig, ModuleLoader};
use usrcu_tests::{bounded, fixture_path, leak};

static HOST_SLOT: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();
extern "C" fn host_hook(x: u64) -> u64 {
    x
}

#[test]
fn unload_from_a_tasks_callback_does_not_leave_an_idle_module_a_zombie() {
    let so = fixture_path("callbacks");
    let out = bounded("unload from tasks callback", move || {
        // SAFETY: `host_hook` never blocks, is host text, not stored elsewhere.
        unsafe { HOST_SLOT.set_sync(Some(host_hook)) };
        let loader: &'static ModuleLoader = leak(ModuleLoader::with_config(LoaderConfig {
            unload_timeout: Duration::from_secs(3),
            ..LoaderConfig::default()
        }));
        // SAFETY: the fixtures uphold the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(&so) }.unwrap();
        let (tx, rx) = mpsc::channel();
        usrcu::tasks::call(move || {
            let t0 = Instant::now();
            let r = loader.unload(m);
            let _ = tx.send((
                t0.elapsed(),
                r.map(|r| (r.unmapped, r.zombie_cause.map(|c| format!("{c:?}")))),
            ));
        });
        let got = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the callback never finished");
        usrcu::tasks::barrier();
        // Reclaim if needed, so the process is left clean.
        let _ = loader.unload_all();
        got
    });
    let (took, r) = out;
    match r {
        Ok((true, _)) => {}
        Err(e) => assert!(took < Duration::from_secs(1), "refused only after {took:?}: {e}"),
        Ok((false, cause)) => {
            panic!("unload from a Tasks callback took {took:?} and left an idle module unmapped=false, cause {cause:?}")
        }
    }
}

#[test]
fn unload_from_a_trace_callback_and_an_srcu_callback_of_a_host_domain() {
    let so = fixture_path("callbacks");
    bounded("unload from trace/srcu callbacks", move || {
        let loader: &'static ModuleLoader = leak(ModuleLoader::with_config(LoaderConfig {
            unload_timeout: Duration::from_secs(3),
            ..LoaderConfig::default()
        }));
        let host = std::sync::Arc::new(usrcu::Srcu::new("rt8-host-deferrer"));
        for via_trace in [true, false] {
            // SAFETY: the fixtures uphold the plugin contract (docs/abi.md).
            let m = unsafe { loader.load(&so) }.unwrap();
            let (tx, rx) = mpsc::channel();
            let job = move || {
                let t0 = Instant::now();
                let r = loader.unload(m);
                let _ = tx.send((t0.elapsed(), r.map(|r| (r.unmapped, format!("{:?}", r.zombie_cause)))));
            };
            if via_trace {
                usrcu::trace::call(job);
            } else {
                host.call_srcu(job);
            }
            let (took, r) = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the callback never finished");
            match r {
                Ok((true, _)) => {}
                // A typed refusal at once is fine (the module stays Live).
                Err(usrcu_module_loader::UnloadError::FromInsideCallback { .. }) if took < Duration::from_secs(1) => {
                    assert!(loader.unload(m).unwrap().unmapped);
                }
                other => panic!("via_trace={via_trace}: unload from a callback took {took:?}: {other:?}"),
            }
        }
        usrcu::trace::barrier();
        host.barrier();
    });
}
