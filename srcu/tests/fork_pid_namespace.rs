//! A child of `fork` starts its own runtime threads on first use, even when
//! its pid equals its parent's: a process that is pid 1 of its pid
//! namespace (a container's init) and forks a child into a new namespace
//! gives that child pid 1 as well. The runtime's fork handler forgets the
//! parent's threads in every child; a pid comparison alone did not (the
//! child's `barrier` hung, no `usrcu-gp` thread in it).
//!
//! Needs `unshare(CLONE_NEWPID)` (root, or a user namespace); where it is
//! refused the test says so and checks nothing.

use std::time::Duration;

use usrcu::Srcu;

#[path = "common/child.rs"]
mod child;

const CHILD_ENV: &str = "USRCU_FORK_PID_NAMESPACE_CHILD";

#[test]
fn a_child_in_a_new_pid_namespace_with_its_parents_pid_starts_its_own_runtime() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    let ran = child::Child::new("a_child_in_a_new_pid_namespace_with_its_parents_pid_starts_its_own_runtime")
        .env(CHILD_ENV, "1")
        .run();
    let text = ran.text();
    if text.contains("SKIPPED") {
        eprintln!("{text}");
        return;
    }
    ran.assert_passed("", "the child failed");
    assert!(text.contains("pid 1 child: barrier true"), "{text}");
    assert!(text.contains("pid 1 grandchild: barrier true, usrcu-gp true"), "{text}");
}

/// Fork into a new pid namespace: in the child, `Some(0)`; in the parent,
/// `Some(pid)`; `None` if `unshare(CLONE_NEWPID)` is refused here.
fn fork_in_new_pid_namespace() -> Option<libc::pid_t> {
    // SAFETY: unshare only changes the namespace of later children.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        return None;
    }
    // SAFETY: the child runs only this test's code and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    Some(pid)
}

/// Wait for `pid`; its exit status, or -1 if it did not exit normally.
fn wait(pid: libc::pid_t) -> i32 {
    let mut st = 0;
    // SAFETY: `pid` is our child; `st` is writable.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        -1
    }
}

fn has_thread(name: &str) -> bool {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .any(|n| n.trim() == name)
}

fn child() {
    let Some(p1) = fork_in_new_pid_namespace() else {
        println!("SKIPPED: unshare(CLONE_NEWPID) is refused here; this test checks nothing");
        return;
    };
    if p1 == 0 {
        // SAFETY: alarm has no preconditions; a hang ends the process.
        unsafe { libc::alarm(20) };
        // Pid 1 of a new namespace: its runtime starts here.
        let d: &'static Srcu = Box::leak(Box::new(Srcu::new("fork-pid-namespace")));
        d.call_srcu(|| {});
        let ok = d.barrier_timeout(Duration::from_secs(10));
        println!("pid {} child: barrier {ok}", std::process::id());
        // The documented rule: fork while the runtime is idle.
        while !usrcu::runtime::idle() {
            std::thread::yield_now();
        }
        let Some(p2) = fork_in_new_pid_namespace() else {
            println!("SKIPPED: unshare(CLONE_NEWPID) refused in the child");
            // SAFETY: leave without the parent's atexit state.
            unsafe { libc::_exit(0) };
        };
        if p2 == 0 {
            // Pid 1 again, of another namespace: the same pid as its parent.
            d.call_srcu(|| {});
            let ok = d.barrier_timeout(Duration::from_secs(10));
            println!(
                "pid {} grandchild: barrier {ok}, usrcu-gp {}",
                std::process::id(),
                has_thread("usrcu-gp")
            );
            // SAFETY: as above.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let rc = wait(p2);
        // SAFETY: as above.
        unsafe { libc::_exit(if ok && rc == 0 { 0 } else { 1 }) };
    }
    assert_eq!(wait(p1), 0, "the child or the grandchild failed (see above)");
}
