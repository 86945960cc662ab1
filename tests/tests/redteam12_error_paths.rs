//! Red team (round 12): typed errors of the loader's public API as a host
//! author provokes them: a file that is an ordinary system library (not a
//! plugin), an executable, a symbol asked of an unloaded module, a failing
//! `Live` notifier, a failing `Going` notifier.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use usrcu::diagnostics::{Capture, WarningKind};
use usrcu_module_loader::{
    address_space, HookFailure, LoadError, ModuleEvent, ModuleLoader, ModuleState, SymbolError, UnloadError,
};
use usrcu_tests::{fixture_path, in_child, Child};

const CHILD: &str = "USRCU_RT12_CHILD";

/// A system shared library that is certainly not a plugin.
fn system_library() -> Option<PathBuf> {
    [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
        "/usr/lib64/libm.so.6",
        "/lib/aarch64-linux-gnu/libm.so.6",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

fn in_child_with_alarm() -> bool {
    // A hang ends the child with SIGALRM.
    in_child(CHILD, Some(60))
}

fn run_child(name: &str) {
    Child::new(name).env(CHILD, "1").run().assert_passed("", "the child");
}

/// `LoadError::NoDescriptor`: "The object exports no descriptor symbol (not
/// built with `export_module!`)", and `LoadError`: "Nothing of the object
/// stays loaded". An ordinary shared library (libm) given by mistake must
/// come back as that typed error, with the dynamic linker's list of objects
/// as it was.
#[test]
fn system_library_is_no_descriptor_and_nothing_stays_loaded() {
    if !in_child_with_alarm() {
        run_child("system_library_is_no_descriptor_and_nothing_stays_loaded");
        return;
    }
    let Some(lib) = system_library() else {
        eprintln!("no libm found; skipped");
        return;
    };
    let loader = ModuleLoader::new();
    let before = address_space::loaded_objects().len();
    // SAFETY: deliberately not a plugin; the documented outcome is a typed error.
    let r = unsafe { loader.load(&lib) };
    match &r {
        Err(LoadError::NoDescriptor { path, .. }) => assert_eq!(path, &lib),
        other => panic!("expected NoDescriptor for {}, got {other:?}", lib.display()),
    }
    let after = address_space::loaded_objects().len();
    assert_eq!(
        before, after,
        "a failed load left an object in the dynamic linker's list"
    );
    assert!(loader.list().is_empty());
}

/// An executable (this test binary, a PIE) given by mistake: a typed error
/// (`NotSharedObject` or `Dlopen`), no crash, nothing left loaded.
#[test]
fn executable_is_a_typed_error() {
    if !in_child_with_alarm() {
        run_child("executable_is_a_typed_error");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let loader = ModuleLoader::new();
    let before = address_space::loaded_objects().len();
    // SAFETY: deliberately not a plugin; the documented outcome is a typed error.
    let r = unsafe { loader.load(&exe) };
    match &r {
        Err(LoadError::NotSharedObject { .. } | LoadError::Dlopen { .. } | LoadError::NoDescriptor { .. }) => {}
        other => panic!("expected a typed refusal for {}, got {other:?}", exe.display()),
    }
    assert_eq!(before, address_space::loaded_objects().len());
    let _ = format!("{}", r.unwrap_err());
}

/// `SymbolError::UnknownModule` is documented as "See
/// [`UnloadError::UnknownModule`]", that is "This loader never loaded such
/// a module", and `SymbolError::NotLive` as "The module is not `Live`".
/// For a module this loader loaded and then unloaded, `unload` says
/// `NotLive { state: Unloaded }`; `symbol` should say the same.
#[test]
fn symbol_of_unloaded_module_is_not_live() {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let h = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    assert!(loader.unload(h).unwrap().unmapped);
    assert_eq!(loader.state(h), Some(ModuleState::Unloaded));
    match loader.unload(h) {
        Err(UnloadError::NotLive { state, .. }) => assert_eq!(state, ModuleState::Unloaded),
        other => panic!("unload of an unloaded module: {other:?}"),
    }
    // SAFETY: never called; the type is a function pointer.
    let r = unsafe { loader.symbol::<extern "C" fn()>(h, "usrcu_module_descriptor") };
    match r {
        Err(SymbolError::NotLive { state, .. }) => assert_eq!(state, ModuleState::Unloaded),
        Err(e) => panic!("symbol() of an unloaded module: {e:?} ({e})"),
        Ok(_) => panic!("symbol() of an unloaded module succeeded"),
    }
}

/// `register_notifier`: "An error (or a panic) from a `Coming` notifier
/// fails the load; from `Live` it is reported as a warning; from `Going` it
/// is recorded in the unload's report and the unload goes on", and
/// `UnloadError::HookFailed`: "`exit` or a `Going` notifier failed. The
/// unload went on; the report says how it ended."
#[test]
fn live_and_going_notifier_failures() {
    let cap = Capture::start();
    let loader = ModuleLoader::new();
    let going_seen = Arc::new(AtomicBool::new(false));
    let g = going_seen.clone();
    loader.register_notifier("rt12-picky", move |ev, _info| match ev {
        ModuleEvent::Coming => Ok(()),
        ModuleEvent::Live => Err("rt12 live refusal"),
        ModuleEvent::Going => {
            g.store(true, Ordering::SeqCst);
            Err("rt12 going refusal")
        }
    });
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let h =
        unsafe { loader.load(fixture_path("callbacks")) }.expect("a Live notifier's failure does not fail the load");
    assert_eq!(loader.state(h), Some(ModuleState::Live));
    let w = cap.warnings();
    assert!(
        w.iter()
            .any(|w| w.message.contains("rt12-picky") && w.message.contains("rt12 live refusal")),
        "no warning for the failing Live notifier: {w:?}"
    );
    match loader.unload(h) {
        Err(UnloadError::HookFailed { failure, report }) => {
            match &failure {
                HookFailure::Notifier {
                    notifier,
                    message,
                    panicked,
                } => {
                    assert_eq!(notifier, "rt12-picky");
                    assert!(message.contains("rt12 going refusal"));
                    assert!(!panicked);
                }
                other => panic!("first failure: {other:?}"),
            }
            assert!(report.unmapped, "the unload went on: {report:?}");
        }
        other => panic!("expected HookFailed, got {other:?}"),
    }
    assert!(going_seen.load(Ordering::SeqCst));
    assert_eq!(loader.state(h), Some(ModuleState::Unloaded));
    let _ = WarningKind::Other;
}

/// The error types a host propagates with `?` into `Box<dyn Error + Send +
/// Sync>` (docs/plugins.md's host uses `?` on `load`, `reload` and typed
/// calls), and `ModuleLoader`, which a host shares between threads, and
/// `Plugin`: "The handle is `Send`" (module-loader/src/interface.rs).
#[test]
fn public_types_have_the_auto_traits_a_host_needs() {
    fn error<E: std::error::Error + Send + Sync + 'static>() {}
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    error::<LoadError>();
    error::<UnloadError>();
    error::<SymbolError>();
    error::<usrcu_module_loader::ReloadError>();
    error::<usrcu_module_loader::CallError>();
    send_sync::<ModuleLoader>();
    send::<usrcu_module_loader::Plugin<'static, dyn usrcu_module_loader::usrcu_registry::example::Calc>>();
    send_sync::<usrcu_module_loader::UnloadReport>();
}

/// A host that loads its plugin through a symlink (`current.so ->
/// v2.so`, the usual deployment): `load` copies "the plugin at `path`", so
/// a symlink to a plugin loads it; a dangling symlink is
/// `LoadError::NotFound` ("No file at that path").
#[test]
fn plugin_behind_a_symlink_loads_and_a_dangling_one_is_not_found() {
    let dir = std::env::temp_dir().join(format!("usrcu-rt12-links-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("current.so");
    let dangling = dir.join("gone.so");
    let _ = std::fs::remove_file(&link);
    let _ = std::fs::remove_file(&dangling);
    std::os::unix::fs::symlink(fixture_path("callbacks"), &link).unwrap();
    std::os::unix::fs::symlink(dir.join("no-such-target.so"), &dangling).unwrap();
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let h = unsafe { loader.load(&link) }.expect("a symlink to a plugin loads");
    assert_eq!(loader.info(h).unwrap().name, "callbacks");
    assert!(loader.unload(h).unwrap().unmapped);
    // SAFETY: refused before dlopen.
    match unsafe { loader.load(&dangling) } {
        Err(LoadError::NotFound { path }) => assert_eq!(path, dangling),
        other => panic!("a dangling symlink: {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `ModuleInfo` as documented (module-loader/src/module.rs): `state` "when
/// the snapshot was taken" (a notifier told `Coming`/`Live`/`Going` sees the
/// module in that state: `ModuleEvent` is "the state the module enters"),
/// `domains` "its static domains' names", `usrcu_version` "the `usrcu`
/// version it was built against", `source_path` "the file it was loaded
/// from".
#[test]
fn module_info_seen_by_notifiers_matches_the_event() {
    type Seen = Vec<(ModuleEvent, ModuleState, Vec<String>)>;
    let seen: Arc<std::sync::Mutex<Seen>> = Arc::default();
    let loader = ModuleLoader::new();
    let s = seen.clone();
    loader.register_notifier("rt12-info", move |ev, info| {
        s.lock().unwrap().push((ev, info.state, info.domains.clone()));
        Ok::<(), String>(())
    });
    let path = fixture_path("callbacks");
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let h = unsafe { loader.load(&path) }.unwrap();
    let info = loader.info(h).unwrap();
    assert_eq!(info.state, ModuleState::Live);
    assert_eq!(info.source_path, path);
    assert_eq!(info.usrcu_version, usrcu::VERSION);
    let mut d = info.domains.clone();
    d.sort();
    assert_eq!(d, ["callbacks.idle", "callbacks.queue", "callbacks.readers"]);
    assert!(loader.unload(h).unwrap().unmapped);
    let seen = seen.lock().unwrap().clone();
    let evs: Vec<_> = seen.iter().map(|(e, s, _)| (*e, *s)).collect();
    assert_eq!(
        evs,
        [
            (ModuleEvent::Coming, ModuleState::Coming),
            (ModuleEvent::Live, ModuleState::Live),
            (ModuleEvent::Going, ModuleState::Going),
        ]
    );
    assert!(seen.iter().all(|(_, _, doms)| doms.len() == 3), "{seen:?}");
}
