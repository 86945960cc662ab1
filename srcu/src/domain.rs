//! The `Srcu` domain: static and dynamic, its shared `#[repr(C)]` layout, and
//! the public operations, which dispatch to the runtime's vtable.

use crate::callbacks::CallbackHead;
use crate::cleanup::CleanupError;
use crate::diagnostics::WarningKind;
use crate::fence::FenceMode;
use crate::grace_period::Cookie;
use crate::percpu::PerCpu;
use crate::reader::{self, ReadIndex, SrcuReadGuard};
use crate::runtime::{self, DomainState, RuntimeVTable};
use crate::stats::SrcuStats;
use crate::sync::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::marker::PhantomData;
use std::panic::Location;

/// Magic at the start of every `Srcu` ("SRCU").
pub const SRCU_MAGIC: u32 = 0x5352_4355;
/// Layout version of [`Srcu`], [`PerCpu`](crate::percpu), the callback head
/// and [`SrcuStats`]. 3: per-CPU slots in chunks allocated on first touch,
/// with a fallback slot (`percpu_bytes`, `percpu_chunks` in the stats); the
/// domain's `origin`; the callback head's ticket.
pub const SRCU_LAYOUT_VERSION: u32 = 3;

/// A byte of this copy of the crate's data: every domain created by this
/// copy's code points at it (`Srcu::origin`), so the runtime can tell which
/// loaded object a dynamic domain belongs to.
static ORIGIN: u8 = 0;

const FLAG_FORCE_SEQCST: u32 = 1;

/// Per-domain settings, usable in `const` context.
///
/// ```
/// use usrcu::{Srcu, SrcuConfig};
/// static BIG: Srcu = Srcu::new_static_with("big", SrcuConfig::new().possible_cpus(4096));
/// let _g = BIG.read_lock();
/// assert_eq!(BIG.possible_cpus(), 4096);
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SrcuConfig {
    pub(crate) possible_cpus: u32,
    pub(crate) flags: u32,
    pub(crate) stall_timeout_ms: u32,
    _reserved: u32,
}

impl SrcuConfig {
    /// Defaults: possible CPUs from the OS (or `USRCU_POSSIBLE_CPUS`), the
    /// membarrier fence pair where available, stall timeout from
    /// `USRCU_STALL_TIMEOUT_MS` or 10 s.
    pub const fn new() -> SrcuConfig {
        SrcuConfig {
            possible_cpus: 0,
            flags: 0,
            stall_timeout_ms: 0,
            _reserved: 0,
        }
    }

    /// Simulate `n` possible CPUs (1..=65536): one slot each, allocated by
    /// chunks of [`CPUS_PER_CHUNK`](crate::percpu::CPUS_PER_CHUNK) as
    /// readers run on them, so that unused CPUs cost neither memory nor scan
    /// time.
    pub const fn possible_cpus(mut self, n: u32) -> SrcuConfig {
        assert!(
            n >= 1 && n as usize <= crate::percpu::MAX_CPUS,
            "possible_cpus out of range"
        );
        self.possible_cpus = n;
        self
    }

    /// Use SeqCst fences on both sides instead of the membarrier pair.
    pub const fn force_seqcst_fence(mut self, on: bool) -> SrcuConfig {
        if on {
            self.flags |= FLAG_FORCE_SEQCST;
        } else {
            self.flags &= !FLAG_FORCE_SEQCST;
        }
        self
    }

    /// Warn about a grace period that waits for readers longer than `ms`.
    pub const fn stall_timeout_ms(mut self, ms: u32) -> SrcuConfig {
        self.stall_timeout_ms = ms;
        self
    }

    pub(crate) fn force_seqcst_fence_set(&self) -> bool {
        self.flags & FLAG_FORCE_SEQCST != 0
    }
}

/// An SRCU domain.
///
/// Readers ([`read_lock`](Srcu::read_lock)) never block updaters and may
/// sleep, block or do I/O inside their section. [`synchronize`](Srcu::synchronize)
/// waits for every reader that began before it; [`call_srcu`](Srcu::call_srcu)
/// runs a callback after such a grace period; [`barrier`](Srcu::barrier)
/// waits for every callback queued before it.
///
/// ```
/// use std::sync::atomic::{AtomicPtr, Ordering};
/// use usrcu::Srcu;
///
/// static DOMAIN: Srcu = Srcu::new_static("config");
/// static CONFIG: AtomicPtr<u32> = AtomicPtr::new(std::ptr::null_mut());
///
/// CONFIG.store(Box::into_raw(Box::new(1)), Ordering::Release);
/// {
///     let _g = DOMAIN.read_lock();
///     let v = unsafe { *CONFIG.load(Ordering::Acquire) };
///     assert_eq!(v, 1);
/// }
/// let old = CONFIG.swap(Box::into_raw(Box::new(2)), Ordering::AcqRel);
/// DOMAIN.synchronize(); // every reader that could see `old` is gone
/// drop(unsafe { Box::from_raw(old) });
/// # drop(unsafe { Box::from_raw(CONFIG.load(Ordering::Acquire)) });
/// ```
///
/// # Layout
///
/// `#[repr(C)]` and versioned: a plugin's copy of this crate and the host's
/// touch the same struct (the header, the state word, the per-CPU block
/// pointer, `call_srcu_used`, the runtime pointer). The rest is private to the
/// runtime behind `private`.
#[repr(C)]
#[derive(Debug)]
pub struct Srcu {
    magic: u32,
    layout_version: u32,
    name_ptr: *const u8,
    name_len: usize,
    config: SrcuConfig,
    /// Attach state, see `attach.rs`.
    state: AtomicU32,
    call_srcu_used: AtomicBool,
    dynamic: bool,
    percpu: AtomicPtr<PerCpu>,
    runtime: AtomicPtr<RuntimeVTable>,
    private: AtomicPtr<DomainState>,
    barriers_skipped: AtomicU64,
    /// `&ORIGIN` of the copy of this crate whose code created the domain.
    origin: *const u8,
}

// SAFETY: all shared mutable state is atomic; `name_ptr` points at an
// immutable string owned by (or outliving) the domain; `origin` is only
// compared, never dereferenced.
unsafe impl Sync for Srcu {}
// SAFETY: as above.
unsafe impl Send for Srcu {}

impl Srcu {
    /// A static domain; its per-CPU state is attached on first use (or by the
    /// plugin loader), like the kernel's `DEFINE_STATIC_SRCU`.
    pub const fn new_static(name: &'static str) -> Srcu {
        Srcu::new_static_with(name, SrcuConfig::new())
    }

    /// A static domain with settings.
    pub const fn new_static_with(name: &'static str, config: SrcuConfig) -> Srcu {
        Srcu {
            magic: SRCU_MAGIC,
            layout_version: SRCU_LAYOUT_VERSION,
            name_ptr: name.as_ptr(),
            name_len: name.len(),
            config,
            state: AtomicU32::new(crate::attach::DETACHED),
            call_srcu_used: AtomicBool::new(false),
            dynamic: false,
            percpu: AtomicPtr::new(std::ptr::null_mut()),
            runtime: AtomicPtr::new(std::ptr::null_mut()),
            private: AtomicPtr::new(std::ptr::null_mut()),
            barriers_skipped: AtomicU64::new(0),
            origin: &ORIGIN,
        }
    }

    /// A dynamic domain. Dropping it cleans it up (warning and leaking its
    /// state instead if anything may still use it).
    pub fn new(name: &str) -> Srcu {
        Srcu::with_config(name, SrcuConfig::new())
    }

    /// A dynamic domain with settings.
    pub fn with_config(name: &str, config: SrcuConfig) -> Srcu {
        let owned: &'static str = Box::leak(name.to_owned().into_boxed_str());
        let mut s = Srcu::new_static_with(owned, config);
        s.dynamic = true;
        s
    }

    /// The domain's name.
    pub fn name(&self) -> &str {
        // SAFETY: built from a `&str` in `new_static_with`, immutable, and
        // alive as long as the domain (static, or owned by a dynamic one).
        unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(self.name_ptr, self.name_len)) }
    }

    /// Is this a dynamic domain ([`Srcu::new`])?
    pub fn is_dynamic(&self) -> bool {
        self.dynamic
    }

    /// The layout header: (magic, layout version). A loader checks it.
    pub fn header(&self) -> (u32, u32) {
        (self.magic, self.layout_version)
    }

    /// The settings the domain was created with.
    pub fn config(&self) -> SrcuConfig {
        self.config
    }

    /// Address of a static of the copy of this crate whose code created the
    /// domain: a dynamic domain created by a plugin's code points into that
    /// plugin (the runtime's inventory uses it).
    pub fn origin(&self) -> usize {
        self.origin as usize
    }

    // --- shared-layout accessors used by the runtime ---------------------

    pub(crate) fn state_word(&self) -> &AtomicU32 {
        &self.state
    }

    pub(crate) fn percpu_word(&self) -> &AtomicPtr<PerCpu> {
        &self.percpu
    }

    pub(crate) fn private_ptr(&self) -> *mut DomainState {
        // Acquire: pairs with the Release in `set_private`.
        self.private.load(Ordering::Acquire)
    }

    pub(crate) fn set_private(&self, p: *mut DomainState) {
        // Release: the state is built before it is published; the percpu
        // pointer (published after it, Release) implies it.
        self.private.store(p, Ordering::Release);
    }

    pub(crate) fn take_private(&self) -> *mut DomainState {
        self.private.swap(std::ptr::null_mut(), Ordering::AcqRel)
    }

    pub(crate) fn set_runtime_if_unset(&self, vt: &'static RuntimeVTable) {
        let _ = self.runtime.compare_exchange(
            std::ptr::null_mut(),
            vt as *const RuntimeVTable as *mut RuntimeVTable,
            // Release/Acquire: publishes the 'static table.
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// The runtime this domain uses.
    #[inline]
    fn rt(&self) -> &'static RuntimeVTable {
        // Acquire: pairs with the Release in `set_runtime_if_unset`.
        let p = self.runtime.load(Ordering::Acquire);
        if p.is_null() {
            let vt = runtime::current();
            self.set_runtime_if_unset(vt);
            // Acquire as above.
            // SAFETY: only 'static vtables are ever stored.
            unsafe { &*self.runtime.load(Ordering::Acquire) }
        } else {
            // SAFETY: only 'static vtables are ever stored.
            unsafe { &*p }
        }
    }

    /// The runtime this domain dispatches to, null until first use (a
    /// loader checks that a plugin's domains use the host's).
    pub fn runtime_ptr(&self) -> *const RuntimeVTable {
        // Acquire: pairs with the Release in `set_runtime_if_unset`.
        self.runtime.load(Ordering::Acquire)
    }

    /// Use `vt` for this domain (a loader attaching a plugin's static domain
    /// to the host's runtime). No effect if a runtime is already set.
    ///
    /// # Safety
    /// `vt` must outlive the domain's use.
    pub unsafe fn set_runtime(&self, vt: &'static RuntimeVTable) {
        self.set_runtime_if_unset(vt);
    }

    /// The per-CPU block, attaching it on first use.
    #[inline(always)]
    pub(crate) fn percpu_or_attach(&self) -> &PerCpu {
        // Acquire: pairs with the Release publication in `attach_once`.
        let p = self.percpu.load(Ordering::Acquire);
        if p.is_null() {
            return self.attach_slow();
        }
        // SAFETY: a published block stays valid until a successful cleanup,
        // which requires no reader inside and none entering.
        unsafe { &*p }
    }

    #[cold]
    #[inline(never)]
    fn attach_slow(&self) -> &PerCpu {
        let rt = self.rt();
        // SAFETY: `self` is live; the vtable function attaches it.
        let p = unsafe { (rt.attach)(self) };
        // SAFETY: as in `percpu_or_attach`.
        unsafe { &*p }
    }

    /// Attach the per-CPU state now (a loader does this for each static
    /// domain of a plugin, the kernel's `srcu_module_coming`). Idempotent.
    pub fn attach(&self) {
        self.percpu_or_attach();
    }

    /// Is the per-CPU state attached?
    pub fn is_attached(&self) -> bool {
        // Acquire: as in `percpu_or_attach`.
        !self.percpu.load(Ordering::Acquire).is_null()
    }

    /// Slots of this domain (its possible CPUs); attaches the domain.
    pub fn possible_cpus(&self) -> usize {
        self.percpu_or_attach().nr_slots()
    }

    /// The fence pair this domain uses; attaches the domain.
    pub fn fence_mode(&self) -> FenceMode {
        if self.percpu_or_attach().seqcst_readers != 0 {
            FenceMode::SeqCst
        } else {
            FenceMode::Membarrier
        }
    }

    // --- readers ------------------------------------------------------------

    /// Enter a read-side critical section; it ends when the guard drops.
    /// Sections nest, and may sleep, block or do I/O.
    ///
    /// Not async-signal-safe in general: a CPU's first section on a domain
    /// allocates that CPU's chunk of counters, and debug builds record where
    /// each section began (an allocation and a lock). A signal handler that
    /// interrupts this thread inside that bookkeeping and enters a section
    /// of its own skips its record instead of deadlocking on the lock.
    #[inline(always)]
    #[cfg_attr(debug_assertions, track_caller)]
    pub fn read_lock(&self) -> SrcuReadGuard<'_> {
        let pc = self.percpu_or_attach();
        // Debug bookkeeping before the lock add (and, in the guard's drop,
        // after the unlock add): no lock of it sits inside the counted
        // section, where it would act as the reader fence.
        #[cfg(debug_assertions)]
        let token = self.debug_reader_enter(Location::caller(), true);
        let (idx, entered) = reader::lock_entered(pc);
        SrcuReadGuard {
            pc,
            idx,
            entered,
            #[cfg(debug_assertions)]
            debug: (self, token),
            _not_send: PhantomData,
        }
    }

    /// Enter a section that may end in another scope or on another thread
    /// (the kernel's `srcu_down_read`). End it with [`Srcu::read_unlock_raw`].
    ///
    /// ```
    /// static D: usrcu::Srcu = usrcu::Srcu::new_static("raw-doc");
    /// let idx = D.read_lock_raw();
    /// std::thread::spawn(move || {
    ///     // SAFETY: `idx` came from `D.read_lock_raw()` and is ended once.
    ///     unsafe { D.read_unlock_raw(idx) };
    /// })
    /// .join()
    /// .unwrap();
    /// ```
    #[inline(always)]
    #[cfg_attr(debug_assertions, track_caller)]
    pub fn read_lock_raw(&self) -> ReadIndex {
        let pc = self.percpu_or_attach();
        // Before the lock add: see `read_lock`.
        let debug_token = self.debug_reader_enter(Location::caller(), false);
        let idx = reader::lock(pc);
        ReadIndex { idx, debug_token }
    }

    /// End a section begun with [`Srcu::read_lock_raw`].
    ///
    /// # Safety
    /// `idx` must come from `read_lock_raw` on this same domain, and each
    /// index is ended exactly once.
    #[inline(always)]
    pub unsafe fn read_unlock_raw(&self, idx: ReadIndex) {
        let pc = self.percpu_or_attach();
        reader::unlock(pc, idx.idx);
        self.debug_reader_exit(idx.debug_token, false);
    }

    // --- debug tracking (debug builds of the reader's code only) -----------

    #[inline(always)]
    fn debug_reader_enter(&self, loc: &'static Location<'static>, guard: bool) -> u64 {
        if !cfg!(debug_assertions) {
            return 0;
        }
        if guard {
            held::push(self);
        }
        let f = loc.file();
        // SAFETY: `self` is live; the runtime copies the file name.
        unsafe { (self.rt().reader_enter)(self, f.as_ptr(), f.len(), loc.line(), loc.column()) }
    }

    #[inline(always)]
    pub(crate) fn debug_reader_exit(&self, token: u64, guard: bool) {
        if !cfg!(debug_assertions) {
            return;
        }
        if guard {
            held::pop(self);
        }
        // SAFETY: `self` is live; the runtime does not touch its state.
        unsafe { (self.rt().reader_exit)(self, token) };
    }

    /// Debug builds: panic if this thread holds a guard of this domain.
    #[track_caller]
    fn assert_not_in_own_section(&self, what: &str) {
        if cfg!(debug_assertions) && held::contains(self) {
            let msg = format!(
                "Illegal {what}() in same-domain SRCU read-side critical section (domain '{}'): it would wait for itself forever",
                self.name()
            );
            // SAFETY: `self` is live; the message is valid UTF-8.
            unsafe { (self.rt().report)(self, WarningKind::IllegalSynchronize.to_u32(), msg.as_ptr(), msg.len()) };
            panic!("{msg}");
        }
    }

    // --- updaters -----------------------------------------------------------

    /// Wait until every reader that began before this call has ended.
    /// Concurrent callers share grace periods.
    ///
    /// Debug builds panic if called while this thread holds a guard
    /// ([`read_lock`](Srcu::read_lock)) of this domain. Raw sections
    /// ([`read_lock_raw`](Srcu::read_lock_raw)) are not checked, since
    /// another thread may end them: one left open by this thread makes this
    /// call wait forever.
    #[track_caller]
    pub fn synchronize(&self) {
        self.assert_not_in_own_section("synchronize");
        // SAFETY: `self` is live.
        unsafe { (self.rt().synchronize)(self, 0, crate::runtime::vtable_forever()) };
    }

    /// Like [`Srcu::synchronize`], spinning and polling harder to finish
    /// sooner.
    #[track_caller]
    pub fn synchronize_expedited(&self) {
        self.assert_not_in_own_section("synchronize_expedited");
        // SAFETY: `self` is live.
        unsafe { (self.rt().synchronize)(self, 1, crate::runtime::vtable_forever()) };
    }

    /// Like [`Srcu::synchronize_expedited`], giving up after `timeout`:
    /// true if every reader that began before the call has ended. On a time
    /// out nothing is left blocked: the runtime finishes the grace period in
    /// the background.
    ///
    /// ```
    /// use std::time::Duration;
    /// let d = usrcu::Srcu::new("sync-timeout-doc");
    /// let idx = d.read_lock_raw();
    /// assert!(!d.synchronize_timeout(Duration::from_millis(10)));
    /// // SAFETY: `idx` came from `d.read_lock_raw()` and is ended once.
    /// unsafe { d.read_unlock_raw(idx) };
    /// assert!(d.synchronize_timeout(Duration::from_secs(60)));
    /// ```
    #[track_caller]
    pub fn synchronize_timeout(&self, timeout: std::time::Duration) -> bool {
        self.assert_not_in_own_section("synchronize_timeout");
        let ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX - 1);
        // SAFETY: `self` is live.
        unsafe { (self.rt().synchronize)(self, 1, ns) != 0 }
    }

    /// Run `f` on a runtime thread after a grace period. Callbacks run in
    /// grace-period order; a panicking callback is reported
    /// ([`WarningKind::CallbackPanicked`]) and the runtime goes on.
    pub fn call_srcu<F: FnOnce() + Send + 'static>(&self, f: F) {
        if crate::slab::fits::<F>() {
            // A small closure lives in a slot of a runtime-owned block: no
            // allocation of its own (`slab.rs`).
            unsafe extern "C" fn inline_trampoline<F: FnOnce()>(h: *mut CallbackHead) {
                // SAFETY: `h` is the head of the slot that `call_srcu` filled
                // with an `F` (it fits), handed back exactly once: the
                // closure is moved out, then the slot is given back.
                let f = unsafe {
                    let f = std::ptr::read(crate::slab::data(h) as *const F);
                    crate::slab::release_slot(h);
                    f
                };
                crate::runtime::run_catching_panic("usrcu", f);
            }
            // SAFETY: `self` is live; the runtime returns a slot that is ours
            // until its trampoline gives it back.
            let h = unsafe { (self.rt().alloc_slot)(self) };
            // SAFETY: the slot holds `INLINE_BYTES` bytes aligned to
            // `INLINE_ALIGN`, which `fits` checked; the trampoline takes the
            // closure back out exactly once.
            unsafe {
                std::ptr::write(crate::slab::data(h) as *mut F, f);
                crate::slab::note_written(h);
                self.call_srcu_raw(h, inline_trampoline::<F>);
            }
            return;
        }
        #[repr(C)]
        struct Boxed<F> {
            head: CallbackHead,
            f: Option<F>,
        }
        unsafe extern "C" fn trampoline<F: FnOnce()>(h: *mut CallbackHead) {
            // SAFETY: `h` is the head of the `Boxed<F>` leaked below (first
            // field of a repr(C) struct), handed back exactly once.
            let mut b = unsafe { Box::from_raw(h as *mut Boxed<F>) };
            let f = b.f.take().expect("callback runs once");
            crate::runtime::run_catching_panic("usrcu", f);
        }
        let b = Box::into_raw(Box::new(Boxed {
            head: CallbackHead::new(),
            f: Some(f),
        }));
        // SAFETY: `b` is a fresh allocation whose first field is the head;
        // the trampoline takes ownership back.
        unsafe { self.call_srcu_raw(b as *mut CallbackHead, trampoline::<F>) };
    }

    /// Queue `func(head)` to run after a grace period, without allocating
    /// (the kernel's `call_srcu` with an `rcu_head`).
    ///
    /// ```
    /// use usrcu::{CallbackHead, Srcu};
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// #[repr(C)]
    /// struct Node { head: CallbackHead, value: u64 }
    /// static FREED: AtomicUsize = AtomicUsize::new(0);
    /// unsafe extern "C" fn free_node(h: *mut CallbackHead) {
    ///     // SAFETY: `h` is the first field of a leaked Box<Node>.
    ///     drop(unsafe { Box::from_raw(h as *mut Node) });
    ///     FREED.fetch_add(1, Ordering::Relaxed);
    /// }
    /// static D: Srcu = Srcu::new_static("intrusive-doc");
    /// let n = Box::into_raw(Box::new(Node { head: CallbackHead::new(), value: 7 }));
    /// // SAFETY: `n` stays valid until `free_node` takes it back.
    /// unsafe { D.call_srcu_raw(n as *mut CallbackHead, free_node) };
    /// D.barrier();
    /// assert_eq!(FREED.load(Ordering::Relaxed), 1);
    /// ```
    ///
    /// # Safety
    /// `head` must be valid, not queued elsewhere, and stay valid (and not
    /// be moved) until `func` is called with it; `func` must not unwind and
    /// must be safe to call on a runtime thread.
    pub unsafe fn call_srcu_raw(&self, head: *mut CallbackHead, func: unsafe extern "C" fn(*mut CallbackHead)) {
        // Relaxed load: only avoids a redundant write. Release store: pairs
        // with the Acquire in `call_srcu_used`.
        if !self.call_srcu_used.load(Ordering::Relaxed) {
            self.call_srcu_used.store(true, Ordering::Release);
        }
        // SAFETY: forwarded contract.
        unsafe { (self.rt().call_srcu)(self, head, func) };
    }

    /// Wait until every callback queued before this call has run. Returns at
    /// once, without touching the runtime, if `call_srcu` was never used on
    /// this domain.
    ///
    /// Called from inside one of this domain's own callbacks it would wait
    /// for itself: it reports an [`IllegalSynchronize`](WarningKind::IllegalSynchronize)
    /// warning and returns at once, without waiting
    /// ([`Srcu::barrier_timeout`] returns false there), and does not count
    /// in [`SrcuStats::barriers_issued`]. From a callback of *another*
    /// domain it waits as usual (callbacks of different domains run on
    /// different invokers). Debug builds panic if called while this thread
    /// holds a guard of this domain (see [`Srcu::synchronize`]).
    #[track_caller]
    pub fn barrier(&self) {
        let _ = self.barrier_inner(crate::runtime::vtable_forever());
    }

    /// Like [`Srcu::barrier`], giving up after `timeout`: true if every
    /// callback queued before the call has run. A timed-out barrier leaves
    /// nothing that blocks (its marker is reclaimed when it runs; repeated
    /// timed-out barriers with no `call_srcu` in between share one marker).
    ///
    /// ```
    /// use std::time::Duration;
    /// let d = usrcu::Srcu::new("barrier-timeout-doc");
    /// d.call_srcu(|| std::thread::sleep(Duration::from_millis(50)));
    /// while !d.barrier_timeout(Duration::from_millis(1)) {}
    /// ```
    #[track_caller]
    pub fn barrier_timeout(&self, timeout: std::time::Duration) -> bool {
        let ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX - 1);
        self.barrier_inner(ns)
    }

    #[track_caller]
    fn barrier_inner(&self, timeout_ns: u64) -> bool {
        self.assert_not_in_own_section("barrier");
        if !self.call_srcu_used() {
            // Relaxed: a statistic.
            self.barriers_skipped.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        // SAFETY: `self` is live.
        unsafe { (self.rt().barrier)(self, timeout_ns) == 0 }
    }

    /// Has `call_srcu` ever been used on this domain? Set by the first
    /// `call_srcu`, never cleared.
    pub fn call_srcu_used(&self) -> bool {
        // Acquire: pairs with the Release store in `call_srcu_raw`.
        self.call_srcu_used.load(Ordering::Acquire)
    }

    /// A cookie for the grace period that starts after this call, without
    /// starting it.
    pub fn get_state(&self) -> Cookie {
        // SAFETY: `self` is live.
        Cookie(unsafe { (self.rt().get_state)(self, 0) })
    }

    /// Like [`Srcu::get_state`], and make sure that grace period runs.
    pub fn start_poll(&self) -> Cookie {
        // SAFETY: `self` is live.
        Cookie(unsafe { (self.rt().get_state)(self, 1) })
    }

    /// Has the grace period named by `cookie` completed?
    pub fn poll_state(&self, cookie: Cookie) -> bool {
        // SAFETY: `self` is live.
        unsafe { (self.rt().poll_state)(self, cookie.0) != 0 }
    }

    /// Counters of this domain.
    pub fn stats(&self) -> SrcuStats {
        let mut s = SrcuStats::default();
        // SAFETY: `self` is live, `s` writable.
        unsafe { (self.rt().stats)(self, &mut s) };
        // Relaxed: a statistic.
        s.barriers_skipped = self.barriers_skipped.load(Ordering::Relaxed);
        s
    }

    /// Free the per-CPU state if nothing can still use it. Readers inside,
    /// callbacks pending (a missed barrier) or a grace period in flight give
    /// a [`CleanupError`] and warnings, and the state is leaked, never freed;
    /// the domain stays usable. After a successful cleanup a later use
    /// attaches fresh state.
    ///
    /// From inside one of this domain's own callbacks (typically: the
    /// callback drops the last `Arc<Srcu>`), with no reader inside, the
    /// cleanup succeeds: the domain lets go of its state at once, its
    /// remaining callbacks (the running one among them) still run, and the
    /// runtime frees the state after them, without a missed-barrier warning.
    /// If the domain is used again meanwhile, its fresh state keeps the
    /// order: a `barrier` also waits for the callbacks left behind, and
    /// callbacks queued on the fresh state run after them.
    ///
    /// # Safety
    /// No other thread may use this domain concurrently with this call: not
    /// enter a read section, nor `synchronize`, `call_srcu`, `barrier`,
    /// poll, or read `stats` (readers already inside are detected and
    /// refused; the runtime's own threads hold their own references). This
    /// is the kernel's `cleanup_srcu_struct` contract; dropping a dynamic
    /// domain upholds it by construction (`&mut self`).
    pub unsafe fn cleanup(&self) -> Result<(), CleanupError> {
        if !self.is_attached() {
            return Ok(());
        }
        // SAFETY: `self` is live; the caller upholds the no-new-readers rule.
        let bits = unsafe { (self.rt().cleanup)(self) };
        match CleanupError::from_bits(bits) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

impl Drop for Srcu {
    fn drop(&mut self) {
        if cfg!(debug_assertions) {
            held::forget(self);
        }
        // SAFETY: `&mut self`: no guard can exist and nobody else can enter.
        let r = unsafe { self.cleanup() };
        if r.is_ok() && self.dynamic {
            // SAFETY: a dynamic domain owns its leaked name string.
            drop(unsafe {
                Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                    self.name_ptr as *mut u8,
                    self.name_len,
                ))
            });
        }
        // On error the state (and the name, which warnings may still quote)
        // is leaked on purpose.
    }
}

/// Debug builds: which domains this thread holds a guard of, for the
/// self-deadlock check. A const-initialised thread-local of `Cell`s: no
/// destructor is ever registered (a plugin must not register one).
///
/// One entry per *domain* with its count of guards, so that any depth of
/// nesting is tracked for up to `N` distinct domains at once (one entry per
/// guard lost every section past the 16th: a `synchronize` there waited for
/// itself instead of panicking). Guards of further domains are not tracked:
/// the check misses them, and never reports a section that is not held.
mod held {
    use super::Srcu;
    use std::cell::Cell;

    const N: usize = 32;

    thread_local! {
        static HELD: [Cell<usize>; N] = const { [const { Cell::new(0) }; N] };
        static COUNT: [Cell<usize>; N] = const { [const { Cell::new(0) }; N] };
        /// In `push` or `pop`: a signal handler that interrupts one and
        /// takes or drops a guard itself leaves the table alone (both its
        /// push and its pop happen while the flag is set), so the two
        /// updates never interleave.
        static BUSY: Cell<bool> = const { Cell::new(false) };
    }

    fn find(h: &[Cell<usize>; N], me: usize) -> Option<usize> {
        h.iter().position(|c| c.get() == me)
    }

    fn not_nested(f: impl FnOnce()) {
        if !BUSY.with(|b| b.replace(true)) {
            f();
            BUSY.with(|b| b.set(false));
        }
    }

    pub(super) fn push(s: &Srcu) {
        let me = s as *const Srcu as usize;
        not_nested(|| {
            HELD.with(|h| {
                COUNT.with(|n| {
                    if let Some(i) = find(h, me).or_else(|| find(h, 0)) {
                        h[i].set(me);
                        n[i].set(n[i].get() + 1);
                    }
                })
            })
        });
    }

    pub(super) fn pop(s: &Srcu) {
        let me = s as *const Srcu as usize;
        not_nested(|| {
            HELD.with(|h| {
                COUNT.with(|n| {
                    if let Some(i) = find(h, me) {
                        n[i].set(n[i].get().saturating_sub(1));
                        if n[i].get() == 0 {
                            h[i].set(0);
                        }
                    }
                })
            })
        });
    }

    /// The domain goes away: forget this thread's guards of it (guards it
    /// forgot with `mem::forget`), so that a domain later made at the same
    /// address is not taken for a held one. Other threads' entries stay
    /// (their tables are theirs).
    pub(super) fn forget(s: &Srcu) {
        let me = s as *const Srcu as usize;
        not_nested(|| {
            HELD.with(|h| {
                COUNT.with(|n| {
                    if let Some(i) = find(h, me) {
                        n[i].set(0);
                        h[i].set(0);
                    }
                })
            })
        });
    }

    pub(super) fn contains(s: &Srcu) -> bool {
        let me = s as *const Srcu as usize;
        HELD.with(|h| find(h, me).is_some())
    }
}

// Field offsets of the shared structs defined here, for the ABI fingerprint
// (`abi.rs`). Every field, in declaration order: a field added, removed,
// moved or resized changes the fingerprint a loader compares.
impl Srcu {
    pub(crate) const FIELD_OFFSETS: [usize; 13] = [
        std::mem::offset_of!(Srcu, magic),
        std::mem::offset_of!(Srcu, layout_version),
        std::mem::offset_of!(Srcu, name_ptr),
        std::mem::offset_of!(Srcu, name_len),
        std::mem::offset_of!(Srcu, config),
        std::mem::offset_of!(Srcu, state),
        std::mem::offset_of!(Srcu, call_srcu_used),
        std::mem::offset_of!(Srcu, dynamic),
        std::mem::offset_of!(Srcu, percpu),
        std::mem::offset_of!(Srcu, runtime),
        std::mem::offset_of!(Srcu, private),
        std::mem::offset_of!(Srcu, barriers_skipped),
        std::mem::offset_of!(Srcu, origin),
    ];
}

impl SrcuConfig {
    pub(crate) const FIELD_OFFSETS: [usize; 4] = [
        std::mem::offset_of!(SrcuConfig, possible_cpus),
        std::mem::offset_of!(SrcuConfig, flags),
        std::mem::offset_of!(SrcuConfig, stall_timeout_ms),
        std::mem::offset_of!(SrcuConfig, _reserved),
    ];
}
