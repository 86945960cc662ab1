//! The typed plugin interface, end to end on the example plugin: checked at
//! load, called without `unsafe`, following reloads, panics caught at the
//! boundary, log records bridged into the host.

mod common;

#[path = "../demo-plugin/src/api.rs"]
mod api;

use std::sync::{Mutex, OnceLock};

use api::DemoAdmin;
use common::{copy_demo_crate, demo_plugin, edit, load, plugins_target_dir};
use usrcu_module_loader::plugin_build::PluginBuild;
use usrcu_module_loader::usrcu_registry::example::Calc;
use usrcu_module_loader::usrcu_registry::interface::InterfaceError;
use usrcu_module_loader::{CallError, LoadError, ModuleLoader};

#[test]
fn typed_handle_calls_the_live_copy_and_follows_reloads() {
    let plugin = demo_plugin();
    let loader = ModuleLoader::new();
    loader.require_interface::<dyn Calc>("demo");
    loader.require_interface::<dyn DemoAdmin>("demo");
    let demo = loader.interface::<dyn Calc>("demo");
    let admin = loader.interface::<dyn DemoAdmin>("demo");
    assert_eq!(demo.compute(2), Err(CallError::NoLiveModule { name: "demo".into() }));

    load(&loader, &plugin).unwrap();
    // factor 3, generation 0
    assert_eq!(demo.compute(2), Ok(6));
    admin.update(5).unwrap();
    assert_eq!(demo.compute(2), Ok(11));
    assert_eq!(demo.version(), Ok(1));

    // The same handle reaches the new copy (fresh config) after a reload.
    // SAFETY: the demo plugin upholds the plugin contract (docs/abi.md).
    let (_, report) = unsafe { loader.reload("demo", &plugin) }.unwrap();
    assert!(report.unmapped, "{report}");
    assert_eq!(demo.compute(2), Ok(6));
    assert_eq!(admin.calls(), Ok(1));

    // A clone used from another thread works the same.
    let other = demo.clone();
    std::thread::scope(|s| {
        s.spawn(move || assert_eq!(other.compute(1), Ok(3)));
    });

    for (_, r) in loader.unload_all() {
        assert!(r.unwrap().unmapped);
    }
    assert_eq!(demo.compute(2), Err(CallError::NoLiveModule { name: "demo".into() }));
}

#[test]
fn plugin_panic_becomes_a_typed_error_naming_the_function() {
    let loader = ModuleLoader::new();
    let h = load(&loader, &demo_plugin()).unwrap();
    let demo = loader.interface::<dyn DemoAdmin>("demo");
    match demo.check(3) {
        Err(CallError::Panicked {
            module,
            function,
            message,
        }) => {
            assert_eq!(module, "demo");
            assert_eq!(function, "check");
            assert!(message.contains("odd codes are refused"), "{message}");
        }
        other => panic!("expected a caught panic, got {other:?}"),
    }
    // The module is unharmed and still serves.
    assert_eq!(demo.check(4), Ok(2));
    assert!(loader.unload(h).unwrap().unmapped);
}

/// Every record the host's logger received: (level, target, message).
fn records() -> &'static Mutex<Vec<(log::Level, String, String)>> {
    static RECORDS: Mutex<Vec<(log::Level, String, String)>> = Mutex::new(Vec::new());
    struct Capture;
    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, r: &log::Record<'_>) {
            RECORDS
                .lock()
                .unwrap()
                .push((r.level(), r.target().to_owned(), r.args().to_string()));
        }
        fn flush(&self) {}
    }
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Info);
    });
    &RECORDS
}

#[test]
fn plugin_log_records_reach_the_host_logger_copied() {
    let records = records();
    let loader = ModuleLoader::new();
    let h = load(&loader, &demo_plugin()).unwrap();
    let report = loader.unload(h).unwrap();
    assert!(report.unmapped);
    // The object is gone; the record's strings were copied into the host.
    let got = records.lock().unwrap().clone();
    assert!(
        got.iter().any(|(level, target, message)| *level == log::Level::Info
            && target == "usrcu_demo_plugin"
            && message == "demo plugin version 1 initialised"),
        "records: {got:?}"
    );
}

#[test]
fn interface_differing_by_one_signature_is_refused_naming_the_function() {
    let dir = tempfile::tempdir().unwrap();
    copy_demo_crate(dir.path(), "usrcu-demo-plugin-changed-signature");
    // One parameter type changes; everything else is the same.
    edit(
        &dir.path().join("src/api.rs"),
        "fn calls() -> u64;",
        "fn calls() -> u32;",
    );
    edit(
        &dir.path().join("src/lib.rs"),
        "fn calls() -> u64 {\n        demo_calls()",
        "fn calls() -> u32 {\n        demo_calls() as u32",
    );
    let other = PluginBuild::new(dir.path())
        .target_dir(plugins_target_dir())
        .build_artifact("usrcu_demo_plugin_changed_signature")
        .unwrap();

    // Checked at load: refused, with the function named.
    let loader = ModuleLoader::new();
    loader.require_interface::<dyn DemoAdmin>("demo");
    match load(&loader, &other) {
        Err(LoadError::NotifierFailed { message, rollback, .. }) => {
            assert!(message.contains("function `calls` differs"), "{message}");
            assert!(message.contains("calls() -> u32"), "{message}");
            assert!(rollback.unmapped);
        }
        other => panic!("expected the interface check to refuse the load, got {other:?}"),
    }
    assert!(loader.find("demo").is_none());

    // Without the load-time check, the handle refuses to call it.
    let lax = ModuleLoader::new();
    let h = load(&lax, &other).unwrap();
    let admin = lax.interface::<dyn DemoAdmin>("demo");
    match admin.calls() {
        Err(CallError::Interface {
            error: InterfaceError::Function { function, .. },
            ..
        }) => assert_eq!(function, "calls"),
        other => panic!("expected an interface mismatch, got {other:?}"),
    }
    // Its other interface is unchanged and serves.
    assert_eq!(lax.interface::<dyn Calc>("demo").compute(1), Ok(3));
    assert!(lax.unload(h).unwrap().unmapped);
}
