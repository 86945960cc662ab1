//! Red team (round 9): values that outlive the plugin through a *typed*
//! interface, with no `unsafe` in the host but `load` itself.
//!
//! The registry's docs (`usrcu_registry::interface`, "What may cross") say
//! parameters and results of a `plugin_interface!` are `PlainData`, "so
//! nothing of the plugin outlives its unload"; the loader's docs
//! (`docs/plugins.md`) say "nothing it returns can point into the plugin".
//! The macro bounds only the results. A host that declares a parameter
//! `&Mutex<Option<&'static str>>` or `&Mutex<Option<Box<dyn Fn()>>>` gets
//! back, in safe code, a string of the plugin's rodata or a closure whose
//! vtable and code are the plugin's, and keeps them past `unload`.
//!
//! Also `Symbol::call`'s `FfiArg` for host callbacks: any `extern "C" fn`
//! of any argument types may be passed, so a plugin can hand a host
//! callback a `&'static [u8; 16]` of its rodata.
//!
//! Each dangerous part runs in a child (the test binary run again); the parent
//! asserts that the child exited cleanly.

use std::sync::Mutex;

use usrcu_module_loader::ModuleLoader;
use usrcu_tests::{fixture_path, killed_by, object_is_mapped};

include!("../fixtures/redteam9-leaky/src/iface.rs");

const NAME: &str = "redteam9-leaky: a string in the plugin's rodata";
const CHILD: &str = "RT9_VALUES_CHILD";

fn in_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

fn parent(test: &str) {
    fixture_path("redteam9-leaky");
    // `--include-ignored`: the child must run the test even while it is
    // marked as a finding.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1", "--include-ignored"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("running 1 test"),
        "the child did not run {test}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the child host ended with {:?} (signal {:?}) using a value it got from the plugin, after unload\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status,
        killed_by(out.status),
    );
}

/// The plugin's string, through the typed interface, read after `unload`.
#[test]
#[ignore = "FINDING: plugin_interface! accepts non-PlainData parameters; a &'static str of the plugin's rodata reaches safe host code and faults after unload"]
fn typed_interface_str_outlives_unload() {
    if !in_child() {
        return parent("typed_interface_str_outlives_unload");
    }
    let loader = ModuleLoader::new();
    loader.require_interface::<dyn Leaky>("redteam9-leaky");
    // SAFETY: the fixture is safe Rust and upholds the plugin contract.
    let m = unsafe { loader.load(fixture_path("redteam9-leaky")) }.unwrap();
    let path = loader.info(m).unwrap().loaded_path;
    let slot: Mutex<Option<&'static str>> = Mutex::new(None);
    {
        let h = loader.interface::<dyn Leaky>("redteam9-leaky");
        assert_eq!(h.version().unwrap(), 9);
        h.name_into(&slot).unwrap();
    }
    let kept: &'static str = slot.lock().unwrap().unwrap();
    assert_eq!(kept, NAME);
    let report = loader.unload(m).unwrap();
    println!("unload: {report}");
    assert!(report.unmapped && !object_is_mapped(&path), "{report:?}");
    // Safe code, a `&'static str`: reads the unmapped rodata.
    let sum: u64 = kept.bytes().map(u64::from).sum();
    assert_eq!(kept, NAME, "sum {sum}");
}

/// The plugin's closure, through the typed interface, called after `unload`.
#[test]
#[ignore = "FINDING: plugin_interface! accepts non-PlainData parameters; a Box<dyn Fn> of the plugin reaches safe host code and faults when called (or dropped) after unload"]
fn typed_interface_closure_outlives_unload() {
    if !in_child() {
        return parent("typed_interface_closure_outlives_unload");
    }
    let loader = ModuleLoader::new();
    loader.require_interface::<dyn Leaky>("redteam9-leaky");
    // SAFETY: the fixture is safe Rust and upholds the plugin contract.
    let m = unsafe { loader.load(fixture_path("redteam9-leaky")) }.unwrap();
    let path = loader.info(m).unwrap().loaded_path;
    type Slot = Mutex<Option<Box<dyn Fn() -> u64 + Send>>>;
    let slot: Slot = Mutex::new(None);
    {
        let h = loader.interface::<dyn Leaky>("redteam9-leaky");
        h.callback_into(&slot).unwrap();
    }
    let f = slot.lock().unwrap().take().unwrap();
    assert_eq!(f(), NAME.len() as u64 * 3);
    let report = loader.unload(m).unwrap();
    println!("unload: {report}");
    assert!(report.unmapped && !object_is_mapped(&path), "{report:?}");
    // Safe code: the closure's code and vtable were the plugin's.
    assert_eq!(f(), NAME.len() as u64 * 3);
}

static GIVEN: Mutex<Option<&'static [u8; 16]>> = Mutex::new(None);

extern "C" fn keep_bytes(b: &'static [u8; 16]) {
    *GIVEN.lock().unwrap_or_else(|p| p.into_inner()) = Some(b);
}

/// A host callback (an `FfiArg`) handed a reference into the plugin's
/// rodata, kept by the host and read after `unload`.
#[test]
#[ignore = "FINDING: FfiArg accepts host extern \"C\" fns of any argument types; a plugin hands a host callback a &'static into its rodata, which faults after unload"]
fn host_callback_gets_reference_into_plugin() {
    if !in_child() {
        return parent("host_callback_gets_reference_into_plugin");
    }
    type GiveFn = extern "C" fn(extern "C" fn(&'static [u8; 16]));
    let loader = ModuleLoader::new();
    // SAFETY: the fixture is safe Rust and upholds the plugin contract.
    let m = unsafe { loader.load(fixture_path("redteam9-leaky")) }.unwrap();
    let path = loader.info(m).unwrap().loaded_path;
    // SAFETY: `fx_give_bytes` has exactly this type in the fixture.
    let give = unsafe { loader.symbol::<GiveFn>(m, "fx_give_bytes") }.unwrap();
    give.call(|f| f.call(keep_bytes)).unwrap();
    drop(give);
    let kept = GIVEN.lock().unwrap().unwrap();
    assert_eq!(kept, b"rt9-leaky-bytes!");
    let report = loader.unload(m).unwrap();
    println!("unload: {report}");
    assert!(report.unmapped && !object_is_mapped(&path), "{report:?}");
    assert_eq!(kept, b"rt9-leaky-bytes!");
}
