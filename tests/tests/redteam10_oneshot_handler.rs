//! Red team (round 10): the interrupted proof recognises a signal frame by
//! its return address, the `sa_restorer` of a signal action. A one-shot
//! handler (`SA_RESETHAND`: the kernel resets the disposition to `SIG_DFL`
//! as it delivers the signal) is no longer installed while it runs. In a
//! host with no other handler (it restored `SIGSEGV`/`SIGBUS` to their
//! defaults, for core dumps) the proof knew no restorer, as it only
//! counted actions that are handlers, and a one-shot handler that slept
//! over a plugin's hook was not seen: the plugin was unmapped under it,
//! SIGSEGV when it returned. Fixed: the proof takes the restorer of every
//! action that carries one, whatever its disposition (the reset action
//! keeps it). Seen failing (SIGSEGV) with the proof counting handlers only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{LoaderConfig, ModuleLoader};
use usrcu_tests::{fixture_path, Child};

const CHILD: &str = "RT10_ONESHOT_CHILD";

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

#[test]
fn a_one_shot_handler_sleeping_over_a_hook_does_not_let_the_plugin_unmap() {
    if std::env::var_os(CHILD).is_none() {
        let _ = fixture_path("redteam7-plain");
        let test = "a_one_shot_handler_sleeping_over_a_hook_does_not_let_the_plugin_unmap";
        Child::new(test)
            .env(CHILD, "1")
            .run()
            .assert_passed("RT10-ONESHOT-SURVIVED", "unload under a one-shot handler");
        return;
    }
    // SAFETY: plain sigaction calls, before any thread uses these signals:
    // the defaults back for SIGSEGV and SIGBUS (std's stack-overflow
    // handlers), and a one-shot handler for SIGUSR1.
    unsafe {
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = sleepy_handler as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
        libc::alarm(60);
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
    println!("unload under a one-shot handler: {r:?}");
    caller.join().unwrap();
    println!("RT10-ONESHOT-SURVIVED");
}
