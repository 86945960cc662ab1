//! Red team (round 10): a typed interface whose functions take and return
//! each small plain kind (`()`, `bool`, `f64`, `f32`, `i8`, `u8`, `u16`,
//! none at all, several mixed: integer and SSE registers interleaved)
//! loads, passes the fingerprint check against the host's identical
//! declaration, and every call returns the plugin's value. The plugin's
//! side is `tests/fixtures/redteam10-logloop/src/lib.rs`.
//!
//! Minor finding: a `()` *parameter* (which `PlainData` admits) makes the
//! macro's `extern "C"` shims warn `improper_ctypes_definitions` in the
//! crate that declares the interface (host and plugin); under
//! `-D warnings` such an interface does not build; and a function of 6 or
//! more parameters makes clippy's `too_many_arguments` fail on the
//! generated shim. Fixed: the macro allows both on what it generates (this
//! file no longer allows them; clippy with `-D warnings` checks it).

use usrcu_module_loader::ModuleLoader;
use usrcu_tests::fixture_path;

mod kinds {
    usrcu_registry::plugin_interface! {
        /// Parameters and results of every small plain kind (red team 10,
        /// `tests/tests/redteam10_interface_kinds.rs` declares the same).
        pub trait Kinds ["rt10.kinds", version 1] {
            /// Nothing in, nothing out.
            fn nothing();
            /// A unit in, a unit out.
            fn unit(u: ()) -> ();
            /// `!b`.
            fn not(b: bool) -> bool;
            /// `x / 2`.
            fn half(x: f64) -> f64;
            /// `a`, `b`, `d`, `e` folded into one `f64`.
            fn mix(a: bool, b: f64, c: (), d: i8, e: f32, f: u8, g: u16) -> f64;
        }
    }
}

#[test]
fn an_interface_of_unit_bool_and_float_parameters_works() {
    let loader = ModuleLoader::new();
    loader.require_interface::<dyn kinds::Kinds>("redteam10-logloop");
    // SAFETY: the fixture upholds the plugin contract.
    let m = unsafe { loader.load(fixture_path("redteam10-logloop")) }.unwrap();
    let h = loader.interface::<dyn kinds::Kinds>("redteam10-logloop");
    h.nothing().unwrap();
    h.unit(()).unwrap();
    assert!(!h.not(true).unwrap());
    assert!(h.not(false).unwrap());
    assert_eq!(h.half(5.0).unwrap(), 2.5);
    assert!(h.half(f64::NAN).unwrap().is_nan());
    assert_eq!(
        h.mix(true, 0.5, (), -3, 0.25, 200, 60000).unwrap(),
        1.0 + 0.5 - 3.0 + 0.25 + 200.0 + 60000.0
    );
    drop(h);
    assert!(loader.unload(m).unwrap().unmapped);
}
