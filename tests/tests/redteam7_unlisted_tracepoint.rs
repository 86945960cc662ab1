//! Red team (round 7): a host tracepoint declared with the public
//! `Tracepoint::new` (a plain `static`, like the plain `static Srcu` that
//! Part 2 of the design found crashing the host) instead of
//! `define_tracepoint!`. A plugin attaches a probe to it (the host hands the
//! `&'static Tracepoint` over, as `redteam6_unload.rs` does) and forgets the
//! handle, which the README says is fine ("Forgetting the handle is fine:
//! unload removes the probe"). After the unload the host fires its
//! tracepoint. The loader's probe notifier searches only the host's
//! `TRACEPOINTS` slice, so it neither removes the probe nor keeps the object
//! mapped: the next fire calls the probe's trampoline in the unmapped
//! plugin.
//!
//! FINDING if it fails: the child dies with SIGSEGV.

use std::sync::atomic::{AtomicU64, Ordering};

use usrcu_module_loader::ModuleLoader;
use usrcu_registry::tracepoint::{Tracepoint, TracepointKind};
use usrcu_tests::{fixture_path, Child};

static PLAIN_NORMAL: Tracepoint<u64> = Tracepoint::new("rt7.plain.normal", TracepointKind::Normal);
static PLAIN_FAULTABLE: Tracepoint<u64> = Tracepoint::new("rt7.plain.faultable", TracepointKind::Faultable);
static COUNT: AtomicU64 = AtomicU64::new(0);

fn host_count(c: &AtomicU64, x: &u64) {
    c.fetch_add(*x, Ordering::Relaxed);
}

type AttachForeign = unsafe extern "C" fn(*const Tracepoint<u64>, *const (), *const AtomicU64) -> u32;

fn child(tp: &'static Tracepoint<u64>) {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("redteam6-probes")) }.unwrap();
    // SAFETY: the fixture exports it with this signature.
    let attach = unsafe { loader.symbol::<AttachForeign>(m, "fx_attach_foreign") }.unwrap();
    let f: fn(&AtomicU64, &u64) = host_count;
    // SAFETY: a `'static` host tracepoint, a host `fn(&AtomicU64, &u64)`,
    // a `'static` host counter.
    let n = attach.call(|p| unsafe { p.call(tp, f as *const (), &COUNT) }).unwrap();
    assert_eq!(n, 1);
    drop(attach);
    tp.fire(&1);
    assert_eq!(COUNT.load(Ordering::Relaxed), 1);
    let r = loader.unload(m).unwrap();
    println!(
        "unloaded: unmapped {}, probes removed {}, still attached {}",
        r.unmapped,
        r.probes_removed.len(),
        tp.probe_count()
    );
    tp.fire(&1);
    println!("RT7-TP-SURVIVED");
}

fn run(entry: &str) {
    let _ = fixture_path("redteam6-probes");
    let ran = Child::new(entry).env("RT7_TP_CHILD", "1").run();
    ran.assert_passed(
        "RT7-TP-SURVIVED",
        "the host died firing its own tracepoint after the unload",
    );
}

#[test]
fn a_plugin_probe_on_an_unlisted_normal_host_tracepoint_never_runs_after_unload() {
    run("unlisted_normal_entry");
}

#[test]
fn a_plugin_probe_on_an_unlisted_faultable_host_tracepoint_never_runs_after_unload() {
    run("unlisted_faultable_entry");
}

#[test]
fn unlisted_normal_entry() {
    if std::env::var_os("RT7_TP_CHILD").is_some() {
        child(&PLAIN_NORMAL);
    }
}

#[test]
fn unlisted_faultable_entry() {
    if std::env::var_os("RT7_TP_CHILD").is_some() {
        child(&PLAIN_FAULTABLE);
    }
}
