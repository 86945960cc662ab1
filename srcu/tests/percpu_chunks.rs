//! Per-CPU state proportional to the CPUs used, not the CPUs possible: a
//! domain allocates the slots of a chunk of CPUs when a reader first runs on
//! one of them, and every scan visits the allocated chunks and the fallback
//! slot only.
//!
//! Readers are pinned to CPUs with `sched_setaffinity`, so that which chunks
//! they touch is known.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[path = "common/cpus.rs"]
mod cpus;
use cpus::{on_cpu, pin_to, two_allowed_cpus};
use usrcu::percpu::{chunk_len, chunk_of, CPUS_PER_CHUNK};
use usrcu::{ReadIndex, Srcu, SrcuConfig};

const POSSIBLE: u32 = 4096;

/// Read sections of `d` on each of `cpus`.
fn read_on(d: &Srcu, cpus: &[usize]) {
    for &cpu in cpus {
        on_cpu(cpu, || {
            for _ in 0..100 {
                drop(d.read_lock());
            }
        });
    }
}

/// Slots in the chunks of `cpus` (for a domain of `POSSIBLE` CPUs).
fn slots_of_chunks(cpus: &[usize]) -> u64 {
    let chunks: BTreeSet<usize> = cpus.iter().map(|&c| chunk_of(c % POSSIBLE as usize).0).collect();
    chunks.iter().map(|&k| chunk_len(POSSIBLE as usize, k) as u64).sum()
}

fn big_domain(name: &str) -> Srcu {
    let d = Srcu::with_config(name, SrcuConfig::new().possible_cpus(POSSIBLE));
    d.attach();
    d
}

#[test]
fn memory_per_used_domain_at_4096_possible_cpus_with_readers_on_two_cpus_is_at_most_16_kib() {
    let d = big_domain("chunks-memory");
    let cpus = two_allowed_cpus();
    read_on(&d, &cpus);
    d.synchronize();
    let s = d.stats();
    assert_eq!(s.possible_cpus, POSSIBLE as u64);
    assert_eq!(
        s.percpu_chunks * CPUS_PER_CHUNK as u64,
        slots_of_chunks(&cpus),
        "readers on CPUs {cpus:?} touch exactly their chunks"
    );
    assert!(
        s.percpu_bytes <= 16 * 1024,
        "per-CPU state of a domain used on CPUs {cpus:?} holds {} bytes",
        s.percpu_bytes
    );
}

#[test]
fn an_attached_domain_without_readers_holds_no_slot_chunk() {
    let d = big_domain("chunks-unused");
    d.synchronize_expedited();
    let s = d.stats();
    assert_eq!(s.percpu_chunks, 0);
    // The block and its table of 64 chunk pointers and one bitmap word.
    assert!(s.percpu_bytes <= 1024, "{} bytes", s.percpu_bytes);
}

#[test]
fn grace_period_scans_visit_only_the_fallback_slot_and_touched_chunks() {
    let d = big_domain("chunks-gp-scan");
    let s0 = d.stats();
    d.synchronize_expedited();
    let s1 = d.stats();
    // An idle grace period: two checks, each summing unlocks then locks over
    // the fallback slot alone.
    assert_eq!(s1.slots_scanned - s0.slots_scanned, 2 * 2);

    let cpus = two_allowed_cpus();
    read_on(&d, &cpus);
    let s2 = d.stats();
    d.synchronize_expedited();
    let s3 = d.stats();
    assert_eq!(
        s3.slots_scanned - s2.slots_scanned,
        2 * 2 * (1 + slots_of_chunks(&cpus)),
        "readers ran on CPUs {cpus:?} only"
    );
}

#[test]
fn cleanup_scans_only_touched_chunks() {
    let d = big_domain("chunks-cleanup-scan");
    let cpus = two_allowed_cpus();
    read_on(&d, &cpus);
    let held: ReadIndex = on_cpu(cpus[0], || d.read_lock_raw());
    let before = d.stats();
    // SAFETY: no thread enters a section of `d` during the call.
    let r = unsafe { d.cleanup() };
    assert_eq!(r.expect_err("a reader is inside").readers_active, 1);
    let after = d.stats();
    // Both ranks, unlocks then locks: four sums.
    assert_eq!(
        after.slots_scanned - before.slots_scanned,
        4 * (1 + slots_of_chunks(&cpus))
    );
    // SAFETY: `held` came from `d.read_lock_raw()` and is ended once.
    unsafe { d.read_unlock_raw(held) };
    // SAFETY: as above.
    unsafe { d.cleanup() }.expect("no reader inside");
}

#[test]
fn first_reader_on_a_cpu_counts_on_the_fallback_slot_and_is_waited_for() {
    let d = big_domain("chunks-fallback-reader");
    let cpu = two_allowed_cpus()[0];
    let left = AtomicBool::new(false);
    let entered = AtomicBool::new(false);
    let chunks_inside = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            pin_to(cpu);
            // No chunk yet: the lock add goes to the fallback slot, then the
            // reader allocates its chunk (inside its section).
            let g = d.read_lock();
            let chunks = d.stats().percpu_chunks;
            // Release: pairs with the synchronizer's Acquire.
            entered.store(true, Ordering::Release);
            std::thread::sleep(Duration::from_millis(100));
            left.store(true, Ordering::Release);
            drop(g);
            chunks
        });
        // Acquire: pairs with the reader's Release store.
        while !entered.load(Ordering::Acquire) && !reader.is_finished() {
            std::thread::yield_now();
        }
        d.synchronize();
        // Acquire: the reader's store precedes its unlock, which the grace
        // period waited for.
        assert!(
            left.load(Ordering::Acquire),
            "synchronize returned while a reader counted on the fallback slot was inside"
        );
        reader.join().unwrap()
    });
    assert_eq!(chunks_inside, 1, "the fallback reader allocated its chunk");
}

/// A guard entered on one CPU and dropped on another: the drop cannot take
/// the same-CPU fast path (the rseq sequence checks the CPU), and falls back
/// to an add on the CPU it runs on. The grace period waits for the guard
/// while it is held and completes once it is dropped. With both CPUs'
/// chunks allocated and with the second CPU's chunk still missing.
#[test]
fn a_guard_dropped_on_another_cpu_is_waited_for_and_then_released() {
    let cpus = two_allowed_cpus();
    if cpus.len() < 2 {
        eprintln!("skipped: this process may run on one CPU only");
        return;
    }
    for warm_second in [true, false] {
        let d = big_domain(&format!("migrating-guard-{warm_second}"));
        if warm_second {
            read_on(&d, &cpus);
        } else {
            read_on(&d, &cpus[..1]);
        }
        let held = AtomicBool::new(false);
        let go = AtomicBool::new(false);
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                pin_to(cpus[0]);
                let outer = d.read_lock();
                let inner = d.read_lock();
                held.store(true, Ordering::SeqCst);
                while !go.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                pin_to(cpus[1]);
                drop(inner);
                drop(outer);
            });
            while !held.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            assert!(
                !d.synchronize_timeout(Duration::from_millis(50)),
                "a grace period ended while a guard was held"
            );
            go.store(true, Ordering::SeqCst);
            t.join().unwrap();
        });
        assert!(
            d.synchronize_timeout(Duration::from_secs(30)),
            "the migrated guard was never counted as left"
        );
    }
}
