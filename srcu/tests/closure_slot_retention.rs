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

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::Arc;

use usrcu::Srcu;

struct Counting;

static IN_USE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed to `System` unchanged; only a counter is
// added to.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            // Relaxed: a statistic, read after the producers have joined.
            IN_USE.fetch_add(l.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            // Relaxed: as above.
            IN_USE.fetch_add(l.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(p, l) };
        // Relaxed: as above.
        IN_USE.fetch_sub(l.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc`, passed on.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            // Relaxed: as above.
            IN_USE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        }
        q
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Up to two CPUs this process may run on.
fn two_allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
    // writes at most size_of::<cpu_set_t>() bytes into it.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        set
    };
    // SAFETY: CPU_ISSET reads the set for ids below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .take(2)
        .collect()
}

/// Run `f` on a new thread pinned to `cpu`.
fn on_cpu(cpu: usize, f: impl FnOnce() + Send) {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes
            // inside it; pid 0 is the calling thread.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                assert_eq!(
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
                    0
                );
            }
            f()
        })
        .join()
        .unwrap()
    })
}

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
    let before = IN_USE.load(Ordering::Relaxed);
    // One callback on the other CPU: its stack has no block, so it takes the
    // free list.
    on_cpu(cpus[1], || burst(&d, 1, &ran));
    d.barrier();
    let after = IN_USE.load(Ordering::Relaxed);
    assert_eq!(ran.load(Ordering::Relaxed), 14 * 300 + 1);
    // Kept: 4 blocks of 960 B. Freed: the other 252 (about 242 KiB); allow
    // for the thread's own allocations.
    let freed = before - after;
    assert!(
        freed >= 200 * 1024,
        "taking the free list freed only {freed} B (before {before} B, after {after} B in use)"
    );
}
