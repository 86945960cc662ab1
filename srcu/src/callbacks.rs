//! Callbacks: the intrusive head, per-CPU queues, ready batches, `barrier`.
//!
//! Each possible CPU has a FIFO queue of [`CallbackHead`]s behind its own
//! lock. `call_srcu` takes the grace-period cookie *under* the queue lock, so
//! cookies never decrease along a queue and the ready callbacks of a queue
//! are a prefix. The runtime takes the ready prefixes of all queues, merges
//! them by (cookie, enqueue time) and invokes them in that order: grace-period
//! order, and in enqueue order (a per-domain ticket taken under the queue
//! lock) within a grace period, so FIFO for callbacks that one thread queued
//! even if it migrated between CPUs in between.
//!
//! `barrier` puts a marker callback behind the callbacks of every non-empty
//! queue and waits for all markers to run; a marker runs only after every
//! callback queued before it on its queue.

use crate::grace_period::Cookie;
use crate::sync::{lock, AtomicU64, AtomicUsize, Mutex, Ordering};

/// An intrusive callback head (the kernel's `rcu_head`): embed it in your own
/// `#[repr(C)]` object and pass it to [`crate::Srcu::call_srcu_raw`]; the
/// function receives the head back after a grace period.
#[repr(C)]
#[derive(Debug)]
pub struct CallbackHead {
    next: *mut CallbackHead,
    func: Option<unsafe extern "C" fn(*mut CallbackHead)>,
    cookie: u64,
    stamp: u64,
}

impl CallbackHead {
    /// An unqueued head.
    pub const fn new() -> CallbackHead {
        CallbackHead {
            next: std::ptr::null_mut(),
            func: None,
            cookie: 0,
            stamp: 0,
        }
    }
}

impl Default for CallbackHead {
    fn default() -> Self {
        CallbackHead::new()
    }
}

#[derive(Debug)]
struct Queue {
    head: *mut CallbackHead,
    tail: *mut CallbackHead,
}

// SAFETY: the queue only links heads that callers handed over with
// `call_srcu_raw`, whose contract makes them ours (and Send) until invoked.
unsafe impl Send for Queue {}

#[repr(align(64))]
#[derive(Debug)]
struct Padded<T>(T);

/// A ready callback, detached from its queue.
pub(crate) struct Ready(*mut CallbackHead);

// SAFETY: see `Queue`.
unsafe impl Send for Ready {}

/// The per-CPU callback queues of one domain.
#[derive(Debug)]
pub(crate) struct Callbacks {
    queues: Box<[Padded<Mutex<Queue>>]>,
    /// Enqueue order across all queues, taken under the queue's lock so that
    /// it grows along every queue (a barrier marker never sorts before a
    /// callback queued ahead of it).
    next_stamp: AtomicU64,
    /// Barrier markers ever queued (to tell callbacks from markers in stats).
    markers: AtomicU64,
    /// Queued and not yet finished (including the one running).
    pending: AtomicUsize,
}

impl Callbacks {
    pub(crate) fn new(nr: usize) -> Callbacks {
        let queues = (0..nr)
            .map(|_| {
                Padded(Mutex::new(Queue {
                    head: std::ptr::null_mut(),
                    tail: std::ptr::null_mut(),
                }))
            })
            .collect();
        Callbacks {
            queues,
            next_stamp: AtomicU64::new(0),
            markers: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
        }
    }

    /// Callbacks ever queued with `call_srcu` (tickets minus barrier markers).
    pub(crate) fn queued_callbacks(&self) -> u64 {
        // Relaxed: statistics. Markers are counted before their tickets are
        // taken, so read them first; saturate against a racing barrier.
        let markers = self.markers.load(Ordering::Relaxed);
        self.next_stamp.load(Ordering::Relaxed).saturating_sub(markers)
    }

    /// Callbacks queued and not yet finished.
    pub(crate) fn pending(&self) -> usize {
        // Acquire: pairs with the Release decrement after a callback ran, so
        // a caller that sees 0 sees the callbacks' effects.
        self.pending.load(Ordering::Acquire)
    }

    /// Queue `head` on `cpu`'s queue with a cookie taken under the lock.
    ///
    /// # Safety
    /// `head` is valid, not queued elsewhere, and stays valid until `func`
    /// has been called with it.
    pub(crate) unsafe fn enqueue(
        &self,
        cpu: usize,
        head: *mut CallbackHead,
        func: unsafe extern "C" fn(*mut CallbackHead),
        cookie: impl FnOnce() -> Cookie,
    ) -> Cookie {
        let q = &self.queues[cpu % self.queues.len()].0;
        // Relaxed: pending is only a count; the queue lock orders the data.
        self.pending.fetch_add(1, Ordering::Relaxed);
        let mut q = lock(q);
        let c = cookie();
        // Relaxed: a ticket; the queue lock orders it with this queue's
        // other entries, and every queue's lock is taken after its ticket.
        let stamp = self.next_stamp.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller hands `head` over to us.
        unsafe {
            (*head).next = std::ptr::null_mut();
            (*head).func = Some(func);
            (*head).cookie = c.0;
            (*head).stamp = stamp;
        }
        if q.tail.is_null() {
            q.head = head;
        } else {
            // SAFETY: `tail` is a queued head, owned by this queue.
            unsafe { (*q.tail).next = head };
        }
        q.tail = head;
        c
    }

    /// The smallest cookie of any queued callback.
    pub(crate) fn oldest_cookie(&self) -> Option<Cookie> {
        let mut min: Option<u64> = None;
        for q in self.queues.iter() {
            let q = lock(&q.0);
            if !q.head.is_null() {
                // SAFETY: `head` is a queued head owned by this queue.
                let c = unsafe { (*q.head).cookie };
                min = Some(min.map_or(c, |m| m.min(c)));
            }
        }
        min.map(Cookie)
    }

    /// Detach every callback whose grace period is complete, in invocation
    /// order.
    pub(crate) fn take_ready(&self, done: impl Fn(Cookie) -> bool) -> Vec<Ready> {
        let mut out = Vec::new();
        for q in self.queues.iter() {
            let mut q = lock(&q.0);
            // SAFETY: every head reachable from `q.head` is owned by the queue.
            unsafe {
                while !q.head.is_null() && done(Cookie((*q.head).cookie)) {
                    let h = q.head;
                    q.head = (*h).next;
                    if q.head.is_null() {
                        q.tail = std::ptr::null_mut();
                    }
                    out.push(Ready(h));
                }
            }
        }
        // SAFETY: detached heads are ours until invoked.
        out.sort_by_key(|r| unsafe { ((*r.0).cookie, (*r.0).stamp) });
        out
    }

    /// Invoke detached callbacks in order. The callbacks' functions catch
    /// their own panics (see `domain.rs`'s boxed trampoline); an `extern "C"`
    /// function cannot unwind into us.
    pub(crate) fn invoke(&self, ready: Vec<Ready>) -> usize {
        let n = ready.len();
        for Ready(h) in ready {
            // SAFETY: `h` was queued with a function by `enqueue`; the head is
            // valid until this call, which hands it back to its owner.
            let f = unsafe { (*h).func.take().expect("queued callback has a function") };
            let marker = std::ptr::fn_addr_eq(f, marker_fn as unsafe extern "C" fn(*mut CallbackHead));
            if marker {
                // A barrier marker leaves the count before it wakes its
                // waiter, so that a cleanup right after `barrier` sees 0.
                // Release: as below.
                self.pending.fetch_sub(1, Ordering::Release);
            }
            // SAFETY: as above.
            unsafe { f(h) };
            if !marker {
                // Release: pairs with the Acquire in `pending`: the callback's
                // effects are visible to whoever sees the count drop.
                self.pending.fetch_sub(1, Ordering::Release);
            }
        }
        n
    }

    /// Number of queues (= slots).
    pub(crate) fn nr_queues(&self) -> usize {
        self.queues.len()
    }

    /// Which queues currently hold callbacks (visits every queue).
    pub(crate) fn non_empty(&self) -> Vec<usize> {
        self.queues
            .iter()
            .enumerate()
            .filter(|(_, q)| !lock(&q.0).head.is_null())
            .map(|(i, _)| i)
            .collect()
    }
}

impl Drop for Callbacks {
    fn drop(&mut self) {
        // Callbacks still queued here belong to a domain that was cleaned up
        // successfully, which requires an empty queue; a leaked domain is
        // never dropped. Nothing to free: heads are owned by their callers.
        debug_assert_eq!(self.pending(), 0);
    }
}

/// Shared by the markers of one `barrier` and its waiter.
#[derive(Debug)]
struct BarrierSync {
    remaining: AtomicUsize,
    done: Mutex<bool>,
    cv: crate::sync::Condvar,
}

#[repr(C)]
#[derive(Debug)]
struct Marker {
    head: CallbackHead,
    sync: *const BarrierSync,
}

unsafe extern "C" fn marker_fn(h: *mut CallbackHead) {
    // SAFETY: `h` is the head of a `Marker` (first field, repr(C)) whose
    // `Barrier` waits for this call before freeing it.
    let sync = unsafe { &*(*(h as *mut Marker)).sync };
    // AcqRel: the last marker's decrement acquires the earlier markers' and
    // releases to the waiter (which loads with Acquire).
    if sync.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
        let mut d = lock(&sync.done);
        *d = true;
        sync.cv.notify_all();
    }
}

/// A `barrier` in progress: markers queued, waiting for them to run.
#[derive(Debug)]
pub(crate) struct Barrier {
    sync: crate::sync::Arc<BarrierSync>,
    /// Owned here, never read: the queues point into it until each marker ran.
    _markers: Box<[Marker]>,
    waited: bool,
}

// SAFETY: the raw pointers in `markers` point into `sync`, which the Barrier
// owns; markers are only touched by the runtime through the queues.
unsafe impl Send for Barrier {}

impl Callbacks {
    /// Start a barrier: visit every queue and put a marker behind the
    /// callbacks of each non-empty one. `None` if nothing is pending at all.
    pub(crate) fn barrier_begin(&self, cookie: impl Fn() -> Cookie) -> Option<Barrier> {
        let mut targets = self.non_empty();
        if targets.is_empty() {
            if self.pending() == 0 {
                return None;
            }
            // A callback is running right now: a marker behind it on any
            // queue runs after it, since invocation is serial.
            targets.push(0);
        }
        let sync = crate::sync::Arc::new(BarrierSync {
            remaining: AtomicUsize::new(targets.len()),
            done: Mutex::new(false),
            cv: crate::sync::Condvar::new(),
        });
        let sp: *const BarrierSync = &*sync;
        // Relaxed: statistics; counted before the tickets so that the
        // difference never underflows.
        self.markers.fetch_add(targets.len() as u64, Ordering::Relaxed);
        let mut markers: Box<[Marker]> = targets
            .iter()
            .map(|_| Marker {
                head: CallbackHead::new(),
                sync: sp,
            })
            .collect();
        for (m, &q) in markers.iter_mut().zip(&targets) {
            // SAFETY: the marker lives in `markers`, which the Barrier keeps
            // (and does not move: a boxed slice) until every marker ran.
            unsafe { self.enqueue(q, &mut m.head, marker_fn, &cookie) };
        }
        Some(Barrier {
            sync,
            _markers: markers,
            waited: false,
        })
    }
}

impl Barrier {
    /// Block until every marker ran.
    pub(crate) fn wait(mut self) {
        self.wait_inner();
    }

    fn wait_inner(&mut self) {
        if self.waited {
            return;
        }
        let mut d = lock(&self.sync.done);
        while !*d {
            d = match self.sync.cv.wait(d) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
        }
        drop(d);
        self.waited = true;
    }
}

impl Drop for Barrier {
    fn drop(&mut self) {
        // Never free markers that are still queued.
        self.wait_inner();
    }
}

// Field offsets for the ABI fingerprint (`abi.rs`): every field, in
// declaration order.
impl CallbackHead {
    pub(crate) const FIELD_OFFSETS: [usize; 4] = [
        std::mem::offset_of!(CallbackHead, next),
        std::mem::offset_of!(CallbackHead, func),
        std::mem::offset_of!(CallbackHead, cookie),
        std::mem::offset_of!(CallbackHead, stamp),
    ];
}
