//! Red-team (round 2) of `fork`. The documented rule
//! (`usrcu::runtime::idle`): fork while `idle()` holds and the child starts
//! its own runtime; "readers are not part of it: a section that another
//! thread has open at the fork stays open in the child ... so the child's
//! grace periods *on that domain* never complete". Nothing says that a
//! reader of one domain, or a domain being created or dropped, in another
//! thread of the parent may stop the child from using *other* domains.
//!
//! Each scenario runs in a child process of the test binary (re-executed
//! with an environment variable) that forks many times; every grandchild
//! arms `alarm` so that a hang is reported as a death by `SIGALRM`, never as
//! a stuck test.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use usrcu::Srcu;

#[path = "common/child.rs"]
mod child;

const CHILD_ENV: &str = "USRCU_REDTEAM2_FORK_CHILD";

fn run_entry(entry: &str, marker: &str) {
    child::Child::new(entry).env(CHILD_ENV, "1").must_pass(marker);
}

/// Fork up to `rounds` times while `runtime::idle()` holds, running `child`
/// in each child under a 5 s alarm; stops at the first child that does not
/// exit 0 and returns a description of it (`None`: all exited 0).
fn fork_rounds(rounds: usize, child: fn() -> i32) -> Option<String> {
    for round in 0..rounds {
        while !usrcu::runtime::idle() {
            thread::yield_now();
        }
        // SAFETY: the child only uses usrcu and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: alarm has no preconditions; it turns a hang into a
            // death by SIGALRM, which the parent reports.
            unsafe { libc::alarm(5) };
            let rc = child();
            // SAFETY: leaving the child without the parent's atexit handlers.
            unsafe { libc::_exit(rc) };
        }
        let mut status = 0;
        // SAFETY: `pid` is our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            let hung = libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGALRM;
            return Some(format!(
                "child of round {round} {} (status {status:#x})",
                if hung { "hung (killed by its alarm)" } else { "died" }
            ));
        }
    }
    None
}

static BUSY: Srcu = Srcu::new_static("rt2-fork-busy-reader");
static QUIET: Srcu = Srcu::new_static("rt2-fork-quiet");

/// In the child: a reader, a grace period, a callback and a barrier on a
/// domain nobody else used at the fork.
fn use_quiet_domain() -> i32 {
    drop(QUIET.read_lock());
    QUIET.synchronize();
    QUIET.call_srcu(|| {});
    QUIET.barrier();
    0
}

#[test]
fn a_reader_looping_on_one_domain_in_the_parent_does_not_hang_the_childs_readers_of_another() {
    run_entry("busy_reader_fork_entry", "busy reader fork: done");
}

#[test]
fn busy_reader_fork_entry() {
    if !child::in_child(CHILD_ENV, None) {
        return;
    }
    // Attach QUIET here, so that the child's first use of it attaches nothing.
    QUIET.attach();
    QUIET.call_srcu(|| {});
    QUIET.barrier();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let reader = thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            drop(BUSY.read_lock());
        }
    });
    let bad = fork_rounds(200, use_quiet_domain);
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert_eq!(bad, None, "using a domain nobody used at the fork");
    println!("busy reader fork: done");
}

/// In the child: a domain created, used and dropped.
fn use_fresh_domain() -> i32 {
    let d = Srcu::new("rt2-fork-fresh-in-child");
    d.attach();
    d.synchronize();
    d.call_srcu(|| {});
    d.barrier();
    drop(d);
    0
}

#[test]
fn domains_created_and_dropped_in_a_parent_thread_do_not_hang_the_childs_new_domains() {
    run_entry("churn_fork_entry", "churn fork: done");
}

#[test]
fn churn_fork_entry() {
    if !child::in_child(CHILD_ENV, None) {
        return;
    }
    // Many live domains: every cleanup's unregister walks them all under
    // the registry's lock, which widens the window a fork can hit.
    let live: Vec<Srcu> = (0..5_000).map(|_| Srcu::new("rt2-fork-live")).collect();
    live.iter().for_each(Srcu::attach);
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let churn = thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            // Attach (no reader: release builds and debug builds alike),
            // then a successful cleanup at drop.
            let d = Srcu::new("rt2-fork-churn");
            d.attach();
            drop(d);
        }
    });
    let bad = fork_rounds(200, use_fresh_domain);
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    drop(live);
    assert_eq!(bad, None, "attaching a new domain");
    println!("churn fork: done");
}
