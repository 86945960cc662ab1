//! Red-team (round 2) of diagnostics: a stall warning's `oldest_reader`
//! (debug builds) for a domain that was used, then moved. `Srcu` is a plain
//! value: creating a domain, queueing a callback, and only then moving it
//! into an `Arc` or a struct is ordinary Rust, and nothing in the API says
//! a domain must not move while no guard borrows it.

use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};
use usrcu::diagnostics::{Capture, WarningKind};
use usrcu::{Srcu, SrcuConfig};

const HANG: Duration = Duration::from_secs(60);

#[test]
fn a_stall_on_a_domain_moved_after_first_use_still_names_the_oldest_reader_in_debug_builds() {
    if !cfg!(debug_assertions) {
        return;
    }
    let cap = Arc::new(Capture::start());
    let d = Srcu::with_config("rt2-moved-stall", SrcuConfig::new().stall_timeout_ms(50));
    // First use here (attaches the state), then the move.
    d.synchronize();
    let d = Arc::new(d);
    let (tx, rx) = mpsc::channel();
    let reader = {
        let (d, cap) = (d.clone(), cap.clone());
        thread::Builder::new()
            .name("rt2-moved-rdr".into())
            .spawn(move || {
                let _g = d.read_lock();
                tx.send(()).unwrap();
                let end = Instant::now() + HANG;
                while cap.find("rt2-moved-stall", WarningKind::Stall).is_empty() && Instant::now() < end {
                    thread::sleep(Duration::from_millis(1));
                }
            })
            .unwrap()
    };
    rx.recv().unwrap();
    d.synchronize();
    reader.join().unwrap();
    let w = cap.find("rt2-moved-stall", WarningKind::Stall);
    assert!(!w.is_empty(), "no stall warning captured");
    let r = w[0]
        .oldest_reader
        .as_ref()
        .unwrap_or_else(|| panic!("debug builds name the oldest reader: {}", w[0].message));
    assert_eq!(r.thread_name, "rt2-moved-rdr");
}

#[test]
fn a_stall_on_a_domain_that_never_moved_names_the_oldest_reader_in_debug_builds() {
    // The same scenario without the move: what the test above expects.
    if !cfg!(debug_assertions) {
        return;
    }
    let cap = Arc::new(Capture::start());
    let d = Arc::new(Srcu::with_config(
        "rt2-unmoved-stall",
        SrcuConfig::new().stall_timeout_ms(50),
    ));
    d.synchronize();
    let (tx, rx) = mpsc::channel();
    let reader = {
        let (d, cap) = (d.clone(), cap.clone());
        thread::Builder::new()
            .name("rt2-unmoved-rdr".into())
            .spawn(move || {
                let _g = d.read_lock();
                tx.send(()).unwrap();
                let end = Instant::now() + HANG;
                while cap.find("rt2-unmoved-stall", WarningKind::Stall).is_empty() && Instant::now() < end {
                    thread::sleep(Duration::from_millis(1));
                }
            })
            .unwrap()
    };
    rx.recv().unwrap();
    d.synchronize();
    reader.join().unwrap();
    let w = cap.find("rt2-unmoved-stall", WarningKind::Stall);
    assert!(!w.is_empty(), "no stall warning captured");
    let r = w[0].oldest_reader.as_ref().expect("named");
    assert_eq!(r.thread_name, "rt2-unmoved-rdr");
}
