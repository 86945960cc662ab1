//! Red-team of tracepoints through the public API: probes that fire,
//! register and unregister from inside a probe; the normal tracepoint's
//! probe limit; a Tasks callback that unregisters a probe.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use usrcu_registry::define_tracepoint;
use usrcu_registry::tracepoint::{ProbeHandle, TracepointError, MAX_NORMAL_PROBES};

define_tracepoint!(static REENTER: Tracepoint<u64> = faultable "rt-reenter");
define_tracepoint!(static NORMAL: Tracepoint<u64> = normal "rt-normal");
define_tracepoint!(static LIMIT: Tracepoint<u64> = normal "rt-limit");

static SERIAL: Mutex<()> = Mutex::new(());

static DEPTH_SEEN: AtomicU64 = AtomicU64::new(0);
fn refire(depth: &AtomicU64, n: &u64) {
    depth.fetch_max(*n, SeqCst);
    if *n < 50 {
        REENTER.fire(&(n + 1));
    }
}

static LATE: AtomicUsize = AtomicUsize::new(0);
fn late(c: &AtomicUsize, _: &u64) {
    c.fetch_add(1, SeqCst);
}
static ADDED: Mutex<Vec<ProbeHandle<u64>>> = Mutex::new(Vec::new());
static ADDER_DATA: () = ();
fn adder(_: &(), _: &u64) {
    // Registering from inside a probe of the same tracepoint: the update
    // lock is not held while firing.
    ADDED.lock().unwrap().push(NORMAL.register(late, &LATE).unwrap());
}

#[test]
fn a_probe_that_fires_its_own_tracepoint_fifty_deep_runs_every_level() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let h = REENTER.register_may_block(refire, &DEPTH_SEEN).unwrap();
    REENTER.fire(&1);
    assert_eq!(DEPTH_SEEN.load(SeqCst), 50);
    assert!(h.unregister());
    assert!(!REENTER.enabled());
}

#[test]
fn a_probe_that_registers_probes_while_firing_sees_them_on_the_next_fire() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let h = NORMAL.register(adder, &ADDER_DATA).unwrap();
    NORMAL.fire(&0);
    assert_eq!(
        LATE.load(SeqCst),
        0,
        "a probe added during a fire is not run by that fire"
    );
    assert!(h.unregister());
    NORMAL.fire(&0);
    assert_eq!(LATE.load(SeqCst), 1);
    for p in ADDED.lock().unwrap().drain(..) {
        assert!(p.unregister());
    }
    assert_eq!(NORMAL.probe_count(), 0);
}

static COUNT: AtomicU64 = AtomicU64::new(0);
fn count(c: &AtomicU64, _: &u64) {
    c.fetch_add(1, SeqCst);
}

#[test]
fn a_normal_tracepoint_refuses_the_probe_past_its_limit_and_still_fires_the_others() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let hs: Vec<_> = (0..MAX_NORMAL_PROBES)
        .map(|_| LIMIT.register(count, &COUNT).unwrap())
        .collect();
    assert_eq!(
        LIMIT.register(count, &COUNT).unwrap_err(),
        TracepointError::TooManyProbes { tracepoint: "rt-limit" }
    );
    LIMIT.fire(&0);
    assert_eq!(COUNT.load(SeqCst), MAX_NORMAL_PROBES as u64);
    // Unregistered from a Tasks callback: its wait is refused there, and the
    // refusal is a reported panic, not an abort of the process.
    let mut hs = hs.into_iter();
    let first = hs.next().unwrap();
    usrcu::tasks::call(move || {
        let _ = first.unregister();
    });
    usrcu::tasks::barrier();
    assert_eq!(
        LIMIT.probe_count(),
        MAX_NORMAL_PROBES - 1,
        "detached before the refused wait"
    );
    for h in hs {
        assert!(h.unregister());
    }
    assert!(!LIMIT.enabled());
}
