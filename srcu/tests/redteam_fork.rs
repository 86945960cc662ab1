//! Red-team of `fork`: the documented rule is "fork while
//! `runtime::idle()` holds, and the child starts its own runtime".

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;
use usrcu::Srcu;

#[path = "common/child.rs"]
mod child;

const CHILD_ENV: &str = "USRCU_REDTEAM_FORK_CHILD";

#[test]
fn children_forked_right_after_idle_returns_true_never_hang() {
    child::Child::new("fork_loop_entry")
        .env(CHILD_ENV, "1")
        .must_pass("fork loop: done");
}

#[test]
fn fork_loop_entry() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let d = Srcu::new("rt-fork-loop");
    let ran = Arc::new(AtomicUsize::new(0));
    let mut hung = 0;
    let rounds = 300;
    for _ in 0..rounds {
        let r = ran.clone();
        d.call_srcu(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        d.barrier();
        d.synchronize();
        while !usrcu::runtime::idle() {
            thread::yield_now();
        }
        // SAFETY: this process runs only this test and the runtime is idle;
        // the child only uses usrcu and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: alarm has no preconditions.
            unsafe { libc::alarm(5) };
            let r = ran.clone();
            d.call_srcu(move || {
                r.fetch_add(1, Ordering::SeqCst);
            });
            d.barrier();
            d.synchronize();
            // SAFETY: leaving the child without the parent's atexit handlers.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: `pid` is our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            hung += 1;
        }
    }
    assert_eq!(hung, 0, "{hung} of {rounds} children hung or died");
    println!("fork loop: done");
}

#[test]
fn a_section_open_in_another_thread_at_fork_stays_open_in_the_child() {
    child::Child::new("fork_reader_entry")
        .env(CHILD_ENV, "1")
        .must_pass("fork reader: done");
}

#[test]
fn fork_reader_entry() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    static D: Srcu = Srcu::new_static("rt-fork-reader");
    static OTHER: Srcu = Srcu::new_static("rt-fork-reader-other");
    let (entered_tx, entered_rx) = mpsc::channel();
    let (leave_tx, leave_rx) = mpsc::channel::<()>();
    let h = thread::spawn(move || {
        let _g = D.read_lock();
        entered_tx.send(()).unwrap();
        let _ = leave_rx.recv();
    });
    entered_rx.recv().unwrap();
    while !usrcu::runtime::idle() {
        thread::yield_now();
    }
    // SAFETY: this process runs only this test and the runtime is idle;
    // the child only uses usrcu and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: alarm has no preconditions.
        unsafe { libc::alarm(20) };
        let stuck = !D.synchronize_timeout(Duration::from_millis(50));
        // Other domains are unaffected.
        OTHER.call_srcu(|| {});
        OTHER.barrier();
        OTHER.synchronize();
        // SAFETY: leaving the child without the parent's atexit handlers.
        unsafe { libc::_exit(if stuck { 0 } else { 3 }) };
    }
    let mut status = 0;
    // SAFETY: `pid` is our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}"
    );
    leave_tx.send(()).unwrap();
    h.join().unwrap();
    D.synchronize();
    println!("fork reader: done");
}
