//! Red team (round 8): a loader with a short `unload_timeout`, in a host
//! that has set a `HookSlot` of its own (to a host function, never to a
//! plugin's). An idle plugin that installed no hook: no call in flight, no
//! reader, no callback. `unload_timeout` bounds the whole unload
//! (docs/abi.md), so a first attempt may leave a `Zombie`; but retrying a
//! Zombie's unload is the documented way to reclaim it, and with nothing of
//! the module left anywhere some retry must unmap it. If every retry needs
//! a fresh Tasks grace period that cannot complete within the timeout, the
//! module is never reclaimed: each load/unload cycle leaks a mapped object.

use std::time::{Duration, Instant};

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{LoaderConfig, ModuleLoader, ModuleState};
use usrcu_tests::{bounded, fixture_path};

static HOST_SLOT: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

extern "C" fn host_hook(x: u64) -> u64 {
    x ^ 1
}

fn run(timeout: Duration) -> Result<(), String> {
    let so = fixture_path("callbacks");
    bounded("short unload timeout", move || {
        // SAFETY: `host_hook` never blocks, lives in the host's text, and
        // nothing else stores the pointer.
        unsafe { HOST_SLOT.set_sync(Some(host_hook)) };
        let loader = ModuleLoader::with_config(LoaderConfig {
            unload_timeout: timeout,
            ..LoaderConfig::default()
        });
        // SAFETY: the fixtures uphold the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(&so) }.unwrap();
        let t0 = Instant::now();
        let mut last = String::new();
        for attempt in 0..100 {
            match loader.unload(m) {
                Ok(r) if r.unmapped => return Ok(()),
                Ok(r) => {
                    last = format!(
                        "attempt {attempt}: {:?} / {:?} / {:?}",
                        r.state, r.zombie_cause, r.hook_slots
                    )
                }
                Err(e) => last = format!("attempt {attempt}: error {e}"),
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(loader.state(m), Some(ModuleState::Zombie));
        Err(format!(
            "unload_timeout {timeout:?}: an idle module with no hook is still not unmapped after 100 retries over {:?}; last: {last}",
            t0.elapsed()
        ))
    })
}

#[test]
fn an_idle_module_is_reclaimed_by_retries_with_a_zero_unload_timeout() {
    run(Duration::ZERO).unwrap();
}

#[test]
fn an_idle_module_is_reclaimed_by_retries_with_a_one_millisecond_unload_timeout() {
    run(Duration::from_millis(1)).unwrap();
}
