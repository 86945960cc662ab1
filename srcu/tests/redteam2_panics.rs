//! Red-team (round 2): user code that panics where the runtime catches
//! panics. The documented promise (`Srcu::call_srcu`, `trace::call`): "a
//! panicking callback is reported (`WarningKind::CallbackPanicked`) and the
//! runtime goes on". A panic's payload is user data too: one whose `Drop`
//! panics again is dropped by whoever caught it, here inside an
//! `extern "C"` trampoline, where a panic cannot unwind and aborts the
//! process.
//!
//! Each scenario runs in a child process of the test binary, so that an
//! abort is reported as a failed test, not a dead test runner; the child
//! arms `alarm` so that a hang is reported too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use usrcu::diagnostics::{Capture, WarningKind};
use usrcu::Srcu;

#[path = "common/child.rs"]
mod child;

const CHILD_ENV: &str = "USRCU_REDTEAM2_PANICS_CHILD";

fn run_entry(entry: &str, marker: &str) {
    child::Child::new(entry).env(CHILD_ENV, "1").must_pass(marker);
}

fn in_child() -> bool {
    child::in_child(CHILD_ENV, Some(60))
}

/// A panic payload whose drop panics again.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("the payload's drop panicked too");
        }
    }
}

#[test]
fn an_srcu_callback_whose_panic_payload_panics_on_drop_is_reported_and_the_runtime_goes_on() {
    run_entry("srcu_bomb_entry", "srcu bomb: done");
}

#[test]
fn srcu_bomb_entry() {
    if !in_child() {
        return;
    }
    let cap = Capture::start();
    let d = Srcu::new("rt2-bomb");
    let ran = Arc::new(AtomicUsize::new(0));
    d.call_srcu(|| std::panic::panic_any(Bomb));
    let r = ran.clone();
    d.call_srcu(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    d.barrier();
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "the callback after the panicking one ran"
    );
    assert_eq!(cap.find("rt2-bomb", WarningKind::CallbackPanicked).len(), 1);
    println!("srcu bomb: done");
}

#[test]
fn a_trace_callback_whose_panic_payload_panics_on_drop_is_reported_and_the_runtime_goes_on() {
    run_entry("trace_bomb_entry", "trace bomb: done");
}

#[test]
fn trace_bomb_entry() {
    if !in_child() {
        return;
    }
    let cap = Capture::start();
    let ran = Arc::new(AtomicUsize::new(0));
    usrcu::trace::call(|| std::panic::panic_any(Bomb));
    let r = ran.clone();
    usrcu::trace::call(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    usrcu::trace::barrier();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!(
        cap.find(usrcu::trace::DOMAIN_NAME, WarningKind::CallbackPanicked).len(),
        1
    );
    println!("trace bomb: done");
}

#[test]
fn a_tasks_callback_whose_panic_payload_panics_on_drop_is_reported_and_the_runtime_goes_on() {
    run_entry("tasks_bomb_entry", "tasks bomb: done");
}

#[test]
fn tasks_bomb_entry() {
    if !in_child() {
        return;
    }
    let cap = Capture::start();
    let ran = Arc::new(AtomicUsize::new(0));
    usrcu::tasks::call(|| std::panic::panic_any(Bomb));
    let r = ran.clone();
    usrcu::tasks::call(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    usrcu::tasks::barrier();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!(
        cap.find(usrcu::tasks::DOMAIN_NAME, WarningKind::CallbackPanicked).len(),
        1
    );
    println!("tasks bomb: done");
}

/// A `log` backend that panics on the runtime's warnings (a user's logger
/// with a bug, or one that panics on purpose in debug builds).
struct PanickingLogger;

impl log::Log for PanickingLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        if r.target() == "usrcu" {
            panic!("the logger panicked on: {}", r.args());
        }
    }
    fn flush(&self) {}
}

#[test]
fn a_logger_that_panics_on_a_warning_neither_aborts_nor_stops_the_runtime() {
    run_entry("panicking_logger_entry", "panicking logger: done");
}

#[test]
fn panicking_logger_entry() {
    if !in_child() {
        return;
    }
    static LOGGER: PanickingLogger = PanickingLogger;
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    let cap = Capture::start();
    let d = Srcu::new("rt2-panicking-logger");
    let ran = Arc::new(AtomicUsize::new(0));
    // Warned from an invoker, inside an extern "C" trampoline.
    d.call_srcu(|| panic!("a callback panicked"));
    // Warned from inside the vtable's barrier (extern "C"): refused.
    let d2 = Arc::new(Srcu::new("rt2-panicking-logger-own-barrier"));
    let d3 = d2.clone();
    d2.call_srcu(move || {
        assert!(!d3.barrier_timeout(std::time::Duration::from_secs(60)));
    });
    d2.barrier();
    let r = ran.clone();
    d.call_srcu(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    d.barrier();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    // Still captured, even though the logger panicked.
    assert_eq!(cap.find("rt2-panicking-logger", WarningKind::CallbackPanicked).len(), 1);
    assert_eq!(
        cap.find("rt2-panicking-logger-own-barrier", WarningKind::IllegalSynchronize)
            .len(),
        1
    );
    println!("panicking logger: done");
}
