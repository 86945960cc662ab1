//! A probe that panics: `fire` returns normally, the panic is reported as a
//! `CallbackPanicked` warning, and the probes after it still run, on both
//! kinds of tracepoint. (A plugin's probe firing in the host is the case
//! that matters: there the panic would abort the process, since the host's
//! `std` cannot catch the plugin's; `tests/tests/redteam2_probe_panics.rs`
//! loads such a plugin.)

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use usrcu::diagnostics::{capture, WarningKind};
use usrcu_registry::define_tracepoint;

define_tracepoint!(static FAULTABLE: Tracepoint<u64> = faultable "probe-panics.faultable");
define_tracepoint!(static NORMAL: Tracepoint<u64> = normal "probe-panics.normal");

static BEFORE: AtomicU64 = AtomicU64::new(0);
static AFTER: AtomicU64 = AtomicU64::new(0);

fn counting(n: &AtomicU64, _: &u64) {
    n.fetch_add(1, Ordering::Relaxed);
}

fn panicking(_: &(), arg: &u64) {
    if *arg == 13 {
        panic!("probe-panics: deliberate on {arg}");
    }
}

fn check(tp: &'static usrcu_registry::tracepoint::Tracepoint<u64>, may_block: bool) {
    let attach = |f: fn(&AtomicU64, &u64), d: &'static AtomicU64| {
        if may_block {
            tp.register_may_block(f, d)
        } else {
            tp.register(f, d)
        }
    };
    // Dropping a handle leaves its probe attached.
    let _ = attach(counting, &BEFORE).unwrap();
    let _ = if may_block {
        tp.register_may_block(panicking, &())
    } else {
        tp.register(panicking, &())
    }
    .unwrap();
    let _ = attach(counting, &AFTER).unwrap();
    let (before, after) = (BEFORE.load(Ordering::Relaxed), AFTER.load(Ordering::Relaxed));
    let (fired, warnings) = capture(|| catch_unwind(AssertUnwindSafe(|| tp.fire(&13))));
    assert!(fired.is_ok(), "{}: a probe's panic unwound out of fire", tp.name());
    assert_eq!(BEFORE.load(Ordering::Relaxed), before + 1);
    assert_eq!(
        AFTER.load(Ordering::Relaxed),
        after + 1,
        "{}: the probe after the panicking one did not run",
        tp.name()
    );
    assert!(
        warnings.iter().any(|w| w.kind == WarningKind::CallbackPanicked
            && w.message.contains("tracepoint probe")
            && w.message.contains("deliberate on 13")),
        "{}: no CallbackPanicked warning: {warnings:?}",
        tp.name()
    );
    tp.fire(&1);
    assert_eq!(AFTER.load(Ordering::Relaxed), after + 2);
}

#[test]
fn a_panicking_probe_is_reported_and_the_others_run_on_both_kinds_of_tracepoint() {
    check(&FAULTABLE, true);
    BEFORE.store(0, Ordering::Relaxed);
    AFTER.store(0, Ordering::Relaxed);
    check(&NORMAL, false);
}
