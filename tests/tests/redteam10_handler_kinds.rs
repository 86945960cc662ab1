//! Red team (round 10): more kinds of signal handler that interrupt a
//! plugin's hook and block (the interrupted proof,
//! `module-loader/src/proofs/interrupted.rs`), each in a child that must
//! survive the unload:
//!
//! * `pipe`: an `SA_SIGINFO` handler blocked in `read` on a pipe (not
//!   `nanosleep`) until a host thread writes 400 ms later;
//! * `nested`: an `SA_NODEFER` handler that raises its own signal; the
//!   inner one sleeps, its frame's saved `rip` in the outer handler (host
//!   code), the hook two frames up;
//! * `heap-altstack`: an `SA_ONSTACK` handler on a `sigaltstack` that is a
//!   `Box` in the heap, sleeping.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::time::Duration;

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{LoaderConfig, ModuleLoader};
use usrcu_tests::{fixture_path, Child};

const CHILD: &str = "RT10_HANDLER_CASE";

static SPIN: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();
static IN_HANDLER: AtomicBool = AtomicBool::new(false);
static PIPE_READ: AtomicI32 = AtomicI32::new(-1);
static DEPTH: AtomicU32 = AtomicU32::new(0);

fn nap() {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 400_000_000,
    };
    // SAFETY: nanosleep is async-signal-safe; `ts` is valid.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

extern "C" fn pipe_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    IN_HANDLER.store(true, Ordering::SeqCst);
    let mut b = 0u8;
    // SAFETY: read is async-signal-safe; `b` is one writable byte.
    unsafe { libc::read(PIPE_READ.load(Ordering::SeqCst), (&mut b as *mut u8).cast(), 1) };
}

extern "C" fn nested_handler(sig: libc::c_int) {
    if DEPTH.fetch_add(1, Ordering::SeqCst) == 0 {
        // SAFETY: raise is async-signal-safe; SA_NODEFER delivers it now.
        unsafe { libc::raise(sig) };
    } else {
        IN_HANDLER.store(true, Ordering::SeqCst);
        nap();
    }
}

extern "C" fn sleepy_handler(_: libc::c_int) {
    IN_HANDLER.store(true, Ordering::SeqCst);
    nap();
}

/// Write one byte to the pipe's write end `w`.
fn write_byte(w: libc::c_int) {
    // SAFETY: `w` is an open fd; the byte is readable for the call.
    unsafe { libc::write(w, b"x".as_ptr().cast(), 1) };
}

fn parent(case: &str) {
    let _ = fixture_path("redteam7-plain");
    Child::new("child_entry").env(CHILD, case).run().assert_passed(
        "RT10-HANDLER-SURVIVED",
        &format!("{case}: the host died after an unload under a blocked handler"),
    );
}

#[test]
fn a_handler_blocked_in_a_pipe_read_over_a_hook() {
    parent("pipe");
}

#[test]
fn a_nested_sa_nodefer_handler_sleeping_over_a_hook() {
    parent("nested");
}

#[test]
fn a_handler_sleeping_on_a_heap_altstack_over_a_hook() {
    parent("heap-altstack");
}

#[test]
fn child_entry() {
    let Some(case) = std::env::var_os(CHILD) else { return };
    let case = case.into_string().unwrap();
    // SAFETY: handlers installed before any thread uses the signal; the
    // pipe's fds are valid for the process.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART;
        match case.as_str() {
            "pipe" => {
                let mut fds = [0; 2];
                assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
                PIPE_READ.store(fds[0], Ordering::SeqCst);
                let w = fds[1];
                std::thread::spawn(move || {
                    while !IN_HANDLER.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    std::thread::sleep(Duration::from_millis(400));
                    write_byte(w);
                });
                sa.sa_sigaction = pipe_handler as *const () as usize;
                sa.sa_flags |= libc::SA_SIGINFO;
            }
            "nested" => {
                sa.sa_sigaction = nested_handler as *const () as usize;
                sa.sa_flags |= libc::SA_NODEFER;
            }
            "heap-altstack" => {
                sa.sa_sigaction = sleepy_handler as *const () as usize;
                sa.sa_flags |= libc::SA_ONSTACK;
            }
            other => panic!("unknown case {other}"),
        }
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
        libc::alarm(60);
    }
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_secs(3),
        ..LoaderConfig::default()
    });
    // SAFETY: the fixture upholds the plugin contract.
    let h = unsafe { loader.load(fixture_path("redteam7-plain")) }.unwrap();
    // SAFETY: `fx_spin_hook: extern "C" fn(u64) -> u64` never blocks,
    // touches nothing, stores no pointer.
    unsafe { loader.install_hook(h, &SPIN, "fx_spin_hook") }.unwrap();
    let entered = std::sync::Arc::new(AtomicBool::new(false));
    let e = entered.clone();
    let altstack = case == "heap-altstack";
    let caller = std::thread::spawn(move || {
        if altstack {
            let stack: &'static mut [u8] = Box::leak(vec![0u8; 256 << 10].into_boxed_slice());
            let ss = libc::stack_t {
                ss_sp: stack.as_mut_ptr().cast(),
                ss_flags: 0,
                ss_size: stack.len(),
            };
            // SAFETY: the leaked buffer outlives the thread.
            assert_eq!(unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) }, 0);
        }
        e.store(true, Ordering::SeqCst);
        // Each call stays inside the plugin's hook for 200 ms.
        while let Some(v) = SPIN.call(200) {
            assert_eq!(v, 200);
        }
    });
    while !entered.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(50)); // well inside the first call
    use std::os::unix::thread::JoinHandleExt;
    // SAFETY: the caller thread is alive (it loops until the slot empties).
    unsafe { libc::pthread_kill(caller.as_pthread_t() as libc::pthread_t, libc::SIGUSR1) };
    while !IN_HANDLER.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(20)); // the handler blocks now
    let r = loader.unload(h);
    println!("{case}: {r:?}");
    caller.join().unwrap();
    println!("RT10-HANDLER-SURVIVED");
}
