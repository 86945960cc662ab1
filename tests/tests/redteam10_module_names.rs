//! Red team (round 10): the other side of `LoadError::BadModuleName`:
//! names a host must accept. Exactly 255 bytes (ASCII, and of 3-byte
//! UTF-8 characters), non-ASCII letters and an emoji, spaces and
//! punctuation load, are found under their name, and unload. 256 bytes is
//! refused. The fixture `redteam9-reenter` takes its name from
//! `RT9_REENTER_NAME` (read when each copy's descriptor is built).

use std::sync::Mutex;

use usrcu_module_loader::{LoadError, ModuleLoader};
use usrcu_tests::fixture_path;

/// `RT9_REENTER_NAME` is the process's: one test at a time sets it.
static ENV: Mutex<()> = Mutex::new(());

#[test]
fn names_up_to_255_bytes_and_unicode_names_load() {
    let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
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

/// Minor: `char::is_control` is the Unicode `Cc` class only. A line or
/// paragraph separator (U+2028, U+2029: a new line to many log viewers and
/// to JavaScript) or a right-to-left override (U+202E, which reverses what
/// follows it on a terminal: a name that prints as another one) passes the
/// check, which `LoadError::BadModuleName` exists to make for names a host
/// "cannot use or print safely" (red team 9).
#[test]
fn names_with_line_separators_or_bidi_overrides_are_refused() {
    let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
    let so = fixture_path("redteam9-reenter");
    let loader = ModuleLoader::new();
    let mut accepted = Vec::new();
    for name in ["line\u{2028}break", "para\u{2029}break", "safe-\u{202E}lld.evil"] {
        std::env::set_var("RT9_REENTER_NAME", name);
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let r = unsafe { loader.load(&so) };
        std::env::remove_var("RT9_REENTER_NAME");
        if let Ok(m) = r {
            accepted.push(name.escape_debug().to_string());
            assert!(loader.unload(m).unwrap().unmapped);
        }
    }
    assert!(accepted.is_empty(), "loaded under these names: {accepted:?}");
}
