//! The fork window of `runtime::idle()`: a runtime thread that has just
//! made the runtime idle takes its lock once more on its way back to sleep
//! (an invoker the pool's queue, the driver its heap). A fork at that
//! instant used to leave the lock held in the child, whose first
//! `call_srcu` or `barrier` then waited forever; the runtime's
//! `pthread_atfork` handler (`srcu/src/runtime/fork.rs`) closes it.
//!
//! The window is held open by a test-only pause (`__testing::
//! arm_sleep_pause`): the thread stops there, holding its lock, once the
//! rest of the runtime is idle, and lets go when a fork's prepare handler
//! starts (or when the test releases it after the fork). Each case runs in
//! a fresh process (a re-exec of this binary), which forks a child that
//! uses the domain under `alarm`. The twins without the handler show that
//! the test hits the window: their children hang until SIGALRM kills them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use usrcu::__testing::{self, Sleeper};
use usrcu::Srcu;

#[path = "common/bounded.rs"]
mod bounded;
#[path = "common/child.rs"]
mod child;
use bounded::sleep_paused_within;

const CHILD_ENV: &str = "USRCU_FORK_WINDOW_CASE";

/// Run `window_entry` in a fresh process for `case`; its stdout.
fn run_case(case: &str) -> String {
    child::Child::new("window_entry")
        .env(CHILD_ENV, case)
        .must_pass(&format!("fork window {case}: done"))
        .stdout
}

#[test]
fn a_child_forked_while_an_invoker_holds_the_pool_lock_on_its_way_to_sleep_runs_callbacks() {
    let text = run_case("invoker");
    assert!(text.contains("child exited 0"), "{text}");
}

#[test]
fn a_child_forked_while_the_driver_holds_its_heap_lock_on_its_way_to_sleep_runs_callbacks() {
    let text = run_case("driver");
    assert!(text.contains("child exited 0"), "{text}");
}

#[test]
fn without_the_fork_handler_a_child_forked_in_the_invoker_window_hangs() {
    let text = run_case("invoker-no-handler");
    assert!(
        text.contains(&format!("child killed by signal {}", libc::SIGALRM)),
        "{text}"
    );
}

#[test]
fn without_the_fork_handler_a_child_forked_in_the_driver_window_hangs() {
    let text = run_case("driver-no-handler");
    assert!(
        text.contains(&format!("child killed by signal {}", libc::SIGALRM)),
        "{text}"
    );
}

#[test]
fn window_entry() {
    let Ok(case) = std::env::var(CHILD_ENV) else {
        return;
    };
    let who = if case.starts_with("invoker") {
        Sleeper::Invoker
    } else {
        Sleeper::Driver
    };
    let handler = !case.ends_with("no-handler");
    if !handler {
        // Before the runtime's first thread starts, which registers it.
        __testing::skip_fork_handler();
    }
    let d = Srcu::new("fork-window");
    let ran = Arc::new(AtomicUsize::new(0));
    let queue_one = |d: &Srcu| {
        let r = ran.clone();
        d.call_srcu(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
    };
    // Start the runtime's threads, then arm the pause and give the thread
    // a reason to wake and go back to sleep.
    queue_one(&d);
    d.barrier();
    let mut inside = false;
    for _ in 0..20 {
        // Armed afresh each time: one pause per arming, and a pause can
        // begin and end unseen while this thread waits for the lock it
        // holds (below).
        __testing::arm_sleep_pause(who);
        // The thread may be on its way to sleep already (late, on a loaded
        // machine, after the barrier above). It pauses there, holding its
        // lock, which `call_srcu` below would then wait for until the
        // pause's own time limit: so look for that pause first.
        if sleep_paused_within(Duration::from_millis(500)) {
            inside = true;
            break;
        }
        queue_one(&d);
        d.barrier();
        if sleep_paused_within(Duration::from_secs(2)) {
            inside = true;
            break;
        }
    }
    assert!(inside, "the {who:?} never paused on its way to sleep");
    let before = ran.load(Ordering::SeqCst);

    // SAFETY: this process runs only this test; the child only uses usrcu
    // and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: alarm has no preconditions.
        unsafe { libc::alarm(if handler { 5 } else { 2 }) };
        queue_one(&d);
        d.barrier();
        d.synchronize();
        let ok = ran.load(Ordering::SeqCst) == before + 1;
        // SAFETY: leaving the child without the parent's atexit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 3 }) };
    }
    __testing::release_sleep_pause();
    let mut status = 0;
    // SAFETY: `pid` is our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) {
        println!("child exited {}", libc::WEXITSTATUS(status));
    } else if libc::WIFSIGNALED(status) {
        println!("child killed by signal {}", libc::WTERMSIG(status));
    }
    // The parent's runtime goes on.
    queue_one(&d);
    d.barrier();
    assert_eq!(ran.load(Ordering::SeqCst), before + 1);
    println!("fork window {case}: done");
}
