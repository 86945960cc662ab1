//! Red team (round 10): the other side of `LoadError::BadModuleName`:
//! names a host must accept. Exactly 255 bytes (ASCII, and of 3-byte
//! UTF-8 characters), non-ASCII letters and an emoji, spaces and
//! punctuation load, are found under their name, and unload. 256 bytes is
//! refused. The fixture `redteam9-reenter` takes its name from
//! `RT9_REENTER_NAME` (read when each copy's descriptor is built).

use usrcu_module_loader::{LoadError, ModuleLoader};
use usrcu_tests::fixture_path;

#[test]
fn names_up_to_255_bytes_and_unicode_names_load() {
    let so = fixture_path("redteam9-reenter");
    let loader = ModuleLoader::new();
    let ascii_255 = "n".repeat(255);
    let wide_255 = "€".repeat(85); // 3 bytes each
    assert_eq!(wide_255.len(), 255);
    let ascii_256 = "n".repeat(256);
    let wide_256 = format!("{wide_255}n");
    for name in [
        ascii_255.as_str(),
        wide_255.as_str(),
        "módulo-ünïcode-名前-🦀",
        "with spaces / slashes and 'quotes'",
        "x",
    ] {
        std::env::set_var("RT9_REENTER_NAME", name);
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let r = unsafe { loader.load(&so) };
        std::env::remove_var("RT9_REENTER_NAME");
        let m = r.unwrap_or_else(|e| {
            panic!(
                "{} bytes {:?}: {e}",
                name.len(),
                name.chars().take(8).collect::<String>()
            )
        });
        assert_eq!(loader.info(m).unwrap().name, name);
        assert_eq!(loader.find(name), Some(m));
        assert!(loader.unload(m).unwrap().unmapped);
    }
    for name in [ascii_256.as_str(), wide_256.as_str()] {
        std::env::set_var("RT9_REENTER_NAME", name);
        // SAFETY: as above.
        let r = unsafe { loader.load(&so) };
        std::env::remove_var("RT9_REENTER_NAME");
        assert!(
            matches!(r, Err(LoadError::BadModuleName { .. })),
            "a {}-byte name: {r:?}",
            name.len()
        );
    }
}
