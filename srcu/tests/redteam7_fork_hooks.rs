//! Red team (round 7): `fork` while every flavor reports idle
//! (`runtime::idle`, `tasks::idle`, `trace::idle`: "the state in which a
//! process may fork"), with another thread installing hooks into fresh
//! `HookSlot`s (a slot that was empty: no grace period, the flavor stays
//! idle) and dropping them. The host's list of non-empty slots
//! (`tasks/hook_slot.rs`, `registry::SLOTS`) is a mutex that the fork
//! handler (`runtime/fork.rs`, `prepare`) does not take: a child forked
//! while the other thread holds it finds it locked forever, and its first
//! `HookSlot::set` hangs.
//!
//! FINDING if it fails: children killed by the watchdog `alarm`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use usrcu::tasks::HookSlot;

extern "C" fn seven() -> u64 {
    7
}

/// The two tests fork one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static M: std::sync::Mutex<()> = std::sync::Mutex::new(());
    M.lock().unwrap_or_else(|p| p.into_inner())
}

static CHILD_SLOT: HookSlot<extern "C" fn() -> u64> = HookSlot::new();

#[test]
fn a_child_forked_while_the_flavors_are_idle_can_install_a_hook() {
    let _serial = serial();
    // Start the runtime and the flavors once (registers the fork handler).
    let d = usrcu::Srcu::new("rt7-fork-hooks");
    d.call_srcu(|| {});
    d.barrier();
    usrcu::tasks::synchronize();
    usrcu::trace::synchronize();

    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let installer = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            let b: Box<HookSlot<extern "C" fn() -> u64>> = Box::new(HookSlot::new());
            // SAFETY: `seven` never blocks; the slot is dropped in place.
            assert!(unsafe { b.set(Some(seven)) }.is_none());
            drop(b);
        }
    });

    let mut hung = 0;
    let mut forks = 0;
    for _ in 0..400 {
        while !(usrcu::runtime::idle() && usrcu::tasks::idle() && usrcu::trace::idle()) {
            // A sleep, not `yield_now`: a thread spinning on `sched_yield`
            // never looks quiescent to Tasks RCU and would hold the
            // grace period that `idle` waits for.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // SAFETY: the child only installs a hook and `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: alarm and _exit have no preconditions.
            unsafe { libc::alarm(5) };
            // SAFETY: `seven` never blocks.
            unsafe { CHILD_SLOT.set(Some(seven)) };
            let ok = CHILD_SLOT.call() == Some(7);
            // SAFETY: _exit has no preconditions.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        assert!(pid > 0, "fork failed");
        forks += 1;
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGALRM {
            hung += 1;
            if hung >= 3 {
                break;
            }
        } else {
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "child status {status:#x}"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    installer.join().unwrap();
    assert_eq!(
        hung, 0,
        "{hung} of {forks} children forked while every flavor was idle hung in their first HookSlot::set"
    );
}

/// The same window for the warnings' capture list (`diagnostics.rs`,
/// `SINKS`): a thread emitting a warning (public `diagnostics::emit`, or
/// any cleanup that warns) while another forks leaves the list locked in
/// the child, whose first warning or `Capture::start` hangs.
#[test]
fn a_child_forked_while_another_thread_emits_a_warning_can_capture_warnings() {
    let _serial = serial();
    use usrcu::diagnostics::{self, Warning, WarningKind};
    let d = usrcu::Srcu::new("rt7-fork-warn");
    d.call_srcu(|| {});
    d.barrier();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let emitter = std::thread::spawn(move || {
        let _c = diagnostics::Capture::start();
        while !s.load(Ordering::Relaxed) {
            diagnostics::emit(Warning::new(WarningKind::Other, "rt7-fork-warn", "a warning"));
        }
    });
    let mut hung = 0;
    let mut forks = 0;
    for _ in 0..400 {
        while !(usrcu::runtime::idle() && usrcu::tasks::idle() && usrcu::trace::idle()) {
            // A sleep, not `yield_now`: a thread spinning on `sched_yield`
            // never looks quiescent to Tasks RCU and would hold the
            // grace period that `idle` waits for.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // SAFETY: the child only captures one warning and `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: alarm and _exit have no preconditions.
            unsafe { libc::alarm(5) };
            let (_, w) = diagnostics::capture(|| {
                diagnostics::emit(Warning::new(WarningKind::Other, "rt7-child", "child warning"))
            });
            // SAFETY: _exit has no preconditions.
            unsafe {
                libc::_exit(if w.iter().any(|w| w.domain == "rt7-child") {
                    0
                } else {
                    1
                })
            };
        }
        assert!(pid > 0, "fork failed");
        forks += 1;
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGALRM {
            hung += 1;
            if hung >= 3 {
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    emitter.join().unwrap();
    assert_eq!(
        hung, 0,
        "{hung} of {forks} children forked while the flavors were idle hung capturing a warning"
    );
}
