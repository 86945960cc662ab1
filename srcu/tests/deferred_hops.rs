//! `runtime::inventory::deferred`, the snapshot a plugin loader takes last
//! before it unmaps an object, never misses a chain of the object's
//! callbacks that hops between SRCU domains: each callback re-queues its
//! head on the other domain before it returns, so at every instant one of
//! them is queued or running, and every snapshot must say so. A second
//! thread keeps another domain's callbacks finishing all the time, as a
//! busy host's do, so a walk of the domains is never undisturbed.
//!
//! Before the invokers were held at their next callback during the walk
//! (`callbacks.rs`, "Pause"), the snapshot retried a disturbed walk 64
//! times and then trusted it; a hop between the walks of the two domains
//! then went unseen, and this test saw idle snapshots (seen failing:
//! hundreds of idle snapshots out of 20,000).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "common/bounded.rs"]
mod bounded;
use bounded::wait_until;
use usrcu::runtime::inventory;
use usrcu::{CallbackHead, Srcu};

static X: Srcu = Srcu::new_static("hops-x");
static Y: Srcu = Srcu::new_static("hops-y");
static NOISE: Srcu = Srcu::new_static("hops-noise");

static STOP: AtomicBool = AtomicBool::new(false);
static HOPS: AtomicU64 = AtomicU64::new(0);
static ENDED: AtomicBool = AtomicBool::new(false);

#[repr(C)]
struct Hop {
    head: CallbackHead,
    on_x: bool,
}

/// The object's callback: re-queues itself on the other domain (its address
/// is the range the snapshot is asked about).
unsafe extern "C" fn hop(h: *mut CallbackHead) {
    let p = h as *mut Hop;
    if STOP.load(Ordering::Acquire) {
        // SAFETY: `p` is the `Box<Hop>` leaked by the test, handed back.
        drop(unsafe { Box::from_raw(p) });
        ENDED.store(true, Ordering::Release);
        return;
    }
    // SAFETY: the head was handed back to us; it is re-queued once, below.
    let next = unsafe {
        (*p).on_x = !(*p).on_x;
        if (*p).on_x {
            &X
        } else {
            &Y
        }
    };
    // Relaxed: a progress count.
    HOPS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the head is ours again (its callback is running) and stays
    // valid until `hop` is called with it.
    unsafe { next.call_srcu_raw(h, hop) };
}

#[test]
fn a_chain_hopping_between_domains_is_never_missed_while_other_callbacks_finish() {
    let a = hop as *const () as usize;
    let ranges: Vec<std::ops::Range<usize>> = std::iter::once(a..a + 1).collect();
    let noise_stop = std::sync::Arc::new(AtomicBool::new(false));
    let noise = {
        let stop = noise_stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Each takes a moment, so that the invoker is always in the
                // middle of a batch, finishing one now and then.
                NOISE.call_srcu(|| {
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_micros(2) {
                        std::hint::spin_loop();
                    }
                });
                n += 1;
                if n % 5_000 == 0 {
                    NOISE.barrier();
                }
            }
            NOISE.barrier();
            n
        })
    };
    // X, a thousand idle domains, then Y: the walk takes a while to get
    // from X to Y (the domains are walked in the order they attached).
    X.attach();
    let fillers: Vec<Box<Srcu>> = (0..1000)
        .map(|_| {
            let d = Box::new(Srcu::new("hops-filler"));
            d.attach();
            d
        })
        .collect();
    Y.attach();
    let first = Box::into_raw(Box::new(Hop {
        head: CallbackHead::new(),
        on_x: true,
    }));
    // SAFETY: a fresh node; `hop` takes it back at the end.
    unsafe { X.call_srcu_raw(first as *mut CallbackHead, hop) };
    wait_until("the chain to hop", || HOPS.load(Ordering::Relaxed) > 10);

    let (mut idle, mut unstable) = (0u32, 0u32);
    const SNAPSHOTS: u32 = 5_000;
    for _ in 0..SNAPSHOTS {
        // Let the chain hop and the noise run between snapshots (each
        // snapshot holds the invokers while it walks).
        std::thread::sleep(Duration::from_micros(100));
        let d = inventory::deferred(&ranges);
        idle += d.is_idle() as u32;
        unstable += !d.stable as u32;
    }
    let hops = HOPS.load(Ordering::Relaxed);
    STOP.store(true, Ordering::Release);
    wait_until("the chain to end", || ENDED.load(Ordering::Acquire));
    noise_stop.store(true, Ordering::Relaxed);
    let noise_callbacks = noise.join().unwrap();
    println!("{SNAPSHOTS} snapshots: {idle} idle, {unstable} unstable; {hops} hops, {noise_callbacks} noise callbacks");
    assert_eq!(
        idle, 0,
        "a snapshot missed the hopping chain ({unstable} walks were disturbed)"
    );
    // The snapshots had something to miss: the chain hopped all along.
    assert!(hops > u64::from(SNAPSHOTS) / 100, "{hops} hops only");
    // The last hop set `ENDED` inside its body; the runtime counts it done
    // after the body returns.
    wait_until("the snapshot to be idle once the chain ended", || {
        inventory::deferred(&ranges).is_idle()
    });
    drop(fillers);
}
