//! Red team 2: a host thread inside a Tasks Trace read section calls
//! `ModuleLoader::unload` — a host's own probe on a faultable tracepoint
//! ("on this event, drop that plugin"), or any code under
//! `usrcu::trace::read_lock()`. The unload's probe step waits for Tasks
//! Trace grace periods and callbacks, which wait for this very section. A
//! loader that keeps its promise answers with a typed result (an error, or
//! a Zombie) and leaves the module unloadable; it neither panics out of
//! `unload`, leaving the module `Going` for good, nor waits forever.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use usrcu_module_loader::{LoaderConfig, ModuleLoader, ModuleState};
use usrcu_registry::define_tracepoint;
use usrcu_registry::tracepoint::Tracepoint;
use usrcu_tests::{fixture_path, Child};

define_tracepoint!(static EVENTS: Tracepoint<u64> = faultable "redteam2.section.events");

const CHILD: &str = "USRCU_REDTEAM2_TRACE_SECTION_CHILD";

fn loader() -> ModuleLoader {
    ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_millis(1500),
        ..LoaderConfig::default()
    })
}

/// Whatever the unload inside the section said, the module must not be
/// stuck: unloaded, or unloadable from outside the section.
fn not_stuck(loader: &ModuleLoader, m: usrcu_module_loader::ModuleHandle, inside: &str) {
    let state = loader.state(m);
    println!("child: inside the section: {inside}; state after: {state:?}");
    if matches!(state, Some(ModuleState::Live) | Some(ModuleState::Zombie)) {
        let again = loader.unload(m).expect("a retry outside the section");
        assert!(again.unmapped, "{again}");
    }
    assert_eq!(
        loader.state(m),
        Some(ModuleState::Unloaded),
        "unload inside a Tasks Trace section ({inside}) left the module {state:?}"
    );
}

#[test]
fn an_unload_inside_a_trace_section_of_a_module_with_a_faultable_probe_is_typed() {
    let loader = loader();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("redteam2-probe-panics")) }.expect("load");
    type Attach = unsafe extern "C" fn(*const Tracepoint<u64>, bool) -> u32;
    // SAFETY: the fixture exports `fx_attach` with this signature.
    let attach = unsafe { loader.symbol::<Attach>(m, "fx_attach") }.unwrap();
    // SAFETY: a `'static` host tracepoint.
    assert_eq!(attach.call(|f| unsafe { f.call(&EVENTS, true) }).unwrap(), 1);
    drop(attach);
    EVENTS.fire(&1);
    let r = {
        let _section = usrcu::trace::read_lock();
        catch_unwind(AssertUnwindSafe(|| loader.unload(m)))
    };
    let inside = match &r {
        Ok(Ok(rep)) => format!("Ok: {rep}"),
        Ok(Err(e)) => format!("Err: {e}"),
        Err(p) => format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        ),
    };
    assert!(r.is_ok(), "ModuleLoader::unload panicked: {inside}");
    not_stuck(&loader, m, &inside);
}

#[test]
fn an_unload_inside_a_trace_section_of_a_module_whose_exit_queued_a_trace_callback_returns() {
    if std::env::var_os(CHILD).is_none() {
        let name = "an_unload_inside_a_trace_section_of_a_module_whose_exit_queued_a_trace_callback_returns";
        // A hang must fail the test, not stall it: the child is killed
        // after 60 s (it needs a second or two when nothing hangs).
        let ran = Child::new(name).env(CHILD, "1").timeout(Duration::from_secs(60)).run();
        assert!(
            !ran.timed_out,
            "the unload inside the section never returned (killed after 60 s):\n{}",
            ran.describe()
        );
        ran.assert_passed("child: ", "the host died or the child failed");
        return;
    }
    static BOARD: [AtomicU32; 3] = [AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)];
    type Arm = unsafe extern "C" fn(u32, *const AtomicU32, *const ());
    let loader = loader();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("redteam2-deferred")) }.expect("load");
    // SAFETY: the fixture exports `fx_arm` with this signature.
    let arm = unsafe { loader.symbol::<Arm>(m, "fx_arm") }.unwrap();
    // Mode 5: exit queues a Tasks Trace callback. SAFETY: a host static board.
    arm.call(|f| unsafe { f.call(5, BOARD.as_ptr(), std::ptr::null()) })
        .unwrap();
    drop(arm);
    let r = {
        let _section = usrcu::trace::read_lock();
        catch_unwind(AssertUnwindSafe(|| loader.unload(m)))
    };
    let inside = match &r {
        Ok(Ok(rep)) => format!("Ok: {rep}"),
        Ok(Err(e)) => format!("Err: {e}"),
        Err(_) => "panicked".to_owned(),
    };
    assert!(r.is_ok(), "ModuleLoader::unload panicked");
    not_stuck(&loader, m, &inside);
    usrcu::trace::barrier();
}
