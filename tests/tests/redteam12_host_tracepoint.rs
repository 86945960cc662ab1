//! Red team (round 12): the README's "A plugin probe on a host tracepoint"
//! flow, with a plugin that finds the host's events itself: "A plugin finds
//! a host tracepoint in `init` with `unsafe {
//! tracepoint::host_tracepoint::<u64>("request") }` (the argument type is
//! checked by name, size and alignment)" and "A plugin that forgets to
//! unregister loses nothing: when it unloads, the loader's built-in probe
//! notifier removes every probe whose code or data lies in the plugin ...
//! and lists them in `UnloadReport::probes_removed`" (README.md).
//! `host_tracepoint`: "In a plugin, the host's directory is asked (the host
//! context, handed over before `init`) ... `None` if there is no such
//! tracepoint, or its argument type's fingerprint differs"
//! (registry/src/tracepoint.rs).

use usrcu_module_loader::ModuleLoader;
use usrcu_registry::define_tracepoint;
use usrcu_tests::fixture_path;

define_tracepoint!(static REQUEST: Tracepoint<u64> = faultable "rt12.request");
define_tracepoint!(static TICK: Tracepoint<u64> = normal "rt12.tick");

#[test]
fn a_plugin_finds_host_tracepoints_by_name_and_type_and_unload_removes_its_probes() {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let h = unsafe { loader.load(fixture_path("redteam12-emit")) }.unwrap();
    // SAFETY: the fixture exports these with these signatures.
    let attach =
        unsafe { loader.symbol::<unsafe extern "C" fn(*const u8, usize) -> u32>(h, "fx_attach_host") }.unwrap();
    // SAFETY: as above.
    let hits = unsafe { loader.symbol::<extern "C" fn() -> u64>(h, "fx_hits") }.unwrap();
    let mut found = Vec::new();
    for name in ["rt12.request", "rt12.tick", "rt12.no-such-event"] {
        // SAFETY: `name` is valid for the call; the host's events carry a `u64`.
        found.push(attach.call(|f| unsafe { f.call(name.as_ptr(), name.len()) }).unwrap());
    }
    assert_eq!(
        found,
        [1 | 4, 1 | 4, 0],
        "bits: 1 found as u64, 2 found as u32, 4 attached"
    );
    assert_eq!((REQUEST.probe_count(), TICK.probe_count()), (1, 1));
    REQUEST.fire(&5);
    TICK.fire(&7);
    assert_eq!(hits.call(|f| f.call()).unwrap(), 12);
    drop((attach, hits));
    let report = loader.unload(h).unwrap();
    assert!(report.unmapped, "{report:?}");
    let mut removed: Vec<_> = report
        .probes_removed
        .iter()
        .map(|p| (p.tracepoint, p.may_block))
        .collect();
    removed.sort();
    assert_eq!(removed, [("rt12.request", true), ("rt12.tick", false)]);
    assert!(!REQUEST.enabled() && !TICK.enabled());
    REQUEST.fire(&1);
    TICK.fire(&1);
}
