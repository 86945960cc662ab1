//! Tasks Trace RCU: one process-wide flavor whose readers may sleep, fault
//! and take locks, and cost what a thread-local store costs.
//!
//! # Readers
//!
//! [`read_lock`] (the kernel's `rcu_read_lock_trace`) adds one to the calling
//! thread's nesting count and [`TraceGuard`]'s drop takes it away; the
//! outermost exit also bumps the thread's exit count. Both are plain stores
//! to the thread's own record plus a compiler fence: no atomic
//! read-modify-write, no index to carry, no shared cache line. Sections nest
//! and the guard is `!Send` (the count is per thread). [`read_lock_raw`] and
//! [`read_unlock_raw`] are the unscoped form.
//!
//! # Grace periods
//!
//! [`synchronize`] issues `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` (the
//! userspace IPI, heavy fence A), then scans every thread record: a thread
//! is quiescent if its nesting is zero, or once its exit count has moved
//! since the scan began. Holdouts are re-sampled with back-off, and a grace
//! period that waits past the stall timeout (`USRCU_STALL_TIMEOUT_MS`, or
//! [`set_stall_timeout`]) emits a
//! [`WarningKind::TraceStall`](crate::diagnostics::WarningKind::TraceStall)
//! naming each holdout's tid and thread name. A second membarrier (E) ends
//! it. Where membarrier is missing (or `USRCU_FENCE=seqcst`), and always under
//! loom, both sides use SeqCst fences instead. Grace periods are slow (they
//! wait for sleeping readers, and nap between samples); the read side is the
//! point. The argument is "Tasks Trace" in `docs/memory-model.md`.
//!
//! [`call`] queues a callback for after a grace period; callbacks run in
//! order on one host thread, `usrcu-trace`, started on first use. [`barrier`]
//! waits for every callback queued before it. [`get_state`],
//! [`start_poll`] and [`poll_state`] are the polled forms.
//!
//! # `fork`
//!
//! As for the SRCU runtime ([`runtime::idle`](crate::runtime::idle)): fork
//! while the flavor is idle, that is while no other thread is inside a
//! call of it, every callback has run ([`barrier`] returned) and no polled
//! grace period is pending. The child then starts its own `usrcu-trace`
//! thread on first use. The thread's way back to sleep, when it takes its
//! queue's lock once more, is covered by the crate's `pthread_atfork`
//! handler. A read section open in another thread at the fork stays open
//! in the child, where that thread does not exist: the child's grace
//! periods never end. Callbacks queued but not run at the fork are not
//! supported: they are in the child's copy of the queue, and whether they
//! run there, or the child hangs, depends on what the parent's thread was
//! doing.
//!
//! # Thread records across objects
//!
//! Records are allocated by the host runtime and reached through a
//! const-initialised thread-local pointer (a `Cell`, no destructor) in
//! whichever object's copy of `usrcu` runs. A plugin's copy asks the host
//! through [`TraceVTable`] (reached from the runtime vtable the loader hands
//! it), and the host returns the record its own thread-local holds for the
//! thread, so host and plugins count one nesting per thread. Thread exit is
//! noticed by a pthread key created in the host, whose destructor (host
//! code) ends any section left open and recycles the record.
//!
//! ```
//! use std::sync::atomic::{AtomicPtr, Ordering};
//!
//! static CONFIG: AtomicPtr<u64> = AtomicPtr::new(std::ptr::null_mut());
//!
//! // Publish, read under the flavor, replace, free after a grace period.
//! CONFIG.store(Box::into_raw(Box::new(1)), Ordering::Release);
//! {
//!     let _g = usrcu::trace::read_lock();
//!     // SAFETY: the pointer is freed only after a grace period.
//!     let v = unsafe { *CONFIG.load(Ordering::Acquire) };
//!     std::thread::sleep(std::time::Duration::from_millis(1)); // readers may sleep
//!     assert_eq!(v, 1);
//! }
//! let old = CONFIG.swap(Box::into_raw(Box::new(2)), Ordering::AcqRel);
//! usrcu::trace::synchronize();
//! // SAFETY: every reader that could see `old` has left.
//! drop(unsafe { Box::from_raw(old) });
//! ```
//!
//! The guard cannot leave its thread:
//!
//! ```compile_fail
//! fn send<T: Send>(_: T) {}
//! send(usrcu::trace::read_lock());
//! ```

mod grace_period;
mod record;

#[cfg(not(usrcu_loom))]
pub(crate) mod engine;
#[cfg(not(usrcu_loom))]
pub(crate) mod threads;

#[cfg(not(usrcu_loom))]
pub(crate) use engine::HOST_TRACE_VTABLE;
#[cfg(usrcu_loom)]
pub(crate) use grace_period::wait_for_readers;
pub use record::ThreadRecord;

#[cfg(not(usrcu_loom))]
pub use api::*;

/// The name trace warnings carry in their `domain` field.
pub const DOMAIN_NAME: &str = "usrcu::trace";

/// Counters of the process's Tasks Trace flavor (the host's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct TraceStats {
    /// Grace periods completed.
    pub grace_periods: u64,
    /// Callbacks queued by [`call`] over the process's life.
    pub callbacks_queued: u64,
    /// Callbacks invoked.
    pub callbacks_invoked: u64,
    /// Thread records ever allocated (records are reused after their thread
    /// exits, so this stays near the peak number of live reader threads).
    pub records_allocated: u64,
    /// Records owned by a live thread.
    pub records_in_use: u64,
}

#[cfg(not(usrcu_loom))]
mod api {
    use super::record::ThreadRecord;
    use super::threads::RECORD;
    use super::TraceStats;
    use crate::callbacks::CallbackHead;
    use std::marker::PhantomData;
    use std::time::Duration;

    pub use super::engine::{TraceVTable, TRACE_ABI_VERSION};

    /// The host's table (what a host hands its plugins, inside its runtime
    /// vtable).
    pub fn host_vtable() -> &'static TraceVTable {
        &super::engine::HOST_TRACE_VTABLE
    }

    /// The table this copy uses: the installed runtime's, else its own. A
    /// table of another version or size is fatal (as for Tasks): falling
    /// back to this copy's engine would start a thread that runs this
    /// copy's (a plugin's) code.
    #[inline]
    fn vt() -> &'static TraceVTable {
        let t = crate::runtime::current().trace;
        if t.abi_version == TRACE_ABI_VERSION && t.size as usize == std::mem::size_of::<TraceVTable>() {
            t
        } else {
            panic!(
                "usrcu::trace: the host's Tasks Trace table is version {} size {}, this copy expects {} size {}",
                t.abi_version,
                t.size,
                TRACE_ABI_VERSION,
                std::mem::size_of::<TraceVTable>()
            )
        }
    }

    /// The calling thread's record, through this copy's thread-local.
    #[inline(always)]
    fn record() -> &'static ThreadRecord {
        let p = RECORD.with(|c| c.get());
        let p = if p.is_null() { register() } else { p };
        // SAFETY: records are `'static` host allocations, never freed; this
        // one is owned by the calling thread until it exits.
        unsafe { &*p }
    }

    #[cold]
    #[inline(never)]
    fn register() -> *const ThreadRecord {
        // SAFETY: the runtime's `register` has no preconditions.
        let p = unsafe { (vt().register)() };
        RECORD.with(|c| c.set(p));
        p
    }

    /// A Tasks Trace read section; ends when dropped. Nests; `!Send`.
    #[must_use = "the section ends when the guard is dropped"]
    #[derive(Debug)]
    pub struct TraceGuard {
        rec: &'static ThreadRecord,
        _not_send: PhantomData<*const ()>,
    }

    /// Enter a read section (the kernel's `rcu_read_lock_trace`). The
    /// section may sleep, block, take locks and page-fault.
    #[inline]
    pub fn read_lock() -> TraceGuard {
        let rec = record();
        rec.enter();
        TraceGuard {
            rec,
            _not_send: PhantomData,
        }
    }

    impl Drop for TraceGuard {
        #[inline]
        fn drop(&mut self) {
            self.rec.exit();
        }
    }

    /// Enter a read section without a guard; end it with
    /// [`read_unlock_raw`] on the same thread.
    #[inline]
    pub fn read_lock_raw() {
        record().enter();
    }

    /// End a section begun by [`read_lock_raw`].
    ///
    /// # Safety
    /// The calling thread must be inside a section it entered with
    /// [`read_lock_raw`] and not yet ended: ending a section that is not
    /// there would end an enclosing guard's section early, and let a grace
    /// period complete under it.
    #[inline]
    pub unsafe fn read_unlock_raw() {
        record().exit();
    }

    /// Is the calling thread inside a Tasks Trace read section (entered
    /// through any object's copy of `usrcu`)? Registers the thread with the
    /// host on first use in this copy: another copy may have entered.
    pub fn in_read_section() -> bool {
        record().nesting() != 0
    }

    fn refuse_inside_section(what: &str) {
        if in_read_section() {
            panic!(
                "usrcu::trace: illegal {what}() inside a Tasks Trace read section \
                 (it would wait for itself)"
            );
        }
    }

    /// Wait for every read section that began before the call to end.
    ///
    /// # Panics
    /// Inside a read section of this flavor (it would wait for itself).
    pub fn synchronize() {
        refuse_inside_section("synchronize");
        // SAFETY: no preconditions.
        unsafe { (vt().synchronize)() }
    }

    /// Run `f` after a grace period, on the `usrcu-trace` thread, in
    /// queueing order. A panicking callback is reported
    /// ([`WarningKind::CallbackPanicked`](crate::diagnostics::WarningKind::CallbackPanicked)) and the thread goes on.
    pub fn call<F: FnOnce() + Send + 'static>(f: F) {
        #[repr(C)]
        struct Boxed<F> {
            head: CallbackHead,
            f: F,
        }
        unsafe extern "C" fn trampoline<F: FnOnce()>(h: *mut CallbackHead) {
            // SAFETY: `h` is the head of the `Boxed<F>` leaked below (first
            // field of a repr(C) struct), handed back exactly once.
            let b = unsafe { Box::from_raw(h as *mut Boxed<F>) };
            let f = b.f;
            crate::runtime::run_catching_panic("usrcu::trace", f);
        }
        let b = Box::into_raw(Box::new(Boxed {
            head: CallbackHead::new(),
            f,
        }));
        // SAFETY: a fresh allocation whose first field is the head; the
        // trampoline takes ownership back.
        unsafe { call_raw(b as *mut CallbackHead, trampoline::<F>) };
    }

    /// Queue `func(head)` to run after a grace period, without allocating.
    ///
    /// # Safety
    /// `head` must stay valid and untouched until `func(head)` runs, and
    /// `func` must be safe to call once with it on another thread. Code and
    /// data it uses must stay mapped until then ([`barrier`]).
    pub unsafe fn call_raw(head: *mut CallbackHead, func: unsafe extern "C" fn(*mut CallbackHead)) {
        // SAFETY: forwarded.
        unsafe { (vt().call)(head, func) }
    }

    /// Wait until every callback queued (by any thread) before the call has
    /// run. From inside a callback it would wait for itself: it warns
    /// ([`WarningKind::IllegalSynchronize`](crate::diagnostics::WarningKind::IllegalSynchronize)) and returns.
    ///
    /// # Panics
    /// Inside a read section of this flavor: the callbacks it waits for
    /// wait for a grace period, which waits for that section.
    pub fn barrier() {
        refuse_inside_section("barrier");
        // SAFETY: no preconditions.
        unsafe { (vt().barrier)() }
    }

    /// [`barrier`] bounded by `timeout`: true if every callback queued
    /// before the call ran within it, false if not (or, with a warning, when
    /// called from inside a trace callback, where it would wait for
    /// itself). A barrier that times out leaves nothing blocked: its marker
    /// stays queued and is dropped when the `usrcu-trace` thread reaches it.
    /// `Duration::MAX` (or any timeout past what an `Instant` holds) waits
    /// as long as it takes.
    ///
    /// # Panics
    /// Inside a read section of this flavor, as [`barrier`].
    ///
    /// ```
    /// use std::time::Duration;
    /// usrcu::trace::call(|| {});
    /// assert!(usrcu::trace::barrier_timeout(Duration::from_secs(60)));
    /// ```
    pub fn barrier_timeout(timeout: Duration) -> bool {
        refuse_inside_section("barrier_timeout");
        let ms = crate::sync::timeout_ms_rounded_up(timeout);
        // SAFETY: no preconditions.
        unsafe { (vt().barrier_timeout_ms)(ms) != 0 }
    }

    /// A polled grace-period cookie of this flavor.
    #[repr(transparent)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub struct Cookie(u64);

    impl Cookie {
        /// The raw value.
        pub fn as_u64(self) -> u64 {
            self.0
        }
    }

    /// A cookie for a grace period that starts after this call; nothing is
    /// started.
    pub fn get_state() -> Cookie {
        // SAFETY: no preconditions.
        Cookie(unsafe { (vt().get_state)(0) })
    }

    /// As [`get_state`], and make sure that grace period runs.
    ///
    /// The `usrcu-trace` thread both drives polled grace periods and runs
    /// callbacks: a poll started from a trace callback does not advance
    /// until that callback returns, so a callback must not spin on
    /// [`poll_state`] for it ([`synchronize`] works there: the caller
    /// drives it).
    pub fn start_poll() -> Cookie {
        // SAFETY: no preconditions.
        Cookie(unsafe { (vt().get_state)(1) })
    }

    /// Has the cookie's grace period completed?
    pub fn poll_state(c: Cookie) -> bool {
        // SAFETY: no preconditions.
        unsafe { (vt().poll_state)(c.0) != 0 }
    }

    /// The flavor's counters (the host's).
    pub fn stats() -> TraceStats {
        let mut s = TraceStats::default();
        // SAFETY: `s` is writable.
        unsafe { (vt().stats)(&mut s) };
        s
    }

    /// Set the stall timeout of the grace periods this copy's engine drives.
    /// Call it in the host: a plugin's grace periods run in the host's engine.
    pub fn set_stall_timeout(d: Duration) {
        super::engine::set_stall_timeout(d)
    }

    /// The fence pair of this copy's engine (the host's): chosen once, at
    /// first use, from membarrier's availability and `USRCU_FENCE`.
    pub fn fence_mode() -> crate::fence::FenceMode {
        super::threads::mode()
    }

    /// Is Tasks Trace idle — nothing queued, no batch being invoked, no
    /// polled grace period pending, no grace period in progress? A snapshot
    /// (work queued right after may make it false); false while another
    /// thread is inside a call of this flavor.
    ///
    /// This is the state in which a process may `fork`, together with
    /// [`crate::runtime::idle`] and [`crate::tasks::idle`]: the child then
    /// starts its own `usrcu-trace` thread on first use. Forked outside it,
    /// a grace period in progress at the fork leaves the child's
    /// `synchronize`, callbacks and barriers waiting forever. Call it in the
    /// host: the answer is about this copy's engine, and a plugin's copy
    /// runs none (its calls go to the host's).
    ///
    /// ```
    /// usrcu::trace::call(|| {});
    /// usrcu::trace::barrier();
    /// while !usrcu::trace::idle() {
    ///     std::thread::yield_now();
    /// }
    /// ```
    pub fn idle() -> bool {
        super::engine::idle()
    }

    /// Is the calling thread the host's `usrcu-trace` callback thread? In a
    /// plugin too: the answer is the host's (its engine runs every
    /// callback, the plugin's included).
    ///
    /// ```
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// usrcu::trace::call(move || tx.send(usrcu::trace::on_callback_thread()).unwrap());
    /// assert!(rx.recv().unwrap());
    /// assert!(!usrcu::trace::on_callback_thread());
    /// ```
    pub fn on_callback_thread() -> bool {
        // SAFETY: the runtime's `on_callback_thread` has no preconditions.
        unsafe { (vt().on_callback_thread)() != 0 }
    }
}
