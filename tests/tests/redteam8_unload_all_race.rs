//! Red team (round 8): `unload_all` racing another `unload_all`, and a
//! load on another thread. `unload_all` is documented to leave "modules in
//! the middle of a load or an unload on another thread ... to it": a host
//! whose shutdown path and whose watchdog both call `unload_all` should see
//! each module unloaded once, by one of them, and no error for a module the
//! other one was unloading.

use std::collections::HashMap;
use std::sync::{Arc, Barrier};

use usrcu_module_loader::{ModuleLoader, ModuleState};
use usrcu_tests::{bounded, fixture_path, leak};

#[test]
fn two_unload_all_at_once_unload_each_module_once_and_report_no_error_for_the_others_work() {
    let so = fixture_path("callbacks");
    let (errors, oks, left) = bounded("two unload_all", move || {
        let loader: &'static ModuleLoader = leak(ModuleLoader::new());
        let mut errors = Vec::new();
        let mut oks: HashMap<u64, usize> = HashMap::new();
        for _round in 0..5 {
            let mut hs = Vec::new();
            for _ in 0..6 {
                // SAFETY: the fixtures uphold the plugin contract (docs/abi.md).
                hs.push(unsafe { loader.load(&so) }.unwrap());
            }
            let start = Arc::new(Barrier::new(2));
            let ts: Vec<_> = (0..2)
                .map(|_| {
                    let start = start.clone();
                    std::thread::spawn(move || {
                        start.wait();
                        loader.unload_all()
                    })
                })
                .collect();
            for t in ts {
                for (h, r) in t.join().unwrap() {
                    match r {
                        Ok(rep) => {
                            assert!(rep.unmapped, "{rep:?}");
                            *oks.entry(format!("{h}").trim_start_matches('#').parse().unwrap())
                                .or_default() += 1;
                        }
                        Err(e) => errors.push(format!("{h}: {e}")),
                    }
                }
            }
        }
        let left: Vec<_> = loader
            .list()
            .into_iter()
            .filter(|m| m.state != ModuleState::Zombie)
            .map(|m| format!("{m:?}"))
            .collect();
        (errors, oks, left)
    });
    assert!(left.is_empty(), "modules left after both unload_all: {left:?}");
    assert!(oks.values().all(|&n| n == 1), "a module unloaded twice: {oks:?}");
    assert_eq!(oks.len(), 30, "not every module was unloaded: {oks:?}");
    assert!(
        errors.is_empty(),
        "unload_all reported errors for modules the other unload_all was unloading (documented as left to it): {errors:#?}"
    );
}

#[test]
fn unload_all_while_another_thread_loads_leaves_the_new_module_usable_or_unloaded() {
    let so = fixture_path("callbacks");
    bounded("unload_all during loads", move || {
        let loader: &'static ModuleLoader = leak(ModuleLoader::new());
        let so2 = so.clone();
        let loading = std::thread::spawn(move || {
            let mut hs = Vec::new();
            for _ in 0..10 {
                // SAFETY: the fixtures uphold the plugin contract (docs/abi.md).
                hs.push(unsafe { loader.load(&so2) }.unwrap());
            }
            hs
        });
        let mut results = Vec::new();
        for _ in 0..20 {
            results.extend(loader.unload_all());
        }
        let hs = loading.join().unwrap();
        for (h, r) in &results {
            if let Err(e) = r {
                panic!("unload_all gave an error for {h} while another thread loaded: {e}");
            }
        }
        for h in hs {
            match loader.state(h) {
                None => {}
                Some(ModuleState::Live) => {
                    type AddFn = extern "C" fn(u64, u64) -> u64;
                    // SAFETY: `fx_add` has this signature in the fixture.
                    let add = unsafe { loader.symbol::<AddFn>(h, "fx_add") }.unwrap();
                    assert_eq!(add.call(|f| f.call(2, 3)).unwrap(), 5);
                    assert!(loader.unload(h).unwrap().unmapped);
                }
                Some(s) => panic!("module {h} left {s:?}"),
            }
        }
        assert!(loader.list().is_empty(), "{:?}", loader.list());
    });
}
