//! Red team (round 7): the public API as a newcomer uses it from the README
//! and the doc comments, with inputs the earlier rounds did not pass.
//! Every wait runs under `bounded::finishes` (a hang fails, never a timing
//! assertion).

#[path = "common/bounded.rs"]
mod bounded;

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use usrcu::diagnostics::{self, WarningKind};
use usrcu::tasks::HookSlot;
use usrcu::{Srcu, SrcuConfig};

/// Tests of this file that use the process-wide Tasks and Tasks Trace
/// flavors run one at a time (a flavor's barrier covers every test's
/// callbacks).
fn flavors() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|p| p.into_inner())
}

/// The README's "A small example", verbatim (plus the final assertions it
/// implies).
#[test]
fn the_readme_small_example_runs_as_documented() {
    bounded::finishes("README example", || {
        static DOMAIN: Srcu = Srcu::new_static("config");
        static CONFIG: AtomicPtr<String> = AtomicPtr::new(std::ptr::null_mut());

        fn read() -> usize {
            let _g = DOMAIN.read_lock(); // may sleep inside
            let p = CONFIG.load(Ordering::Acquire);
            if p.is_null() {
                0
            } else {
                // SAFETY: freed only after a grace period, which waits for this section.
                unsafe { (&*p).len() }
            }
        }

        fn update(new: String) {
            let old = CONFIG.swap(Box::into_raw(Box::new(new)), Ordering::AcqRel);
            if !old.is_null() {
                let old = old as usize;
                // SAFETY: unpublished above; the callback runs after a grace period.
                DOMAIN.call_srcu(move || drop(unsafe { Box::from_raw(old as *mut String) }));
            }
        }

        update("v1".into());
        assert_eq!(read(), 2);
        update("v22".into());
        DOMAIN.barrier();
        assert_eq!(read(), 3);
        assert!(DOMAIN.call_srcu_used());
        assert_eq!(DOMAIN.stats().callbacks_invoked, 1);
    });
}

/// Guards of two domains dropped out of order: the debug self-deadlock check
/// must forget exactly the domain whose guard went, so that a `synchronize`
/// of it neither panics nor waits for itself, while a `synchronize` of the
/// domain still held does panic (debug builds).
#[test]
fn guards_of_two_domains_dropped_out_of_order_leave_the_self_deadlock_check_exact() {
    bounded::finishes("out-of-order guards", || {
        let a = Srcu::new("rt7-ooo-a");
        let b = Srcu::new("rt7-ooo-b");
        let ga = a.read_lock();
        let gb = b.read_lock();
        let ga2 = a.read_lock();
        drop(ga); // out of order: `a` still held by ga2
        drop(gb); // `b` released entirely
        b.synchronize(); // must not panic: no guard of `b` is held
        assert!(b.synchronize_timeout(Duration::from_secs(60)));
        if cfg!(debug_assertions) {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                a.synchronize_timeout(Duration::from_millis(1))
            }));
            assert!(
                r.is_err(),
                "synchronize inside a guard of the same domain did not panic in a debug build"
            );
        }
        drop(ga2);
        a.synchronize();
    });
}

/// A cookie from `get_state` names a grace period that a later
/// `synchronize` of the same flavor completes (the kernel's
/// `get_state_synchronize_rcu` + `synchronize_rcu` => `poll_state_synchronize_rcu`).
#[test]
fn get_state_then_synchronize_completes_the_cookie_in_all_three_flavors() {
    let _flavors = flavors();
    bounded::finishes("cookies", || {
        let d = Srcu::new("rt7-cookie");
        let c = d.get_state();
        d.synchronize();
        assert!(d.poll_state(c), "srcu {c:?} not complete after synchronize");
        let c = d.get_state();
        d.synchronize_expedited();
        assert!(d.poll_state(c), "srcu {c:?} not complete after synchronize_expedited");
        let c = d.get_state();
        assert!(d.synchronize_timeout(Duration::from_secs(60)));
        assert!(d.poll_state(c), "srcu {c:?} not complete after synchronize_timeout");

        let t = usrcu::tasks::get_state();
        usrcu::tasks::synchronize();
        assert!(
            usrcu::tasks::poll_state(t),
            "tasks {t:?} not complete after synchronize"
        );
        assert!(t.poll());
        assert!(t.wait_timeout(Duration::ZERO));
        assert!(t.wait_timeout(Duration::MAX));

        let r = usrcu::trace::get_state();
        usrcu::trace::synchronize();
        assert!(
            usrcu::trace::poll_state(r),
            "trace {r:?} not complete after synchronize"
        );
    });
}

/// Extreme stall timeouts, set by the documented setters, neither panic
/// nor keep grace periods from completing.
#[test]
fn extreme_stall_timeouts_of_tasks_and_trace_neither_panic_nor_block() {
    let _flavors = flavors();
    bounded::finishes("stall timeouts", || {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::MAX,
            Duration::from_secs(10),
        ] {
            usrcu::tasks::set_stall_timeout(d);
            usrcu::trace::set_stall_timeout(d);
            usrcu::tasks::synchronize();
            usrcu::trace::synchronize();
            let done = Arc::new(AtomicUsize::new(0));
            let d1 = done.clone();
            usrcu::tasks::call(move || {
                d1.fetch_add(1, Ordering::SeqCst);
            });
            let d2 = done.clone();
            usrcu::trace::call(move || {
                d2.fetch_add(1, Ordering::SeqCst);
            });
            usrcu::tasks::barrier();
            usrcu::trace::barrier();
            assert_eq!(done.load(Ordering::SeqCst), 2);
        }
    });
}

extern "C" fn seven() -> u64 {
    7
}

/// `HookSlot::clear_sync` is safe; called from a Tasks callback (where a
/// Tasks wait would wait for itself) it must not hang the flavor, and the
/// slot is empty afterwards.
#[test]
fn clear_sync_of_a_hook_slot_from_a_tasks_callback_does_not_hang_the_flavor() {
    let _flavors = flavors();
    static SLOT: HookSlot<extern "C" fn() -> u64> = HookSlot::new();
    let (_, warnings) = diagnostics::capture(|| {
        bounded::finishes("clear_sync in a tasks callback", || {
            // SAFETY: `seven` never blocks and lies in the executable's text.
            unsafe { SLOT.set_sync(Some(seven)) };
            assert_eq!(SLOT.call(), Some(7));
            let ran = Arc::new(AtomicUsize::new(0));
            let r = ran.clone();
            usrcu::tasks::call(move || {
                SLOT.clear_sync();
                r.fetch_add(1, Ordering::SeqCst);
            });
            usrcu::tasks::barrier();
            usrcu::tasks::synchronize();
            assert_eq!(SLOT.call(), None, "slot still set");
            // The flavor still works.
            let r2 = ran.clone();
            usrcu::tasks::call(move || {
                r2.fetch_add(10, Ordering::SeqCst);
            });
            usrcu::tasks::barrier();
            ran.load(Ordering::SeqCst)
        })
    });
    let panicked: Vec<_> = warnings
        .iter()
        .filter(|w| w.kind == WarningKind::CallbackPanicked)
        .collect();
    eprintln!("warnings: {warnings:?}");
    // Either it worked (11) or it panicked with a report (10): never a hang.
    let _ = panicked;
}

/// A slot in a `Box` (the doc's "one behind a `Box` that is dropped")
/// dropped while set, many times at the same addresses: later slots work,
/// and the host's registry does not keep the dead ones.
#[test]
fn boxed_hook_slots_dropped_while_set_leave_later_slots_working() {
    let _flavors = flavors();
    bounded::finishes("boxed slots", || {
        for i in 0..10_000u64 {
            let s: Box<HookSlot<extern "C" fn() -> u64>> = Box::new(HookSlot::new());
            // SAFETY: `seven` never blocks; the slot is dropped in place.
            let c = unsafe { s.set(Some(seven)) };
            assert!(c.is_none());
            assert_eq!(s.call(), Some(7), "round {i}");
            drop(s);
        }
        static AFTER: HookSlot<extern "C" fn() -> u64> = HookSlot::new();
        // SAFETY: as above.
        unsafe { AFTER.set_sync(Some(seven)) };
        assert_eq!(AFTER.call(), Some(7));
        AFTER.clear_sync();
        assert_eq!(AFTER.call(), None);
    });
}

/// The largest documented `possible_cpus` works end to end.
#[test]
fn a_domain_of_65536_possible_cpus_reads_synchronizes_calls_and_cleans_up() {
    bounded::finishes("65536 cpus", || {
        let d = Srcu::with_config("rt7-max-cpus", SrcuConfig::new().possible_cpus(65536));
        {
            let _g = d.read_lock();
        }
        assert_eq!(d.possible_cpus(), 65536);
        d.synchronize();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        d.call_srcu(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        d.barrier();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        // SAFETY: nothing else uses `d`.
        unsafe { d.cleanup() }.expect("idle domain cleans up");
    });
}

/// A million small callbacks then a barrier: all run once.
#[test]
fn a_million_callbacks_then_a_barrier_run_each_once() {
    bounded::finishes("a million callbacks", || {
        let d = Srcu::new("rt7-million");
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..1_000_000 {
            let r = ran.clone();
            d.call_srcu(move || {
                r.fetch_add(1, Ordering::Relaxed);
            });
        }
        d.barrier();
        assert_eq!(ran.load(Ordering::SeqCst), 1_000_000);
        assert_eq!(d.stats().callbacks_invoked, 1_000_000);
    });
}

/// Zero timeouts with nothing to wait for: every bounded wait whose
/// condition already holds returns true ("true if every callback queued
/// before the call has run" / "every reader that began before the call
/// has ended").
#[test]
fn zero_timeouts_with_nothing_to_wait_for_return_true() {
    let _flavors = flavors();
    bounded::finishes("zero timeouts", || {
        let d = Srcu::new("rt7-zero");
        d.call_srcu(|| {});
        d.barrier();
        let b = d.barrier_timeout(Duration::ZERO);
        usrcu::tasks::call(|| {});
        usrcu::tasks::barrier();
        let tb = usrcu::tasks::barrier_timeout(Duration::ZERO);
        usrcu::trace::call(|| {});
        usrcu::trace::barrier();
        let rb = usrcu::trace::barrier_timeout(Duration::ZERO);
        let s = d.synchronize_timeout(Duration::ZERO);
        eprintln!("barrier_timeout(0) {b}, tasks {tb}, trace {rb}; idle synchronize_timeout(0) {s}");
        assert!(
            b && tb && rb,
            "a zero-timeout barrier with nothing queued returned false: srcu {b} tasks {tb} trace {rb}"
        );
    });
}

/// Tasks and Tasks Trace grace periods complete while threads are born and
/// die as fast as the machine allows (tids get reused), each new thread
/// entering a Tasks Trace section, or spinning through a hook call, before
/// it exits.
#[test]
fn tasks_and_trace_grace_periods_complete_under_heavy_thread_churn() {
    let _flavors = flavors();
    static HOOK: HookSlot<extern "C" fn() -> u64> = HookSlot::new();
    // SAFETY: `seven` never blocks, lies in the executable's text.
    unsafe { HOOK.set_sync(Some(seven)) };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spawned = Arc::new(AtomicUsize::new(0));
    let churners: Vec<_> = (0..4)
        .map(|k| {
            let stop = stop.clone();
            let spawned = spawned.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let t = std::thread::spawn(move || {
                        if k % 2 == 0 {
                            let _g = usrcu::trace::read_lock();
                            std::hint::black_box(HOOK.call());
                        } else {
                            for _ in 0..1000 {
                                std::hint::black_box(HOOK.call());
                            }
                        }
                    });
                    t.join().unwrap();
                    spawned.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    bounded::finishes("grace periods under thread churn", || {
        for _ in 0..30 {
            usrcu::tasks::synchronize();
            usrcu::trace::synchronize();
        }
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            let r = ran.clone();
            usrcu::tasks::call(move || {
                r.fetch_add(1, Ordering::Relaxed);
            });
            let r = ran.clone();
            usrcu::trace::call(move || {
                r.fetch_add(1, Ordering::Relaxed);
            });
        }
        usrcu::tasks::barrier();
        usrcu::trace::barrier();
        assert_eq!(ran.load(Ordering::SeqCst), 200);
    });
    stop.store(true, Ordering::Relaxed);
    for c in churners {
        c.join().unwrap();
    }
    eprintln!("threads spawned meanwhile: {}", spawned.load(Ordering::Relaxed));
    HOOK.clear_sync();
}
