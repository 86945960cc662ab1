//! Red team (round 10): `UnloadError::FromInsideModuleCode` must name only
//! the module whose code is on the calling thread's stack. A host function
//! that plugin B's hook calls may unload an unrelated plugin A (a
//! "control" plugin that manages others): that is not refused, and A is
//! unmapped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{ModuleHandle, ModuleLoader};
use usrcu_tests::fixture_path;

type HostFn = extern "C" fn(u64) -> u64;

static LOADER: OnceLock<ModuleLoader> = OnceLock::new();
static VICTIM: OnceLock<ModuleHandle> = OnceLock::new();
static UNMAPPED: AtomicBool = AtomicBool::new(false);
static CALLS_HOST: HookSlot<extern "C" fn(HostFn, u64) -> u64> = HookSlot::new();

/// Called by plugin B's hook: unload plugin A.
extern "C" fn unload_victim(x: u64) -> u64 {
    let r = LOADER.get().unwrap().unload(*VICTIM.get().unwrap());
    println!("unload of A from a host function B's hook called: {r:?}");
    if let Ok(r) = r {
        UNMAPPED.store(r.unmapped, Ordering::SeqCst);
    }
    x
}

#[test]
fn a_host_function_called_by_one_plugin_may_unload_another() {
    let loader = LOADER.get_or_init(ModuleLoader::new);
    // SAFETY: the fixtures uphold the plugin contract.
    let a = unsafe { loader.load(fixture_path("hook")) }.unwrap();
    // SAFETY: as above.
    let b = unsafe { loader.load(fixture_path("redteam7-plain")) }.unwrap();
    VICTIM.set(a).unwrap();
    // SAFETY: `fx_calls_host: extern "C" fn(HostFn, u64) -> u64` calls the
    // host function it is given and adds one; it stores nothing.
    unsafe { loader.install_hook(b, &CALLS_HOST, "fx_calls_host") }.unwrap();
    assert_eq!(CALLS_HOST.call(unload_victim, 7), Some(8));
    assert!(
        UNMAPPED.load(Ordering::SeqCst),
        "A was not unloaded from inside B's hook"
    );
    loader.unload(b).unwrap();
}
