//! The use-after-free race shared by `core.rs` (which requires it to find
//! nothing) and `broken_grace_period.rs` (which breaks the grace period on
//! purpose and requires it to find something).
//!
//! Readers dereference a published object and keep looking at it for a while
//! inside their section. The writer swaps in a new object, waits for a grace
//! period and then *poisons* the old one. Retired objects stay allocated
//! until every reader is joined, exactly as the torture's pool keeps them
//! (`tests/src/bin/usrcu-torture/pool.rs`): freeing them would let the
//! allocator overwrite the poison and the next allocation reuse the block, so
//! a stale reader would almost never see it. A grace period that ends while
//! a reader is still inside therefore shows up as a counted sighting of the
//! poison, never as undefined behaviour in the test.
//!
//! To make a too-short grace period likely to be seen, the writer swaps only
//! once every reader has begun a new section since the previous grace period
//! returned: those readers hold the object about to be retired, on the rank
//! that the next grace period's second scan must drain.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use usrcu::Srcu;

const ALIVE: u64 = 0xA11C_E0B1_EC70_0001;
/// The kernel's `POISON_FREE` byte, repeated.
const POISON: u64 = 0x6B6B_6B6B_6B6B_6B6B;

/// How many times a reader looks at its object inside one section, and how
/// often it yields the CPU in between. Long enough, and yielding so that the
/// writer gets a CPU on a loaded machine, that a section usually spans a whole
/// grace period of the writer when that grace period does not wait for it.
const LOOKS: usize = 20_000;
const YIELD_EVERY: usize = 1_000;

struct Obj {
    magic: AtomicU64,
}

fn new_obj() -> *mut Obj {
    Box::into_raw(Box::new(Obj {
        magic: AtomicU64::new(ALIVE),
    }))
}

/// Run `readers` readers against `rounds` publications (alternating
/// `synchronize` and `synchronize_expedited`), and return how many times a
/// reader saw a poisoned object inside the section that found it.
pub fn stale_sightings(d: &Arc<Srcu>, readers: usize, rounds: usize) -> u64 {
    let live = Arc::new(AtomicPtr::new(new_obj()));
    let stop = Arc::new(AtomicBool::new(false));
    let entered: Arc<Vec<AtomicU64>> = Arc::new((0..readers).map(|_| AtomicU64::new(0)).collect());
    let handles: Vec<_> = (0..readers)
        .map(|me| {
            let (d, live, stop, entered) = (d.clone(), live.clone(), stop.clone(), entered.clone());
            thread::spawn(move || {
                let mut seen = 0u64;
                // Relaxed: a stop flag; nothing is published through it.
                while !stop.load(Ordering::Relaxed) {
                    let _g = d.read_lock();
                    // Acquire: pairs with the writer's AcqRel swap, so the
                    // object's initial ALIVE is visible.
                    let p = live.load(Ordering::Acquire);
                    // Relaxed: a progress counter the writer waits on; it
                    // orders nothing.
                    entered[me].fetch_add(1, Ordering::Relaxed);
                    for i in 1..=LOOKS {
                        // SAFETY: objects are deallocated only after every
                        // reader is joined (below), so `p` is allocated.
                        // Relaxed: whether this load can see the poison
                        // stored after a grace period is what is tested.
                        if unsafe { &*p }.magic.load(Ordering::Relaxed) != ALIVE {
                            seen += 1;
                            break;
                        }
                        if i % YIELD_EVERY == 0 {
                            thread::yield_now();
                        } else {
                            std::hint::spin_loop();
                        }
                    }
                }
                seen
            })
        })
        .collect();
    let mut retired = Vec::with_capacity(rounds);
    for i in 0..rounds {
        wait_until_every_reader_entered_again(&entered);
        let old = live.swap(new_obj(), Ordering::AcqRel);
        if i % 2 == 0 {
            d.synchronize_expedited();
        } else {
            d.synchronize();
        }
        // SAFETY: `old` stays allocated until the readers are joined.
        // Relaxed: ordered after the readers that could see `old` by the
        // grace period just completed; a reader seeing it is the failure.
        unsafe { &*old }.magic.store(POISON, Ordering::Relaxed);
        retired.push(old);
    }
    // Relaxed: see the readers.
    stop.store(true, Ordering::Relaxed);
    let seen = handles.into_iter().map(|h| h.join().unwrap()).sum();
    retired.push(live.load(Ordering::Acquire));
    for p in retired {
        // SAFETY: every reader is joined; each pointer came from `new_obj`
        // and is freed once.
        drop(unsafe { Box::from_raw(p) });
    }
    seen
}

/// Wait until every reader has begun a section after this call.
fn wait_until_every_reader_entered_again(entered: &[AtomicU64]) {
    // Relaxed: progress counters (see the readers).
    let before: Vec<u64> = entered.iter().map(|e| e.load(Ordering::Relaxed)).collect();
    for (e, b) in entered.iter().zip(before) {
        while e.load(Ordering::Relaxed) == b {
            thread::yield_now();
        }
    }
}
