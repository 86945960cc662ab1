//! Notifiers in the kernel's order: `Coming` and `Live` in registration
//! order, `Going` in reverse; a failing or panicking `Coming` notifier rolls
//! the load back with `Going` to those already told, in reverse.

use std::sync::{Arc, Mutex};

use usrcu_module_loader::{HookFailure, LoadError, ModuleEvent, ModuleLoader, UnloadError};
use usrcu_tests::fixture_path;

type Log = Arc<Mutex<Vec<String>>>;

fn recorder(loader: &ModuleLoader, log: &Log, name: &'static str, fail_on: Option<ModuleEvent>, panic: bool) {
    let log = log.clone();
    loader.register_notifier(name, move |ev, info| {
        assert_eq!(info.name, "callbacks");
        log.lock().unwrap().push(format!("{name} {ev:?}"));
        if fail_on == Some(ev) {
            if panic {
                panic!("notifier {name} panics on purpose");
            }
            return Err(format!("notifier {name} refuses"));
        }
        Ok(())
    });
}

fn take(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[test]
fn notifiers_run_in_kernel_order() {
    let loader = ModuleLoader::new();
    let log = Log::default();
    recorder(&loader, &log, "a", None, false);
    recorder(&loader, &log, "b", None, false);
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    assert_eq!(take(&log), ["a Coming", "b Coming", "a Live", "b Live"]);
    assert!(loader.unload(m).unwrap().unmapped);
    assert_eq!(take(&log), ["b Going", "a Going"]);
}

#[test]
fn failing_coming_notifier_rolls_back_with_going_in_reverse() {
    let loader = ModuleLoader::new();
    let log = Log::default();
    recorder(&loader, &log, "a", None, false);
    recorder(&loader, &log, "b", None, false);
    recorder(&loader, &log, "c", Some(ModuleEvent::Coming), false);
    recorder(&loader, &log, "d", None, false);
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let err = unsafe { loader.load(fixture_path("callbacks")) }.unwrap_err();
    match &err {
        LoadError::NotifierFailed {
            notifier,
            message,
            panicked,
            rollback,
            ..
        } => {
            assert_eq!(notifier, "c");
            assert_eq!(message, "notifier c refuses");
            assert!(!panicked);
            assert!(rollback.unmapped, "{rollback}");
        }
        e => panic!("expected NotifierFailed, got {e}"),
    }
    assert_eq!(take(&log), ["a Coming", "b Coming", "c Coming", "b Going", "a Going"]);
    assert!(loader.list().is_empty());
}

#[test]
fn panicking_coming_notifier_fails_the_load() {
    let loader = ModuleLoader::new();
    let log = Log::default();
    recorder(&loader, &log, "a", None, false);
    recorder(&loader, &log, "p", Some(ModuleEvent::Coming), true);
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let err = unsafe { loader.load(fixture_path("callbacks")) }.unwrap_err();
    assert!(
        matches!(&err, LoadError::NotifierFailed { notifier, panicked: true, message, .. }
            if notifier == "p" && message.contains("on purpose")),
        "{err}"
    );
    assert_eq!(take(&log), ["a Coming", "p Coming", "a Going"]);
    // The loader is fine: with the bad notifier gone, the same module loads.
    let m = {
        let loader2 = ModuleLoader::new();
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let m = unsafe { loader2.load(fixture_path("callbacks")) }.unwrap();
        assert!(loader2.unload(m).unwrap().unmapped);
        m
    };
    let _ = m;
}

#[test]
fn panicking_going_notifier_is_reported_and_the_unload_completes() {
    let loader = ModuleLoader::new();
    let log = Log::default();
    recorder(&loader, &log, "a", None, false);
    recorder(&loader, &log, "p", Some(ModuleEvent::Going), true);
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    take(&log);
    let err = loader.unload(m).unwrap_err();
    match &err {
        UnloadError::HookFailed { failure, report } => {
            assert!(
                matches!(failure, HookFailure::Notifier { notifier, panicked: true, .. } if notifier == "p"),
                "{failure}"
            );
            assert!(report.unmapped);
        }
        e => panic!("expected HookFailed, got {e}"),
    }
    // Both were told, in reverse, despite the panic.
    assert_eq!(take(&log), ["p Going", "a Going"]);
}

#[test]
fn unregistered_notifier_is_not_called() {
    let loader = ModuleLoader::new();
    let log = Log::default();
    let l = log.clone();
    let id = loader.register_notifier("gone", move |ev, _| {
        l.lock().unwrap().push(format!("gone {ev:?}"));
        Ok::<(), String>(())
    });
    assert!(loader.unregister_notifier(id));
    assert!(!loader.unregister_notifier(id));
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    assert!(loader.unload(m).unwrap().unmapped);
    assert!(take(&log).is_empty());
}
