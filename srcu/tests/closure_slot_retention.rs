//! How many closure-slot blocks a domain keeps after bursts: a producer that
//! takes the domain's free list keeps at most a few blocks of it and frees
//! the rest (`slab.rs`, `fresh_block`). Without that, a thread on another
//! CPU that queues one callback after a burst elsewhere carries the whole
//! list (up to 256 blocks, 240 KiB) in its stack's cache for as long as it
//! stays quiet, and every stack can do the same.
//!
//! Heap in use is counted by this test's global allocator (the runtime is
//! in this process, so its blocks are counted). Threads are pinned to two
//! CPUs so that the two producers use two intake stacks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use usrcu::Srcu;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{in_use, Counting};

#[path = "common/cpus.rs"]
mod cpus;
use cpus::{on_cpu, two_allowed_cpus};

#[global_allocator]
static A: Counting = Counting;

/// Queue `n` small closures (one `u64` captured: a slot, no allocation of
/// their own) on `d`.
fn burst(d: &Srcu, n: usize, ran: &Arc<AtomicUsize>) {
    for i in 0..n as u64 {
        let ran = ran.clone();
        d.call_srcu(move || {
            std::hint::black_box(i);
            ran.fetch_add(1, Ordering::Relaxed);
        });
    }
}

#[test]
fn a_producer_that_takes_the_free_list_keeps_a_few_blocks_and_frees_the_rest() {
    let cpus = two_allowed_cpus();
    if cpus.len() < 2 {
        eprintln!("skipped: this process may run on one CPU only");
        return;
    }
    let d = Srcu::new("slot-retention");
    let ran = Arc::new(AtomicUsize::new(0));
    // 300 blocks' worth of slots (14 per block) on the first CPU; once they
    // have run, the free list holds its cap of 256 blocks.
    on_cpu(cpus[0], || burst(&d, 14 * 300, &ran));
    d.barrier();
    let before = in_use();
    // One callback on the other CPU: its stack has no block, so it takes the
    // free list.
    on_cpu(cpus[1], || burst(&d, 1, &ran));
    d.barrier();
    let after = in_use();
    assert_eq!(ran.load(Ordering::Relaxed), 14 * 300 + 1);
    // Kept: 4 blocks of 960 B. Freed: the other 252 (about 242 KiB); allow
    // for the thread's own allocations.
    let freed = before - after;
    assert!(
        freed >= 200 * 1024,
        "taking the free list freed only {freed} B (before {before} B, after {after} B in use)"
    );
}
