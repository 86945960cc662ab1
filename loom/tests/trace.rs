//! Loom models of Tasks Trace RCU (`usrcu::trace`): a reader against
//! `synchronize`, driving the library's own record and scan code.
#![cfg(usrcu_loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use std::sync::Mutex as StdMutex;
use usrcu::__loom::{set_fault, Fault, TraceCore};

/// Faults are process-wide: models run one at a time.
static SERIAL: StdMutex<()> = StdMutex::new(());

const LIVE: usize = 1;
const FREED: usize = 0xdead;

/// The model's own assertion message: the negative twin requires this
/// failure, not any panic.
const TOO_SHORT: &str = "trace reader saw a freed object: grace period too short";

/// A reader that nests, and re-enters after leaving, never sees the object
/// the updater frees after `trace::synchronize`.
fn trace_reader_never_sees_an_object_freed_after_synchronize() {
    let core = Arc::new(TraceCore::new(2));
    let objects = Arc::new([AtomicUsize::new(LIVE), AtomicUsize::new(LIVE)]);
    let published = Arc::new(AtomicUsize::new(0));

    let reader = {
        let (core, objects, published) = (core.clone(), objects.clone(), published.clone());
        thread::spawn(move || {
            for _ in 0..2 {
                core.enter(0);
                core.enter(0);
                // Relaxed: ordered by the reader fence B against the updater's
                // heavy fence A; that pairing is what the model checks.
                let which = published.load(Ordering::Relaxed);
                core.exit(0);
                assert_eq!(objects[which].load(Ordering::Relaxed), LIVE, "{TOO_SHORT}");
                core.exit(0);
            }
        })
    };

    // Relaxed: see the reader.
    published.store(1, Ordering::Relaxed);
    core.synchronize();
    objects[0].store(FREED, Ordering::Relaxed);
    reader.join().unwrap();
}

#[test]
fn model_trace_reader_vs_synchronize() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    loom::model(trace_reader_never_sees_an_object_freed_after_synchronize);
}

/// Run the model with `fault` on and require loom to find a failure by the
/// model's own assertion (not any panic).
fn must_fail_by_own_assertion(fault: Fault) {
    static SEEN: StdMutex<Vec<String>> = StdMutex::new(Vec::new());
    SEEN.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        SEEN.lock().unwrap_or_else(|p| p.into_inner()).push(info.to_string());
    }));
    // SAFETY: models run one at a time and nothing else in this process
    // uses usrcu while the fault is on.
    unsafe { set_fault(fault, true) };
    let r = std::panic::catch_unwind(|| loom::model(trace_reader_never_sees_an_object_freed_after_synchronize));
    // SAFETY: as above.
    unsafe { set_fault(fault, false) };
    std::panic::set_hook(hook);
    assert!(r.is_err(), "loom found no failure with {fault:?}");
    let seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    assert!(
        seen.iter().any(|m| m.contains(TOO_SHORT)),
        "the model failed with {fault:?}, but not by its own assertion: {seen:?}"
    );
}

#[test]
fn model_trace_reader_vs_synchronize_fails_without_reader_fence() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    must_fail_by_own_assertion(Fault::TraceNoReaderFence);
}

/// The model reaches the holdout path: a grace period that does not
/// re-check its holdouts is caught too.
#[test]
fn model_trace_reader_vs_synchronize_fails_without_holdout_recheck() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    must_fail_by_own_assertion(Fault::TraceSkipHoldoutRecheck);
}
