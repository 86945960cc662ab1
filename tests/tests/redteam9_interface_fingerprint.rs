//! Red team (round 9): the typed interface's check at load, against a
//! plugin built with another release of the shared interface crate.
//!
//! A function's fingerprint hashes the *text* of its types and their sizes
//! and alignments. A type alias whose target changed between releases
//! (`pub type Flag = u8;` became `bool`) keeps the text (`flag() -> Flag`),
//! the size and the alignment: the plugin is accepted. `PlainData` admits
//! `bool` as "valid for every bit pattern a shim can write"; it is not: the
//! shim writes the plugin's `0x5a` into the host's `MaybeUninit<bool>`,
//! which the client then `assume_init`s (undefined behaviour; in a debug
//! build safe code reads `false`, the low bit).
//!
//! The host's release of `Flags` is below; the plugin's is in
//! `tests/fixtures/redteam9-leaky/src/lib.rs`.

use usrcu_module_loader::ModuleLoader;
use usrcu_tests::fixture_path;

mod flags {
    /// The host's `Flag`.
    pub type Flag = bool;
    usrcu_registry::plugin_interface! {
        /// A flag.
        pub trait Flags ["rt9.flags", version 1] {
            /// The flag.
            fn flag() -> Flag;
        }
    }
}

#[test]
fn interface_whose_alias_changed_is_refused() {
    let loader = ModuleLoader::new();
    loader.require_interface::<dyn flags::Flags>("redteam9-leaky");
    // SAFETY: the fixture is safe Rust and upholds the plugin contract; its
    // `Flags` is the other release's.
    let m = match unsafe { loader.load(fixture_path("redteam9-leaky")) } {
        Ok(m) => m,
        // Refused at load: the defense holds.
        Err(e) => return println!("refused: {e}"),
    };
    let h = loader.interface::<dyn flags::Flags>("redteam9-leaky");
    // The shim wrote the byte 0x5a into the host's `MaybeUninit<bool>`,
    // which `assume_init` then read: undefined behaviour (in a debug build
    // the value reads as `false`, the low bit of 0x5a).
    let b: bool = h.flag().unwrap();
    drop(h);
    loader.unload(m).unwrap();
    panic!("require_interface accepted a plugin whose `flag` returns `u8` where the host expects `bool` (the host read {b})");
}
