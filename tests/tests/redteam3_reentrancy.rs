//! Red team 3: notifiers that re-enter the loader in ways rounds 1 and 2 did
//! not (`redteam_loader_host_api.rs` has Coming-loads-another, Live-unloads-
//! itself, Going-unloads-itself): a Going notifier that unloads another
//! module, runs `unload_all` or loads a module; a Live notifier that reloads
//! the module it is told about; a Coming notifier that asks for the coming
//! module's symbol or unloads it; notifiers that register and unregister
//! notifiers (themselves included) while the chain runs. Each case runs
//! under `bounded`, so a deadlock fails instead of hanging.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use usrcu_module_loader::usrcu_registry::example::Calc;
use usrcu_module_loader::{
    CallError, ModuleEvent, ModuleHandle, ModuleLoader, ModuleState, NotifierId, SymbolError, UnloadError,
};
use usrcu_tests::{bounded, fixture_path, leak};

fn load(loader: &ModuleLoader, fixture: &str) -> ModuleHandle {
    // SAFETY: the fixtures uphold the plugin contract (docs/abi.md).
    unsafe { loader.load(fixture_path(fixture)) }.unwrap()
}

#[test]
fn a_going_notifier_may_unload_other_modules_run_unload_all_and_load_a_module() {
    let log = bounded("re-entrant Going notifier", || {
        let loader: &'static ModuleLoader = leak(ModuleLoader::new());
        let log: &'static Mutex<Vec<String>> = leak(Mutex::new(Vec::new()));
        let other: &'static Mutex<Option<ModuleHandle>> = leak(Mutex::new(None));
        let once = leak(AtomicBool::new(false));
        loader.register_notifier("going re-enters", move |ev, info| -> Result<(), String> {
            if ev == ModuleEvent::Going && info.name == "redteam3-calc" && !once.swap(true, Ordering::SeqCst) {
                let o = other.lock().unwrap().take().unwrap();
                let r = loader.unload(o).map(|r| r.unmapped);
                log.lock().unwrap().push(format!("unload other {r:?}"));
                let fresh = load(loader, "callbacks");
                log.lock().unwrap().push(format!("loaded {:?}", loader.state(fresh)));
                let all: Vec<_> = loader
                    .unload_all()
                    .into_iter()
                    .map(|(h, r)| (h, r.map(|r| r.unmapped)))
                    .collect();
                // The going module is left to its unload; `fresh` is unloaded.
                log.lock().unwrap().push(format!(
                    "unload_all {} {:?}",
                    all.len(),
                    all.iter().find(|(h, _)| *h == fresh).map(|(_, r)| format!("{r:?}"))
                ));
            }
            Ok(())
        });
        let m = load(loader, "redteam3-calc");
        *other.lock().unwrap() = Some(load(loader, "callbacks"));
        let r = loader.unload(m).unwrap();
        assert!(r.unmapped, "{r}");
        assert!(loader.list().is_empty(), "{:?}", loader.list());
        let log = log.lock().unwrap().clone();
        log
    });
    assert_eq!(
        log,
        [
            "unload other Ok(true)",
            "loaded Some(Live)",
            "unload_all 1 Some(\"Ok(true)\")"
        ]
    );
}

#[test]
fn a_live_notifier_that_reloads_the_module_it_is_told_about_leaves_one_live_copy() {
    let (outer, state, live, y) = bounded("reload from a Live notifier", || {
        let loader: &'static ModuleLoader = leak(ModuleLoader::new());
        let once = leak(AtomicBool::new(false));
        loader.register_notifier("reloads", move |ev, info| -> Result<(), String> {
            if ev == ModuleEvent::Live && !once.swap(true, Ordering::SeqCst) {
                // SAFETY: as for `load`.
                let (new, report) =
                    unsafe { loader.reload(&info.name, fixture_path("redteam3-calc")) }.map_err(|e| e.to_string())?;
                assert_ne!(new, info.handle);
                assert!(report.unmapped, "{report}");
            }
            Ok(())
        });
        let outer = load(loader, "redteam3-calc");
        let handle = loader.interface::<dyn Calc>("redteam3-calc");
        let live: Vec<_> = loader.list().into_iter().map(|m| m.state).collect();
        (outer, loader.state(outer), live, handle.compute(5))
    });
    assert_eq!(state, Some(ModuleState::Unloaded), "{outer}");
    assert_eq!(live, [ModuleState::Live]);
    assert_eq!(y, Ok(10));
}

#[test]
fn a_coming_notifier_gets_typed_errors_for_the_coming_modules_symbol_and_unload() {
    let (seen, state) = bounded("symbol and unload from a Coming notifier", || {
        let loader: &'static ModuleLoader = leak(ModuleLoader::new());
        let seen: &'static Mutex<Vec<String>> = leak(Mutex::new(Vec::new()));
        loader.register_notifier("coming asks", move |ev, info| -> Result<(), String> {
            if ev == ModuleEvent::Coming {
                // SAFETY: the fixture exports `fx_double` with this type.
                let s = unsafe { loader.symbol::<extern "C" fn(u64) -> u64>(info.handle, "fx_double") };
                let s = match s {
                    Ok(s) => format!("symbol Ok, call {:?}", s.call(|f| f.call(2))),
                    Err(SymbolError::NotLive { state, .. }) => format!("symbol NotLive {state:?}"),
                    Err(e) => format!("symbol {e}"),
                };
                let u = match loader.unload(info.handle) {
                    Err(UnloadError::NotLive { state, .. }) => format!("unload NotLive {state:?}"),
                    r => format!("unload {:?}", r.map(|r| r.unmapped)),
                };
                let h = loader.interface::<dyn Calc>(&info.name);
                let c = match h.compute(1) {
                    Err(CallError::NoLiveModule { .. }) => "call NoLiveModule".to_owned(),
                    r => format!("call {r:?}"),
                };
                seen.lock().unwrap().extend([s, u, c]);
            }
            Ok(())
        });
        let m = load(loader, "redteam3-calc");
        let state = loader.state(m);
        assert!(loader.unload(m).unwrap().unmapped);
        let seen = seen.lock().unwrap().clone();
        (seen, state)
    });
    assert_eq!(
        seen,
        ["symbol NotLive Coming", "unload NotLive Coming", "call NoLiveModule"]
    );
    assert_eq!(state, Some(ModuleState::Live));
}

#[test]
fn notifiers_that_register_and_unregister_notifiers_while_the_chain_runs_neither_deadlock_nor_skip_events() {
    let events = bounded("notifiers editing the chain", || {
        let loader: &'static ModuleLoader = leak(ModuleLoader::new());
        let events: &'static Mutex<Vec<String>> = leak(Mutex::new(Vec::new()));
        let me: &'static Mutex<Option<NotifierId>> = leak(Mutex::new(None));
        let added = leak(AtomicUsize::new(0));
        let id = loader.register_notifier("editor", move |ev, _| -> Result<(), String> {
            events.lock().unwrap().push(format!("editor {ev:?}"));
            match ev {
                // Coming: add a recorder (it sees the events after this one).
                ModuleEvent::Coming => {
                    let n = added.fetch_add(1, Ordering::SeqCst);
                    loader.register_notifier("recorder", move |ev, _| -> Result<(), String> {
                        events.lock().unwrap().push(format!("recorder{n} {ev:?}"));
                        Ok(())
                    });
                }
                // Going: unregister itself.
                ModuleEvent::Going => {
                    let id = me.lock().unwrap().take().unwrap();
                    assert!(loader.unregister_notifier(id));
                }
                ModuleEvent::Live => {}
            }
            Ok(())
        });
        *me.lock().unwrap() = Some(id);
        let m = load(loader, "redteam3-calc");
        assert!(loader.unload(m).unwrap().unmapped);
        let m = load(loader, "redteam3-calc");
        assert!(loader.unload(m).unwrap().unmapped);
        let events = events.lock().unwrap().clone();
        events
    });
    assert_eq!(
        events,
        [
            "editor Coming",
            "editor Live",
            "recorder0 Live",
            "recorder0 Going",
            "editor Going",
            // Second module: the editor is gone, the recorder stays.
            "recorder0 Coming",
            "recorder0 Live",
            "recorder0 Going",
        ]
    );
}
