//! The core's claims, each tested on both fence paths (membarrier pair and
//! the SeqCst fallback). Threads really race and grace periods really wait.

#[path = "common/race.rs"]
mod race;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use usrcu::diagnostics::{Capture, WarningKind};
use usrcu::{Srcu, SrcuConfig};

/// A generous bound for "this must happen": reaching it means a hang.
const HANG: Duration = Duration::from_secs(60);

fn config(seqcst: bool) -> SrcuConfig {
    SrcuConfig::new().force_seqcst_fence(seqcst)
}

fn domain(name: &str, seqcst: bool) -> Arc<Srcu> {
    let d = Arc::new(Srcu::with_config(name, config(seqcst)));
    if seqcst {
        assert_eq!(d.fence_mode(), usrcu::fence::FenceMode::SeqCst);
    } else if usrcu::fence::membarrier_available() && std::env::var_os("USRCU_FENCE").is_none() {
        assert_eq!(d.fence_mode(), usrcu::fence::FenceMode::Membarrier);
    }
    d
}

/// Run `f` on another thread and report whether it finished within `d`.
fn finishes_within(
    d: Duration,
    f: impl FnOnce() + Send + 'static,
) -> (bool, thread::JoinHandle<()>, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    let done = rx.recv_timeout(d).is_ok();
    (done, h, rx)
}

macro_rules! both_fences {
    ($($name:ident;)*) => {
        mod membarrier_path {
            $( #[test] fn $name() { super::$name(false) } )*
        }
        mod seqcst_fallback {
            $( #[test] fn $name() { super::$name(true) } )*
        }
    };
}

fn synchronize_waits_for_preexisting_reader_that_sleeps_200ms(seqcst: bool) {
    let d = domain("sleeping-reader", seqcst);
    let (entered_tx, entered_rx) = mpsc::channel();
    let left = Arc::new(AtomicBool::new(false));
    let reader = {
        let (d, left) = (d.clone(), left.clone());
        thread::spawn(move || {
            let _g = d.read_lock();
            entered_tx.send(()).unwrap();
            thread::sleep(Duration::from_millis(200));
            left.store(true, Ordering::SeqCst);
        })
    };
    entered_rx.recv().unwrap();
    d.synchronize();
    // The flag is set inside the section, just before it ends: seeing it set
    // is the ordering claim (no elapsed-time check, which would depend on the
    // scheduler).
    assert!(
        left.load(Ordering::SeqCst),
        "synchronize returned while a pre-existing reader was inside"
    );
    reader.join().unwrap();
}

fn synchronize_does_not_wait_for_readers_that_began_after_it(seqcst: bool) {
    let d = domain("late-reader", seqcst);
    let old = d.read_lock_raw();
    let old_rank = old.index();
    let (done, syncer, done_rx) = finishes_within(Duration::from_millis(1), {
        let d = d.clone();
        move || d.synchronize()
    });
    assert!(!done, "synchronize returned with a pre-existing reader inside");
    // A reader on the other rank began after the flip, i.e. after the call.
    let late = loop {
        let r = d.read_lock_raw();
        if r.index() != old_rank {
            break r;
        }
        // SAFETY: `r` came from this domain's read_lock_raw, ended once.
        unsafe { d.read_unlock_raw(r) };
        thread::sleep(Duration::from_millis(1));
    };
    // SAFETY: `old` came from this domain's read_lock_raw, ended once.
    unsafe { d.read_unlock_raw(old) };
    assert!(
        done_rx.recv_timeout(HANG).is_ok(),
        "synchronize waited for a reader that began after it"
    );
    syncer.join().unwrap();
    // SAFETY: as above.
    unsafe { d.read_unlock_raw(late) };
}

fn nested_sections_keep_the_outer_section_protected(seqcst: bool) {
    let d = domain("nested", seqcst);
    let outer = d.read_lock();
    {
        let _inner = d.read_lock();
        let _inner2 = d.read_lock();
    }
    let (done, syncer, done_rx) = finishes_within(Duration::from_millis(100), {
        let d = d.clone();
        move || d.synchronize()
    });
    assert!(!done, "synchronize returned while the outer section was still open");
    drop(outer);
    assert!(done_rx.recv_timeout(HANG).is_ok());
    syncer.join().unwrap();
}

fn raw_section_ended_on_another_thread_is_waited_for(seqcst: bool) {
    let d = domain("raw-cross-thread", seqcst);
    let idx = d.read_lock_raw();
    let ended = Arc::new(AtomicBool::new(false));
    let ender = {
        let (d, ended) = (d.clone(), ended.clone());
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            ended.store(true, Ordering::SeqCst);
            // SAFETY: `idx` came from this domain's read_lock_raw, ended once.
            unsafe { d.read_unlock_raw(idx) };
        })
    };
    d.synchronize_expedited();
    assert!(
        ended.load(Ordering::SeqCst),
        "synchronize returned before the raw section ended"
    );
    ender.join().unwrap();
}

fn callbacks_run_after_a_grace_period_and_in_order(seqcst: bool) {
    let d = domain("cb-order", seqcst);
    let order = Arc::new(Mutex::new(Vec::new()));
    let g = d.read_lock_raw();
    for i in 0..100 {
        let order = order.clone();
        d.call_srcu(move || order.lock().unwrap().push(i));
    }
    thread::sleep(Duration::from_millis(50));
    assert!(
        order.lock().unwrap().is_empty(),
        "a callback ran while a pre-existing reader was inside"
    );
    // SAFETY: `g` came from this domain's read_lock_raw, ended once.
    unsafe { d.read_unlock_raw(g) };
    d.barrier();
    assert_eq!(*order.lock().unwrap(), (0..100).collect::<Vec<_>>());
    let s = d.stats();
    assert_eq!(s.callbacks_queued, 100);
    assert!(s.grace_periods >= 1);
}

fn barrier_waits_for_every_earlier_callback_even_sleeping_ones(seqcst: bool) {
    let d = domain("barrier-sleepers", seqcst);
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..5 {
        let ran = ran.clone();
        d.call_srcu(move || {
            thread::sleep(Duration::from_millis(20));
            ran.fetch_add(1, Ordering::SeqCst);
        });
    }
    d.barrier();
    assert_eq!(ran.load(Ordering::SeqCst), 5);
    assert_eq!(d.stats().barriers_issued, 1);
}

fn barrier_without_call_srcu_skips_the_per_cpu_scan(seqcst: bool) {
    let d = domain("barrier-skip", seqcst);
    d.synchronize();
    let before = d.stats().slots_scanned;
    d.barrier();
    let s = d.stats();
    assert!(!d.call_srcu_used());
    assert_eq!(s.barriers_skipped, 1);
    assert_eq!(s.barriers_issued, 0);
    assert_eq!(s.slots_scanned, before);
}

fn cleanup_with_pending_callbacks_reports_a_missed_barrier_and_leaks(seqcst: bool) {
    let name = format!("missed-barrier-{seqcst}");
    let d = Srcu::with_config(&name, config(seqcst));
    let cap = Capture::start();
    let g = d.read_lock_raw();
    let ran = Arc::new(AtomicBool::new(false));
    {
        let ran = ran.clone();
        d.call_srcu(move || ran.store(true, Ordering::SeqCst));
    }
    // SAFETY: no other thread enters `d`.
    let err = unsafe { d.cleanup() }.expect_err("cleanup must refuse with a callback pending");
    assert!(err.callbacks_pending >= 1);
    assert_eq!(err.readers_active, 1);
    assert!(
        !cap.find(&name, WarningKind::MissedBarrier).is_empty(),
        "no missed-barrier warning captured"
    );
    assert!(!cap.find(&name, WarningKind::Leak).is_empty());
    assert!(d.is_attached(), "state must be leaked, not freed");
    // SAFETY: `g` came from this domain's read_lock_raw, ended once.
    unsafe { d.read_unlock_raw(g) };
    d.barrier();
    assert!(ran.load(Ordering::SeqCst));
    // SAFETY: as above.
    unsafe { d.cleanup() }.expect("cleanup after barrier succeeds");
    assert!(!d.is_attached());
}

fn polled_cookie_taken_inside_a_reader_completes_only_after_it(seqcst: bool) {
    let d = domain("polled", seqcst);
    let g = d.read_lock_raw();
    let c = d.start_poll();
    thread::sleep(Duration::from_millis(50));
    assert!(
        !d.poll_state(c),
        "cookie completed while a pre-existing reader was inside"
    );
    // SAFETY: `g` came from this domain's read_lock_raw, ended once.
    unsafe { d.read_unlock_raw(g) };
    let end = Instant::now() + HANG;
    while !d.poll_state(c) {
        assert!(Instant::now() < end, "start_poll never completed");
        thread::sleep(Duration::from_millis(1));
    }
    let c2 = d.get_state();
    d.synchronize();
    assert!(d.poll_state(c2));
}

fn readers_and_updaters_race_without_use_after_free(seqcst: bool) {
    // The same race fails with a grace period that skips its second scan:
    // see `broken_grace_period.rs`.
    let d = domain("race", seqcst);
    let seen = race::stale_sightings(&d, 3, 300);
    assert_eq!(seen, 0, "a reader saw an object poisoned after a grace period");
}

fn four_thousand_ninety_six_simulated_cpus_work(seqcst: bool) {
    let d = Srcu::with_config("4096-cpus", config(seqcst).possible_cpus(4096));
    assert_eq!(d.possible_cpus(), 4096);
    let g = d.read_lock();
    drop(g);
    d.synchronize_expedited();
    let ran = Arc::new(AtomicBool::new(false));
    {
        let ran = ran.clone();
        d.call_srcu(move || ran.store(true, Ordering::SeqCst));
    }
    d.barrier();
    assert!(ran.load(Ordering::SeqCst));
    let s = d.stats();
    assert_eq!(s.possible_cpus, 4096);
    // Two scans of at least one check each, two counter sums per check, each
    // over the fallback slot and the 64 slots of the readers' chunk (the
    // other 4095 possible CPUs have no slots: percpu_chunks.rs).
    assert!(s.slots_scanned >= 4 * (1 + 64), "slots scanned: {}", s.slots_scanned);
    // SAFETY: no other thread uses `d`.
    unsafe { d.cleanup() }.unwrap();
}

both_fences! {
    synchronize_waits_for_preexisting_reader_that_sleeps_200ms;
    synchronize_does_not_wait_for_readers_that_began_after_it;
    nested_sections_keep_the_outer_section_protected;
    raw_section_ended_on_another_thread_is_waited_for;
    callbacks_run_after_a_grace_period_and_in_order;
    barrier_waits_for_every_earlier_callback_even_sleeping_ones;
    barrier_without_call_srcu_skips_the_per_cpu_scan;
    cleanup_with_pending_callbacks_reports_a_missed_barrier_and_leaks;
    polled_cookie_taken_inside_a_reader_completes_only_after_it;
    readers_and_updaters_race_without_use_after_free;
    four_thousand_ninety_six_simulated_cpus_work;
}

#[test]
fn a_domain_waiting_for_a_sleeping_reader_does_not_hold_up_other_domains_callbacks() {
    let blocked = Arc::new(Srcu::new("blocked-domain"));
    let free = Arc::new(Srcu::new("free-domain"));
    let g = blocked.read_lock_raw();
    blocked.call_srcu(|| {});
    // Let the runtime start serving the blocked domain.
    thread::sleep(Duration::from_millis(20));
    let ran = Arc::new(AtomicBool::new(false));
    {
        let ran = ran.clone();
        free.call_srcu(move || ran.store(true, Ordering::SeqCst));
    }
    let (done, h, rx) = finishes_within(HANG, {
        let free = free.clone();
        move || free.barrier()
    });
    assert!(
        done,
        "the other domain's barrier waited for a reader of the blocked domain"
    );
    assert!(ran.load(Ordering::SeqCst));
    // SAFETY: `g` came from this domain's read_lock_raw, ended once.
    unsafe { blocked.read_unlock_raw(g) };
    blocked.barrier();
    h.join().unwrap();
    drop(rx);
}
