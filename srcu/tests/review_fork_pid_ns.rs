//! Review demo: the runtime's "is my driver running here?" test is
//! `started_in == getpid()`. A child created in a new pid namespace by a
//! process that is pid 1 of its own namespace (a container's init) has the
//! same pid, 1: it believes the parent's driver runs in it, starts none, and
//! its callbacks and barriers never complete.
use std::time::Duration;
use usrcu::Srcu;

const CHILD_ENV: &str = "USRCU_REVIEW_PIDNS";

#[test]
fn a_child_in_a_new_pid_namespace_with_its_parents_pid_starts_its_own_driver() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", "entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("grandchild (pid 1) barrier: true"), "{text}");
}

fn fork_in_new_pid_ns() -> libc::pid_t {
    // SAFETY: unshare/fork; the child only runs Rust code of this test.
    unsafe {
        assert_eq!(libc::unshare(libc::CLONE_NEWPID), 0, "unshare: {}", std::io::Error::last_os_error());
        libc::fork()
    }
}

fn wait(pid: libc::pid_t) -> i32 {
    let mut st = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    st
}

#[test]
fn entry() {
    if std::env::var(CHILD_ENV).is_err() {
        return;
    }
    // SAFETY: no preconditions.
    unsafe { libc::alarm(60) };
    let p1 = fork_in_new_pid_ns();
    if p1 == 0 {
        // pid 1 of a new namespace: use the runtime (starts usrcu-gp here).
        let d = Box::leak(Box::new(Srcu::new("review-pidns")));
        d.call_srcu(|| {});
        println!("child (pid {}) barrier: {}", std::process::id(), d.barrier_timeout(Duration::from_secs(5)));
        let p2 = fork_in_new_pid_ns();
        if p2 == 0 {
            d.call_srcu(|| {});
            println!("grandchild (pid {}) barrier: {}", std::process::id(), d.barrier_timeout(Duration::from_secs(3)));
            let gp = std::fs::read_dir("/proc/self/task").unwrap().filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok()).any(|n| n.trim() == "usrcu-gp");
            println!("grandchild has a usrcu-gp thread: {gp}");
            // SAFETY: leave without running the parent's atexit state.
            unsafe { libc::_exit(0) };
        }
        wait(p2);
        // SAFETY: as above.
        unsafe { libc::_exit(0) };
    }
    wait(p1);
}
