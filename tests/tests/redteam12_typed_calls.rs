//! Red team (round 12): `CallError::Interface` — "The live module does not
//! export the interface as the host declares it" (module-loader/src/error.rs)
//! — as a host meets it through a typed handle, with the `InterfaceError`
//! that says what differs (registry/src/interface.rs): `NotExported` ("The
//! object exports no interface list"), `Missing` ("exports interfaces, but
//! not this one", with the ones it exports), `Version` ("Another version").
//! The module stays live and usable through its real interface.

use usrcu_module_loader::usrcu_registry::example::Calc;
use usrcu_module_loader::usrcu_registry::interface::InterfaceError;
use usrcu_module_loader::{CallError, ModuleLoader, ModuleState};
use usrcu_tests::fixture_path;

usrcu_module_loader::usrcu_registry::plugin_interface! {
    /// The registry's `Calc` as a newer host declares it.
    pub trait CalcV2 ["calc", version 2] {
        /// `x` transformed.
        fn compute(x: u64) -> u64;
        /// The plugin's version.
        fn version() -> u64;
    }
}

usrcu_module_loader::usrcu_registry::plugin_interface! {
    /// An interface no fixture exports.
    pub trait Other ["rt12-other", version 1] {
        /// Anything.
        fn ping(x: u32) -> u32;
    }
}

#[test]
fn typed_calls_to_a_module_without_that_interface_are_interface_errors() {
    let loader = ModuleLoader::new();
    // SAFETY: the fixtures uphold the plugin contract (docs/abi.md).
    let plain = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    // SAFETY: as above.
    let calc = unsafe { loader.load(fixture_path("redteam3-calc")) }.unwrap();

    let none = loader.interface::<dyn Calc>("callbacks");
    match none.compute(1) {
        Err(CallError::Interface { module, error }) => {
            assert_eq!(module, "callbacks");
            assert!(matches!(error, InterfaceError::NotExported { .. }), "{error:?}");
        }
        other => panic!("a module without interfaces: {other:?}"),
    }

    let v2 = loader.interface::<dyn CalcV2>("redteam3-calc");
    match v2.compute(1) {
        Err(CallError::Interface { module, error }) => {
            assert_eq!(module, "redteam3-calc");
            match &error {
                InterfaceError::Version { plugin, host, .. } => assert_eq!((*plugin, *host), (1, 2)),
                other => panic!("expected Version, got {other:?}"),
            }
            let _ = error.to_string();
        }
        other => panic!("another version: {other:?}"),
    }

    let other = loader.interface::<dyn Other>("redteam3-calc");
    match other.ping(1) {
        Err(CallError::Interface { error, .. }) => match &error {
            InterfaceError::Missing { exported, .. } => {
                assert!(exported.iter().any(|e| e.contains("calc")), "{exported:?}")
            }
            other => panic!("expected Missing, got {other:?}"),
        },
        other => panic!("an interface the module lacks: {other:?}"),
    }

    // Nothing of that hurt the module: its real interface still answers.
    let real = loader.interface::<dyn Calc>("redteam3-calc");
    assert_eq!(real.compute(21).unwrap(), 42);
    assert_eq!(loader.state(calc), Some(ModuleState::Live));
    drop((none, v2, other, real));
    assert!(loader.unload(calc).unwrap().unmapped);
    assert!(loader.unload(plain).unwrap().unmapped);
}
