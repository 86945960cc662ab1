//! Red team (round 8): polled grace periods, timeouts with extreme
//! durations, `cleanup` around cookies, and `HookSlot` under contention,
//! through the public API only. Every wait runs under `bounded`.

#[path = "common/bounded.rs"]
mod bounded;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use usrcu::diagnostics::Capture;
use usrcu::tasks::HookSlot;
use usrcu::{Cookie, Srcu};

fn flavors() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hold a raw read section of `d` on another thread until told to leave.
fn hold_reader(d: Arc<Srcu>) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (in_tx, in_rx) = mpsc::channel();
    let (out_tx, out_rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let idx = d.read_lock_raw();
        in_tx.send(()).unwrap();
        let _ = out_rx.recv();
        // SAFETY: `idx` came from `d.read_lock_raw()` on this thread, ended once.
        unsafe { d.read_unlock_raw(idx) };
    });
    in_rx.recv().unwrap();
    (out_tx, t)
}

#[test]
fn cookie_completed_before_cleanup_stays_complete_after_reattach() {
    bounded::finishes("cookie across cleanup", || {
        let d = Srcu::new("rt8-cookie-cleanup");
        for _ in 0..5 {
            d.synchronize();
        }
        let done = d.get_state();
        d.synchronize();
        assert!(d.poll_state(done));
        let pending = d.get_state(); // not started: names a future grace period
                                     // SAFETY: no other thread uses `d`.
        unsafe { d.cleanup() }.expect("idle domain cleans up");
        // Re-attach by use.
        let _ = d.read_lock();
        assert!(
            d.poll_state(done),
            "a cookie whose grace period completed before cleanup reads as not complete after re-attach"
        );
        d.synchronize();
        assert!(
            d.poll_state(pending),
            "a cookie taken before cleanup is not complete after a full grace period on the fresh state"
        );
        // A cookie taken now is not already complete.
        let fresh = d.get_state();
        assert!(fresh >= pending);
        d.synchronize();
        assert!(d.poll_state(fresh));
    });
}

#[test]
fn start_poll_on_fresh_state_after_cleanup_waits_for_its_reader() {
    bounded::finishes("unstarted cookie across cleanup", || {
        let d = Arc::new(Srcu::new("rt8-cookie-cleanup-2"));
        d.synchronize();
        d.synchronize();
        let c = d.get_state();
        // SAFETY: no other thread uses `d`.
        unsafe { d.cleanup() }.expect("idle domain cleans up");
        // A reader on the fresh state: the cookie's grace period cannot end.
        let (tx, t) = hold_reader(d.clone());
        let c2 = d.start_poll();
        std::thread::sleep(Duration::from_millis(50));
        // `c` may read as complete: the successful cleanup proved no reader
        // that began before it was still inside. `c2` names a grace period
        // the reader holds up.
        assert!(
            !d.poll_state(c2),
            "a started poll completed while a reader it must wait for is inside"
        );
        assert!(c2 >= c);
        tx.send(()).unwrap();
        t.join().unwrap();
        bounded::wait_until("started poll completes", || d.poll_state(c2));
        assert!(d.poll_state(c));
    });
}

#[test]
fn start_poll_completes_without_anyone_synchronizing() {
    bounded::finishes("start_poll alone", || {
        let d = Arc::new(Srcu::new("rt8-start-poll"));
        let (tx, t) = hold_reader(d.clone());
        let c = d.start_poll();
        std::thread::sleep(Duration::from_millis(30));
        assert!(!d.poll_state(c));
        tx.send(()).unwrap();
        t.join().unwrap();
        bounded::wait_until("start_poll's grace period completes", || d.poll_state(c));
    });
}

#[test]
fn get_state_cookie_completes_after_expedited_and_orders() {
    bounded::finishes("expedited cookies", || {
        let d = Srcu::new("rt8-expedited-cookie");
        let a = d.get_state();
        let b = d.get_state();
        assert_eq!(a, b, "two get_state with nothing between name the same grace period");
        assert!(!d.poll_state(a));
        d.synchronize_expedited();
        assert!(d.poll_state(a));
        let c = d.get_state();
        assert!(c > a);
        assert!(!d.poll_state(c));
        assert!(d.synchronize_timeout(Duration::from_secs(30)));
        assert!(d.poll_state(c));
        // Round trip through u64.
        assert_eq!(Cookie::from_u64(c.as_u64()), c);
        assert!(d.poll_state(Cookie::from_u64(0)));
        assert!(!d.poll_state(Cookie::from_u64(u64::MAX)));
        assert!(!d.poll_state(Cookie::from_u64(u64::MAX - 1)));
    });
}

#[test]
fn synchronize_timeout_zero_and_max_with_a_reader_on_another_thread() {
    bounded::finishes("sync timeouts", || {
        let d = Arc::new(Srcu::new("rt8-sync-timeout"));
        let (tx, t) = hold_reader(d.clone());
        let t0 = Instant::now();
        assert!(!d.synchronize_timeout(Duration::ZERO));
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "a zero timeout waited {:?}",
            t0.elapsed()
        );
        assert!(!d.synchronize_timeout(Duration::from_nanos(1)));
        assert!(!d.synchronize_timeout(Duration::from_millis(20)));
        let rel = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            tx.send(()).unwrap();
            t.join().unwrap();
        });
        assert!(d.synchronize_timeout(Duration::MAX));
        rel.join().unwrap();
        assert!(d.synchronize_timeout(Duration::ZERO) || d.synchronize_timeout(Duration::from_secs(30)));
    });
}

#[test]
fn barrier_timeout_zero_and_max_with_a_reader_on_another_thread() {
    bounded::finishes("barrier timeouts", || {
        let d = Arc::new(Srcu::new("rt8-barrier-timeout"));
        let ran = Arc::new(AtomicUsize::new(0));
        let (tx, t) = hold_reader(d.clone());
        for _ in 0..10 {
            let r = ran.clone();
            d.call_srcu(move || {
                r.fetch_add(1, Ordering::SeqCst);
            });
        }
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(!d.barrier_timeout(Duration::ZERO));
        }
        assert!(!d.barrier_timeout(Duration::from_millis(20)));
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(
            ran.load(Ordering::SeqCst),
            0,
            "a callback ran while a reader held its grace period"
        );
        let rel = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            tx.send(()).unwrap();
            t.join().unwrap();
        });
        assert!(d.barrier_timeout(Duration::MAX));
        assert_eq!(ran.load(Ordering::SeqCst), 10);
        rel.join().unwrap();
        // SAFETY: nothing else uses `d` now (the reader thread is joined).
        unsafe { d.cleanup() }.expect("cleanup after a complete barrier");
    });
}

#[test]
fn cleanup_with_a_reader_on_another_thread_warns_naming_the_domain_and_keeps_it_usable() {
    bounded::finishes("cleanup refused", || {
        let d = Arc::new(Srcu::new("rt8-cleanup-reader-xyz"));
        d.synchronize();
        let (tx, t) = hold_reader(d.clone());
        let cap = Capture::start();
        // SAFETY: the only other user is a reader already inside, which the
        // contract allows (detected and refused).
        let err = unsafe { d.cleanup() }.expect_err("a reader is inside");
        assert_eq!(err.readers_active, 1, "{err:?}");
        let ws = cap.for_domain("rt8-cleanup-reader-xyz");
        assert!(
            !ws.is_empty(),
            "no warning for the refused cleanup: {:?}",
            cap.warnings()
        );
        assert!(
            ws.iter().any(|w| w.message.contains("rt8-cleanup-reader-xyz")),
            "the warning text does not name the domain: {ws:?}"
        );
        assert!(!err.to_string().is_empty());
        // Still usable: the reader blocks a grace period; releasing it lets one end.
        assert!(!d.synchronize_timeout(Duration::from_millis(10)));
        tx.send(()).unwrap();
        t.join().unwrap();
        d.synchronize();
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        d.call_srcu(move || r.store(true, Ordering::SeqCst));
        d.barrier();
        assert!(ran.load(Ordering::SeqCst));
        // SAFETY: nothing else uses `d` now.
        unsafe { d.cleanup() }.expect("cleanup once idle");
    });
}

#[test]
fn cleanup_with_pending_callback_is_refused_and_callback_still_runs() {
    bounded::finishes("cleanup pending cb", || {
        let d = Arc::new(Srcu::new("rt8-cleanup-pending"));
        let (tx, t) = hold_reader(d.clone());
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        d.call_srcu(move || r.store(true, Ordering::SeqCst));
        let cap = Capture::start();
        // SAFETY: only a reader already inside uses `d` concurrently.
        let err = unsafe { d.cleanup() }.expect_err("callbacks pending");
        assert!(err.callbacks_pending >= 1 || err.readers_active >= 1, "{err:?}");
        assert!(
            !cap.for_domain("rt8-cleanup-pending").is_empty(),
            "{:?}",
            cap.warnings()
        );
        tx.send(()).unwrap();
        t.join().unwrap();
        d.barrier();
        assert!(
            ran.load(Ordering::SeqCst),
            "the callback of a refused cleanup never ran"
        );
    });
}

#[test]
fn many_start_polls_without_polling_do_not_wedge_the_domain() {
    bounded::finishes("start_poll flood", || {
        let d = Srcu::new("rt8-start-poll-flood");
        let mut cs = Vec::new();
        for _ in 0..10_000 {
            cs.push(d.start_poll());
        }
        d.synchronize();
        let last = *cs.last().unwrap();
        bounded::wait_until("last start_poll completes", || d.poll_state(last));
        assert!(cs.iter().all(|c| d.poll_state(*c)));
        // SAFETY: nothing else uses `d`.
        bounded::wait_until("cleanup succeeds once idle", || unsafe { d.cleanup() }.is_ok());
    });
}

// --- Tasks: HookSlot and polled cookies -------------------------------------

extern "C" fn h_one(x: u64) -> u64 {
    x + 1
}
extern "C" fn h_two(x: u64) -> u64 {
    x + 2
}
extern "C" fn h_three(x: u64) -> u64 {
    x + 3
}

#[test]
fn hook_slot_set_clear_replace_from_many_threads() {
    let _f = flavors();
    bounded::finishes("hook slot contention", || {
        static SLOT: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU64::new(0));
        let mut callers = Vec::new();
        for _ in 0..2 {
            let stop = stop.clone();
            let calls = calls.clone();
            callers.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(v) = SLOT.call(10) {
                        assert!((11..=13).contains(&v), "hook returned {v}");
                        calls.fetch_add(1, Ordering::Relaxed);
                    }
                    usrcu::tasks::quiescent();
                }
            }));
        }
        let start = Arc::new(Barrier::new(4));
        let mut setters = Vec::new();
        for i in 0..4u32 {
            let start = start.clone();
            setters.push(std::thread::spawn(move || {
                start.wait();
                for j in 0..200u32 {
                    match (i + j) % 5 {
                        // SAFETY: the hooks never block, live in the test's text
                        // and nobody else stores them.
                        0 => unsafe { SLOT.set_sync(Some(h_one)) },
                        1 => {
                            // SAFETY: as above.
                            if let Some(c) = unsafe { SLOT.set(Some(h_two)) } {
                                if j % 50 == 0 {
                                    assert!(c.wait_timeout(Duration::from_secs(30)));
                                }
                            }
                        }
                        2 => SLOT.clear_sync(),
                        3 => {
                            let _ = SLOT.clear();
                        }
                        // SAFETY: as above.
                        _ => drop(unsafe { SLOT.set(Some(h_three)) }),
                    }
                }
            }));
        }
        for s in setters {
            s.join().unwrap();
        }
        SLOT.clear_sync();
        assert!(!SLOT.is_set());
        assert_eq!(SLOT.target_addr(), 0);
        assert_eq!(SLOT.call(1), None);
        stop.store(true, Ordering::Relaxed);
        for c in callers {
            c.join().unwrap();
        }
    });
}

#[test]
fn hook_slot_set_returns_cookie_only_when_replacing_and_it_completes() {
    let _f = flavors();
    bounded::finishes("hook slot cookies", || {
        static SLOT: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();
        assert!(SLOT.clear().is_none(), "clearing an empty slot gave a cookie");
        SLOT.clear_sync(); // empty: must not wait for anything
                           // SAFETY: `h_one` never blocks and lives in the test's text.
        assert!(unsafe { SLOT.set(Some(h_one)) }.is_none());
        assert_eq!(SLOT.call(1), Some(2));
        // SAFETY: as above.
        let c = unsafe { SLOT.set(Some(h_two)) }.expect("replacing gives a cookie");
        assert_eq!(SLOT.call(1), Some(3));
        assert!(c.wait_timeout(Duration::from_secs(30)));
        assert!(c.poll());
        let c = SLOT.clear().expect("clearing a set slot gives a cookie");
        assert_eq!(SLOT.call(1), None);
        assert!(c.wait_timeout(Duration::MAX));
    });
}

#[test]
fn tasks_cookies_and_zero_timeouts() {
    let _f = flavors();
    bounded::finishes("tasks cookies", || {
        let a = usrcu::tasks::get_state();
        let t0 = Instant::now();
        let _ = a.wait_timeout(Duration::ZERO);
        assert!(t0.elapsed() < Duration::from_secs(5));
        let b = usrcu::tasks::start_poll();
        assert!(b >= a);
        assert!(
            b.wait_timeout(Duration::from_secs(30)),
            "a started Tasks poll never completed"
        );
        usrcu::tasks::synchronize();
        assert!(usrcu::tasks::poll_state(a));
        assert!(!usrcu::tasks::poll_state(usrcu::tasks::Cookie(u64::MAX)));
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        usrcu::tasks::call(move || {
            std::thread::sleep(Duration::from_millis(50));
            r.store(true, Ordering::SeqCst);
        });
        let _ = usrcu::tasks::barrier_timeout(Duration::ZERO);
        assert!(usrcu::tasks::barrier_timeout(Duration::MAX));
        assert!(ran.load(Ordering::SeqCst));
    });
}

#[test]
fn trace_cookies_complete_and_zero_timeouts_return() {
    let _f = flavors();
    bounded::finishes("trace cookies", || {
        let c = usrcu::trace::start_poll();
        bounded::wait_until("trace start_poll completes", || usrcu::trace::poll_state(c));
        let g = usrcu::trace::get_state();
        usrcu::trace::synchronize();
        assert!(usrcu::trace::poll_state(g));
    });
}

#[test]
fn static_domain_cookies_across_cleanup_and_reattach() {
    bounded::finishes("static cookies across cleanup", || {
        static D: Srcu = Srcu::new_static("rt8-static-cookie");
        for round in 0..20 {
            D.synchronize();
            let done = D.get_state();
            D.synchronize_expedited();
            assert!(D.poll_state(done));
            let pending = D.get_state();
            // SAFETY: no other thread uses `D`.
            unsafe { D.cleanup() }.expect("idle static domain cleans up");
            assert!(!D.is_attached());
            assert!(
                D.poll_state(done),
                "round {round}: a completed cookie reads incomplete after cleanup"
            );
            let fresh = D.start_poll();
            assert!(
                fresh >= pending,
                "round {round}: cookies went backwards across cleanup: {fresh:?} < {pending:?}"
            );
            bounded::wait_until("fresh cookie completes", || D.poll_state(fresh));
            assert!(D.poll_state(pending));
        }
    });
}

/// `HookSlot::clear_sync` from a Tasks callback cannot wait for the grace
/// period it promises (it would wait for the callback itself): it empties
/// the slot, then panics as `tasks::synchronize` does there, as its
/// `# Panics` section says; the runtime reports the panic as a
/// `CallbackPanicked` warning and goes on. (Red team 8 found the panic
/// undocumented; the docs now say so.)
#[test]
fn clear_sync_from_a_tasks_callback() {
    let _f = flavors();
    bounded::finishes("clear_sync in tasks callback", || {
        static SLOT: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();
        // SAFETY: `h_one` never blocks and lives in the test's text.
        unsafe { SLOT.set_sync(Some(h_one)) };
        let cap = Capture::start();
        let (tx, rx) = mpsc::channel();
        usrcu::tasks::call(move || {
            SLOT.clear_sync();
            let _ = tx.send(());
        });
        usrcu::tasks::barrier();
        let finished = rx.try_recv().is_ok();
        assert!(!SLOT.is_set(), "the slot is still set");
        let ws: Vec<_> = cap
            .warnings()
            .into_iter()
            .filter(|w| w.kind == usrcu::diagnostics::WarningKind::CallbackPanicked)
            .map(|w| w.message)
            .collect();
        assert!(
            !finished && ws.iter().any(|m| m.contains("would wait for itself")),
            "clear_sync from a Tasks callback: finished normally: {finished}; panics reported: {ws:?}"
        );
    });
}
