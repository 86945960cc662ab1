//! Red team (round 8): notifiers registered and unregistered on one thread
//! while two others load and unload, and notifiers that query the loader
//! (`list`, `info`, `state`, `find`) from inside every event. Nothing may
//! deadlock, and every module that reached `Live` must be unloaded cleanly.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use usrcu_module_loader::{ModuleEvent, ModuleLoader};
use usrcu_tests::{bounded, fixture_path, leak};

#[test]
fn notifier_churn_during_loads_and_unloads_neither_deadlocks_nor_fails_a_load() {
    let so = fixture_path("callbacks");
    bounded("notifier churn", move || {
        let loader: &'static ModuleLoader = leak(ModuleLoader::new());
        let stop: &'static AtomicBool = leak(AtomicBool::new(false));
        let calls: &'static AtomicUsize = leak(AtomicUsize::new(0));
        // A permanent notifier that asks the loader about the module.
        loader.register_notifier("asks the loader", move |ev, info| -> Result<(), String> {
            let _ = loader.list();
            let _ = loader.find(&info.name);
            let st = loader.state(info.handle);
            if st.is_none() {
                return Err(format!("state() of a module in its own {ev:?} notifier is None"));
            }
            let _ = loader.info(info.handle);
            calls.fetch_add(1, Ordering::Relaxed);
            Ok(())
        });
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let so = so.clone();
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        // SAFETY: the fixtures uphold the plugin contract (docs/abi.md).
                        let m = unsafe { loader.load(&so) }.unwrap_or_else(|e| panic!("load failed: {e}"));
                        let r = loader.unload(m).unwrap_or_else(|e| panic!("unload failed: {e}"));
                        assert!(r.unmapped, "{r:?}");
                        assert!(r.hook_failures.is_empty(), "{:?}", r.hook_failures);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let churn = std::thread::spawn(move || {
            let mut ids = Vec::new();
            let t0 = Instant::now();
            let mut i = 0u64;
            while t0.elapsed() < Duration::from_secs(3) {
                i += 1;
                ids.push(
                    loader.register_notifier(&format!("churn {i}"), move |ev, _| -> Result<(), String> {
                        if ev == ModuleEvent::Coming && i.is_multiple_of(1_000_000) {
                            return Err("never".into());
                        }
                        Ok(())
                    }),
                );
                if ids.len() > 4 {
                    let id = ids.remove(0);
                    assert!(loader.unregister_notifier(id));
                    assert!(!loader.unregister_notifier(id));
                }
                std::thread::yield_now();
            }
            for id in ids {
                assert!(loader.unregister_notifier(id));
            }
        });
        churn.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        let n: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
        assert!(n > 0);
        assert!(calls.load(Ordering::Relaxed) >= 3 * n);
        assert!(loader.list().is_empty(), "{:?}", loader.list());
    });
}
