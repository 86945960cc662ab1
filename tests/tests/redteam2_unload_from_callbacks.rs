//! Red team 2: a host that unloads a module from inside a callback of the
//! runtime (a Tasks callback, a Tasks Trace callback), the way a host
//! defers work "until after a grace period". The unload waits for Tasks and
//! Tasks Trace barriers, which cannot wait on the very thread that runs
//! those callbacks. A loader that keeps its promise returns a typed result
//! (an error, or a Zombie) with the module still unloadable later; it
//! neither panics out of `unload` nor unmaps code a queued callback will run.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use usrcu_module_loader::{LoaderConfig, ModuleHandle, ModuleLoader, ModuleState, UnloadError, UnloadReport};
use usrcu_tests::{fixture_path, Child};

static BOARD: [AtomicU32; 3] = [AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)];

type Arm = unsafe extern "C" fn(u32, *const AtomicU32, *const ());

const CHILD: &str = "USRCU_REDTEAM2_UNLOAD_CB_CHILD";

fn load_armed(mode: u32) -> (Arc<ModuleLoader>, ModuleHandle) {
    let loader = Arc::new(ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_millis(1500),
        ..LoaderConfig::default()
    }));
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("redteam2-deferred")) }.expect("load");
    // SAFETY: the fixture exports `fx_arm` with this signature.
    let arm = unsafe { loader.symbol::<Arm>(m, "fx_arm") }.expect("fx_arm");
    // SAFETY: the board is a host static; no slot (fx_arm's contract).
    arm.call(|f| unsafe { f.call(mode, BOARD.as_ptr(), std::ptr::null()) })
        .expect("fx_arm");
    (loader, m)
}

type Outcome = std::thread::Result<Result<UnloadReport, UnloadError>>;

/// Unload `m` from inside a callback queued with `queue`; returns what the
/// unload gave (or its panic).
fn unload_inside(loader: &Arc<ModuleLoader>, m: ModuleHandle, queue: fn(Box<dyn FnOnce() + Send>)) -> Outcome {
    let (tx, rx) = mpsc::channel();
    let l = loader.clone();
    queue(Box::new(move || {
        let r = catch_unwind(AssertUnwindSafe(|| l.unload(m)));
        let _ = tx.send(r);
    }));
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the callback that unloads never reported")
}

fn describe(r: &Outcome) -> String {
    match r {
        Ok(Ok(report)) => format!("Ok: {report}"),
        Ok(Err(e)) => format!("Err: {e}"),
        Err(p) => format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        ),
    }
}

#[test]

fn an_unload_from_inside_a_tasks_callback_is_typed_and_leaves_the_module_unloadable() {
    let (loader, m) = load_armed(0);
    let r = unload_inside(&loader, m, usrcu::tasks::call);
    println!("inside a Tasks callback: {}", describe(&r));
    let state = loader.state(m);
    println!("state after: {state:?}");
    // Whatever the first attempt said, the module must not be stuck: it is
    // gone, or Live / Zombie and unloadable from a plain thread.
    if matches!(state, Some(ModuleState::Live) | Some(ModuleState::Zombie)) {
        let again = loader.unload(m);
        assert!(
            matches!(&again, Ok(rep) if rep.unmapped),
            "a retry from a plain thread: {again:?}"
        );
    }
    assert!(r.is_ok(), "ModuleLoader::unload panicked: {}", describe(&r));
    assert!(
        matches!(loader.state(m), Some(ModuleState::Unloaded)),
        "module left {:?} after an unload from a Tasks callback and a retry",
        loader.state(m)
    );
}

#[test]

fn an_unload_from_inside_a_trace_callback_never_unmaps_under_a_queued_trace_callback() {
    if std::env::var_os(CHILD).is_none() {
        let name = "an_unload_from_inside_a_trace_callback_never_unmaps_under_a_queued_trace_callback";
        Child::new(name)
            .env(CHILD, "1")
            .run()
            .assert_passed("inside a trace callback:", "the host died or the child failed");
        return;
    }
    // exit queues a Tasks Trace callback of the plugin's.
    let (loader, m) = load_armed(5);
    let r = unload_inside(&loader, m, usrcu::trace::call);
    println!("inside a trace callback: {}", describe(&r));
    let unmapped = matches!(&r, Ok(Ok(rep)) if rep.unmapped);
    // Let the plugin's callback run (after ours, on the same thread).
    usrcu::trace::barrier();
    println!("plugin callback ran: {}", BOARD[0].load(Ordering::SeqCst));
    assert!(!unmapped || BOARD[0].load(Ordering::SeqCst) == 1);
}

static HOST_DOMAIN: usrcu::Srcu = usrcu::Srcu::new_static("redteam2.host");

/// The path that works, beside the two above: an unload from inside an
/// SRCU callback of a host domain (a runtime invoker thread, where
/// `barrier` cannot wait) drains the callback `exit` queued on the
/// plugin's domain on a helper thread and unmaps the module.
#[test]
fn an_unload_from_inside_a_host_srcu_callback_drains_and_unmaps() {
    // exit queues an SRCU callback on the plugin's static domain.
    BOARD[0].store(0, Ordering::SeqCst);
    let (loader, m) = load_armed(9);
    let r = unload_inside(&loader, m, |f| HOST_DOMAIN.call_srcu(f));
    match &r {
        Ok(Ok(report)) => {
            assert!(report.unmapped, "{report}");
            assert_eq!(
                report.domains[0].barrier,
                usrcu_module_loader::BarrierOutcome::Issued,
                "{report}"
            );
        }
        _ => panic!("{}", describe(&r)),
    }
    assert_eq!(loader.state(m), Some(ModuleState::Unloaded));
    assert_eq!(
        BOARD[0].load(Ordering::SeqCst),
        1,
        "the callback exit queued did not run"
    );
}
