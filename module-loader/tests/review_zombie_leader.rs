//! Review demo: once the main thread has called `pthread_exit` (a zombie
//! thread-group leader stays in /proc/self/task, its descriptor's tid
//! cleared by the kernel), every walk of glibc's thread list looks torn,
//! so `ThreadList::open()`/`live_threads()` never answer (every unload
//! becomes a `ThreadsUnverifiable` Zombie). Safe direction, availability.
use usrcu_module_loader::thread_list::ThreadList;

fn main() {
    std::thread::spawn(|| {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let pid = std::process::id();
        let stat = std::fs::read_to_string(format!("/proc/self/task/{pid}/stat")).unwrap_or_default();
        println!("leader stat: {}", stat.split(')').nth(1).unwrap_or("").trim().chars().next().unwrap_or('?'));
        let open = ThreadList::open();
        println!("open after main's pthread_exit: {}", open.is_some());
        std::process::exit(if open.is_some() { 0 } else { 1 });
    });
    if std::env::var_os("REVIEW_CONTROL").is_some() {
        std::thread::sleep(std::time::Duration::from_secs(5));
    }
    // `pthread_exit` would force-unwind Rust's main frames (abort); the raw
    // exit ends only this thread, as pthread_exit does at the kernel level
    // (the kernel clears the descriptor's tid: glibc's set_tid_address).
    // SAFETY: ends only the main thread; the process lives on in the other.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
}
