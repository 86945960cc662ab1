//! Red-team (round 2) of tracepoints: probes that unregister themselves,
//! with and without waiting, on both kinds of tracepoint. A probe is user
//! (plugin) code; `unregister` is a safe call, so none of this may hang the
//! firing thread or touch freed memory, and the probe must be gone after.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use usrcu_registry::define_tracepoint;
use usrcu_registry::tracepoint::ProbeHandle;

define_tracepoint!(static FAULTABLE_SELF: Tracepoint<u64> = faultable "rt2-faultable-self");
define_tracepoint!(static NORMAL_SELF: Tracepoint<u64> = normal "rt2-normal-self");
define_tracepoint!(static FAULTABLE_DEFER: Tracepoint<u64> = faultable "rt2-faultable-defer");
define_tracepoint!(static NORMAL_DEFER: Tracepoint<u64> = normal "rt2-normal-defer");

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Run `f` on a thread; panic if it has not finished after a generous bound
/// (a hang), else return whether it panicked.
fn returns_within_bound(what: &str, f: impl FnOnce() + Send + 'static) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err();
        let _ = tx.send(panicked);
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("hang: {what}"))
}

/// Per-tracepoint state of a self-unregistering probe: its handle, and how
/// often it and its neighbour ran.
struct SelfRemoving {
    handle: Mutex<Option<ProbeHandle<u64>>>,
    ran: AtomicUsize,
    neighbour_ran: AtomicUsize,
}

impl SelfRemoving {
    const fn new() -> SelfRemoving {
        SelfRemoving {
            handle: Mutex::new(None),
            ran: AtomicUsize::new(0),
            neighbour_ran: AtomicUsize::new(0),
        }
    }
}

static FAULTABLE_SELF_STATE: SelfRemoving = SelfRemoving::new();
static NORMAL_SELF_STATE: SelfRemoving = SelfRemoving::new();
static FAULTABLE_DEFER_STATE: SelfRemoving = SelfRemoving::new();
static NORMAL_DEFER_STATE: SelfRemoving = SelfRemoving::new();

/// Unregister this probe and wait for the grace period, from inside it.
fn unregister_self(s: &SelfRemoving, _: &u64) {
    s.ran.fetch_add(1, SeqCst);
    let h = s.handle.lock().unwrap().take();
    if let Some(h) = h {
        let _ = h.unregister();
    }
}

/// Unregister this probe without waiting, from inside it.
fn unregister_self_deferred(s: &SelfRemoving, _: &u64) {
    s.ran.fetch_add(1, SeqCst);
    if let Some(h) = s.handle.lock().unwrap().take() {
        assert!(h.unregister_deferred());
    }
}

fn neighbour(s: &SelfRemoving, _: &u64) {
    s.neighbour_ran.fetch_add(1, SeqCst);
}

#[test]
fn a_faultable_probe_that_unregisters_itself_and_waits_does_not_hang_and_is_detached() {
    let _s = serial();
    let st = &FAULTABLE_SELF_STATE;
    let h = FAULTABLE_SELF.register_may_block(unregister_self, st).unwrap();
    let n = FAULTABLE_SELF.register(neighbour, st).unwrap();
    *st.handle.lock().unwrap() = Some(h);
    // From inside the probe the grace period would wait for the probe's own
    // section: a refusal (the panic of `trace::synchronize` inside a
    // section) or a return are both fine; a hang is not.
    let _ = returns_within_bound("faultable probe unregistering itself", || FAULTABLE_SELF.fire(&1));
    assert_eq!(FAULTABLE_SELF.probe_count(), 1, "the probe is detached");
    FAULTABLE_SELF.fire(&2);
    assert_eq!(st.ran.load(SeqCst), 1, "a detached probe never runs again");
    assert!(st.neighbour_ran.load(SeqCst) >= 1, "the other probe still fires");
    assert!(n.unregister());
    assert!(!FAULTABLE_SELF.enabled());
}

#[test]
fn a_normal_probe_that_unregisters_itself_and_waits_does_not_hang_and_is_detached() {
    let _s = serial();
    let st = &NORMAL_SELF_STATE;
    let h = NORMAL_SELF.register(unregister_self, st).unwrap();
    let n = NORMAL_SELF.register(neighbour, st).unwrap();
    *st.handle.lock().unwrap() = Some(h);
    // Waiting inside a normal probe breaks its contract (it blocks), which
    // the docs say is not unsound from safe code: the firing thread waits
    // in `tasks::synchronize` and is skipped as a waiter; the old probe
    // array it is iterating was copied to its stack.
    let panicked = returns_within_bound("normal probe unregistering itself", || NORMAL_SELF.fire(&1));
    assert!(!panicked, "tasks::synchronize from a non-Tasks thread is allowed");
    assert_eq!(
        st.neighbour_ran.load(SeqCst),
        1,
        "the rest of that fire ran from its copy"
    );
    assert_eq!(NORMAL_SELF.probe_count(), 1);
    NORMAL_SELF.fire(&2);
    assert_eq!(st.ran.load(SeqCst), 1);
    assert_eq!(st.neighbour_ran.load(SeqCst), 2);
    assert!(n.unregister());
}

fn deferred_self_removal(tp: &'static usrcu_registry::tracepoint::Tracepoint<u64>, st: &'static SelfRemoving) {
    let h = if tp.kind() == usrcu_registry::tracepoint::TracepointKind::Faultable {
        tp.register_may_block(unregister_self_deferred, st).unwrap()
    } else {
        tp.register(unregister_self_deferred, st).unwrap()
    };
    let n = tp.register(neighbour, st).unwrap();
    *st.handle.lock().unwrap() = Some(h);
    tp.fire(&1);
    assert_eq!(st.ran.load(SeqCst), 1);
    assert_eq!(
        st.neighbour_ran.load(SeqCst),
        1,
        "a probe after the one that removed itself still runs in that fire"
    );
    tp.fire(&2);
    assert_eq!(st.ran.load(SeqCst), 1, "the removed probe does not run again");
    assert_eq!(st.neighbour_ran.load(SeqCst), 2);
    assert!(n.unregister());
    assert!(!tp.enabled());
}

#[test]
fn a_faultable_probe_that_unregisters_itself_deferred_lets_the_rest_of_the_fire_run() {
    let _s = serial();
    deferred_self_removal(&FAULTABLE_DEFER, &FAULTABLE_DEFER_STATE);
}

#[test]
fn a_normal_probe_that_unregisters_itself_deferred_lets_the_rest_of_the_fire_run() {
    let _s = serial();
    deferred_self_removal(&NORMAL_DEFER, &NORMAL_DEFER_STATE);
}
