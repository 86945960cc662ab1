//! Newcomer review: a host with one ordinary CPU-bound thread (it never
//! calls a hook, fires no tracepoint and runs no plugin code; it just
//! computes), in a process where a `HookSlot` was set once.
//!
//! Found from an outside project that follows docs/plugins.md section 4
//! ("Your own host") and adds a hook plugin: once any hook slot had been
//! set, every later unload and reload of *any* plugin, including ones with
//! no hooks, probes or Tasks work, waited for a Tasks grace period that the
//! computing thread holds, ran out its whole `unload_timeout`, and left the
//! old copy mapped as a `Zombie` (`HooksBusy`) — one leaked copy per reload.
//! The report then also blamed the plugin's `exit` and the host's own
//! notifiers as "still running past the unload timeout", although `exit` is
//! empty and returned at once: the watchdog counts a step that *starts*
//! after the deadline as an overrun.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread;
use std::time::Duration;

use usrcu::tasks::HookSlot;
use usrcu_module_loader::{LoaderConfig, ModuleEvent, ModuleHandle, ModuleLoader, UnloadReport, ZombieCause};
use usrcu_tests::fixture_path_with_profile;

/// The warnings emitted during the last unload of `unload_with_a_computing_thread`.
static WARNINGS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
/// One scenario at a time (the warnings above, the process-wide slot).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

static SLOT: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

extern "C" fn host_double(x: u64) -> u64 {
    x * 2
}

/// Set and clear a host hook slot once (as any host that ever used a hook
/// plugin has done), start one thread that only computes, then load and
/// unload the `hook` fixture *without* installing any of its hooks.
fn unload_with_a_computing_thread(going_notifier_ms: u64) -> UnloadReport {
    // SAFETY: `host_double` never blocks, lives in the executable's text,
    // and nothing else stores the pointer.
    unsafe { SLOT.set_sync(Some(host_double)) };
    assert_eq!(SLOT.call(2), Some(4));
    SLOT.clear_sync();

    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_millis(500),
        ..LoaderConfig::default()
    });
    if going_notifier_ms > 0 {
        // An ordinary host notifier that takes a few milliseconds on Going.
        loader.register_notifier("bookkeeping", move |ev, _| {
            if ev == ModuleEvent::Going {
                thread::sleep(Duration::from_millis(going_notifier_ms));
            }
            Ok::<(), String>(())
        });
    }
    let path = fixture_path_with_profile("hook", "release");
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        thread::Builder::new()
            .name("newbie-spinner".into())
            .spawn_scoped(s, || {
                // A plain worker: no hook, no plugin code, no tracepoint.
                let mut x = 1u64;
                while !stop.load(Relaxed) {
                    x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
            .unwrap();
        thread::sleep(Duration::from_millis(50));
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let h = unsafe { loader.load(&path) }.expect("load");
        let (r, warnings) = usrcu::diagnostics::capture(|| loader.unload(h).expect("unload"));
        stop.store(true, Relaxed);
        *WARNINGS.lock().unwrap() = warnings
            .iter()
            .map(|w| format!("{} {:?}", w.message, w.oldest_reader))
            .collect();
        r
    })
}

/// The module never had a hook installed, a probe attached, or a Tasks
/// callback queued, and no hook slot points into it or lives in it: nothing
/// of it can run under Tasks RCU, so an unrelated computing thread should
/// not keep it mapped.
///
/// The loader asks the runtime's record of the addresses hook slots ever
/// held (`usrcu::tasks::hooks_ever_into`) and the registry's of normal
/// probes ever attached, about this module's ranges only.
#[test]
fn a_computing_host_thread_does_not_zombie_a_module_without_hooks() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let r = unload_with_a_computing_thread(0);
    assert_eq!(r.hook_slots.cleared, 0, "{r:?}");
    assert!(
        r.unmapped && r.zombie_cause.is_none(),
        "a module with no hook, probe or Tasks work was kept: {:?}; {r}",
        r.zombie_cause
    );
}

/// A host `Going` notifier that takes 20 ms of a 500 ms budget did not make
/// the unload overrun: the Tasks wait before it had already spent the
/// deadline. The report names the notifier as the step that "ran past the
/// unload timeout" (and the warning says it "is still running"), pointing
/// the user at the wrong code. (With an instant `exit` and the loader's own
/// interface notifiers the same misattribution shows when the unloading
/// thread is preempted: seen from the outside host as "exit of module
/// 'calc' is still running past the unload timeout" for an exit of one
/// `call_srcu`.)
///
/// Fixed: a step that starts after the deadline gets the unload timeout as
/// its own budget (`watchdog::watch`; also `loader_bounded.rs`'s
/// `a_short_notifier_that_starts_after_the_deadline_is_not_an_overrun`).
/// The process-wide Tasks rule (test switch) makes the wait that spends
/// the deadline, since a module without hooks no longer waits.
#[test]
fn a_short_step_started_after_a_spent_deadline_is_not_reported_as_overrunning() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    usrcu_module_loader::__set_tasks_wait_always(true);
    let r = unload_with_a_computing_thread(20);
    usrcu_module_loader::__set_tasks_wait_always(false);
    // The situation that shows it: the deadline was spent before the step.
    assert_eq!(r.zombie_cause, Some(ZombieCause::HooksBusy), "{r}");
    assert!(
        r.overruns.is_empty(),
        "steps reported as running past the unload timeout: {:?} (a 20 ms notifier, started after the deadline had passed); {r}",
        r.overruns
    );
}

/// When the unload does give up on a Tasks grace period, the thread that
/// held it is known to the Tasks engine (its stall warning names tid, name
/// and state, but only after the 10 s stall timeout, long after a 500 ms
/// unload has returned). Neither the report nor any warning of the unload
/// names it: "a Tasks grace period or Tasks callbacks did not complete in
/// time" leaves the user to guess which of their threads to fix.
///
/// Fixed: the unload names the threads the grace period still waits for
/// (`usrcu::tasks::holdouts`) in a warning when it gives up on it. The
/// process-wide Tasks rule (test switch) makes the wait, since a module
/// without hooks no longer waits.
#[test]
fn a_hooks_busy_zombie_names_the_thread_that_held_the_grace_period() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    usrcu_module_loader::__set_tasks_wait_always(true);
    let r = unload_with_a_computing_thread(0);
    usrcu_module_loader::__set_tasks_wait_always(false);
    assert_eq!(r.zombie_cause, Some(ZombieCause::HooksBusy), "{r}");
    let warnings = WARNINGS.lock().unwrap().clone();
    let said = format!("{r} | {}", warnings.join(" | "));
    assert!(
        said.contains("newbie-spinner"),
        "the holdout thread 'newbie-spinner' is named nowhere: {said}"
    );
}

/// Its control: with the process-wide rule back (test switch
/// `__set_tasks_wait_always`: a Tasks grace period at every unload once any
/// slot was ever set), the same unload is a `Zombie` (`HooksBusy`).
#[test]
fn with_the_process_wide_rule_a_computing_thread_zombies_a_module_without_hooks() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    usrcu_module_loader::__set_tasks_wait_always(true);
    let r = unload_with_a_computing_thread(0);
    usrcu_module_loader::__set_tasks_wait_always(false);
    assert_eq!(r.zombie_cause, Some(ZombieCause::HooksBusy), "{r}");
    assert!(!r.unmapped, "{r}");
}

static HOOK: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();

/// Load the `hook` fixture, install its `fx_hook_add` into `HOOK`, call it,
/// and (if `empty_first`) empty `HOOK` from the host *without* waiting for
/// a grace period (the cookie dropped): the loader then clears nothing at
/// unload, and only the runtime's record says that the module's code was
/// reachable through a slot. Then unload it, with a thread that computes
/// (if `spin`).
fn unload_after_a_hook(loader: &ModuleLoader, empty_first: bool, spin: bool) -> (ModuleHandle, UnloadReport) {
    let path = fixture_path_with_profile("hook", "release");
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let h = unsafe { loader.load(&path) }.expect("load");
    // SAFETY: `fx_hook_add: extern "C" fn(u64) -> u64` never blocks, reads
    // only the plugin's static, and stores no pointer to itself.
    unsafe { loader.install_hook(h, &HOOK, "fx_hook_add") }.expect("install");
    assert_eq!(HOOK.call(1), Some(2));
    if empty_first {
        let _ = HOOK.clear();
    }
    let stop = AtomicBool::new(false);
    let r = thread::scope(|s| {
        if spin {
            s.spawn(|| {
                let mut x = 1u64;
                while !stop.load(Relaxed) {
                    x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            });
            thread::sleep(Duration::from_millis(50));
        }
        let r = loader.unload(h).expect("unload");
        stop.store(true, Relaxed);
        r
    });
    (h, r)
}

fn short_loader() -> ModuleLoader {
    ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_millis(500),
        ..LoaderConfig::default()
    })
}

/// The twin: a module whose hook *was* installed, then emptied by the host
/// without waiting, still gets its Tasks grace period (nothing is cleared
/// at unload, but the record names it), and is unmapped after it.
#[test]
fn a_module_whose_hook_was_emptied_without_waiting_still_gets_a_tasks_grace_period() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let loader = short_loader();
    let (_, r) = unload_after_a_hook(&loader, true, false);
    assert_eq!(r.hook_slots.cleared, 0, "{r:?}");
    assert!(r.hook_slots.waited_grace_period, "{r:?}");
    assert!(r.unmapped && r.zombie_cause.is_none(), "{r}");
}

/// And with a computing thread, which holds every Tasks grace period, it
/// stays mapped (`HooksBusy`): a thread may still be inside its hook. Once
/// the thread has stopped, the retry unmaps it.
#[test]
fn a_computing_host_thread_keeps_a_module_whose_hook_was_installed() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let loader = short_loader();
    for empty_first in [true, false] {
        let (h, r) = unload_after_a_hook(&loader, empty_first, true);
        assert_eq!(r.hook_slots.cleared, usize::from(!empty_first), "{r:?}");
        assert_eq!(r.zombie_cause, Some(ZombieCause::HooksBusy), "{r}");
        assert!(!r.unmapped, "{r}");
        let again = loader.unload(h).expect("retry");
        assert!(again.unmapped && again.zombie_cause.is_none(), "{again}");
    }
}

/// Hot reload: once a copy whose hook was installed has been unmapped, its
/// addresses are gone from the record (dropped just before `dlclose`), so
/// a next copy mapped at the same addresses, which installs no hook, is
/// not taken for one whose code may be inside a hook. (Seen failing with
/// the record kept past the unmap.)
#[test]
fn an_unmapped_copys_addresses_leave_the_record() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let loader = short_loader();
    let path = fixture_path_with_profile("hook", "release");
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let h = unsafe { loader.load(&path) }.expect("load");
    // SAFETY: as in `unload_after_a_hook`.
    unsafe { loader.install_hook(h, &HOOK, "fx_hook_add") }.expect("install");
    let hook_addr = HOOK.target_addr();
    let at = vec![std::ops::Range {
        start: hook_addr,
        end: hook_addr + 1,
    }];
    assert!(usrcu::tasks::hooks_ever_into(&at));
    let r = loader.unload(h).expect("unload");
    assert!(r.unmapped && r.hook_slots.cleared == 1, "{r}");
    assert!(
        !usrcu::tasks::hooks_ever_into(&at),
        "the unmapped copy's hook address is still recorded"
    );
    // And a copy loaded next, without hooks, is not held by a computing thread.
    let r = unload_with_a_computing_thread(0);
    assert!(r.unmapped && r.zombie_cause.is_none(), "{r}");
}
