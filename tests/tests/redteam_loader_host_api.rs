//! Red team of the loader's public API as a plugin host uses it, where it
//! held: two live copies of one file unloaded in either order; a handle
//! unloaded twice, or given to another loader; notifiers that re-enter the
//! loader (a `Live` notifier that unloads the module it is told about, a
//! `Coming` notifier that loads another module, a `Going` notifier that
//! unloads the module going); device files. Each case runs with a bounded
//! wait, so a deadlock fails the test instead of hanging CI.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use usrcu_module_loader::{LoadError, ModuleEvent, ModuleHandle, ModuleLoader, ModuleState, UnloadError};
use usrcu_tests::{bounded, fixture_path, leak};

type AddFn = extern "C" fn(u64, u64) -> u64;

fn load(loader: &ModuleLoader) -> ModuleHandle {
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    unsafe { loader.load(fixture_path("callbacks")) }.unwrap()
}

#[test]
fn two_live_copies_of_one_file_are_independent_and_unload_in_load_order() {
    let loader = ModuleLoader::new();
    let (a, b) = (load(&loader), load(&loader));
    assert_ne!(a, b);
    // SAFETY: the fixture exports it with this signature.
    let (fa, fb) = unsafe {
        (
            loader.symbol::<AddFn>(a, "fx_add").unwrap(),
            loader.symbol::<AddFn>(b, "fx_add").unwrap(),
        )
    };
    assert!(loader.unload(a).unwrap().unmapped);
    assert!(fa.call(|f| f.call(1, 1)).is_err(), "the first copy is gone");
    assert_eq!(fb.call(|f| f.call(1, 1)).unwrap(), 2, "the second still runs");
    assert!(loader.unload(b).unwrap().unmapped);
}

#[test]
fn a_handle_unloaded_twice_or_given_to_another_loader_is_a_typed_error() {
    let (loader, other) = (ModuleLoader::new(), ModuleLoader::new());
    let m = load(&loader);
    assert!(matches!(other.unload(m), Err(UnloadError::UnknownModule { handle }) if handle == m));
    assert_eq!(other.state(m), None);
    assert_eq!(
        loader.state(m),
        Some(ModuleState::Live),
        "the other loader touched nothing"
    );
    assert!(loader.unload(m).unwrap().unmapped);
    match loader.unload(m) {
        Err(UnloadError::NotLive { handle, name, state }) => {
            assert_eq!((handle, name.as_str(), state), (m, "callbacks", ModuleState::Unloaded));
        }
        r => panic!("expected NotLive, got {r:?}"),
    }
}

#[test]
fn notifiers_that_re_enter_the_loader_neither_deadlock_nor_corrupt_it() {
    let log = bounded("re-entrant notifiers", || {
        let loader: &'static ModuleLoader = leak(ModuleLoader::new());
        let log: &'static Mutex<Vec<String>> = leak(Mutex::new(Vec::new()));
        let first = leak(AtomicUsize::new(0));
        loader.register_notifier("re-enters", move |ev, info| -> Result<(), String> {
            match ev {
                // The first module's Coming loads a second one (once).
                ModuleEvent::Coming if first.fetch_add(1, Ordering::SeqCst) == 0 => {
                    let second = load(loader);
                    log.lock()
                        .unwrap()
                        .push(format!("coming loaded {}", loader.state(second).is_some()));
                }
                // Going: the module is on its way out already.
                ModuleEvent::Going => {
                    let again = loader.unload(info.handle);
                    let going = matches!(
                        again,
                        Err(UnloadError::NotLive {
                            state: ModuleState::Going,
                            ..
                        })
                    );
                    log.lock().unwrap().push(format!("going unload refused {going}"));
                }
                _ => {}
            }
            Ok(())
        });
        let m = load(loader);
        assert_eq!(loader.list().len(), 2);
        assert!(loader.unload(m).unwrap().unmapped);
        for (_, r) in loader.unload_all() {
            assert!(r.unwrap().unmapped);
        }
        assert!(loader.list().is_empty());
        let log = log.lock().unwrap().clone();
        log
    });
    assert_eq!(
        log,
        [
            "coming loaded true",
            "going unload refused true",
            "going unload refused true"
        ]
    );
}

#[test]
fn a_live_notifier_may_unload_the_module_it_is_told_about() {
    let (handle, state) = bounded("unload from a Live notifier", || {
        let loader: &'static ModuleLoader = leak(ModuleLoader::new());
        loader.register_notifier("unloads", move |ev, info| -> Result<(), String> {
            if ev == ModuleEvent::Live {
                assert!(loader.unload(info.handle).unwrap().unmapped);
            }
            Ok(())
        });
        let m = load(loader);
        (m, loader.state(m))
    });
    assert_eq!(state, Some(ModuleState::Unloaded), "{handle:?}");
}

#[test]
fn device_files_are_refused_without_blocking() {
    let loader = ModuleLoader::new();
    for dev in ["/dev/zero", "/dev/null", "/dev/urandom"] {
        // SAFETY: refused before dlopen.
        match unsafe { loader.load(dev) } {
            Err(LoadError::NotARegularFile { kind, .. }) => assert_eq!(kind, "a device"),
            r => panic!("{dev}: expected NotARegularFile, got {r:?}"),
        }
    }
    assert!(loader.list().is_empty());
}
