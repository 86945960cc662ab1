//! Red team 15: `driver::TRIM_AFTER` is meant to be "longer than a steady
//! stream's pauses between batches ..., so that a stream does not
//! reallocate them per batch", and `SrcuStats::runtime_bytes` says the
//! buffers are "freed altogether once the queue has stayed empty for
//! 100 ms". A trim that falls due while the invoker is busy is re-armed
//! 100 ms from *then* (`driver::run`, `Trimmed::Busy`), not from the end
//! of the pass; when a pass is long, the re-armed trim can fall due a few
//! milliseconds after the pass ends, in the stream's short pause, and free
//! the buffers the next batch needs again.
//!
//! Counted: large allocations (256 KiB and more) made by the invoker
//! threads (`usrcu-cb-*`), which are the ordering buffers growing again.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use usrcu::Srcu;
use usrcu_tests::{in_child, Child};

static BIG: AtomicU64 = AtomicU64::new(0);
/// Large frees made by the driver thread (`usrcu-gp`): only its trim frees
/// the invoker's buffers there.
static TRIMMED: AtomicU64 = AtomicU64::new(0);

fn thread_name() -> [u8; 17] {
    let mut name = [0u8; 17];
    // SAFETY: PR_GET_NAME writes at most 16 bytes and a NUL.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
    name
}

fn on_invoker() -> bool {
    thread_name().starts_with(b"usrcu-cb-")
}

fn note(size: usize) {
    if size >= 256 << 10 && on_invoker() {
        BIG.fetch_add(1, Ordering::Relaxed);
    }
}

struct CountBig;

// SAFETY: every call is passed to `System` unchanged.
unsafe impl GlobalAlloc for CountBig {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        // SAFETY: forwarded.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if l.size() >= 256 << 10 && thread_name().starts_with(b"usrcu-gp\0") {
            TRIMMED.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > l.size() {
            note(new);
        }
        // SAFETY: forwarded.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: CountBig = CountBig;

const CHILD: &str = "RT15_TRIM_EARLY_CASE";
const BATCHES: u64 = 20;

/// `BATCHES` batches of 30,000 callbacks, each batch made ready by one
/// grace period; with `slow`, the batch ends with a callback that takes
/// 250 ms, so that its pass outlasts a trim's due time. Between batches:
/// wait for the batch (`barrier`), then 40 ms of pause.
fn case(slow: bool) {
    let d = Srcu::new("rt15-early");
    let count = Arc::new(AtomicU64::new(0));
    let mut per_batch = Vec::new();
    let mut trims = Vec::new();
    for _ in 0..BATCHES {
        let before = BIG.load(Ordering::SeqCst);
        let trimmed = TRIMMED.load(Ordering::SeqCst);
        {
            let _g = d.read_lock();
            for _ in 0..30_000 {
                let c = count.clone();
                d.call_srcu(move || {
                    c.fetch_add(1, Ordering::Relaxed);
                });
            }
            if slow {
                d.call_srcu(|| std::thread::sleep(Duration::from_millis(250)));
            }
        }
        d.barrier();
        std::thread::sleep(Duration::from_millis(40));
        // What this batch allocated, and what the driver's trim freed
        // from its start to the end of the pause after it.
        per_batch.push(BIG.load(Ordering::SeqCst) - before);
        trims.push(TRIMMED.load(Ordering::SeqCst) - trimmed);
    }
    assert_eq!(count.load(Ordering::SeqCst), 30_000 * BATCHES);
    // The first batch grows the buffers; later ones should find them.
    let regrown = per_batch[1..].iter().filter(|n| **n > 0).count();
    let trimmed = trims.iter().filter(|n| **n > 0).count();
    println!(
        "slow={slow}: large invoker allocations per batch {per_batch:?}; batches after the first that grew them again: {regrown}; \
         large frees by the driver's trim per batch {trims:?} ({trimmed} batches)"
    );
    assert!(
        trimmed == 0,
        "{regrown} of {} batches after the first grew the buffers again, with 40 ms pauses; \
         the driver trimmed them during {trimmed} batches",
        BATCHES - 1
    );
    println!("RT15-EARLY-OK {slow}");
}

#[test]
fn rt15_trim_early_child_entry() {
    if !in_child(CHILD, Some(60)) {
        return;
    }
    case(std::env::var(CHILD).unwrap() == "slow");
}

fn run(kind: &str) {
    Child::new("rt15_trim_early_child_entry")
        .env(CHILD, kind)
        .timeout(Duration::from_secs(60))
        .must_pass("RT15-EARLY-OK");
}

/// Control: quick batches with 40 ms pauses keep their buffers (no trim
/// falls in a pause: 0 of 19 batches, 3 runs). Ignored only because it
/// depends on the pauses staying well under 100 ms on a loaded machine.
#[test]
#[ignore = "control of the finding below; timing-dependent"]
fn rt15_quick_batches_with_short_pauses_keep_their_buffers() {
    run("quick");
}

/// Batches whose pass ends with a 250 ms callback, 40 ms pauses between
/// them. A user expects what the control shows (the pause is far below
/// 100 ms, "freed altogether once the queue has stayed empty for 100
/// ms"). Observed: the driver's trim freed the buffers inside a 40 ms
/// pause in 1 or 2 of 20 batches, 3/3 runs, and the next batch grew them again
/// (8 to 10 large allocations, as the first batch): the trim re-armed
/// while the long pass ran counts its 100 ms from the re-arm, not from
/// the end of the pass (`driver::run`, the `Trimmed::Busy` branch).
#[test]
#[ignore = "timing-dependent like its control (pauses must stay well under 100 ms); was a finding at d37fd84, fixed in 52522b1 (a trim that finds the invoker busy is dropped and the pass asks again when it ends); passes 2/2 with --run-ignored"]
fn rt15_long_passes_with_short_pauses_keep_their_buffers() {
    run("slow");
}
