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

/// Run `model` with `fault` switched on and require loom to find a failure,
/// and the failure to be the model's own assertion (`expected` is a part of
/// its message): a panic of another kind, such as loom's branch limit, proves
/// nothing about the model.
fn must_fail(fault: Fault, expected: &str, model: fn()) {
    must_fail_within(fault, None, expected, model)
}

/// As `must_fail`, exploring up to `preemptions` preemptions (the failing
/// schedule may need more than `LOOM_MAX_PREEMPTIONS`).
fn must_fail_within(fault: Fault, preemptions: Option<usize>, expected: &str, model: fn()) {
    // SAFETY: the models free nothing on the strength of a grace period
    // (their objects are atomics the model checks), loom is the only place
    // RelaxedPublish may be on, and `SERIAL` keeps every other model from
    // running while the fault is on.
    unsafe { set_fault(fault, true) };
    let r = std::panic::catch_unwind(|| {
        let mut b = loom::model::Builder::new();
        if preemptions.is_some() {
            b.preemption_bound = preemptions;
        }
        b.check(model)
    });
    // SAFETY: switching a fault off is always sound.
    unsafe { set_fault(fault, false) };
    let payload = match r {
        Ok(()) => panic!("loom found no failure with {fault:?}: the model cannot see that bug"),
        Err(p) => p,
    };
    let msg = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("<a panic without a message>");
    assert!(
        msg.contains(expected),
        "loom failed with {fault:?}, but not on the model's assertion {expected:?}: {msg}"
    );
}

const SYNC_MODEL_FAILS: &str = "reader saw a freed object: grace period too short";

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
            assert_eq!(state, LIVE, "{SYNC_MODEL_FAILS}");
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
        SYNC_MODEL_FAILS,
        reader_never_sees_an_object_freed_after_synchronize,
    );
}

#[test]
fn model_reader_vs_synchronize_fails_without_second_scan() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    must_fail(
        Fault::SkipSecondScan,
        SYNC_MODEL_FAILS,
        reader_never_sees_an_object_freed_after_synchronize,
    );
}

const CANCEL_MODEL_FAILS: &str = "reader Z saw a freed object: readers cancelled out";

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
            assert_eq!(objects[which].load(Ordering::Relaxed), LIVE, "{CANCEL_MODEL_FAILS}");
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
    must_fail_within(
        Fault::NoHeavyFence,
        Some(3),
        CANCEL_MODEL_FAILS,
        readers_cannot_cancel_out_in_a_check,
    );
}

// No heavy-fence twin for this model: when the updater drives its own grace
// period, the SeqCst fence in `snap` (same thread, before the scans) already
// orders the update before the lock sums, so under loom (where every fence is
// SeqCst) removing A cannot be seen here. With the membarrier pair the reader
// side is only a compiler fence and A is the one fence that pairs with it;
// loom cannot model membarrier. A's necessity is shown only by
// `model_readers_cannot_cancel_out_fails_without_heavy_fence`. (The
// `call_srcu` model, where the grace period runs on another thread, does not
// fail without A either: loom found no failure there with `NoHeavyFence`.)

const COOKIE_MODEL_FAILS: &str = "cookie completed with its reader still inside";

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
    // Let the updater get ahead: without this yield loom explored a single
    // schedule of this model (the check first), so its negative twin could
    // not fail.
    thread::yield_now();
    assert!(!core.done(c), "{COOKIE_MODEL_FAILS}");
    core.unlock_on(0, idx);
    updater.join().unwrap();
    assert!(core.done(c), "cookie not complete after a full synchronize");
}

#[test]
fn model_polled_cookie() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    loom::model(cookie_is_not_complete_while_a_preexisting_reader_is_inside);
}

#[test]
fn model_polled_cookie_fails_without_second_scan() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    must_fail(
        Fault::SkipSecondScan,
        COOKIE_MODEL_FAILS,
        cookie_is_not_complete_while_a_preexisting_reader_is_inside,
    );
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

const CALLBACK_MODEL_FAILS: &str = "callback freed an object too early";

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
            assert_eq!(objects[which].load(Ordering::Relaxed), LIVE, "{CALLBACK_MODEL_FAILS}");
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
    cc.barrier_begin(0).wait();
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
    must_fail(
        Fault::NoReaderFence,
        CALLBACK_MODEL_FAILS,
        call_srcu_then_barrier_waits_for_the_callback,
    );
}

const ATTACH_MODEL_FAILS: &str = "saw a block before it was fully built";
/// Loom's report of a load that is not ordered after the object's creation.
const ATTACH_RACE_DETECTED: &str = "Causality violation: Concurrent load and mut accesses";

/// Two first users race to attach a static domain: exactly one block is
/// built, both get it, and both see it fully built.
fn two_first_users_attach_once() {
    let cell = Arc::new(AttachCell::default());
    let built = Arc::new(AtomicUsize::new(0));
    let other = {
        let (cell, built) = (cell.clone(), built.clone());
        thread::spawn(move || {
            let v = cell.get(&built);
            assert_eq!(v.index(), INITIAL_INDEX, "{ATTACH_MODEL_FAILS}");
            v as *const _ as usize
        })
    };
    let mine = cell.get(&built);
    assert_eq!(mine.index(), INITIAL_INDEX, "{ATTACH_MODEL_FAILS}");
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
    // Loom's own race detector fires first: a user loads the block's
    // atomics, whose construction is not ordered before the load without the
    // Release/Acquire publication. That is the bug itself, so its message is
    // the one required (the model's assertion is a second line of defence).
    must_fail(Fault::RelaxedPublish, ATTACH_RACE_DETECTED, two_first_users_attach_once);
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
    must_fail(
        Fault::ChunkTouchedLate,
        "the scan missed the chunk",
        reader_on_a_just_published_chunk_is_waited_for,
    );
}

const SLAB_VALUES_FAIL: &str = "a slot's value was lost";

/// Two slots of one block (under loom a block has two), read out and given
/// back by two threads at once: whichever gives back the last reference
/// recycles the block, after the other's read (loom's race checker sees the
/// recycling write every slot).
fn slab_block_freed_after_every_slot_read() {
    let cache = usrcu::__loom::SlabCache::new();
    let a = cache.put(11);
    let b = cache.put(22);
    cache.retire_cached();
    let t = thread::spawn(move || a.take());
    let vb = b.take();
    let va = t.join().unwrap();
    cache.drain();
    assert!(va == 11 && vb == 22, "{SLAB_VALUES_FAIL}");
}

#[test]
fn model_slab_block_freed_after_every_slot_read() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    loom::model(slab_block_freed_after_every_slot_read);
}

#[test]
fn model_slab_block_freed_after_every_slot_read_fails_with_relaxed_release() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    must_fail(
        Fault::SlabRelaxedRelease,
        "Causality violation",
        slab_block_freed_after_every_slot_read,
    );
}

/// Two producers share one cache (two threads on one CPU's intake stack):
/// each carves a slot with a CAS on the cache's packed block-and-index word
/// (installing a block when the word is empty), and gives its slot back;
/// the cached block is retired at the end. The carving count of a block passed from one
/// producer to the other must be seen by the next taker (loom's race checker
/// watches it), and every block must be freed exactly once.
fn slab_cache_handoff() {
    let cache = Arc::new(usrcu::__loom::SlabCache::new());
    let c2 = cache.clone();
    let t = thread::spawn(move || {
        let s = c2.put(1);
        s.take()
    });
    let s = cache.put(2);
    let v2 = s.take();
    let v1 = t.join().unwrap();
    cache.drain();
    assert!(v1 == 1 && v2 == 2, "{SLAB_VALUES_FAIL}");
}

#[test]
fn model_slab_cache_handoff() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    loom::model(slab_cache_handoff);
}

#[test]
fn model_slab_cache_handoff_fails_with_relaxed_swaps() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    must_fail(Fault::SlabRelaxedHandoff, "Causality violation", slab_cache_handoff);
}

/// A block whose slots all ran is recycled by the invoker while a producer
/// needs a block: if the producer takes the recycled one, the recycling
/// (and the slot reads before it) happened before the producer writes its
/// slots again.
fn slab_recycled_block_reused() {
    let cache = Arc::new(usrcu::__loom::SlabCache::new());
    let a = cache.put(1);
    let b = cache.put(2);
    // Relaxed on purpose: the producer waits for the recycling without
    // synchronizing with it, so that only the free list can order them.
    let recycled = Arc::new(AtomicUsize::new(0));
    let r2 = recycled.clone();
    let t = thread::spawn(move || {
        let v = a.take() + b.take();
        r2.store(1, Ordering::Relaxed);
        v
    });
    while recycled.load(Ordering::Relaxed) == 0 {
        thread::yield_now();
    }
    let c = cache.put(3);
    let vc = c.take();
    let vab = t.join().unwrap();
    cache.drain();
    assert!(vab == 3 && vc == 3, "{SLAB_VALUES_FAIL}");
}

#[test]
fn model_slab_recycled_block_reused() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    loom::model(slab_recycled_block_reused);
}

#[test]
fn model_slab_recycled_block_reused_fails_with_relaxed_free_list() {
    let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    must_fail(
        Fault::SlabRelaxedRecycle,
        "Causality violation",
        slab_recycled_block_reused,
    );
}
