use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use usrcu::Srcu;

#[test]
fn smoke() {
    static D: Srcu = Srcu::new_static("smoke");
    {
        let _g = D.read_lock();
        let _h = D.read_lock();
    }
    let t = Instant::now();
    D.synchronize_expedited();
    D.synchronize();
    eprintln!(
        "sync {:?} rseq {} mode {:?}",
        t.elapsed(),
        usrcu::rseq_active(),
        D.fence_mode()
    );
    let n = Arc::new(AtomicUsize::new(0));
    for _ in 0..10 {
        let n = n.clone();
        D.call_srcu(move || {
            n.fetch_add(1, Ordering::SeqCst);
        });
    }
    D.barrier();
    assert_eq!(n.load(Ordering::SeqCst), 10);
    let c = D.start_poll();
    while !D.poll_state(c) {
        std::thread::sleep(Duration::from_millis(1));
    }
    eprintln!("{:?}", D.stats());
    unsafe { D.cleanup() }.unwrap();
}
