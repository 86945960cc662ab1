//! Red team (round 8): `trace::barrier_timeout(ZERO)` polled in a loop
//! while a Tasks Trace reader (which may sleep: that is the flavor's point)
//! holds the grace period of a pending `trace::call`. `Srcu::barrier_timeout`
//! promises that repeated timed-out barriers with no callback queued in
//! between share one marker; a host polling the process-wide flavor the
//! same way must not grow memory with every poll.

#[path = "common/bounded.rs"]
mod bounded;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// RSS is process-wide: the tests of this file run one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static M: std::sync::Mutex<()> = std::sync::Mutex::new(());
    M.lock().unwrap_or_else(|p| p.into_inner())
}

/// Live heap bytes, counted by this binary's global allocator (RSS would
/// hide growth into memory freed earlier).
struct Counting;
static LIVE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as i64 - l.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { std::alloc::System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn rss_bytes() -> u64 {
    LIVE.load(Ordering::Relaxed).max(0) as u64
}

#[test]
fn polling_trace_barrier_timeout_zero_under_a_held_reader_stays_bounded() {
    let _s = serial();
    bounded::finishes("trace barrier polling", || {
        let (in_tx, in_rx) = mpsc::channel();
        let (out_tx, out_rx) = mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let g = usrcu::trace::read_lock();
            in_tx.send(()).unwrap();
            let _ = out_rx.recv();
            drop(g);
        });
        in_rx.recv().unwrap();
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        usrcu::trace::call(move || r.store(true, Ordering::SeqCst));
        // Warm up.
        for _ in 0..10_000 {
            assert!(!usrcu::trace::barrier_timeout(Duration::ZERO));
        }
        let before = rss_bytes();
        let t0 = Instant::now();
        let mut n = 0u64;
        while t0.elapsed() < Duration::from_secs(2) {
            assert!(!usrcu::trace::barrier_timeout(Duration::ZERO));
            n += 1;
        }
        let after = rss_bytes();
        out_tx.send(()).unwrap();
        t.join().unwrap();
        assert!(usrcu::trace::barrier_timeout(Duration::from_secs(50)));
        assert!(ran.load(Ordering::SeqCst));
        let grew = after.saturating_sub(before);
        assert!(
            grew < 32 << 20,
            "live heap grew by {} MiB over {n} timed-out trace barriers while one reader was held ({} bytes per poll)",
            grew >> 20,
            grew / n.max(1)
        );
    });
}

#[test]
fn polling_tasks_barrier_timeout_zero_under_a_spinning_thread_stays_bounded() {
    let _s = serial();
    bounded::finishes("tasks barrier polling", || {
        // A thread that never blocks nor passes a quiescent point holds
        // every Tasks grace period (documented) until it stops.
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let (in_tx, in_rx) = mpsc::channel();
        let t = std::thread::spawn(move || {
            in_tx.send(()).unwrap();
            while !s.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        in_rx.recv().unwrap();
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        usrcu::tasks::call(move || r.store(true, Ordering::SeqCst));
        for _ in 0..10_000 {
            let _ = usrcu::tasks::barrier_timeout(Duration::ZERO);
        }
        let before = rss_bytes();
        let t0 = Instant::now();
        let mut n = 0u64;
        let mut timed_out = 0u64;
        while t0.elapsed() < Duration::from_secs(2) {
            if !usrcu::tasks::barrier_timeout(Duration::ZERO) {
                timed_out += 1;
            }
            n += 1;
        }
        let after = rss_bytes();
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
        assert!(usrcu::tasks::barrier_timeout(Duration::from_secs(50)));
        assert!(ran.load(Ordering::SeqCst));
        let grew = after.saturating_sub(before);
        assert!(
            grew < 32 << 20,
            "live heap grew by {} MiB over {n} Tasks barriers ({timed_out} timed out) while one thread held the grace period ({} bytes per poll)",
            grew >> 20,
            grew / n.max(1)
        );
    });
}

/// The SRCU counterpart, which documents the shared marker: measured with
/// the same allocator, as a control.
#[test]
fn polling_srcu_barrier_timeout_zero_under_a_held_reader_stays_bounded() {
    let _s = serial();
    bounded::finishes("srcu barrier polling", || {
        let d = Arc::new(usrcu::Srcu::new("rt8-srcu-marker-control"));
        let (in_tx, in_rx) = mpsc::channel();
        let (out_tx, out_rx) = mpsc::channel::<()>();
        let d2 = d.clone();
        let t = std::thread::spawn(move || {
            let g = d2.read_lock();
            in_tx.send(()).unwrap();
            let _ = out_rx.recv();
            drop(g);
        });
        in_rx.recv().unwrap();
        d.call_srcu(|| {});
        for _ in 0..10_000 {
            assert!(!d.barrier_timeout(Duration::ZERO));
        }
        let before = rss_bytes();
        let t0 = Instant::now();
        let mut n = 0u64;
        while t0.elapsed() < Duration::from_secs(1) {
            assert!(!d.barrier_timeout(Duration::ZERO));
            n += 1;
        }
        let grew = rss_bytes().saturating_sub(before);
        out_tx.send(()).unwrap();
        t.join().unwrap();
        d.barrier();
        assert!(
            grew < 1 << 20,
            "live heap grew by {grew} bytes over {n} timed-out SRCU barriers"
        );
    });
}

/// Live-heap growth of `poll` called in a loop for `secs` while `hold`
/// holds the flavor's grace period.
fn growth_while_held(secs: u64, mut poll: impl FnMut()) -> (u64, u64) {
    for _ in 0..10_000 {
        poll();
    }
    let before = rss_bytes();
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        poll();
        n += 1;
    }
    (rss_bytes().saturating_sub(before), n)
}

#[test]
fn polling_start_poll_under_held_readers_stays_bounded() {
    let _s = serial();
    bounded::finishes("start_poll polling", || {
        // Tasks Trace: a reader held on another thread.
        let (in_tx, in_rx) = mpsc::channel();
        let (out_tx, out_rx) = mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let g = usrcu::trace::read_lock();
            in_tx.send(()).unwrap();
            let _ = out_rx.recv();
            drop(g);
        });
        in_rx.recv().unwrap();
        let (grew_trace, n_trace) = growth_while_held(1, || {
            let c = usrcu::trace::start_poll();
            let _ = usrcu::trace::poll_state(c);
        });
        out_tx.send(()).unwrap();
        t.join().unwrap();

        // SRCU: a reader held on another thread.
        let d = Arc::new(usrcu::Srcu::new("rt8-start-poll-growth"));
        let (in_tx, in_rx) = mpsc::channel();
        let (out_tx, out_rx) = mpsc::channel::<()>();
        let d2 = d.clone();
        let t = std::thread::spawn(move || {
            let g = d2.read_lock();
            in_tx.send(()).unwrap();
            let _ = out_rx.recv();
            drop(g);
        });
        in_rx.recv().unwrap();
        let (grew_srcu, n_srcu) = growth_while_held(1, || {
            let c = d.start_poll();
            let _ = d.poll_state(c);
            let _ = d.synchronize_timeout(Duration::ZERO);
        });
        out_tx.send(()).unwrap();
        t.join().unwrap();
        d.synchronize();

        assert!(
            grew_trace < 1 << 20 && grew_srcu < 1 << 20,
            "live heap grew: trace start_poll {grew_trace} bytes over {n_trace} polls; SRCU start_poll+synchronize_timeout(0) {grew_srcu} bytes over {n_srcu}"
        );
    });
}
