//! A Zombie's retry may reuse the Tasks grace period its first attempt
//! asked for (a fresh one each retry never completed within a short
//! `unload_timeout`), but not once a hook of the object was set since: a
//! thread may have entered it after that grace period began (red team 16's
//! suspicion, built here). The host sets the module's spinning hook into
//! its slot after the first attempt, a thread enters it, and the host
//! empties the slot without waiting: the second attempt must not unmap the
//! module under that thread. Without the check (`tasks::hooks_last_into`
//! in `hook_slots::going` and the interrupted proof) the child dies of
//! SIGSEGV.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{LoaderConfig, ModuleLoader, ModuleState, ZombieCause};
use usrcu_tests::{fixture_path_with_profile, in_child, Child};

const CHILD: &str = "LOADER_HOOK_RETRY_CHILD";

static HOOK: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();
static FLAGS: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];

fn case() {
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_millis(300),
        ..LoaderConfig::default()
    });
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let h = unsafe { loader.load(fixture_path_with_profile("hook", "release")) }.unwrap();
    // SAFETY: the fixture's signatures.
    let addr = unsafe { loader.symbol::<extern "C" fn() -> u64>(h, "fx_hook_spin_addr") }
        .unwrap()
        .call(|f| f.call())
        .unwrap();
    // SAFETY: `fx_hook_add` never blocks and reads only the plugin's static.
    unsafe { loader.install_hook(h, &HOOK, "fx_hook_add") }.unwrap();
    assert_eq!(HOOK.call(1), Some(2));

    // Attempt 1: a thread that computes holds the Tasks grace period the
    // unload asks for after clearing the slot: a Zombie.
    let stop = AtomicBool::new(false);
    let r1 = std::thread::scope(|s| {
        s.spawn(|| {
            let mut x = 1u64;
            while !stop.load(Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        });
        std::thread::sleep(Duration::from_millis(30));
        let r = loader.unload(h).unwrap();
        stop.store(true, Ordering::Relaxed);
        r
    });
    assert_eq!(r1.zombie_cause, Some(ZombieCause::HooksBusy), "{r1}");
    // That grace period completes now.
    usrcu::tasks::synchronize();

    // The module's spinning hook, stored by the host itself, entered by a
    // thread, and emptied without waiting.
    // SAFETY: `fx_hook_spin` has the slot's type and never blocks; the
    // module stays mapped (a Zombie) until the loader proves it idle.
    let spin: extern "C" fn(u64) -> u64 = unsafe { std::mem::transmute(addr as usize) };
    // SAFETY: as above.
    let _ = unsafe { HOOK.set(Some(spin)) };
    let inside = std::thread::spawn(|| HOOK.call(&FLAGS as *const _ as usize as u64));
    while !FLAGS[0].load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let _ = HOOK.clear();

    // Attempt 2: the thread is inside the module's code.
    let r2 = loader.unload(h).unwrap();
    println!("second attempt: {r2}");
    assert!(!r2.unmapped, "unmapped under a thread inside its hook: {r2}");
    assert_eq!(r2.state, ModuleState::Zombie, "{r2}");

    FLAGS[1].store(true, Ordering::SeqCst);
    assert_eq!(inside.join().unwrap(), Some(1));
    usrcu_tests::unload_until_unmapped(&loader, h);
    println!("LOADER-HOOK-RETRY-OK");
}

#[test]
fn a_retry_does_not_reuse_a_grace_period_older_than_a_hook_set_since() {
    if in_child(CHILD, Some(60)) {
        case();
        return;
    }
    Child::new("a_retry_does_not_reuse_a_grace_period_older_than_a_hook_set_since")
        .env(CHILD, "1")
        .timeout(Duration::from_secs(90))
        .must_pass("LOADER-HOOK-RETRY-OK");
}
