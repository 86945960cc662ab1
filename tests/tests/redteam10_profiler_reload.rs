//! Red team (round 10): a sampling profiler (`setitimer(ITIMER_PROF)`, a
//! SIGPROF handler that only counts and returns) runs while a host thread
//! calls a plugin's hook in a loop (napping now and then) and the main
//! thread reloads the plugin, re-installing the hook each time. A handler
//! that never blocks cannot keep a thread inside the hook: every unload
//! must unmap the old copy, none may fail or leave a Zombie, and the host
//! must survive.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{LoaderConfig, ModuleLoader};
use usrcu_tests::{fixture_path, Child};

const CHILD: &str = "RT10_PROF_CHILD";
const ROUNDS: usize = 60;

static ADD: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();
static SAMPLES: AtomicU64 = AtomicU64::new(0);

extern "C" fn profiler(_: libc::c_int) {
    SAMPLES.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn reloads_under_a_sampling_profiler_all_unmap() {
    if std::env::var_os(CHILD).is_none() {
        let _ = fixture_path("hook");
        let test = "reloads_under_a_sampling_profiler_all_unmap";
        Child::new(test)
            .env(CHILD, "1")
            .run()
            .assert_passed("RT10-PROF-DONE", "reloads under a profiler");
        return;
    }
    // SAFETY: a handler that only bumps an atomic, installed before the
    // timer starts.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = profiler as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART | libc::SA_SIGINFO;
        assert_eq!(libc::sigaction(libc::SIGPROF, &sa, std::ptr::null_mut()), 0);
        let every = libc::timeval {
            tv_sec: 0,
            tv_usec: 500,
        };
        let it = libc::itimerval {
            it_interval: every,
            it_value: every,
        };
        assert_eq!(libc::setitimer(libc::ITIMER_PROF, &it, std::ptr::null_mut()), 0);
        // A hang dies of SIGALRM.
        libc::alarm(120);
    }
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_secs(3),
        ..LoaderConfig::default()
    });
    let path = fixture_path("hook");
    // SAFETY: the fixture upholds the plugin contract.
    let mut h = unsafe { loader.load(&path) }.unwrap();
    // SAFETY: `fx_hook_add: extern "C" fn(u64) -> u64` never blocks.
    unsafe { loader.install_hook(h, &ADD, "fx_hook_add") }.unwrap();
    let stop = AtomicBool::new(false);
    let mut bad = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut x = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..10_000 {
                    x = ADD.call(x).unwrap_or(x);
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        for round in 0..ROUNDS {
            // SAFETY: as above.
            match unsafe { loader.reload("hook", &path) } {
                Ok((new, r)) => {
                    if !r.unmapped {
                        bad.push(format!("round {round}: kept: {r}"));
                    }
                    h = new;
                }
                Err(e) => {
                    bad.push(format!("round {round}: {e}"));
                    break;
                }
            }
            // SAFETY: as above.
            unsafe { loader.install_hook(h, &ADD, "fx_hook_add") }.unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    println!("samples: {}", SAMPLES.load(Ordering::Relaxed));
    assert!(SAMPLES.load(Ordering::Relaxed) > 0, "the profiler never fired");
    assert!(bad.is_empty(), "reloads under a profiler: {bad:#?}");
    assert!(loader.unload(h).unwrap().unmapped);
    println!("RT10-PROF-DONE");
}
