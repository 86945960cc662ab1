//! Red team 2: a plugin's tracepoint probe that panics. The README promises
//! "plugin panics come back as errors"; the typed interface, `init`, `exit`
//! and the runtime's callbacks catch them at the boundary. A probe is a
//! Rust `fn(&D, &A)` of the plugin that the host's `Tracepoint::fire` calls:
//! its panic is raised by the plugin's copy of `std` and unwinds into the
//! host's frames, whose copy of `std` cannot catch a panic of another copy
//! (it reads as a foreign exception, which aborts). The scenario runs in a
//! child process, so an abort is a failed assertion naming the signal.

use std::panic::{catch_unwind, AssertUnwindSafe};

use usrcu_module_loader::ModuleLoader;
use usrcu_registry::define_tracepoint;
use usrcu_registry::tracepoint::Tracepoint;
use usrcu_tests::{fixture_path, Child};

define_tracepoint!(static EVENTS: Tracepoint<u64> = faultable "redteam2.events");
define_tracepoint!(static HOT: Tracepoint<u64> = normal "redteam2.hot");

type Attach = unsafe extern "C" fn(*const Tracepoint<u64>, bool) -> u32;
type Hits = extern "C" fn() -> u64;

const CHILD: &str = "USRCU_REDTEAM2_PROBE_PANICS_CHILD";

/// Re-run `name` in a child; fail naming a signal or the child's failure.
fn in_child(name: &str) {
    Child::new(name).env(CHILD, "1").run().assert_passed(
        "child: ",
        "the host died of a signal when a plugin probe panicked, or the child failed",
    );
}

/// Load the fixture, attach its probe to `tp`, fire `tp` with 13 (the
/// probe panics) inside `catch_unwind`, and check that the host goes on:
/// the panic is contained or comes back as a catchable panic, and the
/// module still unloads cleanly.
fn fire_a_panicking_probe(tp: &'static Tracepoint<u64>, may_block: bool) {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("redteam2-probe-panics")) }.expect("load");
    // SAFETY: the fixture exports these with these signatures.
    let (attach, hits) = unsafe {
        (
            loader.symbol::<Attach>(m, "fx_attach").unwrap(),
            loader.symbol::<Hits>(m, "fx_hits").unwrap(),
        )
    };
    // SAFETY: `tp` is a `'static` host tracepoint.
    assert_eq!(attach.call(|f| unsafe { f.call(tp, may_block) }).unwrap(), 1);
    tp.fire(&1);
    assert_eq!(hits.call(|f| f.call()).unwrap(), 1, "the probe did not run");
    let r = catch_unwind(AssertUnwindSafe(|| tp.fire(&13)));
    println!(
        "child: fire(13) returned {}",
        if r.is_ok() { "normally" } else { "a panic" }
    );
    tp.fire(&2);
    assert_eq!(hits.call(|f| f.call()).unwrap(), 3, "the probe stopped running");
    drop((attach, hits));
    let report = loader.unload(m).expect("unload");
    assert!(report.unmapped, "{report}");
    assert_eq!(report.probes_removed.len(), 1, "{report}");
}

#[test]

fn a_panicking_plugin_probe_on_a_faultable_tracepoint_does_not_end_the_host() {
    if std::env::var_os(CHILD).is_none() {
        return in_child("a_panicking_plugin_probe_on_a_faultable_tracepoint_does_not_end_the_host");
    }
    fire_a_panicking_probe(&EVENTS, true);
}

#[test]

fn a_panicking_plugin_probe_on_a_normal_tracepoint_does_not_end_the_host() {
    if std::env::var_os(CHILD).is_none() {
        return in_child("a_panicking_plugin_probe_on_a_normal_tracepoint_does_not_end_the_host");
    }
    fire_a_panicking_probe(&HOT, false);
}
