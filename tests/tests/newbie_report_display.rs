//! Newcomer review (fixed): `UnloadReport`'s `Display`, the form docs/plugins.md's
//! "Your own host" prints (`println!("old copy: {report}")`), drops facts
//! the report holds: a host that logs `{report}` is not told that the
//! loader removed probes the plugin forgot (README: the loader "lists them
//! in `UnloadReport::probes_removed`"; plugins.md's watch line and the
//! demo's table show them, the `Display` does not, while it does show the
//! hook slots cleared). Seen from the outside host: "module 'probe' (#2):
//! unloaded; hook slots: 0 cleared, Tasks grace period passed; unmapped"
//! with two probes in `probes_removed`.

use usrcu_module_loader::ModuleLoader;
use usrcu_registry::define_tracepoint;
use usrcu_registry::tracepoint::Tracepoint;
use usrcu_tests::fixture_path_with_profile;

define_tracepoint!(static NEWBIE_FAULTABLE: Tracepoint<u64> = faultable "newbie.faultable");
define_tracepoint!(static NEWBIE_NORMAL: Tracepoint<u64> = normal "newbie.normal");

type Attach = unsafe extern "C" fn(*const Tracepoint<u64>, *const Tracepoint<u64>) -> u32;

#[test]
fn display_of_an_unload_that_removed_probes_mentions_them() {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let h = unsafe { loader.load(fixture_path_with_profile("probes", "release")) }.unwrap();
    // SAFETY: the fixture exports `fx_attach_probes` with this signature.
    let attach = unsafe { loader.symbol::<Attach>(h, "fx_attach_probes") }.unwrap();
    // SAFETY: both are `'static` host tracepoints.
    let n = attach
        .call(|f| unsafe { f.call(&NEWBIE_FAULTABLE, &NEWBIE_NORMAL) })
        .unwrap();
    assert_eq!(n, 2);
    drop(attach);
    let r = loader.unload(h).unwrap();
    assert_eq!(r.probes_removed.len(), 2, "precondition: {r:?}");
    // Without the module's own name ("probes"), which would match.
    let shown = r.to_string().replace("'probes'", "'…'");
    assert!(
        shown.contains("probe"),
        "two probes removed ({:?}), the Display says: {shown}",
        r.probes_removed
    );
}
