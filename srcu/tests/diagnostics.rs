//! Warnings reach the capture API with structured kinds; self-deadlocks
//! panic in debug builds; a panicking callback does not stop the runtime.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// A generous bound for "this must happen": reaching it means a hang.
const HANG: Duration = Duration::from_secs(60);
use usrcu::diagnostics::{Capture, WarningKind};
use usrcu::{Srcu, SrcuConfig};

#[test]
fn stall_warning_fires_after_a_short_timeout_and_names_the_domain() {
    let cap = Arc::new(Capture::start());
    let d = Arc::new(Srcu::with_config("stalled", SrcuConfig::new().stall_timeout_ms(50)));
    let (tx, rx) = mpsc::channel();
    let reader = {
        let (d, cap) = (d.clone(), cap.clone());
        thread::Builder::new()
            .name("slow-reader".into())
            .spawn(move || {
                let _g = d.read_lock();
                tx.send(()).unwrap();
                // Stay inside until the stall warning has been captured (or
                // give up after HANG, and let the assertion below fail).
                let end = Instant::now() + HANG;
                while cap.find("stalled", WarningKind::Stall).is_empty() && Instant::now() < end {
                    thread::sleep(Duration::from_millis(1));
                }
            })
            .unwrap()
    };
    rx.recv().unwrap();
    d.synchronize();
    reader.join().unwrap();
    let w = cap.find("stalled", WarningKind::Stall);
    assert!(!w.is_empty(), "no stall warning captured");
    assert!(w[0].message.contains("'stalled'"), "{}", w[0].message);
    if cfg!(debug_assertions) {
        let r = w[0]
            .oldest_reader
            .as_ref()
            .expect("debug builds name the oldest reader");
        assert_eq!(r.thread_name, "slow-reader");
        assert!(r.location.contains("diagnostics.rs"), "{}", r.location);
    }
}

#[test]
fn no_stall_warning_for_a_grace_period_under_the_timeout() {
    let cap = Capture::start();
    let d = Arc::new(Srcu::with_config(
        "not-stalled",
        SrcuConfig::new().stall_timeout_ms(60_000),
    ));
    let g = d.read_lock_raw();
    let left = Arc::new(AtomicBool::new(false));
    let syncer = {
        let (d, left) = (d.clone(), left.clone());
        thread::spawn(move || {
            d.synchronize();
            assert!(
                left.load(Ordering::SeqCst),
                "synchronize returned while the reader was inside"
            );
        })
    };
    // Hold the reader until the grace period has checked it many times, so
    // that it is past its spinning steps and into the sleeps that report
    // stalls, yet far below the 60 s timeout.
    let per_check = 2 * d.possible_cpus() as u64;
    let start = d.stats().slots_scanned;
    while d.stats().slots_scanned < start + 20 * per_check {
        thread::yield_now();
    }
    left.store(true, Ordering::SeqCst);
    // SAFETY: `g` came from this domain's read_lock_raw, ended once.
    unsafe { d.read_unlock_raw(g) };
    syncer.join().unwrap();
    assert!(cap.find("not-stalled", WarningKind::Stall).is_empty());
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "Illegal synchronize() in same-domain SRCU read-side critical section")]
fn synchronize_inside_own_read_section_panics_in_debug_builds() {
    static D: Srcu = Srcu::new_static("self-deadlock");
    let _g = D.read_lock();
    D.synchronize();
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "Illegal barrier() in same-domain SRCU read-side critical section")]
fn barrier_inside_own_read_section_panics_in_debug_builds() {
    static D: Srcu = Srcu::new_static("self-deadlock-barrier");
    D.call_srcu(|| {});
    let _g = D.read_lock();
    D.barrier();
}

#[cfg(debug_assertions)]
#[test]
fn self_deadlock_is_also_reported_to_the_capture() {
    static D: Srcu = Srcu::new_static("self-deadlock-captured");
    let cap = Capture::start();
    let r = std::panic::catch_unwind(|| {
        let _g = D.read_lock();
        D.synchronize_expedited();
    });
    assert!(r.is_err());
    assert!(!cap
        .find("self-deadlock-captured", WarningKind::IllegalSynchronize)
        .is_empty());
}

#[test]
fn synchronize_inside_another_domains_section_is_allowed() {
    static A: Srcu = Srcu::new_static("outer-domain");
    static B: Srcu = Srcu::new_static("inner-domain");
    let _g = A.read_lock();
    B.synchronize();
}

#[test]
fn panicking_callback_is_reported_and_the_runtime_keeps_going() {
    let cap = Capture::start();
    let d = Srcu::new("panicky");
    d.call_srcu(|| panic!("boom in callback"));
    let ran = Arc::new(AtomicBool::new(false));
    {
        let ran = ran.clone();
        d.call_srcu(move || ran.store(true, Ordering::SeqCst));
    }
    d.barrier();
    assert!(
        ran.load(Ordering::SeqCst),
        "the callback after the panicking one did not run"
    );
    let w = cap.find("panicky", WarningKind::CallbackPanicked);
    assert_eq!(w.len(), 1, "{:?}", cap.for_domain("panicky"));
    assert!(w[0].message.contains("boom in callback"));
}

#[test]
fn panicking_tasks_and_trace_callbacks_are_reported_under_their_flavor() {
    let cap = Capture::start();
    usrcu::tasks::call(|| panic!("boom in a tasks callback"));
    usrcu::tasks::barrier();
    usrcu::trace::call(|| panic!("boom in a trace callback"));
    usrcu::trace::barrier();
    let t = cap.find(usrcu::tasks::DOMAIN_NAME, WarningKind::CallbackPanicked);
    assert!(
        t.iter().any(|w| w.message.contains("boom in a tasks callback")),
        "{:?}",
        cap.warnings()
    );
    let r = cap.find(usrcu::trace::DOMAIN_NAME, WarningKind::CallbackPanicked);
    assert!(
        r.iter().any(|w| w.message.contains("boom in a trace callback")),
        "{:?}",
        cap.warnings()
    );
}

#[test]
fn dropping_a_dynamic_domain_with_a_reader_inside_warns_and_leaks() {
    let cap = Capture::start();
    let d = Srcu::new("dropped-busy");
    let idx = d.read_lock_raw();
    let _never_ended = idx; // a raw section that never ends
    drop(d);
    assert!(!cap.find("dropped-busy", WarningKind::ReadersActive).is_empty());
    assert!(!cap.find("dropped-busy", WarningKind::Leak).is_empty());
}

#[test]
fn cleanup_of_an_idle_domain_frees_and_a_later_use_reattaches() {
    static D: Srcu = Srcu::new_static("reattach");
    let cap = Capture::start();
    {
        let _g = D.read_lock();
    }
    D.synchronize();
    assert!(D.is_attached());
    // SAFETY: no other thread uses D.
    unsafe { D.cleanup() }.unwrap();
    assert!(!D.is_attached());
    {
        let _g = D.read_lock();
    }
    D.synchronize_expedited();
    assert!(D.is_attached());
    assert!(cap.for_domain("reattach").is_empty());
}

#[test]
fn barrier_inside_a_callback_returns_at_once_warns_and_is_not_counted_as_issued() {
    let cap = Capture::start();
    let d = Arc::new(Srcu::new("barrier-in-callback"));
    let (tx, rx) = mpsc::channel();
    {
        let d2 = d.clone();
        d.call_srcu(move || {
            let before = d2.stats().barriers_issued;
            d2.barrier();
            let _ = tx.send(d2.stats().barriers_issued - before);
        });
    }
    let issued_inside = rx.recv_timeout(HANG).expect("the callback never ran");
    assert_eq!(issued_inside, 0, "a barrier on a runtime thread counted as issued");
    let w = cap.find("barrier-in-callback", WarningKind::IllegalSynchronize);
    assert_eq!(w.len(), 1, "{:?}", cap.for_domain("barrier-in-callback"));
    d.barrier();
    assert_eq!(d.stats().barriers_issued, 1);
}
