//! ABI honesty: beyond magic, version and sizes, the loader compares the
//! plugin's reader protocol, `usrcu` release line, field-offset
//! fingerprints and panic strategy with the host's, and checks after the
//! runtime hand-over that every static domain dispatches to the host's
//! runtime. Each mismatch is a typed error naming both sides.

use usrcu::abi::{field_fingerprints, READER_PROTOCOL_VERSION};
use usrcu::runtime::{host_vtable, RuntimeVTable};
use usrcu_module_loader::{LoadError, LoaderConfig, ModuleLoader};
use usrcu_tests::{fixture_path, fixture_path_with_profile};

fn refused(fixture: &str) -> LoadError {
    let loader = ModuleLoader::new();
    // SAFETY: the fixtures uphold the plugin contract; each is refused
    // before its `init` runs.
    let err = unsafe { loader.load(fixture_path(fixture)) }.unwrap_err();
    assert!(loader.list().is_empty(), "{fixture}: nothing stays loaded");
    err
}

#[test]
fn another_reader_protocol_names_both_versions() {
    match refused("bad-reader-protocol") {
        LoadError::VersionMismatch { what, plugin, host, .. } => {
            assert_eq!(what, "reader protocol");
            assert_eq!(plugin, (READER_PROTOCOL_VERSION + 1).to_string());
            assert_eq!(host, READER_PROTOCOL_VERSION.to_string());
        }
        e => panic!("expected VersionMismatch, got {e}"),
    }
}

#[test]
fn fields_moved_inside_a_struct_of_the_same_size_name_the_struct_and_both_fingerprints() {
    let err = refused("bad-field-offsets");
    let host = field_fingerprints()[0];
    match &err {
        LoadError::FieldOffsetsMismatch {
            structure,
            plugin,
            host: h,
            ..
        } => {
            assert_eq!(*structure, "Srcu");
            assert_eq!((*plugin, *h), (host ^ 1, host));
        }
        e => panic!("expected FieldOffsetsMismatch, got {e}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{:#018x}", host)) && msg.contains(&format!("{:#018x}", host ^ 1)),
        "{msg}"
    );
}

#[test]
fn a_usrcu_of_another_release_line_names_both_versions() {
    match refused("bad-usrcu-version") {
        LoadError::VersionMismatch { what, plugin, host, .. } => {
            assert_eq!(what, "usrcu");
            assert_eq!(plugin, "0.99.0");
            assert_eq!(host, usrcu::VERSION);
        }
        e => panic!("expected VersionMismatch, got {e}"),
    }
}

#[test]
fn a_static_domain_left_on_the_plugins_own_runtime_names_both_tables() {
    match refused("bad-runtime-pointer") {
        LoadError::RuntimeMismatch {
            module,
            domain,
            plugin,
            host,
        } => {
            assert_eq!(module, "bad-runtime-pointer");
            assert_eq!(domain, "OWN_RUNTIME");
            assert_eq!(host, host_vtable() as *const RuntimeVTable as usize);
            assert_ne!(plugin, host);
        }
        e => panic!("expected RuntimeMismatch, got {e}"),
    }
}

#[test]
#[cfg(panic = "unwind")]
fn a_panic_abort_plugin_is_refused_by_an_unwinding_host_naming_both_strategies() {
    let err = refused("bad-panic-strategy");
    assert!(
        matches!(
            err,
            LoadError::PanicStrategyMismatch {
                plugin: "abort",
                host: "unwind",
                ..
            }
        ),
        "{err}"
    );
}

/// A real `panic = "abort"` build records it; the host refuses it by
/// default and accepts it when told to (then `init` runs: this fixture's
/// refuses to start, with its own error).
#[test]
#[cfg(panic = "unwind")]
fn a_real_panic_abort_build_is_recorded_refused_by_default_and_accepted_when_allowed() {
    let so = fixture_path_with_profile("init-fails", "release-abort");
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract.
    let err = unsafe { loader.load(&so) }.unwrap_err();
    assert!(
        matches!(err, LoadError::PanicStrategyMismatch { plugin: "abort", .. }),
        "{err}"
    );
    let allowing = ModuleLoader::with_config(LoaderConfig {
        allow_panic_abort: true,
        ..Default::default()
    });
    // SAFETY: as above.
    let err = unsafe { allowing.load(&so) }.unwrap_err();
    assert!(
        matches!(&err, LoadError::InitFailed { message, panicked: false, .. } if message == "fixture init refuses to start"),
        "{err}"
    );
}
