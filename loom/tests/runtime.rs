//! Loom models of the runtime engine's units: the take-ready snapshot
//! (callbacks run in ticket order even when a grace period completes while
//! the runtime collects them) and the wake-up handshake (a callback queued
//! while the runtime goes idle is never stranded). Each has a negative twin
//! that switches its defense off and requires the model's own assertion to
//! fire.
#![cfg(usrcu_loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use std::sync::Mutex as StdMutex;
use usrcu::__loom::{set_fault, CallbackCore, Fault};
use usrcu::CallbackHead;

/// Faults are process-wide: models run one at a time.
static SERIAL: StdMutex<()> = StdMutex::new(());

const OUT_OF_ORDER: &str = "callback B (queued after A by the same thread) ran before A";
const STRANDED: &str = "a queued callback was stranded: not run, no kick, runtime idle";

/// Run `model` with `fault` on; require it to fail with `expected` (the
/// model's own assertion, not any panic such as loom's branch limit).
fn must_fail_with(fault: Fault, expected: &str, model: fn()) {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: models run one at a time (SERIAL) and no other thread of
    // this process uses usrcu while the fault is on.
    unsafe { set_fault(fault, true) };
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(|| loom::model(model));
    std::panic::set_hook(prev);
    // SAFETY: as above.
    unsafe { set_fault(fault, false) };
    let err = r.expect_err(&format!("loom found no failure with {fault:?}"));
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        msg.contains(expected),
        "with {fault:?} the model failed, but not on its own assertion: {msg:?}"
    );
}

#[repr(C)]
struct Logged {
    head: CallbackHead,
    id: usize,
    first: *const AtomicUsize,
    ran: *const AtomicUsize,
}

unsafe extern "C" fn log_run(h: *mut CallbackHead) {
    // SAFETY: `h` is the first field of a leaked Box<Logged>, handed back
    // once; the atomics it points to outlive the model iteration.
    let l = unsafe { Box::from_raw(h as *mut Logged) };
    // SAFETY: as above.
    unsafe {
        // Relaxed: one runtime thread runs a domain's callbacks at a time,
        // and the model reads these after joining it.
        let _ = (*l.first).compare_exchange(0, l.id, Ordering::Relaxed, Ordering::Relaxed);
        (*l.ran).fetch_add(1, Ordering::Relaxed);
    }
}

fn logged(id: usize, first: &AtomicUsize, ran: &AtomicUsize) -> *mut CallbackHead {
    Box::into_raw(Box::new(Logged {
        head: CallbackHead::new(),
        id,
        first,
        ran,
    })) as *mut CallbackHead
}

const A: usize = 1;
const B: usize = 2;

/// One thread queues A on CPU 0, migrates, queues B on CPU 1, both with
/// grace periods already complete (as when another thread completed them
/// meanwhile); the runtime takes a batch while the queueing goes on, and may
/// collect CPU 0's stack before A lands and CPU 1's after B did. A must
/// still run before B.
fn callbacks_of_one_thread_run_in_order_across_cpus() {
    let cc = Arc::new(CallbackCore::new(2));
    let first = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let runtime = {
        let cc = cc.clone();
        thread::spawn(move || {
            cc.take_and_run();
        })
    };
    // SAFETY: fresh allocations, handed over until `log_run`.
    unsafe {
        cc.enqueue_with_cookie(0, logged(A, &first, &ran), log_run, 0);
        cc.enqueue_with_cookie(1, logged(B, &first, &ran), log_run, 0);
    }
    runtime.join().unwrap();
    while cc.pending() > 0 {
        cc.service_once();
    }
    assert_eq!(first.load(Ordering::Relaxed), A, "{}", OUT_OF_ORDER);
    assert_eq!(ran.load(Ordering::Relaxed), 2);
}

#[test]
fn model_take_ready_keeps_ticket_order() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    loom::model(callbacks_of_one_thread_run_in_order_across_cpus);
}

#[test]
fn model_take_ready_fails_when_taking_past_a_gap() {
    must_fail_with(
        Fault::TakePastGap,
        OUT_OF_ORDER,
        callbacks_of_one_thread_run_in_order_across_cpus,
    );
}

/// A producer queues a callback and kicks only if the runtime looks idle;
/// the runtime takes what it sees and goes idle. Either the callback ran,
/// or the producer kicked, or the runtime's re-check kept it scheduled.
fn queued_callback_is_never_stranded() {
    let cc = Arc::new(CallbackCore::new(1));
    let first = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    cc.runtime_scheduled();
    let runtime = {
        let cc = cc.clone();
        thread::spawn(move || {
            cc.take_and_run();
            cc.runtime_idle()
        })
    };
    // The grace period this callback needs is already complete.
    // SAFETY: a fresh allocation, handed over until `log_run`.
    unsafe { cc.enqueue_with_cookie(0, logged(A, &first, &ran), log_run, 0) };
    let kicked = cc.needs_kick();
    let stays = runtime.join().unwrap();
    let done = ran.load(Ordering::Relaxed) == 1;
    assert!(done || kicked || stays, "{}", STRANDED);
    while cc.pending() > 0 {
        cc.take_and_run();
    }
}

#[test]
fn model_wake_up_handshake() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    loom::model(queued_callback_is_never_stranded);
}

#[test]
fn model_wake_up_handshake_fails_when_weakened() {
    must_fail_with(Fault::RelaxedWake, STRANDED, queued_callback_is_never_stranded);
}
