//! Callbacks: the intrusive head, lock-free per-CPU intake, the ordered
//! list the runtime runs from, and `barrier`.
//!
//! # Order
//!
//! Every callback (and every barrier marker) takes a *ticket* from one
//! per-domain counter after its cookie. Callbacks run in ticket order, each
//! after its own grace period: the runtime runs the longest prefix of
//! tickets whose cookies are complete against **one snapshot** of the
//! completed sequence per pass. So:
//!
//! - a thread's callbacks run in the order it queued them, on whatever CPUs
//!   it queued them (its tickets grow);
//! - a callback whose `call_srcu` returned before another's began runs first
//!   (real-time order, across threads);
//! - grace-period order holds for every pair so ordered, and a callback never
//!   runs before its own grace period, even when another thread completes
//!   grace periods while the runtime takes a batch.
//!
//! # Intake
//!
//! `call_srcu` pushes its head on one of a few per-CPU stacks with a CAS
//! (the enqueuing thread is the only writer of its head; the runtime detaches
//! whole stacks with a swap), so the enqueue path takes no lock. Each CPU has
//! `LANES` stacks, used in turn by ticket: the runtime walks the detached
//! chains side by side, so the cache misses of reading heads written on
//! another CPU overlap instead of queueing behind each other, and places
//! each item at its ticket's offset to put the pass in order. A ticket
//! taken but not yet visible in a stack is a *gap*; the runtime stops at a
//! gap and retries it shortly: the push it waits for is a few instructions
//! away.
//!
//! | counter        | written by                        | meaning                          |
//! |----------------|-----------------------------------|----------------------------------|
//! | `next_ticket`  | every enqueue (SeqCst `fetch_add`)| tickets handed out               |
//! | `done_tickets` | the one invoker of the domain     | every ticket below it has run    |
//!
//! `pending = next_ticket - done_tickets`: incremented before the push, so it
//! never runs behind a queued callback, and the runtime keeps the domain
//! scheduled until it is zero (the wake-up handshake in `runtime/driver.rs`).
//!
//! # Barrier
//!
//! `barrier` queues one marker, with a ticket like any callback and no
//! grace period of its own, and waits until it runs: every callback queued
//! before the `barrier` call has a smaller ticket and runs before it. A
//! timed-out barrier drops its handle; the marker is reclaimed when it runs.
//! A barrier that finds the newest ticket is a marker that has not run yet
//! waits for that marker instead of queueing its own (the callbacks before
//! it are the same), so timed-out barriers behind a blocked callback do not
//! pile up.

use crate::grace_period::Cookie;
use crate::sync::{lock, AtomicBool, AtomicPtr, AtomicU64, Mutex, Ordering};

/// An intrusive callback head (the kernel's `rcu_head`): embed it in your own
/// `#[repr(C)]` object and pass it to [`crate::Srcu::call_srcu_raw`]; the
/// function receives the head back after a grace period.
#[repr(C)]
#[derive(Debug)]
pub struct CallbackHead {
    next: *mut CallbackHead,
    func: Option<unsafe extern "C" fn(*mut CallbackHead)>,
    cookie: u64,
    ticket: u64,
}

impl CallbackHead {
    /// An unqueued head.
    pub const fn new() -> CallbackHead {
        CallbackHead {
            next: std::ptr::null_mut(),
            func: None,
            cookie: 0,
            ticket: 0,
        }
    }
}

/// The bit of a queued head's `ticket` that says it is a runtime slot,
/// whose closure's first word `collect` reads as a prefetch hint (tickets
/// never reach bit 63).
const SLOT_BIT: u64 = 1 << 63;

#[cfg(not(usrcu_loom))]
std::thread_local! {
    /// The slot this thread took last (`Callbacks::take_slot`) and has not
    /// queued yet: `call_srcu` takes a slot and queues it on one thread,
    /// with no code of the caller's between, so `enqueue` knows a slot by
    /// its address and never reads a caller's head to tell. No destructor:
    /// usable until the thread ends.
    static FRESH_SLOT: std::cell::Cell<*mut CallbackHead> = const { std::cell::Cell::new(std::ptr::null_mut()) };
}

impl Default for CallbackHead {
    fn default() -> Self {
        CallbackHead::new()
    }
}

#[repr(align(64))]
#[derive(Debug)]
struct Padded<T>(T);

/// One intake stack, and the block that small closures queued on its CPU
/// take their slots from (`slab.rs`): one cache line, which an enqueue
/// writes anyway.
#[derive(Debug)]
struct Intake {
    top: AtomicPtr<CallbackHead>,
    slab: crate::sync::AtomicUsize,
}

/// Most intake stacks per domain: enough to keep enqueuers on different
/// CPUs off each other's cache lines, and few enough that a collection (and
/// the memory of a domain) does not grow with the possible CPUs.
pub(crate) const MAX_STACKS: usize = 32;

/// Intake stacks per CPU (when `MAX_STACKS` allows): a CPU's callbacks go
/// to its lanes in turn, by ticket, so that `collect` walks several short
/// chains side by side instead of one long one (see there).
const LANES: usize = 4;

/// A queued callback as the runtime keeps it, copied out of its head so that
/// ordering and the inventory never dereference a head that may be running.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Item {
    pub(crate) ticket: u64,
    pub(crate) cookie: u64,
    pub(crate) head: *mut CallbackHead,
    pub(crate) func: unsafe extern "C" fn(*mut CallbackHead),
    /// For a runtime slot, the first word of its closure (a `Box`'s
    /// address, say): `run_batch` prefetches it a few callbacks ahead, as it
    /// does the heads. Never dereferenced; 0 when there is none.
    pub(crate) hint: usize,
}

// SAFETY: an item only refers to a head that `call_srcu_raw`'s contract
// hands to the runtime (Send, valid until its function is called).
unsafe impl Send for Item {}

/// The runtime's side of the queue: collected callbacks in ticket order, and
/// the batch being invoked. Only touched under `Callbacks::ordered`.
#[derive(Debug, Default)]
pub(crate) struct Ordered {
    /// Collected, not yet taken; sorted by ticket.
    held: std::collections::VecDeque<Item>,
    /// The next ticket to run.
    next_run: u64,
    /// The batch the invoker is running; `batch[batch_pos..]` have not
    /// finished (read by the inventory under the lock, by the invoker
    /// without it; only replaced under the lock).
    batch: Vec<Item>,
    /// `collect`'s buffer, kept between passes so that a steady stream of
    /// callbacks does not allocate (and free) a large buffer per pass.
    fresh: Vec<Item>,
    /// `collect`'s merge buffers (kept likewise).
    merged: Vec<Item>,
    tmp: Vec<Item>,
    /// Passes that left nothing queued, with no large pass between them
    /// ([`SHRINK_AFTER`]; a light pass between them leaves the count).
    calm: u32,
    /// The most callbacks one pass's buffers, and `held`, needed in the
    /// current window of [`SHRINK_WINDOW`], and when it began.
    window_need: usize,
    window_held: usize,
    window_start: Option<std::time::Instant>,
    /// Unit tests shorten [`SHRINK_WINDOW`].
    #[cfg(test)]
    window_len: Option<std::time::Duration>,
}

/// When the invoker's buffers are shrunk back to about what passes need
/// (never below 4,096 callbacks): not at the first pass that needs less
/// than a quarter of them, as pass sizes swing within a steady stream (one
/// pass takes what a grace period let through, the next a handful), and
/// shrinking then made the large passes allocate their buffers again and
/// again, fresh pages the kernel faults in and zeroes (100,000 to 258,000
/// page faults in a run of `call_srcu_throughput`'s boxed bench, 11,000 to
/// 14,000 without shrinking). They are shrunk
/// - after `SHRINK_AFTER` calm passes (each took every callback queued:
///   the stream has stopped) with no large pass between them (one that
///   took or left more than [`TRIM_FLOOR`] callbacks; light passes between
///   them neither count nor break the run), to what the last pass needed;
///   and
/// - at the end of every [`SHRINK_WINDOW`] of passes in which no pass
///   needed a quarter of them, to the window's largest need (a burst
///   followed by a lighter stream that never stops gives the burst's
///   memory back within about a window).
///
/// A domain that goes quiet is visited once more by the driver
/// ([`TRIM_FLOOR`]).
const SHRINK_AFTER: u32 = 3;

/// The window of the second rule of [`SHRINK_AFTER`]: a steady stream
/// reallocates its buffers at most once per window. A window counted in
/// passes was tried: 64 passes still let the boxed bench's occasional large
/// passes (a grace period that took longer) reallocate, 121,000 and
/// 229,000 page faults in two runs.
const SHRINK_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// The floor of the rules of [`SHRINK_AFTER`]: a steady stream keeps at
/// least this many callbacks' worth in each buffer.
pub(crate) const SPARE_FLOOR: usize = 4096;

/// Neither rule of [`SHRINK_AFTER`] fires on a domain that goes quiet
/// before its third calm pass, and both keep [`SPARE_FLOOR`]: nothing
/// visits a quiet domain's queue, so a burst followed by one more update
/// kept the burst's buffers, 56 MiB after 400,000 callbacks, for the
/// domain's lifetime (`redteam6_buffers.rs`), and 32 domains quiet after
/// bursts kept 14 to 41 MiB between them (red team 14). Every pass that
/// leaves the queue empty with a buffer above this many callbacks' worth
/// (10 KiB) therefore asks the driver to come back after
/// `driver::TRIM_AFTER` and, once nothing was queued for that long, free
/// them all ([`Callbacks::trim_if_quiet`]).
pub(crate) const TRIM_FLOOR: usize = 256;

/// Whether any of `o`'s buffers holds more than [`TRIM_FLOOR`] callbacks'
/// worth.
fn holds_buffers(o: &Ordered) -> bool {
    o.batch.capacity() > TRIM_FLOOR
        || o.held.capacity() > TRIM_FLOOR
        || [&o.fresh, &o.merged, &o.tmp].iter().any(|v| v.capacity() > TRIM_FLOOR)
}

/// The invoker buffers of a quiet domain, taken out of its queue by
/// [`Callbacks::trim_if_quiet`], to be dropped (freed) with no lock held.
#[derive(Debug)]
#[allow(dead_code)] // held only to be dropped
pub(crate) struct TakenBuffers(Vec<Item>, std::collections::VecDeque<Item>, [Vec<Item>; 3]);

/// What [`Callbacks::trim_if_quiet`] did.
#[derive(Debug)]
pub(crate) enum Trimmed {
    /// The buffers were taken out of the queue: the caller drops them.
    Taken(TakenBuffers),
    /// None held more than [`TRIM_FLOOR`] callbacks' worth: nothing to do.
    Small,
    /// An invoker holds the domain, or something queued waits to be run:
    /// the pass that runs it asks again when it ends (`driver::trim_later`).
    Busy,
    /// Quiet now, but something was queued (and run) since `tickets_then`:
    /// look again later, measuring the quiet from now. The pass that ran it
    /// ended while this trim was pending, so it asked for none.
    QuietNotLongEnough,
}

/// The callback queue of one domain.
#[derive(Debug)]
pub(crate) struct Callbacks {
    stacks: Box<[Padded<Intake>]>,
    /// On a line of its own: every enqueue writes it, and the invoker
    /// writes `done_tickets` and `batch_pos` after every callback.
    next_ticket: Padded<AtomicU64>,
    done_tickets: AtomicU64,
    /// Barrier markers ever queued (to tell callbacks from markers in stats).
    markers: AtomicU64,
    /// The newest barrier marker, by ticket, and its waiters' sync: a
    /// barrier that finds it still the newest ticket and not run waits for
    /// it instead of queueing another (timed-out barriers behind a blocked
    /// callback would otherwise pile up one marker each).
    last_marker: Mutex<Option<(u64, crate::sync::Arc<BarrierSync>)>>,
    ordered: Mutex<Ordered>,
    /// Index in `Ordered::batch` of the item running now.
    batch_pos: AtomicU64,
    /// Free slot blocks (`slab.rs`); on a line of its own, written by the
    /// invoker when a block's last slot has run.
    recycle: Padded<crate::slab::Recycle>,
}

/// What one pass of [`Callbacks::take_ready`] found.
#[derive(Debug, Default)]
pub(crate) struct Take {
    /// The callbacks to run now, in order (also left in `Ordered::batch`).
    pub(crate) ready: usize,
    /// A ticket was handed out whose head is not visible yet: retry soon.
    pub(crate) gap: bool,
    /// The smallest cookie the first callback left behind waits for.
    pub(crate) waiting_for: Option<Cookie>,
}

impl Callbacks {
    /// A queue with `stacks` intake stacks (rounded to 1..=MAX_STACKS).
    pub(crate) fn new(stacks: usize) -> Callbacks {
        let n = stacks.saturating_mul(LANES).clamp(1, MAX_STACKS);
        Callbacks {
            stacks: (0..n)
                .map(|_| {
                    Padded(Intake {
                        top: AtomicPtr::new(std::ptr::null_mut()),
                        slab: crate::sync::AtomicUsize::new(0),
                    })
                })
                .collect(),
            next_ticket: Padded(AtomicU64::new(0)),
            done_tickets: AtomicU64::new(0),
            markers: AtomicU64::new(0),
            last_marker: Mutex::new(None),
            ordered: Mutex::new(Ordered::default()),
            batch_pos: AtomicU64::new(0),
            recycle: Padded(crate::slab::Recycle::new()),
        }
    }

    /// Bytes this queue holds while idle, but for the invoker's ordering
    /// buffers (`Ordered`), which follow the size of recent passes.
    pub(crate) fn footprint(&self) -> usize {
        std::mem::size_of::<Callbacks>()
            + self.stacks.len() * std::mem::size_of::<Padded<Intake>>()
            + self
                .stacks
                .iter()
                .map(|s| crate::slab::cached_bytes(&s.0.slab))
                .sum::<usize>()
            + crate::slab::recycled_bytes(&self.recycle.0)
    }

    /// A callback slot for a small closure queued from `cpu` (`slab.rs`).
    pub(crate) fn take_slot(&self, cpu: usize) -> *mut CallbackHead {
        let h = crate::slab::take_slot(&self.stacks[self.lane(cpu, 0)].0.slab, &self.recycle.0);
        #[cfg(not(usrcu_loom))]
        FRESH_SLOT.with(|f| f.set(h));
        h
    }

    /// The intake stack of `cpu`'s lane for `ticket`.
    fn lane(&self, cpu: usize, ticket: u64) -> usize {
        (cpu.wrapping_mul(LANES) + (ticket % LANES as u64) as usize) % self.stacks.len()
    }

    /// Callbacks ever queued with `call_srcu` (tickets minus barrier markers).
    pub(crate) fn queued_callbacks(&self) -> u64 {
        // Markers are counted after their tickets are taken: read them
        // first. Acquire: pairs with the Release count in `barrier_begin`,
        // so every marker counted here has its ticket in the load below and
        // the difference counts no marker as missing (a marker whose count
        // is not seen yet is one callback too many, for a moment).
        let markers = self.markers.load(Ordering::Acquire);
        self.next_ticket.0.load(Ordering::Relaxed).saturating_sub(markers)
    }

    /// Tickets handed out (callbacks and markers).
    pub(crate) fn tickets(&self) -> u64 {
        // SeqCst: read after the driver's handshake fence (`wake.rs`), and
        // ordered with the enqueuers' SeqCst ticket RMWs.
        self.next_ticket.0.load(Ordering::SeqCst)
    }

    /// Callbacks (and markers) queued and not yet finished.
    pub(crate) fn pending(&self) -> u64 {
        // Acquire: pairs with the Release store in `finished`, so a caller
        // that sees a ticket done sees the callback's effects. `done` first:
        // it never passes `next`, so the difference cannot underflow.
        let done = self.done_tickets.load(Ordering::Acquire);
        self.tickets() - done
    }

    /// Queue `head` on `cpu`'s intake stack; returns its ticket. The cookie
    /// comes from `cookie`, called after the ticket is taken; it must begin
    /// with a SeqCst fence (`GpState::snap` does), which is the producer's
    /// fence of the wake-up handshake (`wake.rs`): after `enqueue` returns,
    /// the caller may check `Wake::needs_kick` directly.
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
    ) -> u64 {
        // The ticket is counted before the push, so `pending` never runs
        // behind the link; this RMW is the work the wake-up handshake
        // publishes (`wake.rs`). SeqCst: also totally orders tickets with the
        // cookies' sequence reads. Then the SeqCst fence (see above); on
        // x86-64 one locked instruction is both (`sync::fetch_add_then_fence`).
        let ticket = crate::sync::fetch_add_then_fence(&self.next_ticket.0, 1);
        let cookie = cookie();
        // The slot this thread just took (a caller's head is never at a
        // slot's address: the slot's memory is the runtime's, live). Only a
        // hint rides on it: a signal handler's `call_srcu` in between
        // costs the outer slot its prefetch, nothing else.
        #[cfg(not(usrcu_loom))]
        let slot = FRESH_SLOT.with(|f| f.get() == head && f.replace(std::ptr::null_mut()) == head);
        #[cfg(usrcu_loom)]
        let slot = false;
        // SAFETY: the caller hands `head` over to us.
        unsafe {
            (*head).func = Some(func);
            (*head).cookie = cookie.0;
            (*head).ticket = ticket | if slot { SLOT_BIT } else { 0 };
        }
        let top = &self.stacks[self.lane(cpu, ticket)].0.top;
        // Relaxed: the CAS below re-checks the value.
        let mut cur = top.load(Ordering::Relaxed);
        loop {
            // SAFETY: as above; not yet visible to anyone else.
            unsafe { (*head).next = cur };
            // Release: publishes the head's fields to the runtime's Acquire
            // swap in `collect`.
            match top.compare_exchange_weak(cur, head, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return ticket,
                Err(now) => cur = now,
            }
        }
    }

    /// Move everything from the intake stacks into `o.held`, in ticket order.
    fn collect(&self, o: &mut Ordered) {
        let mut fresh = std::mem::take(&mut o.fresh);
        let mut merged = std::mem::take(&mut o.merged);
        let mut tmp = std::mem::take(&mut o.tmp);
        fresh.clear();
        merged.clear();
        // Detach every non-empty stack.
        let mut chains = [std::ptr::null_mut::<CallbackHead>(); MAX_STACKS];
        let mut n = 0usize;
        for s in self.stacks.iter() {
            // Relaxed pre-check: an empty stack costs one load, no RMW.
            if s.0.top.load(Ordering::Relaxed).is_null() {
                continue;
            }
            // Acquire: pairs with the Release CAS in `enqueue`.
            let p = s.0.top.swap(std::ptr::null_mut(), Ordering::Acquire);
            if !p.is_null() {
                chains[n] = p;
                n += 1;
            }
        }
        // Walk the chains side by side, one head of each per step: a head
        // was written by its producer on another CPU, so each load is a
        // cache miss, and within a chain each waits for the one before (the
        // `next` it follows); the loads of different chains do not depend on
        // each other, so their misses overlap (`LANES`).
        while n > 0 {
            let mut k = 0;
            while k < n {
                let p = chains[k];
                // SAFETY: a pushed head is ours until invoked; its fields were
                // published by the push we acquired.
                let next = unsafe {
                    let marked = (*p).ticket;
                    fresh.push(Item {
                        ticket: marked & !SLOT_BIT,
                        cookie: (*p).cookie,
                        head: p,
                        func: (*p).func.expect("queued callback has a function"),
                        // SAFETY (of `slot_hint`): a marked head is a runtime
                        // slot, queued (ours), its closure written before
                        // the push we acquired.
                        hint: if marked & SLOT_BIT != 0 { slot_hint(p) } else { 0 },
                    });
                    (*p).next
                };
                if next.is_null() {
                    n -= 1;
                    chains[k] = chains[n];
                } else {
                    chains[k] = next;
                    k += 1;
                }
            }
        }
        order_by_ticket(&fresh, &mut merged);
        if let Some(first) = merged.first() {
            // Usually everything collected comes after what was held; a
            // callback whose push was late (its thread preempted between
            // ticket and push) belongs a little before the end: merge only
            // the tail of `held` it reaches into, never re-sort all of it.
            let pos = o.held.partition_point(|i| i.ticket < first.ticket);
            if pos == o.held.len() {
                o.held.extend(merged.iter().copied());
            } else {
                tmp.clear();
                tmp.extend(o.held.drain(pos..));
                fresh.clear();
                merge_by_ticket(&tmp, &merged, &mut fresh);
                o.held.extend(fresh.iter().copied());
            }
        }
        o.fresh = fresh;
        o.merged = merged;
        o.tmp = tmp;
    }

    /// Take the callbacks that may run now against the completed sequence
    /// `completed` (one snapshot for the whole pass): the longest run of
    /// consecutive tickets from the next one to run whose cookies are
    /// complete. They are left in `Ordered::batch` for [`Callbacks::run_batch`].
    pub(crate) fn take_ready(&self, completed: Cookie) -> Take {
        let mut o = lock(&self.ordered);
        debug_assert_eq!(self.batch_pos.load(Ordering::Relaxed) as usize, o.batch.len());
        self.collect(&mut o);
        let mut take = Take::default();
        let mut batch = std::mem::take(&mut o.batch);
        batch.clear();
        while let Some(&front) = o.held.front() {
            if front.ticket != o.next_run && !crate::fault::take_past_gap() {
                break;
            }
            if front.cookie > completed.0 {
                take.waiting_for = Some(Cookie(front.cookie));
                break;
            }
            o.next_run = front.ticket + 1;
            batch.push(front);
            o.held.pop_front();
        }
        take.ready = batch.len();
        take.gap = take.waiting_for.is_none() && o.next_run < self.tickets();
        // Keep the buffers at about what a pass needs once the stream has
        // stopped: a burst must not pin its peak for the domain's lifetime,
        // and a steady stream must not reallocate them pass after pass
        // (`SHRINK_AFTER`).
        let o = &mut *o;
        let need = batch.len().max(o.merged.len());
        let calm = o.held.is_empty() && o.next_run >= self.tickets();
        // A light pass (a few callbacks taken or left waiting) neither counts
        // as calm nor breaks the count: one thread that queues a callback
        // and waits for it, round after round, often has its next callback
        // queued before the invoker's last look of the pass, so its passes
        // alternate calm and not, and a burst before it kept its buffers
        // (`redteam5_runtime.rs`'s burst test, seen failing in CI; the unit
        // test `a_light_stream_racing_the_invoker_gives_a_bursts_buffers_back`).
        // A stream's large passes still break it.
        let light = need <= TRIM_FLOOR && o.held.len() <= TRIM_FLOOR;
        o.calm = if calm {
            o.calm.saturating_add(1)
        } else if light {
            o.calm
        } else {
            0
        };
        o.window_need = o.window_need.max(need);
        o.window_held = o.window_held.max(o.held.len());
        let now = std::time::Instant::now();
        let start = *o.window_start.get_or_insert(now);
        #[cfg(test)]
        let window_len = o.window_len.unwrap_or(SHRINK_WINDOW);
        #[cfg(not(test))]
        let window_len = SHRINK_WINDOW;
        let window_ended = now.saturating_duration_since(start) >= window_len;
        let shrink_to = if o.calm >= SHRINK_AFTER {
            Some((need, o.held.len()))
        } else if window_ended {
            Some((o.window_need, o.window_held))
        } else {
            None
        };
        if window_ended {
            o.window_need = 0;
            o.window_held = 0;
            o.window_start = Some(now);
        }
        if let Some((need, held_need)) = shrink_to {
            let keep = need.max(SPARE_FLOOR);
            let held_keep = held_need.max(SPARE_FLOOR);
            if batch.capacity() > 4 * keep {
                batch.shrink_to(keep);
            }
            if o.held.capacity() > 4 * held_keep {
                o.held.shrink_to(held_keep);
            }
            for v in [&mut o.fresh, &mut o.merged, &mut o.tmp] {
                if v.capacity() > 4 * keep {
                    v.clear();
                    v.shrink_to(keep);
                }
            }
        }
        // Relaxed: only this invoker and the inventory (under the lock) read it.
        self.batch_pos.store(0, Ordering::Relaxed);
        o.batch = batch;
        take
    }

    /// For the domain's invoker at the end of a pass: is the queue empty
    /// with buffers above [`TRIM_FLOOR`], which the driver should free if it
    /// stays so (`driver::trim_later`)? Asked after every pass, however it
    /// ended (one that stopped at its callback limit too).
    pub(crate) fn quiet_with_buffers(&self) -> bool {
        let o = lock(&self.ordered);
        o.held.is_empty() && o.next_run >= self.tickets() && holds_buffers(&o)
    }

    /// Take the invoker's buffers out if the queue is still empty and
    /// nothing was queued since the driver saw `tickets_then` tickets (the
    /// domain has been quiet since); the caller frees them once it holds no
    /// lock (a `fork` meanwhile must find no lock of the runtime held). Called by the driver, never by the invoker;
    /// `invoking` is the domain's flag (`runtime::invoke`): while it is set
    /// an invoker may be running `batch` without the lock, so nothing is
    /// freed.
    pub(crate) fn trim_if_quiet(&self, tickets_then: u64, invoking: &AtomicBool) -> Trimmed {
        let mut o = lock(&self.ordered);
        if !holds_buffers(&o) {
            return Trimmed::Small;
        }
        // SeqCst, loaded under the lock: an invoker sets the flag (SeqCst
        // swap in `dispatch`) before its pass's `take_ready`, which takes
        // this lock, and clears it after its `run_batch`. Seen clear here,
        // no pass is past `take_ready` (it would have set the flag before
        // this load in the flag's modification order and not cleared it
        // yet) and none gets there before the lock is dropped.
        if invoking.load(Ordering::SeqCst) {
            return Trimmed::Busy;
        }
        let tickets = self.tickets();
        if !o.held.is_empty() || o.next_run < tickets {
            return Trimmed::Busy;
        }
        if tickets != tickets_then {
            return Trimmed::QuietNotLongEnough;
        }
        let o = &mut *o;
        debug_assert_eq!(self.batch_pos.load(Ordering::Relaxed) as usize, o.batch.len());
        let taken = TakenBuffers(
            std::mem::take(&mut o.batch),
            std::mem::take(&mut o.held),
            [
                std::mem::take(&mut o.fresh),
                std::mem::take(&mut o.merged),
                std::mem::take(&mut o.tmp),
            ],
        );
        o.calm = 0;
        o.window_need = 0;
        o.window_held = 0;
        o.window_start = None;
        // Relaxed: as in `take_ready`; the batch is empty.
        self.batch_pos.store(0, Ordering::Relaxed);
        Trimmed::Taken(taken)
    }

    /// Run the batch that `take_ready` left, in order; returns its length.
    /// Only the domain's one invoker calls this, without the lock held.
    ///
    /// Adds the callbacks it ran (barrier markers are not callbacks) to
    /// `invoked` before it runs each marker and at the end, so that a
    /// barrier's waiter reads a count that includes every callback before
    /// its marker (the add is sequenced before the marker's wake-up, which
    /// the waiter synchronizes with).
    pub(crate) fn run_batch(&self, invoked: &crate::sync::AtomicU64) -> usize {
        let mut unflushed = 0u64;
        let (ptr, len) = {
            let o = lock(&self.ordered);
            (o.batch.as_ptr(), o.batch.len())
        };
        for i in 0..len {
            // SAFETY: the batch is only replaced by `take_ready`, which this
            // same invoker calls after this loop; concurrent readers (the
            // inventory) only read it.
            let it = unsafe { *ptr.add(i) };
            if i + PREFETCH < len {
                // SAFETY: as above.
                let ahead = unsafe { *ptr.add(i + PREFETCH) };
                prefetch(ahead.head);
                // A slot's closure usually owns what it frees (a `Box`): its
                // first word points there, written on the producer's CPU,
                // and `free` writes it.
                if ahead.hint != 0 {
                    prefetch_write(ahead.hint as *const u8);
                }
            }
            // `batch_pos` says this item is next (`take_ready` or the last
            // `finished`); a snapshot in progress holds us here
            // (`runtime::inventory::deferred`).
            #[cfg(not(usrcu_loom))]
            crate::runtime::inventory::hold_point();
            let marker = std::ptr::fn_addr_eq(it.func, marker_fn as unsafe extern "C" fn(*mut CallbackHead));
            if marker {
                // A marker counts itself done before it wakes its waiter, so
                // that a cleanup right after `barrier` sees nothing pending,
                // and the callbacks before it are counted as invoked.
                crate::stats::Counters::add(invoked, std::mem::take(&mut unflushed));
                self.finished(it.ticket, i + 1);
            }
            // SAFETY: `it.head` was queued with `it.func` by `enqueue`; the
            // head is valid until this call, which hands it back to its owner.
            unsafe { (it.func)(it.head) };
            if !marker {
                // The callback may be a plugin's: leave no rseq descriptor of
                // its read sections behind (`reader/rseq.rs`), before its
                // ticket says it has run.
                crate::reader::rseq::clear_descriptor();
                unflushed += 1;
                self.finished(it.ticket, i + 1);
            }
        }
        crate::stats::Counters::add(invoked, unflushed);
        len
    }

    /// Ticket `t`, the `pos`-th of the batch, has run.
    fn finished(&self, t: u64, pos: usize) {
        // Relaxed: read under the lock by the inventory, which only needs a
        // value at least this old (an item counted as still running is safe).
        self.batch_pos.store(pos as u64, Ordering::Relaxed);
        // Release: pairs with the Acquire in `pending`: the callback's effects
        // are visible to whoever sees its ticket done.
        self.done_tickets.store(t + 1, Ordering::Release);
    }

    /// The item the invoker runs now or runs next, if a batch is not done.
    #[cfg(not(usrcu_loom))]
    pub(crate) fn current(&self) -> Option<Item> {
        let o = lock(&self.ordered);
        // Relaxed: see `finished`; the caller's fences order it (the hold of
        // `runtime::inventory::deferred`).
        let pos = self.batch_pos.load(Ordering::Relaxed) as usize;
        o.batch.get(pos).copied()
    }

    /// Visit every queued or running callback (not yet finished). Takes the
    /// lock; collects the intake first so nothing is missed.
    pub(crate) fn for_each_pending(&self, mut f: impl FnMut(&Item)) {
        let mut o = lock(&self.ordered);
        self.collect(&mut o);
        // Relaxed: see `finished`; under the lock the batch is stable.
        let pos = (self.batch_pos.load(Ordering::Relaxed) as usize).min(o.batch.len());
        o.batch[pos..].iter().for_each(&mut f);
        o.held.iter().for_each(f);
    }
}

/// How many callbacks ahead `run_batch` prefetches heads: `collect` read
/// them a grace period ago, so in a long batch they have left the cache.
const PREFETCH: usize = 8;

/// Hint the CPU to bring `p`'s line into the cache (never faults).
#[inline(always)]
fn prefetch(p: *const CallbackHead) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it neither faults nor changes
    // memory, whatever the address (SSE is part of x86_64).
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Hint the CPU to bring `p`'s line into the cache to be written (never
/// faults): `prefetchw` where the CPU has it (an exclusive copy, so the
/// write that follows needs no second round trip to the CPU that wrote the
/// line last), else a read prefetch. Rust's `_MM_HINT_ET0` would compile to
/// the read prefetch, as the x86-64 baseline lacks the feature.
#[inline(always)]
pub(crate) fn prefetch_write(p: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(usrcu_loom)))]
    if has_prefetchw() {
        // SAFETY: a prefetch is only a hint: it neither faults nor changes
        // memory, whatever the address; the CPU has the instruction.
        unsafe {
            std::arch::asm!("prefetchw byte ptr [{p}]", p = in(reg) p, options(nostack, readonly, preserves_flags))
        };
    } else {
        prefetch(p as *const CallbackHead);
    }
    #[cfg(not(all(target_arch = "x86_64", not(usrcu_loom))))]
    let _ = p;
}

/// Does the CPU have `prefetchw` (CPUID 8000_0001h, ECX bit 8)? Asked once.
#[cfg(all(target_arch = "x86_64", not(usrcu_loom)))]
fn has_prefetchw() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    // 0: not asked yet, 1: no, 2: yes. Not a `OnceLock`: a `fork` while
    // another thread initialises one leaves the child's waiting forever;
    // threads racing here only ask the CPU twice. Relaxed: a cache of a
    // constant; every thread that asks gets the same answer.
    static HAS: AtomicU8 = AtomicU8::new(0);
    match HAS.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            #[allow(unused_unsafe)]
            // SAFETY: `cpuid` exists on every x86-64 CPU; leaf 8000_0001h is
            // asked only where the largest extended leaf reaches it.
            let yes = unsafe {
                use std::arch::x86_64::__cpuid;
                __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0
            };
            HAS.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}

/// The prefetch hint of the queued slot `h`: its closure's first word, if
/// that looks like a heap pointer (`near_heap_pointer`), else 0.
///
/// # Safety
/// `h` is the head of a runtime slot, queued and not yet run.
#[inline(always)]
unsafe fn slot_hint(h: *mut CallbackHead) -> usize {
    #[cfg(all(target_arch = "x86_64", not(usrcu_loom)))]
    // SAFETY: a slot's closure bytes (`INLINE_BYTES`, at least 8) follow
    // its head, in the runtime's block, live while the slot is queued.
    return near_heap_pointer(unsafe { first_word(crate::slab::data(h)) }, h);
    #[cfg(not(all(target_arch = "x86_64", not(usrcu_loom))))]
    {
        let _ = h;
        0
    }
}

/// `word` if it looks like a pointer into the heap the slot at `slot` came
/// from (8-aligned, within 4 GiB of the slot), else 0: a closure that holds
/// a number, not a pointer, first costs no prefetch (and no page walk) of
/// an address that is not mapped.
#[cfg(all(target_arch = "x86_64", not(usrcu_loom)))]
fn near_heap_pointer(word: usize, slot: *mut CallbackHead) -> usize {
    const REACH: usize = 1 << 32;
    let near = word.wrapping_sub(slot as usize).wrapping_add(REACH) < 2 * REACH;
    if word % 8 == 0 && near {
        word
    } else {
        0
    }
}

/// The first word of a slot's closure bytes, as a number for a prefetch.
/// Read with an instruction of our own: the bytes may be padding, which
/// Rust may not read as an integer, and the value is only a hint.
///
/// # Safety
/// `p` is valid for reading 8 bytes.
#[cfg(all(target_arch = "x86_64", not(usrcu_loom)))]
#[inline(always)]
unsafe fn first_word(p: *const u8) -> usize {
    let w: usize;
    // SAFETY: the caller's; the read changes nothing.
    unsafe {
        std::arch::asm!("mov {w}, qword ptr [{p}]", p = in(reg) p, w = out(reg) w,
            options(nostack, readonly, preserves_flags))
    };
    w
}

/// `items` (unique tickets, in any order) into `out`, ascending by ticket.
/// Tickets taken close together are nearly dense, so each item is placed
/// at its ticket's offset from the smallest (O(n), no comparisons), and
/// the holes (tickets collected earlier or not pushed yet) are squeezed
/// out; a sparse set (a push late by many tickets) is sorted instead.
fn order_by_ticket(items: &[Item], out: &mut Vec<Item>) {
    out.clear();
    let (Some(lo), Some(hi)) = (
        items.iter().map(|i| i.ticket).min(),
        items.iter().map(|i| i.ticket).max(),
    ) else {
        return;
    };
    let span = hi - lo + 1;
    if span > 2 * items.len() as u64 + 64 {
        out.extend_from_slice(items);
        // Tickets are unique: an unstable sort orders them as a stable one.
        out.sort_unstable_by_key(|i| i.ticket);
        return;
    }
    let hole = Item {
        ticket: u64::MAX,
        cookie: 0,
        head: std::ptr::null_mut(),
        func: marker_fn,
        hint: 0,
    };
    out.resize(span as usize, hole);
    for it in items {
        let slot = &mut out[(it.ticket - lo) as usize];
        debug_assert!(slot.head.is_null(), "ticket {} collected twice", it.ticket);
        *slot = *it;
    }
    out.retain(|i| !i.head.is_null());
}

/// Merge two runs ascending by ticket into `out` (runs that are not
/// ascending leave `out` unsorted; `collect` sorts it then).
fn merge_by_ticket(a: &[Item], b: &[Item], out: &mut Vec<Item>) {
    out.reserve(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].ticket < b[j].ticket {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
}

impl Drop for Callbacks {
    fn drop(&mut self) {
        // Callbacks still queued here belong to a domain that was cleaned up
        // successfully, which requires an empty queue; a leaked domain is
        // never dropped. Heads are owned by their callers; the slot blocks
        // cached for small closures are the queue's: every slot carved from
        // them has run, so retiring them frees them.
        debug_assert_eq!(self.pending(), 0);
        for s in self.stacks.iter() {
            crate::slab::drain(&s.0.slab);
        }
        crate::slab::drain_free(&self.recycle.0);
    }
}

/// Shared by a barrier's marker and its waiter.
#[derive(Debug)]
pub(crate) struct BarrierSync {
    done: Mutex<bool>,
    cv: crate::sync::Condvar,
}

#[repr(C)]
#[derive(Debug)]
struct Marker {
    head: CallbackHead,
    sync: crate::sync::Arc<BarrierSync>,
}

unsafe extern "C" fn marker_fn(h: *mut CallbackHead) {
    // SAFETY: `h` is the head of a `Marker` (first field, repr(C)) leaked by
    // `barrier_begin`; it is handed back exactly once, here.
    let m = unsafe { Box::from_raw(h as *mut Marker) };
    let mut d = lock(&m.sync.done);
    *d = true;
    m.sync.cv.notify_all();
}

/// A `barrier` in progress: a marker queued, waiting for it to run. Dropping
/// it (a timeout) leaves the marker to be reclaimed when it runs.
#[derive(Debug)]
pub(crate) struct Barrier {
    sync: crate::sync::Arc<BarrierSync>,
}

impl Callbacks {
    /// Start a barrier: queue a marker behind every callback queued so far.
    /// `None` if nothing is pending at all.
    pub(crate) fn barrier_begin(&self, cpu: usize) -> Option<Barrier> {
        if self.pending() == 0 {
            return None;
        }
        let mut last = lock(&self.last_marker);
        if let Some((t, sync)) = last.as_ref() {
            // No ticket was taken since that marker's, so every callback
            // whose `call_srcu` returned before this call has a smaller
            // ticket than it: waiting for it is waiting for them. Not if it
            // ran already (its waiters were woken).
            if self.tickets() == t + 1 && !*lock(&sync.done) {
                return Some(Barrier { sync: sync.clone() });
            }
        }
        let sync = crate::sync::Arc::new(BarrierSync {
            done: Mutex::new(false),
            cv: crate::sync::Condvar::new(),
        });
        let m = Box::into_raw(Box::new(Marker {
            head: CallbackHead::new(),
            sync: sync.clone(),
        }));
        // SAFETY: the marker is leaked until `marker_fn` takes it back. A
        // marker waits for no grace period (cookie 0), only for the tickets
        // before it; `enqueue` issues the handshake's producer fence.
        let ticket = unsafe { self.enqueue(cpu, m as *mut CallbackHead, marker_fn, || Cookie(0)) };
        *last = Some((ticket, sync.clone()));
        // Counted after its ticket, so that a snapshot of `queued_callbacks`
        // can count a racing marker as a callback (one too many for a
        // moment) but never miss a callback. Release: pairs with the Acquire
        // load there, so a reader that sees this count sees the ticket.
        self.markers.fetch_add(1, Ordering::Release);
        Some(Barrier { sync })
    }
}

impl Barrier {
    /// Block until the marker ran.
    pub(crate) fn wait(self) {
        let mut d = lock(&self.sync.done);
        while !*d {
            d = match self.sync.cv.wait(d) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
        }
    }

    /// Block until the marker ran or `deadline`; true if it ran.
    #[cfg(not(usrcu_loom))]
    pub(crate) fn wait_until(&self, deadline: std::time::Instant) -> bool {
        let mut d = lock(&self.sync.done);
        while !*d {
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            d = match self.sync.cv.wait_timeout(d, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }
}

// Field offsets for the ABI fingerprint (`abi.rs`): every field, in
// declaration order.
impl CallbackHead {
    pub(crate) const FIELD_OFFSETS: [usize; 4] = [
        std::mem::offset_of!(CallbackHead, next),
        std::mem::offset_of!(CallbackHead, func),
        std::mem::offset_of!(CallbackHead, cookie),
        std::mem::offset_of!(CallbackHead, ticket),
    ];
}

#[cfg(all(test, not(usrcu_loom)))]
mod tests {
    use super::*;

    fn item(ticket: u64) -> Item {
        Item {
            ticket,
            cookie: ticket * 2,
            head: (ticket as usize * 64 + 64) as *mut CallbackHead,
            func: marker_fn,
            hint: 0,
        }
    }

    fn tickets(v: &[Item]) -> Vec<u64> {
        v.iter().map(|i| i.ticket).collect()
    }

    #[test]
    fn order_by_ticket_orders_interleaved_reversed_chains_with_holes() {
        // Four lanes walked side by side, each newest first, ticket 7 not
        // pushed yet and 0..3 collected by an earlier pass.
        let walk = [15, 14, 13, 12, 11, 10, 9, 8, 6, 5, 4, 3];
        let items: Vec<Item> = walk.iter().map(|&t| item(t)).collect();
        let mut out = Vec::new();
        order_by_ticket(&items, &mut out);
        assert_eq!(tickets(&out), vec![3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15]);
        assert!(out.iter().all(|i| i.cookie == i.ticket * 2 && !i.head.is_null()));
    }

    unsafe extern "C" fn noop(_: *mut CallbackHead) {}

    /// Queue `n` heads with cookie `c` (the heads stay in `keep`, boxed:
    /// a queued head must not move when `keep` grows).
    #[allow(clippy::vec_box)]
    fn queue(q: &Callbacks, keep: &mut Vec<Box<CallbackHead>>, n: usize, c: u64) {
        for _ in 0..n {
            let mut h = Box::new(CallbackHead::new());
            // SAFETY: the head stays allocated in `keep` until the test ends,
            // after every callback ran.
            unsafe { q.enqueue(0, &mut *h, noop, || Cookie(c)) };
            keep.push(h);
        }
    }

    /// The largest of the invoker's buffers, in callbacks.
    fn buffers(q: &Callbacks) -> usize {
        let o = lock(&q.ordered);
        o.batch.capacity().max(o.fresh.capacity()).max(o.merged.capacity())
    }

    /// A burst, then a stream that never pauses (every pass leaves the
    /// callbacks of the next grace period queued, so no pass is calm): the
    /// burst's buffers are given back at the end of a window
    /// (`SHRINK_WINDOW`, shortened to zero here). Seen failing with the
    /// window rule switched off (only the calm rule left).
    #[test]
    fn a_stream_that_never_pauses_gives_a_bursts_buffers_back_at_a_window_end() {
        const BURST: usize = 100_000;
        let q = Callbacks::new(1);
        let invoked = crate::sync::AtomicU64::new(0);
        let mut keep = Vec::new();
        queue(&q, &mut keep, BURST, 2);
        queue(&q, &mut keep, 10, 4);
        assert_eq!(q.take_ready(Cookie(2)).ready, BURST);
        q.run_batch(&invoked);
        assert!(buffers(&q) >= BURST, "{}", buffers(&q));
        lock(&q.ordered).window_len = Some(std::time::Duration::ZERO);
        for c in (4..40).step_by(2) {
            queue(&q, &mut keep, 10, c + 2);
            let t = q.take_ready(Cookie(c));
            assert_eq!((t.ready, t.waiting_for), (10, Some(Cookie(c + 2))));
            q.run_batch(&invoked);
        }
        assert!(buffers(&q) < BURST / 4, "buffers of {} callbacks kept", buffers(&q));
        let t = q.take_ready(Cookie(40));
        assert_eq!(t.ready, 10);
        q.run_batch(&invoked);
        assert_eq!(q.pending(), 0);
        drop(keep);
    }

    /// A burst, then one thread that queues a callback and waits for it,
    /// round after round, whose next callback is queued before the
    /// invoker's last look of each pass (it ran the previous one, and that
    /// woke the thread): every other look finds it waiting for its grace
    /// period, so no two looks in a row are calm. The burst's buffers are
    /// still given back within the rounds. Seen failing with a look that
    /// finds a few callbacks waiting resetting the calm count.
    #[test]
    fn a_light_stream_racing_the_invoker_gives_a_bursts_buffers_back() {
        const BURST: usize = 100_000;
        let q = Callbacks::new(1);
        let invoked = crate::sync::AtomicU64::new(0);
        let mut keep = Vec::new();
        queue(&q, &mut keep, BURST, 2);
        assert_eq!(q.take_ready(Cookie(2)).ready, BURST);
        q.run_batch(&invoked);
        assert!(buffers(&q) >= BURST, "{}", buffers(&q));
        queue(&q, &mut keep, 1, 4);
        for c in (4..44).step_by(2) {
            // The pass: its callback is ready, and runs.
            let t = q.take_ready(Cookie(c));
            assert_eq!(t.ready, 1);
            q.run_batch(&invoked);
            // The thread it woke queues the next before the pass looks again.
            queue(&q, &mut keep, 1, c + 2);
            let t = q.take_ready(Cookie(c));
            assert_eq!((t.ready, t.waiting_for), (0, Some(Cookie(c + 2))));
        }
        assert!(buffers(&q) < BURST / 4, "buffers of {} callbacks kept", buffers(&q));
        assert_eq!(q.take_ready(Cookie(44)).ready, 1);
        q.run_batch(&invoked);
        assert_eq!(q.pending(), 0);
        drop(keep);
    }

    unsafe extern "C" fn give_slot_back(h: *mut CallbackHead) {
        // SAFETY: `h` is a slot taken in the test, run once.
        unsafe { crate::slab::release_slot(h) };
    }

    /// A runtime slot gives `collect` its closure's first word as a
    /// prefetch hint; a caller's head queued after this thread took a slot
    /// (and before it queued it) is never read past (here the word after
    /// it would be taken for a hint). Seen failing with `enqueue` taking
    /// any head for a slot while a fresh slot is pending.
    #[test]
    fn only_a_runtime_slot_gives_a_prefetch_hint() {
        #[repr(C)]
        struct Raw {
            head: CallbackHead,
            _block: u64,
            word: u64,
        }
        let q = Callbacks::new(1);
        let invoked = crate::sync::AtomicU64::new(0);
        let s = q.take_slot(0);
        // A word near the slot, as a slot's `Box` usually is (both from the
        // producer's malloc arena): the slot's own address. Not a real
        // `Box`: glibc may serve two allocations of one thread from arenas
        // more than 4 GiB apart when its arena lock is contended (seen
        // under load), and the hint is then rightly 0.
        let word = s as usize;
        // SAFETY: a fresh slot has `INLINE_BYTES` of closure room.
        unsafe { (crate::slab::data(s) as *mut usize).write(word) };
        let mut raw = Box::new(Raw {
            head: CallbackHead::new(),
            _block: 0,
            word: 0,
        });
        // Where a slot's closure would begin, a word near this head (its
        // own address): taken for a hint if `enqueue` took it for a slot.
        let near_raw = std::ptr::addr_of!(raw.head) as u64;
        raw.word = near_raw;
        // SAFETY: the slot is given back by its callback; `raw` outlives
        // the batch below.
        unsafe {
            q.enqueue(0, &mut raw.head, noop, || Cookie(2));
            q.enqueue(0, s, give_slot_back, || Cookie(2));
        }
        let mut seen = Vec::new();
        q.for_each_pending(|i| seen.push((i.ticket, i.hint)));
        #[cfg(target_arch = "x86_64")]
        let slot_hint = near_heap_pointer(word, s);
        #[cfg(not(target_arch = "x86_64"))]
        let slot_hint = 0;
        assert_eq!(seen, vec![(0, 0), (1, slot_hint)]);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(slot_hint, word);
        assert_eq!(q.take_ready(Cookie(2)).ready, 2);
        q.run_batch(&invoked);
        assert_eq!(q.pending(), 0);
        assert_eq!(raw.word, near_raw);
    }

    #[test]
    fn order_by_ticket_sorts_a_sparse_set_and_reuses_its_buffer() {
        let items: Vec<Item> = [1_000_000, 5, 70_000, 6].iter().map(|&t| item(t)).collect();
        let mut out = vec![item(99)];
        order_by_ticket(&items, &mut out);
        assert_eq!(tickets(&out), vec![5, 6, 70_000, 1_000_000]);
        order_by_ticket(&[], &mut out);
        assert!(out.is_empty());
    }
}
