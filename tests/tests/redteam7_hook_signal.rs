//! Red team (round 7): Tasks RCU counts a thread that is blocked in the
//! kernel (state S/D) or that switched voluntarily as having left every
//! hook. A signal handler that interrupts a thread *inside* a hook and
//! blocks there (a `nanosleep`, a `write` to a full pipe: async-signal-safe,
//! and the host's own code, not the hook's) makes the thread look quiescent
//! while the hook's frame is still on its stack. The loader then clears the
//! slot, sees a Tasks grace period end, and unmaps the plugin; when the
//! handler returns, the thread resumes in unmapped code.
//!
//! FINDING if it fails: the child dies with SIGSEGV.
//!
//! Fixed in session 11 by the loader's "interrupted" proof
//! (`module-loader/src/proofs/interrupted.rs`): blocked threads' stacks are
//! searched for signal frames over the object's code, and the unload waits
//! for them. Seen failing (SIGSEGV) on the code of session 10, and with
//! `USRCU_LOADER_TEST_SKIP_PROOFS=interrupted`. More cases, and the
//! negative twin kept as a test: `tests/tests/loader_interrupted.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use usrcu::tasks::HookSlot;
use usrcu_module_loader::ModuleLoader;
use usrcu_tests::{fixture_path, Child};

static SPIN: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();
static IN_HANDLER: AtomicBool = AtomicBool::new(false);

extern "C" fn sleepy_handler(_: libc::c_int) {
    IN_HANDLER.store(true, Ordering::SeqCst);
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 400_000_000,
    };
    // SAFETY: nanosleep is async-signal-safe.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

#[test]
fn a_signal_handler_that_sleeps_while_interrupting_a_hook_does_not_let_the_plugin_unmap_under_it() {
    let _ = fixture_path("redteam7-plain");
    let ran = Child::new("hook_signal_entry").env("RT7_HOOKSIG_CHILD", "1").run();
    ran.assert_passed(
        "RT7-HOOKSIG-SURVIVED",
        "the host died after unloading a plugin whose hook a sleeping signal handler interrupted",
    );
}

#[test]
fn hook_signal_entry() {
    if std::env::var_os("RT7_HOOKSIG_CHILD").is_none() {
        return;
    }
    // SAFETY: a plain handler, installed before any thread uses the signal.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = sleepy_handler as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART;
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract.
    let h = unsafe { loader.load(fixture_path("redteam7-plain")) }.unwrap();
    // SAFETY: `fx_spin_hook: extern "C" fn(u64) -> u64` never blocks,
    // touches nothing, stores no pointer.
    unsafe { loader.install_hook(h, &SPIN, "fx_spin_hook") }.unwrap();
    let entered = std::sync::Arc::new(AtomicBool::new(false));
    let e = entered.clone();
    let caller = std::thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        e.store(true, Ordering::SeqCst);
        // Each call stays inside the plugin's hook for 200 ms.
        while let Some(v) = SPIN.call(200) {
            assert_eq!(v, 200);
        }
        me
    });
    while !entered.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(50)); // well inside the first call
                                                   // SAFETY: the caller thread is alive (it loops until the slot empties).
    unsafe { libc::pthread_kill(libc::pthread_t::from(pthread_of(&caller)), libc::SIGUSR1) };
    while !IN_HANDLER.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(20)); // the handler sleeps now
    let r = loader.unload(h).unwrap();
    println!("unloaded: unmapped {} hook slots {:?}", r.unmapped, r.hook_slots);
    // The handler returns into the hook 400 ms after it began.
    caller.join().unwrap();
    println!("RT7-HOOKSIG-SURVIVED");
}

fn pthread_of<T>(t: &std::thread::JoinHandle<T>) -> libc::pthread_t {
    use std::os::unix::thread::JoinHandleExt;
    t.as_pthread_t() as libc::pthread_t
}
