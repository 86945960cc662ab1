//! Red team (round 10): a host that sandboxes itself with seccomp. The
//! "interrupted" unload proof (`module-loader/src/proofs/interrupted.rs`)
//! reads the stacks of blocked threads with `process_vm_readv`, which
//! common filters deny (systemd's `SystemCallFilter=@system-service` leaves
//! it out: it is in `@debug`). A denied read gives an empty stack, and an
//! empty stack holds no signal frame: the proof fails open.
//!
//! The scenario of `redteam7_hook_signal.rs` (a signal handler that
//! sleeps while it interrupts a plugin's hook), in a host whose filter
//! answers `process_vm_readv` with EPERM: the plugin is unmapped under the
//! sleeping handler and the host dies of SIGSEGV when it returns, unless
//! a proof that cannot read a stack keeps the module (a Zombie).
//!
//! Holds: the unload keeps the module (`ThreadsUnverifiable`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{LoaderConfig, ModuleLoader};
use usrcu_tests::{fixture_path, Child};

const CHILD: &str = "RT10_SECCOMP_CHILD";

static SPIN: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();
static IN_HANDLER: AtomicBool = AtomicBool::new(false);

extern "C" fn sleepy_handler(_: libc::c_int) {
    IN_HANDLER.store(true, Ordering::SeqCst);
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 400_000_000,
    };
    // SAFETY: nanosleep is async-signal-safe; `ts` is valid.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

#[repr(C)]
struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

/// Deny `process_vm_readv` (EPERM) to this thread and the threads it
/// starts from now on; allow everything else.
fn deny_process_vm_readv() {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const NR_PROCESS_VM_READV: u32 = 310;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let f = |code, jt, jf, k| SockFilter { code, jt, jf, k };
    let prog = [
        f(LD_W_ABS, 0, 0, 4), // arch
        f(JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
        f(LD_W_ABS, 0, 0, 0), // nr
        f(JEQ_K, 0, 1, NR_PROCESS_VM_READV),
        f(RET_K, 0, 0, RET_ERRNO | libc::EPERM as u32),
        f(RET_K, 0, 0, RET_ALLOW),
    ];
    let fprog = SockFprog {
        len: prog.len() as u16,
        filter: prog.as_ptr(),
    };
    // SAFETY: plain prctl calls; `fprog` points at a valid filter program
    // for the duration of the call (the kernel copies it).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                2, /* SECCOMP_MODE_FILTER */
                &fprog as *const SockFprog
            ),
            0,
            "seccomp: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
fn a_host_that_denies_itself_process_vm_readv_is_not_unmapped_under_a_sleeping_handler() {
    if std::env::var_os(CHILD).is_none() {
        let _ = fixture_path("redteam7-plain");
        let test = "a_host_that_denies_itself_process_vm_readv_is_not_unmapped_under_a_sleeping_handler";
        Child::new(test).env(CHILD, "1").run().assert_passed(
            "RT10-SECCOMP-SURVIVED",
            "the sandboxed host died after unloading a plugin under a sleeping handler",
        );
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
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_secs(2),
        ..LoaderConfig::default()
    });
    // SAFETY: the fixture upholds the plugin contract.
    let h = unsafe { loader.load(fixture_path("redteam7-plain")) }.unwrap();
    // SAFETY: `fx_spin_hook: extern "C" fn(u64) -> u64` never blocks,
    // touches nothing, stores no pointer.
    unsafe { loader.install_hook(h, &SPIN, "fx_spin_hook") }.unwrap();
    deny_process_vm_readv();
    // SAFETY: `alarm` only arms a timer: a hang dies of SIGALRM.
    unsafe { libc::alarm(60) };
    let entered = std::sync::Arc::new(AtomicBool::new(false));
    let e = entered.clone();
    let caller = std::thread::spawn(move || {
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
    std::thread::sleep(Duration::from_millis(20)); // the handler sleeps now
    let r = loader.unload(h);
    println!("unload under a sleeping handler, process_vm_readv denied: {r:?}");
    caller.join().unwrap();
    println!("RT10-SECCOMP-SURVIVED");
}
