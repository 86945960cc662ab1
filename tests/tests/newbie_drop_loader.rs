//! Newcomer review (fixed: `Drop` now warns): dropping the `ModuleLoader` while a call into a module
//! is in flight. `Drop` runs `unload_all` and discards its results
//! (`let _ = self.unload_all()`): the module whose calls did not drain in
//! time stays loaded and `Live` for the rest of the process — its `exit`
//! never runs, its `Symbol`s keep calling into it — and nothing says so: no
//! warning reaches the host's logger or a capture (an unload that ends in a
//! `Zombie` does warn). Seen from the outside host first: "loader dropped
//! after 500 ms", then a later `Symbol::call` into the orphaned module
//! returned `Ok`, with no line logged in between.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::thread;
use std::time::Duration;

use usrcu::diagnostics;
use usrcu_module_loader::{LoaderConfig, ModuleLoader};
use usrcu_tests::{fixture_path_with_profile, leak};

type BlockFn = unsafe extern "C" fn(*const AtomicBool, *const AtomicBool, *const u64, *const u64);

#[test]
fn dropping_the_loader_with_a_call_in_flight_says_what_it_left_loaded() {
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_millis(300),
        ..LoaderConfig::default()
    });
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path_with_profile("callbacks", "release")) }.unwrap();
    // SAFETY: the fixture exports `fx_block` with this signature (the last
    // two pointers may be null).
    let block = unsafe { loader.symbol::<BlockFn>(m, "fx_block") }.unwrap();
    let entered: &'static AtomicBool = leak(AtomicBool::new(false));
    let release: &'static AtomicBool = leak(AtomicBool::new(false));
    let caller = thread::spawn(move || {
        // SAFETY: both atomics are leaked (live for the process); the
        // others are null, which `fx_block` accepts.
        block
            .call(|f| unsafe { f.call(entered, release, std::ptr::null(), std::ptr::null()) })
            .unwrap();
    });
    while !entered.load(SeqCst) {
        thread::yield_now();
    }
    let ((), warnings) = diagnostics::capture(|| drop(loader));
    release.store(true, SeqCst);
    caller.join().unwrap();
    assert!(
        !warnings.is_empty(),
        "the loader was dropped with module 'callbacks' still live (its call did not drain in \
         300 ms): it stays loaded for the process, exit never ran, and no warning said so"
    );
}
