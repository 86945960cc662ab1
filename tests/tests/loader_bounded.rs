//! `unload_timeout` bounds the whole unload: drains, barriers and reader
//! waits give up in time and leave a Zombie naming the cause; `exit` and the
//! `Going` notifiers run under a watchdog that reports an overrun.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use usrcu::diagnostics::{Capture, WarningKind};
use usrcu_module_loader::{LoaderConfig, ModuleHandle, ModuleLoader, ModuleState, ZombieCause};
use usrcu_tests::{fixture_path, leak, object_is_mapped};

type GatedFn = unsafe extern "C" fn(usize, *const AtomicBool, *const AtomicUsize);
type QueueFn = unsafe extern "C" fn(usize, u64, *const AtomicUsize);
type GateFn = unsafe extern "C" fn(*const AtomicBool);

fn loader(timeout_ms: u64) -> ModuleLoader {
    ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_millis(timeout_ms),
        ..Default::default()
    })
}

/// Queue `n` callbacks on `callbacks.queue` that block until `gate` opens.
fn queue_blocked(
    loader: &ModuleLoader,
    m: ModuleHandle,
    n: usize,
    gate: &'static AtomicBool,
    ran: &'static AtomicUsize,
) {
    // SAFETY: the fixture exports it with this signature.
    let q = unsafe { loader.symbol::<GatedFn>(m, "fx_queue_gated").unwrap() };
    // SAFETY: both atomics live for the process.
    q.call(|f| unsafe { f.call(n, gate, ran) }).unwrap();
}

#[test]
fn unload_whose_callbacks_block_forever_returns_as_a_zombie_while_they_still_block() {
    let loader = loader(200);
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    let path = loader.info(m).unwrap().loaded_path;
    let (gate, ran) = (leak(AtomicBool::new(false)), leak(AtomicUsize::new(0)));
    queue_blocked(&loader, m, 3, gate, ran);

    let report = loader.unload(m).unwrap();

    // It returned while every callback was still blocked.
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(report.state, ModuleState::Zombie, "{report}");
    assert!(
        matches!(&report.zombie_cause, Some(ZombieCause::CallbacksInObject { domain, callbacks, .. })
            if domain == "callbacks.queue" && *callbacks == 3),
        "{report:?}"
    );
    assert!(object_is_mapped(&path));
    gate.store(true, Ordering::SeqCst);
    usrcu_tests::unload_until_unmapped(&loader, m);
    assert_eq!(ran.load(Ordering::SeqCst), 3);
    assert!(!object_is_mapped(&path));
}

#[test]
fn exit_running_past_the_unload_timeout_is_reported_by_the_watchdog() {
    let capture = Capture::start();
    let loader = loader(50);
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("slow-exit")) }.unwrap();
    let gate = leak(AtomicBool::new(false));
    // SAFETY: the fixture exports it with this signature; the gate lives for the process.
    unsafe { loader.symbol::<GateFn>(m, "fx_set_exit_gate").unwrap() }
        .call(|f| unsafe { f.call(gate) })
        .unwrap();
    // Open the gate only once the watchdog has reported the overrun.
    let opener = std::thread::spawn(move || {
        let seen = capture.wait_for("slow-exit", WarningKind::Other, Duration::from_secs(60));
        gate.store(true, Ordering::SeqCst);
        seen.map(|w| w.message)
    });

    let report = loader.unload(m).unwrap();

    let warning = opener.join().unwrap().expect("an overrun warning");
    assert!(
        warning.contains("exit") && warning.contains("past the unload timeout"),
        "{warning}"
    );
    assert_eq!(report.overruns, vec!["exit".to_owned()]);
    assert!(report.unmapped, "{report}");
}

/// Eight unloads time out on callbacks that block, one after the other; a
/// ninth module's unload then drains its callbacks and unmaps as usual: the
/// blocked callbacks hold their own domains only.
#[test]
fn eight_timed_out_unloads_then_a_normal_unload_drains_and_unmaps() {
    let loader = loader(200);
    let gate = leak(AtomicBool::new(false));
    let blocked = leak(AtomicUsize::new(0));
    let mut zombies = Vec::new();
    for _ in 0..8 {
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
        queue_blocked(&loader, m, 2, gate, blocked);
        let r = loader.unload(m).unwrap();
        assert_eq!(r.state, ModuleState::Zombie, "{r}");
        zombies.push(m);
    }
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    let ran = leak(AtomicUsize::new(0));
    // SAFETY: the fixture exports it with this signature; `ran` lives for the process.
    unsafe { loader.symbol::<QueueFn>(m, "fx_queue_callbacks").unwrap() }
        .call(|f| unsafe { f.call(5, 5, ran) })
        .unwrap();
    let report = loader.unload(m).unwrap();
    assert!(report.unmapped, "{report}");
    assert_eq!(ran.load(Ordering::SeqCst), 5);
    assert_eq!(blocked.load(Ordering::SeqCst), 0, "the zombies' callbacks still block");
    gate.store(true, Ordering::SeqCst);
    for z in zombies {
        usrcu_tests::unload_until_unmapped(&loader, z);
    }
}

/// A `Going` notifier that starts after the deadline was spent (here by an
/// earlier notifier that overran) is not blamed for the earlier one's time:
/// only the notifier still running at the deadline is an overrun (newcomer
/// review: a 20 ms notifier was named as "still running past the unload
/// timeout" after a Tasks wait had spent the deadline). Fails without the
/// fresh budget of `watchdog::watch`: both notifiers are listed.
#[test]
fn a_short_notifier_that_starts_after_the_deadline_is_not_an_overrun() {
    use usrcu_module_loader::ModuleEvent;
    let capture = Capture::start();
    let loader = loader(300);
    let gate = leak(AtomicBool::new(false));
    // Notifiers run newest first on `Going`: "slow", then "quick".
    loader.register_notifier("quick", |ev, _| {
        if ev == ModuleEvent::Going {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok::<(), String>(())
    });
    loader.register_notifier("slow", move |ev, _| {
        if ev == ModuleEvent::Going {
            while !gate.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok::<(), String>(())
    });
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    // Open the gate once the watchdog has reported "slow" (past the deadline).
    let opener = std::thread::spawn(move || {
        let end = std::time::Instant::now() + Duration::from_secs(60);
        let seen = loop {
            let found = capture.find("callbacks", WarningKind::Other);
            if let Some(w) = found.into_iter().find(|w| w.message.contains("'slow'")) {
                break Some(w.message);
            }
            if std::time::Instant::now() > end {
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        gate.store(true, Ordering::SeqCst);
        seen
    });
    let report = loader.unload(m).unwrap();
    let warning = opener.join().unwrap().expect("an overrun warning for 'slow'");
    assert!(warning.contains("past the unload timeout"), "{warning}");
    assert_eq!(report.overruns, vec!["going notifier 'slow'".to_owned()], "{report}");
}
