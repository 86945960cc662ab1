//! `trace::idle()` and `tasks::idle()`, the public "may this process fork
//! now?" answers of the two process-wide flavors (as `runtime::idle()` is
//! SRCU's): false while a callback of the flavor is queued or running and
//! while a grace period is in progress, true again once the work is done.
//! Ordering decides every assertion (flags set by the callback or the
//! reader); the only clock is a watchdog that turns a hang into a failure.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Wait until `f()` holds; panics (naming `what`) if it does not within a
/// minute, so that a flag that never comes fails instead of hanging.
fn wait_for(what: &str, f: impl Fn() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < give_up, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A callback that says when it runs and returns only when released.
struct Blocker {
    started: AtomicBool,
    release: AtomicBool,
}

impl Blocker {
    fn new() -> Arc<Blocker> {
        Arc::new(Blocker {
            started: AtomicBool::new(false),
            release: AtomicBool::new(false),
        })
    }

    fn run(&self) {
        // Release/Acquire: the test reads `started` and then asserts on the
        // flavor's state; this callback is running by then.
        self.started.store(true, Ordering::Release);
        while !self.release.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn trace_idle_is_false_while_a_callback_runs_or_a_grace_period_waits_and_true_after() {
    // A callback of the flavor running.
    let b = Blocker::new();
    let c = b.clone();
    usrcu::trace::call(move || c.run());
    wait_for("the trace callback to start", || b.started.load(Ordering::Acquire));
    assert!(!usrcu::trace::idle(), "idle while a trace callback runs");
    b.release.store(true, Ordering::Release);
    usrcu::trace::barrier();
    wait_for("Tasks Trace to become idle after the barrier", usrcu::trace::idle);

    // A grace period waiting for a reader (no callback queued).
    let inside = Arc::new(AtomicBool::new(false));
    let leave = Arc::new(AtomicBool::new(false));
    let reader = {
        let (inside, leave) = (inside.clone(), leave.clone());
        std::thread::spawn(move || {
            let _g = usrcu::trace::read_lock();
            inside.store(true, Ordering::Release);
            while !leave.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    wait_for("the reader to enter", || inside.load(Ordering::Acquire));
    let done = Arc::new(AtomicBool::new(false));
    let updater = {
        let done = done.clone();
        std::thread::spawn(move || {
            usrcu::trace::synchronize();
            done.store(true, Ordering::Release);
        })
    };
    // The updater holds the grace period until the reader leaves.
    wait_for("the grace period to start", || !usrcu::trace::idle());
    assert!(
        !done.load(Ordering::Acquire),
        "synchronize returned with a reader inside"
    );
    assert!(!usrcu::trace::idle(), "idle while a grace period waits for a reader");
    leave.store(true, Ordering::Release);
    reader.join().unwrap();
    updater.join().unwrap();
    wait_for("Tasks Trace to become idle after the grace period", usrcu::trace::idle);
}

#[test]
fn tasks_idle_is_false_while_a_callback_runs_and_true_after_the_barrier() {
    let b = Blocker::new();
    let c = b.clone();
    usrcu::tasks::call(move || c.run());
    wait_for("the Tasks callback to start", || b.started.load(Ordering::Acquire));
    assert!(!usrcu::tasks::idle(), "idle while a Tasks callback runs");
    // Queued behind the running one: pending too.
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    usrcu::tasks::call(move || r.store(true, Ordering::Release));
    assert!(!usrcu::tasks::idle(), "idle with a Tasks callback queued");
    b.release.store(true, Ordering::Release);
    usrcu::tasks::barrier();
    assert!(
        ran.load(Ordering::Acquire),
        "barrier returned before the queued callback ran"
    );
    wait_for("Tasks RCU to become idle after the barrier", usrcu::tasks::idle);
}
