//! Red team (round 9): the `malloc` heap a host keeps after load / typed
//! call / unload cycles. `reload_records.rs` counts the host's own heap with
//! a counting global allocator, and says that a plugin's own allocations
//! "go through its own copy of std, to `malloc`, and are not counted". This
//! test counts `malloc`'s bytes in use (`mallinfo2().uordblks`), host and
//! plugins together, over cycles after a warm-up (past the loader's bounded
//! record of 1024 gone modules): what grows with the
//! number of cycles is left behind by each unloaded copy (its interface
//! list, which `export_interface!` leaks "as long as the object" lives,
//! among others), for a host that hot-reloads all day.
//!
//! Seen: about 190 B per cycle once the copy's interface list has been
//! built (by a typed call, or by calling `usrcu_interfaces` directly), 0
//! without; `export_interface!` builds the list with `Vec::leak` and
//! `Box::leak` in the plugin's heap, which outlives the object.

use usrcu_module_loader::usrcu_registry::example::Calc;
use usrcu_module_loader::ModuleLoader;
use usrcu_tests::fixture_path;

fn in_use() -> usize {
    // SAFETY: `mallinfo2` only reads malloc's statistics.
    unsafe { libc::mallinfo2() }.uordblks
}

#[derive(Clone, Copy)]
enum Mode {
    /// Load and unload.
    Plain,
    /// Call the object's `usrcu_interfaces` (which builds its interface
    /// list) through a plain `Symbol`, no typed handle.
    ListOnly,
    /// A typed handle and one call.
    Typed,
}

type ListFn = extern "C" fn() -> *const std::ffi::c_void;

fn cycles(loader: &ModuleLoader, so: &std::path::Path, n: usize, mode: Mode) {
    for _ in 0..n {
        // SAFETY: the fixtures uphold the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(so) }.unwrap();
        match mode {
            Mode::Plain => {}
            Mode::ListOnly => {
                // SAFETY: `export_interface!` exports it with this type.
                let list = unsafe { loader.symbol::<ListFn>(m, "usrcu_interfaces") }.unwrap();
                assert!(!list.call(|f| f.call()).unwrap().is_null());
            }
            Mode::Typed => {
                let h = loader.interface::<dyn Calc>("redteam3-calc");
                assert_eq!(h.compute(21).unwrap(), 42);
            }
        }
        assert!(loader.unload(m).unwrap().unmapped);
    }
}

/// Bytes of `malloc` heap in use added per cycle, over two rounds of 300
/// (printed, to tell a steady growth from a step).
fn growth_per_cycle(loader: &ModuleLoader, fixture: &str, mode: Mode) -> f64 {
    let so = fixture_path(fixture);
    cycles(loader, &so, 50, mode);
    let before = in_use();
    cycles(loader, &so, 300, mode);
    let mid = in_use();
    cycles(loader, &so, 300, mode);
    let after = in_use();
    println!("{fixture}: in use {before} -> {mid} -> {after}");
    (after as f64 - before as f64) / 600.0
}

#[test]
fn reload_cycles_leave_no_heap_behind() {
    let loader = ModuleLoader::new();
    // Past the loader's record of 1024 gone modules (bounded, host side).
    cycles(&loader, &fixture_path("callbacks"), 1100, Mode::Plain);
    let plain = growth_per_cycle(&loader, "callbacks", Mode::Plain);
    let untyped = growth_per_cycle(&loader, "redteam3-calc", Mode::Plain);
    let list = growth_per_cycle(&loader, "redteam3-calc", Mode::ListOnly);
    let typed = growth_per_cycle(&loader, "redteam3-calc", Mode::Typed);
    println!(
        "bytes per cycle: callbacks {plain:.0}, redteam3-calc {untyped:.0}, with its interface list built {list:.0}, with a typed call {typed:.0}"
    );
    assert!(
        plain < 32.0 && list < 32.0 && typed < 32.0,
        "malloc heap in use grows by {plain:.0} B per cycle (callbacks), {list:.0} B (redteam3-calc, its interface list built) and {typed:.0} B (redteam3-calc, a typed call)"
    );
}
