//! Red-team of the SRCU domain API, written the way a user would misuse it:
//! callbacks that queue, wait, panic or drop their own domain; domains
//! dropped or cleaned up with work pending; extreme timeouts; deep nesting;
//! many threads racing `call_srcu` and `barrier`. Each test is a claim of the
//! crate's documentation. No timing is asserted: "never" is a generous bound
//! (`HANG`) on something that must happen.

#![allow(clippy::single_range_in_vec_init)] // one range is the common query

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use usrcu::diagnostics::{Capture, WarningKind};
use usrcu::{runtime, Cookie, Srcu};

#[path = "common/bounded.rs"]
mod bounded;
use bounded::{finishes, wait_until, HANG};

#[test]
fn a_callback_queued_from_inside_a_callback_runs_and_a_later_barrier_waits_for_it() {
    let d = Arc::new(Srcu::new("rt-nested-call"));
    let ran = Arc::new(AtomicUsize::new(0));
    let (d2, r2) = (d.clone(), ran.clone());
    d.call_srcu(move || {
        let r3 = r2.clone();
        d2.call_srcu(move || {
            r3.fetch_add(10, Ordering::SeqCst);
        });
        r2.fetch_add(1, Ordering::SeqCst);
    });
    d.barrier();
    assert_eq!(
        ran.load(Ordering::SeqCst) % 10,
        1,
        "the outer callback ran before barrier returned"
    );
    // The inner one was queued before this call began: it must be waited for.
    d.barrier();
    assert_eq!(ran.load(Ordering::SeqCst), 11);
}

#[test]
fn a_callback_that_requeues_itself_a_thousand_times_drains() {
    struct Chain {
        d: Arc<Srcu>,
        left: usize,
        ran: Arc<AtomicUsize>,
    }
    fn step(c: Chain) {
        c.ran.fetch_add(1, Ordering::SeqCst);
        if c.left > 0 {
            let d = c.d.clone();
            d.call_srcu(move || step(Chain { left: c.left - 1, ..c }));
        }
    }
    let d = Arc::new(Srcu::new("rt-chain"));
    let ran = Arc::new(AtomicUsize::new(0));
    let c = Chain {
        d: d.clone(),
        left: 999,
        ran: ran.clone(),
    };
    d.call_srcu(move || step(c));
    // Each barrier waits for what was queued before it: the chain advances
    // by at least one link per barrier.
    let t0 = Instant::now();
    while ran.load(Ordering::SeqCst) < 1000 {
        assert!(t0.elapsed() < HANG, "chain stuck at {}", ran.load(Ordering::SeqCst));
        d.barrier();
    }
    d.barrier();
    let s = d.stats();
    assert_eq!(s.callbacks_queued, 1000);
    assert_eq!(s.callbacks_invoked, 1000);
}

#[test]
fn synchronize_and_polls_from_inside_a_callback_of_the_same_domain_complete() {
    let d = Arc::new(Srcu::new("rt-sync-in-cb"));
    let done = Arc::new(AtomicUsize::new(0));
    let (d2, done2) = (d.clone(), done.clone());
    d.call_srcu(move || {
        d2.synchronize();
        d2.synchronize_expedited();
        assert!(d2.synchronize_timeout(Duration::from_secs(60)));
        let c = d2.start_poll();
        let t0 = Instant::now();
        while !d2.poll_state(c) {
            assert!(t0.elapsed() < HANG);
            thread::sleep(Duration::from_millis(1));
        }
        done2.fetch_add(1, Ordering::SeqCst);
    });
    let d3 = d.clone();
    finishes("barrier after a callback that synchronizes", move || d3.barrier());
    assert_eq!(done.load(Ordering::SeqCst), 1);
}

#[test]
fn barrier_inside_own_callback_is_refused_but_other_domains_barrier_waits() {
    let cap = Capture::start();
    let a = Arc::new(Srcu::new("rt-cb-barrier-a"));
    let b = Arc::new(Srcu::new("rt-cb-barrier-b"));
    let b_ran = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(None));
    {
        let b_ran = b_ran.clone();
        b.call_srcu(move || {
            thread::sleep(Duration::from_millis(20));
            b_ran.store(true, Ordering::SeqCst);
        });
    }
    {
        let (a2, b2, b_ran, seen) = (a.clone(), b.clone(), b_ran.clone(), seen.clone());
        a.call_srcu(move || {
            let own = a2.barrier_timeout(Duration::from_secs(60));
            b2.barrier();
            *seen.lock().unwrap() = Some((own, b_ran.load(Ordering::SeqCst)));
        });
    }
    let a3 = a.clone();
    finishes("barrier on a", move || a3.barrier());
    assert_eq!(*seen.lock().unwrap(), Some((false, true)));
    assert_eq!(cap.find("rt-cb-barrier-a", WarningKind::IllegalSynchronize).len(), 1);
}

#[test]
fn panicking_callbacks_are_reported_and_every_other_callback_still_runs() {
    let cap = Capture::start();
    let d = Srcu::new("rt-panics");
    let ran = Arc::new(AtomicUsize::new(0));
    for i in 0..300 {
        let ran = ran.clone();
        match i % 3 {
            0 => d.call_srcu(move || panic!("boom {i}")),
            1 => d.call_srcu(move || std::panic::panic_any(i)),
            _ => d.call_srcu(move || {
                ran.fetch_add(1, Ordering::SeqCst);
            }),
        }
    }
    d.barrier();
    assert_eq!(ran.load(Ordering::SeqCst), 100);
    let s = d.stats();
    assert_eq!(s.callbacks_queued, 300);
    assert_eq!(s.callbacks_invoked, 300);
    assert_eq!(cap.find("rt-panics", WarningKind::CallbackPanicked).len(), 200);
}

#[test]
fn a_callback_whose_capture_panics_on_drop_is_reported_and_the_runtime_goes_on() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("capture dropped with a panic");
        }
    }
    let cap = Capture::start();
    let d = Srcu::new("rt-drop-panic");
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..10 {
        let b = Bomb;
        d.call_srcu(move || drop(b));
        // A large capture: the boxed path.
        let b = (Bomb, [0u8; 512]);
        d.call_srcu(move || drop(b));
        let r = ran.clone();
        d.call_srcu(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
    }
    d.barrier();
    assert_eq!(ran.load(Ordering::SeqCst), 10);
    assert_eq!(cap.find("rt-drop-panic", WarningKind::CallbackPanicked).len(), 20);
}

#[test]
fn dropping_a_domain_with_callbacks_pending_warns_leaks_and_still_runs_them_all() {
    let cap = Capture::start();
    let ran = Arc::new(AtomicUsize::new(0));
    {
        let d = Srcu::new("rt-drop-pending");
        let gate = Arc::new(AtomicBool::new(false));
        let g = gate.clone();
        d.call_srcu(move || {
            while !g.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(1));
            }
        });
        for _ in 0..1000 {
            let r = ran.clone();
            d.call_srcu(move || {
                r.fetch_add(1, Ordering::SeqCst);
            });
        }
        drop(d);
        gate.store(true, Ordering::SeqCst);
    }
    assert!(!cap.find("rt-drop-pending", WarningKind::MissedBarrier).is_empty());
    assert!(!cap.find("rt-drop-pending", WarningKind::Leak).is_empty());
    wait_until("callbacks of a dropped domain", || ran.load(Ordering::SeqCst) == 1000);
}

#[test]
fn a_callback_that_drops_the_last_reference_to_its_own_domain_does_not_crash() {
    let ran = Arc::new(AtomicUsize::new(0));
    for i in 0..50 {
        let d = Arc::new(Srcu::new(&format!("rt-self-drop-{i}")));
        let d2 = d.clone();
        let r = ran.clone();
        if i % 2 == 0 {
            // More callbacks after the one that drops the domain.
            let r2 = ran.clone();
            d.call_srcu(move || {
                drop(d2);
                r.fetch_add(1, Ordering::SeqCst);
            });
            d.call_srcu(move || {
                r2.fetch_add(1, Ordering::SeqCst);
            });
        } else {
            d.call_srcu(move || {
                drop(d2);
                r.fetch_add(1, Ordering::SeqCst);
            });
            ran.fetch_add(1, Ordering::SeqCst);
        }
        drop(d);
    }
    wait_until("self-dropping callbacks", || ran.load(Ordering::SeqCst) == 100);
    // The runtime still works.
    let d = Srcu::new("rt-self-drop-after");
    d.call_srcu(|| {});
    d.barrier();
}

#[test]
fn a_failed_cleanup_leaves_the_domain_usable_and_a_later_cleanup_succeeds() {
    let cap = Capture::start();
    let d = Srcu::new("rt-cleanup-retry");
    let gate = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    d.call_srcu(move || {
        while !g.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(1));
        }
    });
    let idx = d.read_lock_raw();
    // SAFETY: no other thread uses `d` (the runtime's threads are allowed).
    let e = unsafe { d.cleanup() }.expect_err("callbacks pending and a reader inside");
    assert!(e.readers_active >= 1 && e.callbacks_pending >= 1, "{e:?}");
    assert!(!e.to_string().is_empty());
    // Still usable: readers, callbacks, grace periods.
    // SAFETY: `idx` came from `d.read_lock_raw()` and is ended once.
    unsafe { d.read_unlock_raw(idx) };
    gate.store(true, Ordering::SeqCst);
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    d.call_srcu(move || r.store(true, Ordering::SeqCst));
    d.barrier();
    assert!(ran.load(Ordering::SeqCst));
    d.synchronize();
    // Everything drained: the next cleanup frees.
    let t0 = Instant::now();
    loop {
        // SAFETY: as above.
        match unsafe { d.cleanup() } {
            Ok(()) => break,
            // Only a grace period still finishing in the background may
            // remain (a callback's or a poll's).
            Err(e) => {
                assert_eq!((e.readers_active, e.callbacks_pending), (0, 0), "{e:?}");
                assert!(t0.elapsed() < HANG);
                d.synchronize();
            }
        }
    }
    assert!(!d.is_attached());
    // And usable again after a successful cleanup.
    let g = d.read_lock();
    drop(g);
    d.call_srcu(|| {});
    d.barrier();
    assert!(!cap.find("rt-cleanup-retry", WarningKind::Leak).is_empty());
}

#[test]
fn two_thousand_domains_created_used_and_dropped_leave_threads_and_registry_bounded() {
    fn threads() -> usize {
        std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
    }
    let cap = Capture::start();
    // Warm up the runtime's threads.
    {
        let d = Srcu::new("rt-churn-warm");
        d.call_srcu(|| {});
        d.barrier();
        d.synchronize();
    }
    let before_domains = runtime::inventory::domains_attached();
    let before_threads = threads();
    for i in 0..2000 {
        let d = Srcu::new(&format!("rt-churn-{i}"));
        {
            let _g = d.read_lock();
        }
        match i % 4 {
            0 => d.synchronize(),
            1 => {
                d.call_srcu(|| {});
                d.barrier();
            }
            2 => {
                let c = d.start_poll();
                while !d.poll_state(c) {
                    thread::yield_now();
                }
            }
            _ => {}
        }
        // Some domains may be dropped while the runtime still finishes a
        // grace period it started: that warns and leaks, by design. Make
        // sure it does not: synchronize covers every requested grace period.
        d.synchronize();
        drop(d);
    }
    let leaks = cap
        .warnings()
        .into_iter()
        .filter(|w| w.domain.starts_with("rt-churn-") && w.kind == WarningKind::Leak)
        .count();
    assert_eq!(leaks, 0, "idle domains leaked at drop");
    // Other tests run beside this one: allow their domains and threads.
    let after_domains = runtime::inventory::domains_attached();
    assert!(
        after_domains < before_domains + 100,
        "{before_domains} -> {after_domains} attached domains"
    );
    let after_threads = threads();
    assert!(
        after_threads < before_threads + 64,
        "{before_threads} -> {after_threads} threads"
    );
}

#[test]
fn extreme_timeouts_neither_panic_nor_leave_anything_blocked() {
    let d = Srcu::new("rt-timeouts");
    assert!(d.synchronize_timeout(Duration::MAX));
    assert!(d.barrier_timeout(Duration::MAX));
    assert!(d.barrier_timeout(Duration::ZERO), "nothing was ever queued");
    let _ = d.synchronize_timeout(Duration::ZERO);
    let idx = d.read_lock_raw();
    assert!(!d.synchronize_timeout(Duration::ZERO));
    assert!(!d.synchronize_timeout(Duration::from_nanos(1)));
    // SAFETY: `idx` came from `d.read_lock_raw()` and is ended once.
    unsafe { d.read_unlock_raw(idx) };
    assert!(d.synchronize_timeout(Duration::MAX));
    let gate = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    d.call_srcu(move || {
        while !g.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(1));
        }
    });
    for _ in 0..10_000 {
        assert!(!d.barrier_timeout(Duration::ZERO));
    }
    gate.store(true, Ordering::SeqCst);
    assert!(d.barrier_timeout(Duration::MAX));
    d.barrier();
    d.synchronize();
    let s = d.stats();
    assert_eq!(s.callbacks_queued, 1);
    assert_eq!(s.callbacks_invoked, 1);
    // Nothing left behind: the timed-out barriers' markers are gone.
    let cap = Capture::start();
    // SAFETY: nobody else uses `d`.
    let r = unsafe { d.cleanup() };
    let t0 = Instant::now();
    let mut r = r;
    while let Err(e) = r {
        assert_eq!((e.readers_active, e.callbacks_pending), (0, 0), "{e:?}");
        assert!(t0.elapsed() < HANG);
        d.synchronize();
        // SAFETY: as above.
        r = unsafe { d.cleanup() };
    }
    drop(cap);
}

#[test]
fn a_hundred_thousand_nested_guards_keep_the_outer_section_protected() {
    let d = Arc::new(Srcu::new("rt-deep-nesting"));
    let mut guards = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        guards.push(d.read_lock());
    }
    let synced = Arc::new(AtomicBool::new(false));
    let (d2, s2) = (d.clone(), synced.clone());
    let h = thread::spawn(move || {
        d2.synchronize();
        s2.store(true, Ordering::SeqCst);
    });
    // Drop all but the outermost, out of order (the middle first).
    let outer = guards.remove(0);
    let mid = guards.split_off(50_000);
    drop(mid);
    drop(guards);
    thread::sleep(Duration::from_millis(20));
    assert!(!synced.load(Ordering::SeqCst), "synchronize returned inside a reader");
    drop(outer);
    h.join().unwrap();
    assert!(synced.load(Ordering::SeqCst));
}

#[test]
fn a_raw_section_begun_by_a_thread_that_exited_is_ended_by_another() {
    let d = Arc::new(Srcu::new("rt-raw-exited"));
    let d2 = d.clone();
    let idx = thread::spawn(move || d2.read_lock_raw()).join().unwrap();
    assert!(!d.synchronize_timeout(Duration::from_millis(5)));
    let d3 = d.clone();
    thread::spawn(move || {
        // SAFETY: `idx` came from `d.read_lock_raw()` and is ended once.
        unsafe { d3.read_unlock_raw(idx) }
    })
    .join()
    .unwrap();
    let d4 = d.clone();
    finishes("synchronize after the raw section ended", move || d4.synchronize());
}

#[test]
fn a_thread_that_panics_inside_a_section_ends_it_while_unwinding() {
    let d = Arc::new(Srcu::new("rt-panic-reader"));
    let d2 = d.clone();
    let r = thread::spawn(move || {
        let _g = d2.read_lock();
        let _g2 = d2.read_lock();
        panic!("reader panics");
    })
    .join();
    assert!(r.is_err());
    let d3 = d.clone();
    finishes("synchronize after a panicking reader", move || d3.synchronize());
    // Debug builds: the panicked thread's bookkeeping must not make this
    // thread look like it is inside a section.
    d.barrier();
}

#[test]
fn cookies_of_another_domain_or_made_up_never_panic() {
    let a = Srcu::new("rt-cookie-a");
    let b = Srcu::new("rt-cookie-b");
    for _ in 0..10 {
        a.synchronize();
    }
    let ca = a.get_state();
    let _ = b.poll_state(ca);
    for v in [0, 1, 2, 3, u64::MAX, u64::MAX - 1, 1 << 63] {
        let _ = a.poll_state(Cookie::from_u64(v));
        let _ = b.poll_state(Cookie::from_u64(v));
    }
    assert!(a.poll_state(Cookie::from_u64(0)));
    assert!(!a.poll_state(Cookie::from_u64(u64::MAX)));
    // A start_poll cookie completes without anyone waiting.
    let c = b.start_poll();
    wait_until("a started poll", || b.poll_state(c));
    // get_state does not start one, but a later synchronize covers it.
    let c = a.get_state();
    a.synchronize();
    assert!(a.poll_state(c));
    assert_eq!(Cookie::from_u64(c.as_u64()), c);
}

#[test]
fn sixty_four_threads_racing_call_srcu_and_barrier_see_their_own_callbacks_in_fifo_order() {
    const THREADS: usize = 64;
    const PER: usize = 200;
    let d = Arc::new(Srcu::new("rt-race-64"));
    let hs: Vec<_> = (0..THREADS)
        .map(|t| {
            let d = d.clone();
            thread::spawn(move || {
                let log = Arc::new(Mutex::new(Vec::new()));
                for i in 0..PER {
                    let l = log.clone();
                    if i % 2 == 0 {
                        d.call_srcu(move || l.lock().unwrap().push(i));
                    } else {
                        let pad = [i as u8; 300];
                        d.call_srcu(move || {
                            assert_eq!(pad[7], i as u8);
                            l.lock().unwrap().push(i)
                        });
                    }
                    if i % 50 == 49 {
                        d.barrier();
                        let got = log.lock().unwrap().clone();
                        assert_eq!(got, (0..=i).collect::<Vec<_>>(), "thread {t}: FIFO after barrier");
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    d.barrier();
    let s = d.stats();
    assert_eq!(s.callbacks_queued, (THREADS * PER) as u64);
    assert_eq!(s.callbacks_invoked, (THREADS * PER) as u64);
}

#[test]
fn callbacks_queued_in_happens_before_order_across_threads_run_in_that_order() {
    // A token passes between threads; each queues one callback when it holds
    // it, so the queueing order is total. Callbacks must run in that order.
    token_ring(400);
}

fn token_ring(n: usize) {
    let d = Arc::new(Srcu::new("rt-token-ring"));
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for _ in 0..4 {
        let (tx, rx) = mpsc::channel::<usize>();
        txs.push(tx);
        rxs.push(rx);
    }
    let hs: Vec<_> = rxs
        .into_iter()
        .enumerate()
        .map(|(t, rx)| {
            let (d, log, next) = (d.clone(), log.clone(), txs[(t + 1) % 4].clone());
            thread::spawn(move || {
                while let Ok(i) = rx.recv() {
                    if i >= n {
                        let _ = next.send(i);
                        break;
                    }
                    let l = log.clone();
                    d.call_srcu(move || l.lock().unwrap().push(i));
                    if i % 37 == 0 {
                        d.synchronize();
                    }
                    let _ = next.send(i + 1);
                }
            })
        })
        .collect();
    txs[0].send(0).unwrap();
    drop(txs);
    for h in hs {
        h.join().unwrap();
    }
    d.barrier();
    assert_eq!(*log.lock().unwrap(), (0..n).collect::<Vec<_>>());
}

#[test]
fn call_srcu_inside_a_read_section_of_the_same_domain_does_not_deadlock() {
    let d = Arc::new(Srcu::new("rt-call-in-reader"));
    let ran = Arc::new(AtomicBool::new(false));
    {
        let _g = d.read_lock();
        let r = ran.clone();
        d.call_srcu(move || r.store(true, Ordering::SeqCst));
        let c = d.start_poll();
        assert!(!d.poll_state(c), "a grace period ended inside a reader");
        thread::sleep(Duration::from_millis(5));
        assert!(
            !ran.load(Ordering::SeqCst),
            "a callback ran inside a reader that predates it"
        );
    }
    let d2 = d.clone();
    finishes("barrier after the reader", move || d2.barrier());
    assert!(ran.load(Ordering::SeqCst));
}

#[test]
fn stats_after_barrier_count_every_callback_queued_before_it() {
    let d = Arc::new(Srcu::new("rt-stats"));
    let hs: Vec<_> = (0..8)
        .map(|_| {
            let d = d.clone();
            thread::spawn(move || {
                for i in 0..500 {
                    d.call_srcu(move || {
                        std::hint::black_box(i);
                    });
                }
                d.barrier();
                // While other threads queue and barrier, a snapshot may count
                // a racing barrier's marker as a queued callback for a
                // moment, but never shows more callbacks run than queued
                // (a marker is counted after its ticket).
                let s = d.stats();
                assert!(
                    s.callbacks_invoked >= 500 && s.callbacks_invoked <= s.callbacks_queued,
                    "{s:?}"
                );
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    d.barrier();
    let s = d.stats();
    assert_eq!((s.callbacks_queued, s.callbacks_invoked), (4000, 4000), "{s:?}");
    assert!(s.barriers_issued >= 9, "{s:?}");
}

#[test]
fn odd_names_work_and_are_reported_verbatim() {
    let cap = Capture::start();
    let long = "x".repeat(100_000);
    for name in ["", "with\0nul", "ünïcödé ☃", long.as_str()] {
        let d = Srcu::new(name);
        assert_eq!(d.name(), name);
        // Pending for sure at the drop (a callback with nothing to wait for
        // may have run already if this thread was preempted in between).
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        d.call_srcu(move || {
            let _ = rx.recv_timeout(Duration::from_secs(60));
        });
        // Dropped with a callback pending: warns under its name.
        drop(d);
        tx.send(()).unwrap();
    }
    assert!(!cap.find("ünïcödé ☃", WarningKind::MissedBarrier).is_empty());
    assert!(!cap.find(&long, WarningKind::MissedBarrier).is_empty());
}

#[test]
fn a_static_domain_used_from_many_threads_at_once_attaches_once() {
    static S: Srcu = Srcu::new_static("rt-static-race");
    let hs: Vec<_> = (0..16)
        .map(|i| {
            thread::spawn(move || {
                let _g = S.read_lock();
                if i % 2 == 0 {
                    S.call_srcu(|| {});
                }
                S.attach();
                S.possible_cpus()
            })
        })
        .collect();
    let n: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(n.windows(2).all(|w| w[0] == w[1]));
    S.barrier();
    assert_eq!(S.stats().callbacks_invoked, 8);
}

#[test]
fn inventory_drain_with_the_longest_timeout_returns_instead_of_panicking() {
    static D: Srcu = Srcu::new_static("rt-drain-max");
    D.call_srcu(|| {});
    let here = &D as *const Srcu as usize;
    let r = runtime::inventory::drain(&[here..here + std::mem::size_of::<Srcu>()], Duration::MAX);
    assert!(r.is_ok(), "{r:?}");
    D.barrier();
    assert!(runtime::inventory::drain(&[here..here + 1], Duration::MAX).is_ok());
}

#[test]
fn capture_wait_for_with_the_longest_timeout_returns_what_is_there() {
    let cap = Capture::start();
    let d = Srcu::new("rt-wait-for-max");
    d.call_srcu(|| panic!("reported"));
    d.barrier();
    assert!(cap
        .wait_for("rt-wait-for-max", WarningKind::CallbackPanicked, Duration::MAX)
        .is_some());
}

#[test]
fn closures_of_every_size_and_alignment_get_their_captures_intact_and_aligned() {
    #[derive(Clone, Copy)]
    #[repr(align(16))]
    struct A16(u64);
    #[derive(Clone, Copy)]
    #[repr(align(4096))]
    struct A4096(u64);
    let d = Srcu::new("rt-closure-shapes");
    let ok = Arc::new(AtomicUsize::new(0));
    macro_rules! check {
        ($v:expr, $pred:expr) => {{
            let v = $v;
            let ok = ok.clone();
            d.call_srcu(move || {
                let v = v;
                assert!(($pred)(&v));
                ok.fetch_add(1, Ordering::SeqCst);
            });
        }};
    }
    check!((), |_: &()| true);
    check!(7u8, |v: &u8| *v == 7);
    check!([3u64; 2], |v: &[u64; 2]| *v == [3, 3]);
    check!([5u64; 3], |v: &[u64; 3]| *v == [5, 5, 5]);
    check!([9u8; 25], |v: &[u8; 25]| v.iter().all(|&b| b == 9));
    check!(A16(16), |v: &A16| v.0 == 16 && (v as *const A16 as usize) % 16 == 0);
    check!(A4096(4096), |v: &A4096| v.0 == 4096
        && (v as *const A4096 as usize) % 4096 == 0);
    check!(vec![1u32; 1000], |v: &Vec<u32>| v.len() == 1000);
    check!(String::from("s"), |v: &String| v == "s");
    d.barrier();
    assert_eq!(ok.load(Ordering::SeqCst), 9);
}

#[test]
fn a_callback_blocked_forever_holds_neither_grace_periods_nor_other_domains() {
    let d = Arc::new(Srcu::new("rt-blocked-cb"));
    let other = Srcu::new("rt-blocked-cb-other");
    let gate = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    d.call_srcu(move || {
        while !g.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(1));
        }
    });
    let d2 = d.clone();
    finishes("synchronize while a callback blocks", move || {
        d2.synchronize();
        d2.synchronize_expedited();
        let c = d2.start_poll();
        while !d2.poll_state(c) {
            thread::sleep(Duration::from_millis(1));
        }
    });
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    other.call_srcu(move || r.store(true, Ordering::SeqCst));
    other.barrier();
    assert!(ran.load(Ordering::SeqCst));
    assert!(!d.barrier_timeout(Duration::from_millis(1)));
    gate.store(true, Ordering::SeqCst);
    d.barrier();
}

/// Clean `d` up, retrying while only something the runtime finishes by
/// itself (a grace period or a marker) remains; the caller calls nothing
/// else on the domain meanwhile.
fn cleans_up_without_help(d: &Srcu) {
    let t0 = Instant::now();
    loop {
        // SAFETY: the caller's thread is the only user of `d`.
        match unsafe { d.cleanup() } {
            Ok(()) => return,
            Err(e) => {
                assert_eq!(e.readers_active, 0, "{e:?}");
                assert!(t0.elapsed() < HANG, "the runtime never finished: {e:?}");
                thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

#[test]
fn a_timed_out_synchronize_is_finished_by_the_runtime_without_anyone_waiting() {
    let d = Srcu::new("rt-sync-timeout-bg");
    let idx = d.read_lock_raw();
    assert!(!d.synchronize_timeout(Duration::from_millis(1)));
    // SAFETY: `idx` came from `d.read_lock_raw()` and is ended once.
    unsafe { d.read_unlock_raw(idx) };
    cleans_up_without_help(&d);
}

#[test]
fn a_timed_out_barrier_leaves_nothing_once_its_callbacks_ran() {
    let d = Srcu::new("rt-barrier-timeout-bg");
    let gate = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    d.call_srcu(move || {
        while !g.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(1));
        }
    });
    for _ in 0..100 {
        assert!(!d.barrier_timeout(Duration::ZERO));
    }
    gate.store(true, Ordering::SeqCst);
    cleans_up_without_help(&d);
}

#[test]
fn a_started_poll_is_finished_by_the_runtime_without_anyone_waiting() {
    let d = Srcu::new("rt-poll-bg");
    let g = d.read_lock_raw();
    let c = d.start_poll();
    assert!(!d.poll_state(c));
    // SAFETY: `g` came from `d.read_lock_raw()` and is ended once.
    unsafe { d.read_unlock_raw(g) };
    cleans_up_without_help(&d);
    assert!(!d.is_attached());
}

#[test]
#[cfg(debug_assertions)]
fn synchronize_inside_own_section_panics_in_debug_builds_under_twenty_other_domains_sections() {
    let others: Vec<Srcu> = (0..20).map(|i| Srcu::new(&format!("rt-held-other-{i}"))).collect();
    let d = Srcu::new("rt-held-deep");
    let mut gs: Vec<_> = others.iter().map(|o| o.read_lock()).collect();
    let g = d.read_lock();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Without the debug check this waits for itself: give up after a
        // while instead of hanging.
        d.synchronize_timeout(Duration::from_millis(100))
    }));
    assert!(r.is_err(), "no panic: the check lost the section (it returned {r:?})");
    drop(g);
    // Out of order: the outer guards go first, then a new section of `d`.
    gs.drain(..10);
    let g = d.read_lock();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        d.barrier_timeout(Duration::from_millis(1))
    }));
    assert!(r.is_err(), "no panic after out-of-order drops");
    drop(g);
    drop(gs);
    assert!(d.synchronize_timeout(HANG), "no section of d is left");
}

#[test]
fn the_public_chunk_arithmetic_is_total() {
    use usrcu::percpu::{chunk_len, chunk_of, first_cpu, nr_chunks, CPUS_PER_CHUNK};
    assert_eq!(nr_chunks(usize::MAX), usize::MAX / CPUS_PER_CHUNK + 1);
    assert_eq!(nr_chunks(0), 0);
    assert_eq!(chunk_len(2, 0), 2);
    assert_eq!(chunk_len(2, 1), 0, "a chunk past the last has no entries");
    assert_eq!(chunk_len(0, 5), 0);
    assert_eq!(chunk_len(usize::MAX, 3), CPUS_PER_CHUNK);
    let (c, i) = chunk_of(usize::MAX);
    assert_eq!(first_cpu(c) + i, usize::MAX);
}

#[test]
fn the_api_works_from_a_thread_local_destructor_at_thread_exit() {
    static D: Srcu = Srcu::new_static("rt-tls-dtor");
    static RAN: AtomicUsize = AtomicUsize::new(0);
    struct AtExit;
    impl Drop for AtExit {
        fn drop(&mut self) {
            let g = D.read_lock();
            D.call_srcu(|| {
                RAN.fetch_add(1, Ordering::SeqCst);
            });
            drop(g);
            D.synchronize();
            D.barrier();
            let _t = usrcu::trace::read_lock();
            RAN.fetch_add(1, Ordering::SeqCst);
        }
    }
    thread_local! {
        static AT_EXIT: AtExit = const { AtExit };
    }
    let hs: Vec<_> = (0..8).map(|_| thread::spawn(|| AT_EXIT.with(|_| ()))).collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(RAN.load(Ordering::SeqCst), 16);
}

#[test]
fn a_barrier_waits_for_callbacks_another_thread_queued_before_it_signalled() {
    const N: usize = 500;
    let d = Arc::new(Srcu::new("rt-barrier-other-thread"));
    let done: Arc<Vec<AtomicBool>> = Arc::new((0..N).map(|_| AtomicBool::new(false)).collect());
    let (tx, rx) = mpsc::channel::<usize>();
    let (d2, done2) = (d.clone(), done.clone());
    let producer = thread::spawn(move || {
        for i in 0..N {
            let f = done2.clone();
            if i % 3 == 0 {
                let pad = [1u8; 100];
                d2.call_srcu(move || f[i].store(pad[0] == 1, Ordering::SeqCst));
            } else {
                d2.call_srcu(move || f[i].store(true, Ordering::SeqCst));
            }
            tx.send(i).unwrap();
        }
    });
    for i in rx.iter() {
        if i % 7 == 0 {
            d.barrier();
            assert!(
                done[..=i].iter().all(|f| f.load(Ordering::SeqCst)),
                "callback {i} not run after barrier"
            );
        }
    }
    producer.join().unwrap();
}

#[test]
fn cleanup_refuses_while_another_thread_is_inside_and_succeeds_after_it_left() {
    let d = Arc::new(Srcu::new("rt-cleanup-other-thread"));
    let (in_tx, in_rx) = mpsc::channel();
    let (out_tx, out_rx) = mpsc::channel::<()>();
    let d2 = d.clone();
    let h = thread::spawn(move || {
        let g = d2.read_lock();
        let g2 = d2.read_lock();
        in_tx.send(()).unwrap();
        out_rx.recv().unwrap();
        drop(g2);
        drop(g);
    });
    in_rx.recv().unwrap();
    let cap = Capture::start();
    // SAFETY: no thread enters, synchronizes or queues on `d` meanwhile; the
    // reader already inside is what cleanup must detect.
    let e = unsafe { d.cleanup() }.expect_err("a reader is inside");
    assert!(e.readers_active >= 1, "{e:?}");
    assert!(!cap
        .find("rt-cleanup-other-thread", WarningKind::ReadersActive)
        .is_empty());
    assert!(d.is_attached(), "the state was leaked, not freed");
    out_tx.send(()).unwrap();
    h.join().unwrap();
    // SAFETY: as above; nobody is inside any more.
    unsafe { d.cleanup() }.expect("no reader, no callback, no grace period");
    assert!(!d.is_attached());
}

#[test]
fn a_cookie_taken_before_a_cleanup_reads_complete_after_the_domain_attaches_again() {
    let d = Srcu::new("redteam-cookie-across-cleanup");
    d.attach();
    // Some grace periods, so that the sequence is past its start.
    for _ in 0..3 {
        d.synchronize_expedited();
    }
    // A cookie for the grace period after this call, never started.
    let c = d.get_state();
    assert!(!d.poll_state(c));
    // SAFETY: no reader is inside, and nothing else uses `d` meanwhile.
    unsafe { d.cleanup() }.expect("an idle domain cleans up");
    assert!(!d.is_attached());
    d.attach();
    // No reader of the old state is left (cleanup proved it), so the
    // cookie's grace period is as good as complete; before, the new
    // state's sequence restarted at 0 and the cookie read false until as
    // many grace periods had passed again.
    assert!(
        d.poll_state(c),
        "cookie {c:?} still pending after cleanup and re-attach"
    );
}
