//! Red-team (round 5): the runtime engine's "one user never holds up
//! another" promise (issue 8) as a host author meets it through the
//! registry: unregistering a probe of a normal tracepoint waits for a Tasks
//! grace period, and the Tasks flavor's one thread both drives its grace
//! periods and runs its callbacks, so any Tasks callback that blocks (the
//! host's, or a plugin's) holds up every normal tracepoint's `unregister`
//! in the process. Runs in a child process with an alarm; ordering (flags),
//! not timing, decides the assertion.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use usrcu_registry::define_tracepoint;
use usrcu_tests::{in_child, Child, CHILD_ENV};

define_tracepoint!(static RT5_NORMAL: Tracepoint<u64> = normal "redteam5.normal");

static PROBE_DATA: u64 = 0;

fn probe(_: &u64, _: &u64) {}

#[test]
fn a_normal_tracepoint_probe_unregisters_while_an_unrelated_tasks_callback_blocks() {
    if in_child(CHILD_ENV, None) {
        // SAFETY: alarm has no preconditions; a hang dies by SIGALRM.
        unsafe { libc::alarm(60) };
        let (tx, rx) = mpsc::channel::<()>();
        let started = Arc::new(AtomicBool::new(false));
        {
            let started = started.clone();
            usrcu::tasks::call(move || {
                started.store(true, Ordering::SeqCst);
                let _ = rx.recv_timeout(Duration::from_secs(60));
            });
        }
        while !started.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let handle = RT5_NORMAL.register(probe, &PROBE_DATA).unwrap();
        RT5_NORMAL.fire(&1);
        let done = Arc::new(AtomicBool::new(false));
        {
            let done = done.clone();
            std::thread::spawn(move || {
                assert!(handle.unregister());
                done.store(true, Ordering::SeqCst);
            });
        }
        // A bound, not a timing assertion: only whether `unregister`
        // returned before the callback was released is checked.
        let t0 = Instant::now();
        while !done.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let before_release = done.load(Ordering::SeqCst);
        tx.send(()).unwrap();
        while !done.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            before_release,
            "unregister of a normal tracepoint's probe waited for an unrelated blocked Tasks callback"
        );
        return;
    }
    // The child runs this ignored test too (`--include-ignored`).
    Child::new("a_normal_tracepoint_probe_unregisters_while_an_unrelated_tasks_callback_blocks")
        .run()
        .assert_passed("1 passed", "the child failed");
}
