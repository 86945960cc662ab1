//! Red team (round 10): a stale signal frame makes a legitimate unload a
//! Zombie.
//!
//! A profiler-style SIGPROF handler that never blocks (it counts and
//! returns) interrupts a thread while it runs a plugin's hook. The kernel
//! wrote an `rt_sigframe` (the handler's `sa_restorer` first, then the
//! saved registers, `rip` in the hook) below the hook's frame; it stays
//! there, stale, after the handler and the hook return. The thread then
//! calls host code with an uninitialised stack buffer (`MaybeUninit`, as
//! C code and many I/O paths have) over that spot and blocks (a channel
//! receive). The hook is long gone: no code of the plugin is on the stack.
//!
//! The interrupted proof (`module-loader/src/proofs/interrupted.rs`) scans
//! every word from the blocked thread's stack pointer up for a restorer,
//! and takes the stale frame for a live one whose saved `rip` lies in the
//! plugin: the thread stays a suspect while it stays blocked, and the
//! unload of the plugin ends as a Zombie (`InterruptedInObject`) after the
//! whole `unload_timeout`.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{LoaderConfig, ModuleLoader};
use usrcu_tests::fixture_path;

static SPIN: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();
static SAMPLES: AtomicU64 = AtomicU64::new(0);
static IN_HOOK: AtomicBool = AtomicBool::new(false);
static WAITING: AtomicBool = AtomicBool::new(false);

extern "C" fn profiler(_: libc::c_int) {
    SAMPLES.fetch_add(1, Ordering::SeqCst);
}

/// Host code: a 64 KiB scratch buffer left uninitialised until the message
/// comes, then wait for it.
#[inline(never)]
fn wait_with_scratch(rx: &mpsc::Receiver<()>) {
    let mut scratch = MaybeUninit::<[u8; 64 << 10]>::uninit();
    std::hint::black_box(&mut scratch);
    WAITING.store(true, Ordering::SeqCst);
    rx.recv().unwrap();
    std::hint::black_box(&mut scratch);
}

#[test]
#[ignore = "FINDING: a stale rt_sigframe (a non-blocking SIGPROF handler that interrupted a hook which has since returned) under an uninitialised host buffer of a blocked thread makes the plugin's unload a Zombie (InterruptedInObject)"]
fn a_stale_signal_frame_left_by_a_profiler_does_not_keep_an_unloaded_plugin() {
    // SAFETY: a handler that only bumps an atomic, installed before any
    // thread gets the signal.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = profiler as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART;
        assert_eq!(libc::sigaction(libc::SIGPROF, &sa, std::ptr::null_mut()), 0);
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
    let (tx, rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        IN_HOOK.store(true, Ordering::SeqCst);
        // Stays inside the plugin's hook for 300 ms.
        assert_eq!(SPIN.call(300), Some(300));
        wait_with_scratch(&rx);
    });
    while !IN_HOOK.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(50)); // inside the hook
    use std::os::unix::thread::JoinHandleExt;
    // SAFETY: the thread is alive (it waits for `tx` later).
    unsafe { libc::pthread_kill(t.as_pthread_t() as libc::pthread_t, libc::SIGPROF) };
    let t0 = Instant::now();
    while !WAITING.load(Ordering::SeqCst) {
        assert!(t0.elapsed() < Duration::from_secs(30), "the thread never left the hook");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        SAMPLES.load(Ordering::SeqCst),
        1,
        "the profiler's handler ran and returned"
    );
    std::thread::sleep(Duration::from_millis(20)); // blocked in recv now
    let r = loader.unload(h).expect("unload");
    tx.send(()).unwrap();
    t.join().unwrap();
    assert!(
        r.unmapped && r.zombie_cause.is_none(),
        "an idle plugin (its hook returned, only a stale signal frame left) was kept: {r:?}"
    );
}
