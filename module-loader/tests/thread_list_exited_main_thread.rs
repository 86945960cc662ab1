//! Once the main thread has ended with `pthread_exit` while other threads
//! run, the kernel keeps it listed in `/proc/self/task` as a zombie, and
//! glibc's descriptor of it no longer names it. A walk of glibc's thread
//! list must count it as gone, not as a thread the walk missed: otherwise
//! every walk looks torn, `ThreadList::open` never answers, and every
//! unload ends as a `ThreadsUnverifiable` Zombie.
//!
//! `harness = false` (module-loader/Cargo.toml): the test is this binary's
//! `main`, because the main thread has to end; exit status 0 passes.

use std::time::{Duration, Instant};

use usrcu_module_loader::thread_list::ThreadList;

/// The state letter of thread `tid` (`/proc/self/task/<tid>/stat`).
fn state(tid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    stat.rfind(')').and_then(|i| stat[i + 1..].trim_start().chars().next())
}

fn main() {
    std::thread::spawn(|| {
        let leader = std::process::id();
        // Wait (bounded) until the main thread has exited and is a zombie.
        let deadline = Instant::now() + Duration::from_secs(10);
        while state(leader) != Some('Z') {
            if Instant::now() > deadline {
                eprintln!("FAILED: the main thread never became a zombie ({:?})", state(leader));
                std::process::exit(2);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let open = ThreadList::open();
        let live = open.as_ref().and_then(|l| l.live_threads());
        if open.is_none() || live.is_none() {
            eprintln!(
                "FAILED: with the main thread exited (a zombie in /proc/self/task), glibc's thread \
                 list reads as unverifiable (open: {}, live_threads: {})",
                open.is_some(),
                live.is_some()
            );
            std::process::exit(1);
        }
        println!(
            "thread_list_exited_main_thread: ok ({} live threads)",
            live.map_or(0, |l| l.len())
        );
        std::process::exit(0);
    });
    // `pthread_exit` would force-unwind Rust's main frames (an abort); the
    // raw `exit` system call ends only this thread, as `pthread_exit` does
    // at the kernel level (the kernel clears the descriptor's tid, glibc's
    // `set_tid_address`).
    // SAFETY: ends only the calling (main) thread; the process lives on in
    // the thread spawned above, which ends it with `exit`.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
}
