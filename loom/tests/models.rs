//! Loom models. See the crate docs for how to run them.
#![cfg(usrcu_loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use std::sync::Mutex as StdMutex;
use usrcu::__loom::{set_fault, AttachCell, CallbackCore, Core, Fault, INITIAL_INDEX};
use usrcu::CallbackHead;

/// Faults are process-wide: models run one at a time.
static SERIAL: StdMutex<()> = StdMutex::new(());

const LIVE: usize = 1;
const FREED: usize = 0xdead;

/// Run `model` with `fault` switched on and require loom to find a failure.
fn must_fail(fault: Fault, model: fn()) {
    must_fail_within(fault, None, model)
}

/// As `must_fail`, exploring up to `preemptions` preemptions (the failing
/// schedule may need more than `LOOM_MAX_PREEMPTIONS`).
fn must_fail_within(fault: Fault, preemptions: Option<usize>, model: fn()) {
    set_fault(fault, true);
    let r = std::panic::catch_unwind(|| {
        let mut b = loom::model::Builder::new();
        if preemptions.is_some() {
            b.preemption_bound = preemptions;
        }
        b.check(model)
    });
    set_fault(fault, false);
    assert!(
        r.is_err(),
        "loom found no failure with {fault:?}: the model cannot see that bug"
    );
}

/// A reader that began before `synchronize` returned is over before it
/// returns: it never sees the object the updater frees after synchronize.
/// The reader locks on CPU 0 and unlocks on CPU 1 (it migrated).
fn reader_never_sees_an_object_freed_after_synchronize() {
    let core = Arc::new(Core::new(2));
    // objects[0] is the old object, objects[1] the new one.
    let objects = Arc::new([AtomicUsize::new(LIVE), AtomicUsize::new(LIVE)]);
    let published = Arc::new(AtomicUsize::new(0));

    let reader = {
        let (core, objects, published) = (core.clone(), objects.clone(), published.clone());
        thread::spawn(move || {
            let idx = core.lock_on(0);
            // Relaxed: ordered by the reader fence (B) against the updater's
            // heavy fence (A); that pairing is what the model checks.
            let which = published.load(Ordering::Relaxed);
            let state = objects[which].load(Ordering::Relaxed);
            assert_eq!(state, LIVE, "reader saw a freed object: grace period too short");
            core.unlock_on(1, idx);
        })
    };

    // Relaxed: see the reader.
    published.store(1, Ordering::Relaxed);
    core.synchronize();
    objects[0].store(FREED, Ordering::Relaxed);
    reader.join().unwrap();
}

#[test]
fn model_reader_vs_synchronize() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    loom::model(reader_never_sees_an_object_freed_after_synchronize);
}

#[test]
fn model_reader_vs_synchronize_fails_without_reader_fence() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    must_fail(
        Fault::NoReaderFence,
        reader_never_sees_an_object_freed_after_synchronize,
    );
}

/// Two readers cannot cancel out in a check: the grace period must not end
/// while reader Z is inside just because the unlock sum saw reader Y leave
/// while the lock sum missed Y's entry. This is what the heavy fence A
/// between the two sums is for.
fn readers_cannot_cancel_out_in_a_check() {
    let core = Arc::new(Core::new(2));
    let objects = Arc::new([AtomicUsize::new(LIVE), AtomicUsize::new(LIVE)]);
    let published = Arc::new(AtomicUsize::new(0));

    let z = {
        let (core, objects, published) = (core.clone(), objects.clone(), published.clone());
        thread::spawn(move || {
            let idx = core.lock_on(0);
            // Relaxed: see `reader_never_sees_an_object_freed_after_synchronize`.
            let which = published.load(Ordering::Relaxed);
            assert_eq!(
                objects[which].load(Ordering::Relaxed),
                LIVE,
                "reader saw a freed object"
            );
            core.unlock_on(0, idx);
        })
    };
    let y = {
        let core = core.clone();
        thread::spawn(move || {
            let idx = core.lock_on(1);
            core.unlock_on(1, idx);
        })
    };
    // Relaxed: see the readers.
    published.store(1, Ordering::Relaxed);
    core.synchronize();
    objects[0].store(FREED, Ordering::Relaxed);
    z.join().unwrap();
    y.join().unwrap();
}

#[test]
fn model_readers_cannot_cancel_out() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // The same bound as the negative twin, so that the schedule it finds
    // is explored here too and shown harmless with the fence in place.
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(readers_cannot_cancel_out_in_a_check);
}

#[test]
fn model_readers_cannot_cancel_out_fails_without_heavy_fence() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // Loom orders all SeqCst fences globally (stronger than C++), so the
    // failing schedule must put reader Y entirely between the updater's
    // flip fence D and its check: three preemptions.
    must_fail_within(Fault::NoHeavyFence, Some(3), readers_cannot_cancel_out_in_a_check);
}

// No heavy-fence twin for this model: when the updater drives its own grace
// period, the SeqCst fence in `snap` (same thread, before the scans) already
// orders the update before the lock sums, so under loom (where every fence is
// SeqCst) removing A cannot be seen here. With the membarrier pair the reader
// side is only a compiler fence and A is the one fence that pairs with it;
// loom cannot model membarrier. A's necessity is shown by
// `model_call_srcu_and_barrier_fails_without_heavy_fence`, where the grace
// period runs on the runtime's thread.

/// A polled cookie taken while a reader is inside is not complete before
/// the reader ends.
fn cookie_is_not_complete_while_a_preexisting_reader_is_inside() {
    let core = Arc::new(Core::new(1));
    let idx = core.lock_on(0);
    let c = core.snap();
    let updater = {
        let core = core.clone();
        thread::spawn(move || core.synchronize())
    };
    assert!(!core.done(c), "cookie completed with its reader still inside");
    core.unlock_on(0, idx);
    updater.join().unwrap();
    assert!(core.done(c), "cookie not complete after a full synchronize");
}

#[test]
fn model_polled_cookie() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    loom::model(cookie_is_not_complete_while_a_preexisting_reader_is_inside);
}

#[repr(C)]
struct FreeObject {
    head: CallbackHead,
    object: *const AtomicUsize,
    ran: *const AtomicUsize,
}

unsafe extern "C" fn free_object(h: *mut CallbackHead) {
    // SAFETY: `h` is the first field of a leaked Box<FreeObject>, handed back
    // once; the atomics it points to outlive the model iteration.
    let f = unsafe { Box::from_raw(h as *mut FreeObject) };
    // SAFETY: as above.
    unsafe {
        (*f.object).store(FREED, Ordering::Relaxed);
        // Relaxed: the barrier's marker ordering (AcqRel + condvar) is what
        // makes this visible to the barrier's caller.
        (*f.ran).fetch_add(1, Ordering::Relaxed);
    }
}

/// `call_srcu` frees an object after a grace period; a reader that saw it
/// never sees it freed; `barrier` returns only after the callback ran.
fn call_srcu_then_barrier_waits_for_the_callback() {
    let cc = Arc::new(CallbackCore::new(2));
    let objects = Arc::new([AtomicUsize::new(LIVE), AtomicUsize::new(LIVE)]);
    let published = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicUsize::new(0));

    let reader = {
        let (cc, objects, published) = (cc.clone(), objects.clone(), published.clone());
        thread::spawn(move || {
            let idx = cc.core().lock_on(1);
            // Relaxed: see `reader_never_sees_an_object_freed_after_synchronize`.
            let which = published.load(Ordering::Relaxed);
            assert_eq!(
                objects[which].load(Ordering::Relaxed),
                LIVE,
                "callback freed an object too early"
            );
            cc.core().unlock_on(1, idx);
        })
    };
    let runtime = {
        let (cc, stop) = (cc.clone(), stop.clone());
        thread::spawn(move || {
            // Acquire: pairs with the Release store of `stop` below.
            while stop.load(Ordering::Acquire) == 0 {
                if cc.service_once() == 0 {
                    thread::yield_now();
                }
            }
        })
    };

    // Relaxed: see the reader.
    published.store(1, Ordering::Relaxed);
    let f = Box::into_raw(Box::new(FreeObject {
        head: CallbackHead::new(),
        object: &objects[0],
        ran: &*ran,
    }));
    // SAFETY: `f` is a fresh allocation, handed over until `free_object`.
    unsafe { cc.enqueue(0, f as *mut CallbackHead, free_object) };
    cc.barrier_begin().wait();
    // Relaxed: ordered by the barrier (see `free_object`).
    assert_eq!(
        ran.load(Ordering::Relaxed),
        1,
        "barrier returned before the callback ran"
    );
    assert_eq!(cc.pending(), 0);
    // Release: pairs with the runtime's Acquire load.
    stop.store(1, Ordering::Release);
    runtime.join().unwrap();
    reader.join().unwrap();
}

#[test]
fn model_call_srcu_and_barrier() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    loom::model(call_srcu_then_barrier_waits_for_the_callback);
}

#[test]
fn model_call_srcu_and_barrier_fails_without_reader_fence() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    must_fail(Fault::NoReaderFence, call_srcu_then_barrier_waits_for_the_callback);
}

/// Two first users race to attach a static domain: exactly one block is
/// built, both get it, and both see it fully built.
fn two_first_users_attach_once() {
    let cell = Arc::new(AttachCell::default());
    let built = Arc::new(AtomicUsize::new(0));
    let other = {
        let (cell, built) = (cell.clone(), built.clone());
        thread::spawn(move || {
            let v = cell.get(&built);
            assert_eq!(v.index(), INITIAL_INDEX, "saw a block before it was fully built");
            v as *const _ as usize
        })
    };
    let mine = cell.get(&built);
    assert_eq!(mine.index(), INITIAL_INDEX, "saw a block before it was fully built");
    let _ = mine.lock_on(0);
    let theirs = other.join().unwrap();
    assert_eq!(mine as *const _ as usize, theirs, "two blocks were attached");
    // Relaxed: both users joined.
    assert_eq!(built.load(Ordering::Relaxed), 1);
}

#[test]
fn model_lazy_attach() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    loom::model(two_first_users_attach_once);
}

#[test]
fn model_lazy_attach_fails_with_relaxed_publication() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    must_fail(Fault::RelaxedPublish, two_first_users_attach_once);
}

/// A reader whose CPU has no chunk yet counts on the fallback slot and then
/// allocates the chunk; another reader counts on the freshly published
/// chunk while a grace period scans. CPU 1's chunk exists from the start,
/// CPU 0's does not. Reader R1 enters on CPU 1 and leaves on CPU 0, on the
/// fallback slot; its unlock then allocates CPU 0's chunk (outside its
/// section). Reader R2 enters on CPU 0, on that chunk if it sees it
/// published, else on the fallback slot (and allocates it). The grace period
/// may walk the touched bitmap before the chunk appears in it: R2 must still
/// never see the object freed after `synchronize` (`docs/memory-model.md`,
/// "Per-CPU chunks").
fn reader_on_a_just_published_chunk_is_waited_for() {
    let core = Arc::new(Core::new_lazy(2));
    core.populate(1);
    let objects = Arc::new([AtomicUsize::new(LIVE), AtomicUsize::new(LIVE)]);
    let published = Arc::new(AtomicUsize::new(0));

    let r1 = {
        let core = core.clone();
        thread::spawn(move || {
            let idx = core.lock_on(1);
            core.unlock_on(0, idx);
        })
    };
    let r2 = {
        let (core, objects, published) = (core.clone(), objects.clone(), published.clone());
        thread::spawn(move || {
            let idx = core.lock_on(0);
            // Relaxed: see `reader_never_sees_an_object_freed_after_synchronize`.
            let which = published.load(Ordering::Relaxed);
            assert_eq!(
                objects[which].load(Ordering::Relaxed),
                LIVE,
                "reader on a new chunk saw a freed object: the scan missed the chunk"
            );
            core.unlock_on(0, idx);
        })
    };

    // Relaxed: see the readers.
    published.store(1, Ordering::Relaxed);
    core.synchronize();
    objects[0].store(FREED, Ordering::Relaxed);
    r1.join().unwrap();
    r2.join().unwrap();
    assert_eq!(core.chunks_touched(), 2, "both CPUs' chunks are allocated by the end");
}

#[test]
fn model_per_cpu_chunk_publication() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    loom::model(reader_on_a_just_published_chunk_is_waited_for);
}

#[test]
fn model_per_cpu_chunk_publication_fails_when_touched_after_publish() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    must_fail(Fault::ChunkTouchedLate, reader_on_a_just_published_chunk_is_waited_for);
}
