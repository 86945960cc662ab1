//! Red team (round 8): grace-period primitives of a domain called from
//! inside one of its own `call_srcu` callbacks (or another domain's). Only
//! `barrier` is documented to be refused there; `synchronize`,
//! `synchronize_expedited`, `synchronize_timeout`, and a `start_poll`
//! polled to completion must finish.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use usrcu::Srcu;

fn in_callback(d: &Arc<Srcu>, what: &'static str, f: impl FnOnce(&Srcu) + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let d2 = d.clone();
    d.call_srcu(move || {
        f(&d2);
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{what} from inside an own callback did not finish in 30 s"));
}

#[test]
fn synchronize_from_own_callback_finishes() {
    let d = Arc::new(Srcu::new("rt8-cb-sync"));
    in_callback(&d, "synchronize", |d| d.synchronize());
    in_callback(&d, "synchronize_expedited", |d| d.synchronize_expedited());
    in_callback(&d, "synchronize_timeout", |d| {
        assert!(d.synchronize_timeout(Duration::from_secs(20)))
    });
}

#[test]
fn start_poll_polled_from_own_callback_completes() {
    let d = Arc::new(Srcu::new("rt8-cb-poll"));
    in_callback(&d, "start_poll + poll_state loop", |d| {
        let c = d.start_poll();
        let t0 = std::time::Instant::now();
        while !d.poll_state(c) {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "start_poll from own callback never completes"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

#[test]
fn start_poll_polled_from_another_domains_callback_completes() {
    let a = Arc::new(Srcu::new("rt8-cb-poll-a"));
    let b = Arc::new(Srcu::new("rt8-cb-poll-b"));
    let b2 = b.clone();
    in_callback(&a, "start_poll of another domain", move |_| {
        let c = b2.start_poll();
        let t0 = std::time::Instant::now();
        while !b2.poll_state(c) {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "start_poll of domain b from a's callback never completes"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        b2.barrier();
    });
    b.synchronize();
}

#[test]
fn call_srcu_chain_from_own_callback_then_barrier() {
    let d = Arc::new(Srcu::new("rt8-cb-chain"));
    let (tx, rx) = mpsc::channel();
    fn step(d: Arc<Srcu>, n: u32, tx: mpsc::Sender<u32>) {
        let d2 = d.clone();
        d.call_srcu(move || {
            if n == 0 {
                let _ = tx.send(0);
            } else {
                step(d2, n - 1, tx);
            }
        });
    }
    step(d.clone(), 100, tx);
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), 0);
    d.barrier();
}
