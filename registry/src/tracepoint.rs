//! Tracepoints: typed events a host declares, plugins attach probes to, and
//! the host fires (the kernel's tracepoints, with `TRACEPOINT_MAY_FAULT`).
//!
//! [`define_tracepoint!`](crate::define_tracepoint) declares a `static`
//! [`Tracepoint<A>`] (the event's argument type `A`), normal or faultable,
//! and lists it in this object's [`TRACEPOINTS`] slice.
//!
//! * **Firing** ([`Tracepoint::fire`]) with no probe attached is one load and
//!   a branch. Otherwise the probes run under the tracepoint's flavor:
//!   - faultable tracepoints: inside a Tasks Trace read section
//!     (`usrcu::trace`); probes may sleep, fault and take locks;
//!   - normal tracepoints: Tasks RCU (`usrcu::tasks`), with no read-side
//!     marker at all; probes must not block, must not fault on
//!     non-resident memory and must not keep the pointers they are given.
//!     A thread holds every Tasks grace period that began before it fired
//!     until it blocks or passes `usrcu::tasks::quiescent()`: a thread that
//!     fires normal tracepoints in a loop without ever blocking must call
//!     `quiescent()` between fires, or unregistering (and unloading a
//!     plugin with probes) waits for it, with a stall warning naming it.
//! * **Registering** a probe (a function and its `'static` data) gives a
//!   [`ProbeHandle`]. A probe marked as possibly blocking is refused on a
//!   normal tracepoint ([`TracepointError::MayBlockOnNormal`]), and so is a
//!   probe past [`MAX_NORMAL_PROBES`] ([`TracepointError::TooManyProbes`]).
//! * **Updates** replace the probe array copy-on-update; the old array is
//!   freed after a grace period of the flavor (deferred with `call`). The
//!   arrays are allocated, published and freed by the code of the object
//!   that defined the tracepoint, whichever copy of this crate updates them
//!   (a plugin's, attaching to a host tracepoint): a plugin's `register`
//!   or `unregister` leaves no callback of its own code behind.
//!   [`ProbeHandle::unregister`] waits for the grace period, so the probe's
//!   code and data are unused when it returns;
//!   [`ProbeHandle::unregister_deferred`] does not wait.
//! * **Unload**: [`remove_probes_in`] removes every probe of this object's
//!   tracepoints whose code (its function, or the trampoline of the copy of
//!   this crate that attached it) or data lies in an address range, and
//!   waits for the grace periods and for the flavors' callbacks that run the
//!   object's code (not for unrelated callbacks). The plugin loader runs it for
//!   each unloading object (its built-in `Going` notifier), so a plugin that
//!   forgets its probes loses nothing and crashes nothing.
//!
//! ```
//! use usrcu_registry::define_tracepoint;
//!
//! define_tracepoint!(pub static REQUEST_DONE: Tracepoint<u64> = faultable);
//!
//! static SEEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
//! fn on_done(seen: &std::sync::atomic::AtomicU64, bytes: &u64) {
//!     seen.fetch_add(*bytes, std::sync::atomic::Ordering::Relaxed);
//! }
//!
//! REQUEST_DONE.fire(&1); // no probe: one load and a branch
//! let h = REQUEST_DONE.register_may_block(on_done, &SEEN).unwrap();
//! REQUEST_DONE.fire(&10);
//! assert!(h.unregister()); // waits for a Tasks Trace grace period
//! REQUEST_DONE.fire(&100);
//! assert_eq!(SEEN.load(std::sync::atomic::Ordering::Relaxed), 10);
//! ```

use std::fmt;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Mutex;

/// Whether a tracepoint's probes may block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TracepointKind {
    /// Probes must not block, sleep, fault or allocate (Tasks RCU); they
    /// may log through the `log` bridge (a callout, `usrcu::runtime::callouts`).
    Normal,
    /// Probes may sleep, fault and take locks (Tasks Trace RCU).
    Faultable,
}

// ---------------------------------------------------------------------------
// The flavor seam: which RCU flavor protects which tracepoint's probes.

/// The RCU flavor that protects a tracepoint's probes.
///
/// `Tasks` is `usrcu::tasks`: no read-side marker at all; a grace period
/// ends when every thread that existed at its start has blocked, switched
/// voluntarily or passed `tasks::quiescent()`, so a thread inside a probe
/// (which never blocks) holds it. `TasksTrace` is `usrcu::trace`: a
/// per-thread nesting count, and a grace period that waits for sections that
/// sleep or fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    Tasks,
    TasksTrace,
}

/// A read section of a [`Flavor`]: a Tasks Trace guard, or nothing at all
/// (Tasks readers have no marker).
struct Section {
    _trace: Option<usrcu::trace::TraceGuard>,
}

impl Flavor {
    fn of(kind: TracepointKind) -> Flavor {
        match kind {
            TracepointKind::Normal => Flavor::Tasks,
            TracepointKind::Faultable => Flavor::TasksTrace,
        }
    }

    #[inline]
    fn read_section(self) -> Section {
        match self {
            Flavor::Tasks => Section { _trace: None },
            Flavor::TasksTrace => Section {
                _trace: Some(usrcu::trace::read_lock()),
            },
        }
    }

    fn synchronize(self) {
        match self {
            Flavor::Tasks => usrcu::tasks::synchronize(),
            Flavor::TasksTrace => usrcu::trace::synchronize(),
        }
    }

    /// A grace period of this flavor started now, waited for until
    /// `deadline`; true if it completed.
    fn synchronize_until(self, deadline: std::time::Instant) -> bool {
        match self {
            Flavor::Tasks => {
                usrcu::tasks::start_poll().wait_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            }
            Flavor::TasksTrace => {
                let c = usrcu::trace::start_poll();
                let mut nap = std::time::Duration::from_micros(50);
                loop {
                    if usrcu::trace::poll_state(c) {
                        return true;
                    }
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        return false;
                    }
                    std::thread::sleep(nap.min(deadline - now));
                    nap = (nap * 2).min(std::time::Duration::from_millis(5));
                }
            }
        }
    }

    fn call(self, f: impl FnOnce() + Send + 'static) {
        match self {
            Flavor::Tasks => usrcu::tasks::call(f),
            Flavor::TasksTrace => usrcu::trace::call(f),
        }
    }

    const ALL: [Flavor; 2] = [Flavor::Tasks, Flavor::TasksTrace];
}

/// Most probes a normal tracepoint holds: firing copies its probe array to
/// the stack before calling the first probe (see `fire_probes`).
pub const MAX_NORMAL_PROBES: usize = 32;

// ---------------------------------------------------------------------------

/// Why a probe was refused or not found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TracepointError {
    /// A probe marked as possibly blocking was offered to a normal
    /// tracepoint, whose probes run under Tasks RCU and must not block.
    MayBlockOnNormal {
        /// The tracepoint.
        tracepoint: &'static str,
    },
    /// A normal tracepoint already holds [`MAX_NORMAL_PROBES`] probes.
    TooManyProbes {
        /// The tracepoint.
        tracepoint: &'static str,
    },
}

impl fmt::Display for TracepointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TracepointError::MayBlockOnNormal { tracepoint } => write!(
                f,
                "tracepoint '{tracepoint}' is not faultable: a probe that may block cannot be attached to it"
            ),
            TracepointError::TooManyProbes { tracepoint } => write!(
                f,
                "normal tracepoint '{tracepoint}' already holds {MAX_NORMAL_PROBES} probes"
            ),
        }
    }
}

impl std::error::Error for TracepointError {}

/// One attached probe. `#[repr(C)]`: a plugin's copy of this crate builds
/// probes that the host's copy calls.
#[repr(C)]
struct Probe<A> {
    id: u64,
    call: unsafe fn(*const (), *const (), &A),
    func: *const (),
    data: *const (),
    may_block: bool,
}

impl<A> Clone for Probe<A> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A> Copy for Probe<A> {}

/// Call `func` (a `fn(&D, &A)`) with `data` (a `&'static D`).
///
/// # Safety
/// `func` and `data` were built from a `fn(&D, &A)` and a `&'static D` by
/// [`Tracepoint::attach`], with this `D`.
unsafe fn trampoline<D, A>(func: *const (), data: *const (), args: &A) {
    // SAFETY: `func` was a `fn(&D, &A)`, the same size as a pointer.
    let f: fn(&D, &A) = unsafe { std::mem::transmute::<*const (), fn(&D, &A)>(func) };
    // SAFETY: `data` was a `&'static D`.
    let d = unsafe { &*(data as *const D) };
    // A probe's panic stops here, in the copy of this crate (and of `std`)
    // that attached it: unwinding on into the firing thread's frames, of
    // another copy when a plugin's probe fires in the host, would abort the
    // process. It is reported as a `CallbackPanicked` warning instead, and
    // the other probes still run.
    usrcu::diagnostics::catch_panic("usrcu-registry: a tracepoint probe", || f(d, args));
    // The probe may be a plugin's: leave no rseq descriptor of its read
    // sections behind on the firing thread (`usrcu::clear_rseq_descriptor`).
    usrcu::clear_rseq_descriptor();
}

/// A probe as the unload notifier reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemovedProbe {
    /// The tracepoint it was attached to.
    pub tracepoint: &'static str,
    /// Address of the probe function.
    pub func: usize,
    /// Address of its data.
    pub data: usize,
    /// It was registered as possibly blocking.
    pub may_block: bool,
}

/// A typed event with probes; declare it with
/// [`define_tracepoint!`](crate::define_tracepoint).
///
/// `#[repr(C)]`: a host hands `&'static Tracepoint<A>` to plugins, whose own
/// copy of this crate (the same version, as the loader checks) attaches
/// probes to it. One cache line of its own: firers read `probes` and share
/// the line with nothing that is written while probes stay put.
#[repr(C, align(64))]
pub struct Tracepoint<A: 'static> {
    name: &'static str,
    kind: TracepointKind,
    /// The probe array: null when no probe is attached, else a
    /// `Box<Vec<Probe<A>>>` with at least one probe. Replaced whole
    /// (copy-on-update) under `update`; a replaced array is freed after a
    /// grace period of the tracepoint's flavor.
    probes: AtomicPtr<Vec<Probe<A>>>,
    update: Mutex<()>,
    next_id: AtomicU64,
    /// [`replace_probes`] as instantiated in the object that defined the
    /// tracepoint (the value is fixed in the static's initializer, compiled
    /// there): every copy of this crate that updates the probes (a plugin's,
    /// attaching to a host tracepoint) publishes the new array and frees the
    /// old one through it. So the arrays are allocated and freed by the
    /// defining object's allocator alone, and the deferred free of a
    /// replaced array runs the defining object's code, never a plugin's:
    /// unloading a plugin waits for none of them (a free queued behind an
    /// unrelated callback that blocks would otherwise hold the unload up).
    replace: unsafe fn(&Tracepoint<A>, *const Probe<A>, usize),
}

// SAFETY: the probe array is immutable once published and freed only after
// a grace period; probe data is `Sync` (`attach`'s bound), and `A` is only
// passed by reference on the firing thread.
unsafe impl<A> Sync for Tracepoint<A> {}
// SAFETY: as above; a tracepoint owns nothing tied to a thread.
unsafe impl<A> Send for Tracepoint<A> {}

impl<A> fmt::Debug for Tracepoint<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracepoint")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("probes", &self.probe_count())
            .finish()
    }
}

impl<A: 'static> Tracepoint<A> {
    /// A tracepoint with no probe. [`define_tracepoint!`](crate::define_tracepoint)
    /// also lists it in this object's [`TRACEPOINTS`] (for
    /// [`host_tracepoint`] lookups by name); either way, once a probe is
    /// attached the plugin loader's unload notifier finds it and detaches an
    /// unloading plugin's probes from it.
    pub const fn new(name: &'static str, kind: TracepointKind) -> Tracepoint<A> {
        Tracepoint {
            name,
            kind,
            probes: AtomicPtr::new(std::ptr::null_mut()),
            update: Mutex::new(()),
            next_id: AtomicU64::new(1),
            replace: replace_probes::<A>,
        }
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Normal or faultable.
    pub fn kind(&self) -> TracepointKind {
        self.kind
    }

    /// Is any probe attached?
    #[inline]
    pub fn enabled(&self) -> bool {
        // Relaxed: a hint; `fire_probes` re-reads under the read section.
        !self.probes.load(Ordering::Relaxed).is_null()
    }

    /// Fire the event: call every attached probe with `args`, inside a read
    /// section of the tracepoint's flavor. With no probe attached this is one
    /// load and a branch.
    #[inline(always)]
    pub fn fire(&self, args: &A) {
        if self.enabled() {
            self.fire_probes(args);
        }
    }

    #[cold]
    #[inline(never)]
    fn fire_probes(&self, args: &A) {
        match Flavor::of(self.kind) {
            Flavor::TasksTrace => {
                let _section = Flavor::TasksTrace.read_section();
                // Acquire: pairs with the Release publication in `publish`,
                // so the array's contents are visible.
                let p = self.probes.load(Ordering::Acquire);
                if p.is_null() {
                    return;
                }
                // SAFETY: a published array is freed only after a Tasks
                // Trace grace period, and we are inside a read section.
                for probe in unsafe { &*p }.iter() {
                    // SAFETY: built by `attach` from a matching (fn, data) pair.
                    unsafe { (probe.call)(probe.func, probe.data, args) };
                }
            }
            Flavor::Tasks => self.fire_tasks(args),
        }
    }

    /// Fire a normal tracepoint. No read-side marker: the thread holds any
    /// Tasks grace period that began before it loaded the array until it
    /// blocks or passes `tasks::quiescent()`, which a probe must not do
    /// (docs/memory-model.md, "Tasks RCU", evidence T3).
    ///
    /// The array is copied to the stack before the first probe runs, and
    /// not read again: a safe probe that breaks the contract and blocks ends
    /// the thread's part of the grace period, after which the old array may
    /// be freed. It then still runs the probes of its copy (their functions
    /// and data are `'static`), which is wrong but never reads freed memory.
    #[inline(always)]
    fn fire_tasks(&self, args: &A) {
        // Acquire: pairs with the Release publication in `publish`, so the
        // array's contents are visible. An updater that unpublished this
        // array before its grace period's T1 `membarrier` is not seen here
        // only if this load preceded T1; the reads of the copy below then
        // precede this thread's next blocking or quiescent point, which T5
        // orders before the free.
        let p = self.probes.load(Ordering::Acquire);
        if p.is_null() {
            return;
        }
        type Call<A> = (unsafe fn(*const (), *const (), &A), *const (), *const ());
        let mut copy = [const { std::mem::MaybeUninit::<Call<A>>::uninit() }; MAX_NORMAL_PROBES];
        // SAFETY: a published array is freed only after a Tasks grace
        // period, and this thread has not blocked since it loaded `p`.
        let probes = unsafe { &*p };
        let n = probes.len().min(MAX_NORMAL_PROBES);
        for (slot, probe) in copy.iter_mut().zip(&probes[..n]) {
            slot.write((probe.call, probe.func, probe.data));
        }
        for slot in &copy[..n] {
            // SAFETY: the first `n` slots were written above.
            let (call, func, data) = unsafe { slot.assume_init() };
            // SAFETY: built by `attach` from a matching (fn, data) pair.
            unsafe { call(func, data, args) };
        }
    }

    /// Attach `probe` with its `data`. It must not block: on a faultable
    /// tracepoint use [`register_may_block`](Self::register_may_block) for
    /// probes that may. On a normal tracepoint it runs under Tasks RCU: it
    /// must also not fault on non-resident memory (a fault that waits for
    /// I/O is a voluntary switch, which ends the thread's part of a grace
    /// period while it is still inside), so a plugin's probe code must be
    /// resident. A probe that breaks this is not unsound from safe code
    /// (see `fire_tasks`), but it may run after `unregister` returned.
    ///
    /// A probe that panics does not unwind into the firing thread: the panic
    /// is caught in the copy of this crate that attached the probe (a
    /// plugin's, for a plugin's probe) and reported as a
    /// [`CallbackPanicked`](usrcu::diagnostics::WarningKind::CallbackPanicked)
    /// warning; `fire` returns normally and the other probes still run.
    pub fn register<D: Sync + 'static>(
        &'static self,
        probe: fn(&D, &A),
        data: &'static D,
    ) -> Result<ProbeHandle<A>, TracepointError> {
        self.attach(probe, data, false)
    }

    /// Attach a probe that may sleep, fault or take locks. Refused on a
    /// normal tracepoint.
    pub fn register_may_block<D: Sync + 'static>(
        &'static self,
        probe: fn(&D, &A),
        data: &'static D,
    ) -> Result<ProbeHandle<A>, TracepointError> {
        self.attach(probe, data, true)
    }

    fn attach<D: Sync + 'static>(
        &'static self,
        probe: fn(&D, &A),
        data: &'static D,
        may_block: bool,
    ) -> Result<ProbeHandle<A>, TracepointError> {
        if may_block && self.kind == TracepointKind::Normal {
            return Err(TracepointError::MayBlockOnNormal { tracepoint: self.name });
        }
        let _u = self.update.lock().unwrap_or_else(|p| p.into_inner());
        if self.kind == TracepointKind::Normal && self.current().len() >= MAX_NORMAL_PROBES {
            return Err(TracepointError::TooManyProbes { tracepoint: self.name });
        }
        // Relaxed: a unique number, under the update lock.
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut v = self.current().to_vec();
        v.push(Probe {
            id,
            call: trampoline::<D, A>,
            func: probe as *const (),
            data: data as *const D as *const (),
            may_block,
        });
        self.publish(v);
        Ok(ProbeHandle { tracepoint: self, id })
    }

    /// The published array (update lock held).
    fn current(&self) -> &[Probe<A>] {
        // Relaxed: only updaters store, under the update lock we hold.
        let p = self.probes.load(Ordering::Relaxed);
        if p.is_null() {
            &[]
        } else {
            // SAFETY: freed only after being replaced, under the lock we hold.
            unsafe { &*p }
        }
    }

    /// Publish `v` (update lock held) and free the old array after a grace
    /// period, through the defining object's code (`replace`).
    fn publish(&self, v: Vec<Probe<A>>) {
        // SAFETY: the update lock is held; `v` is a live slice of probes
        // for the call (copied, not kept).
        unsafe { (self.replace)(self, v.as_ptr(), v.len()) }
    }

    /// Remove probes matching `pred` (update lock taken); returns them. The
    /// caller waits for the grace period if it needs to.
    fn remove_where(&self, pred: impl Fn(&Probe<A>) -> bool) -> Vec<Probe<A>> {
        let _u = self.update.lock().unwrap_or_else(|p| p.into_inner());
        let (gone, kept): (Vec<_>, Vec<_>) = self.current().iter().partition(|p| pred(p));
        if !gone.is_empty() {
            self.publish(kept);
        }
        gone
    }

    /// Probes attached.
    pub fn probe_count(&self) -> usize {
        let _u = self.update.lock().unwrap_or_else(|p| p.into_inner());
        self.current().len()
    }
}

/// Publish a copy of the `len` probes at `probes` as `tp`'s array and free
/// the array it replaces after a grace period of its flavor. Always called
/// through `Tracepoint::replace`, that is as instantiated in the object
/// that defined `tp`.
///
/// # Safety
/// `tp`'s update lock is held; `probes` points to `len` live probes for the
/// call.
unsafe fn replace_probes<A: 'static>(tp: &Tracepoint<A>, probes: *const Probe<A>, len: usize) {
    let new = if len == 0 {
        std::ptr::null_mut()
    } else {
        // SAFETY: the caller lends `len` probes (plain copies).
        Box::into_raw(Box::new(unsafe { std::slice::from_raw_parts(probes, len) }.to_vec()))
    };
    if tp.kind == TracepointKind::Normal && len > 0 {
        // Noted before the array is published: a thread can run a probe
        // only after the swap below, and the loader asks after detaching.
        // SAFETY: the caller lends `len` live probes for the call.
        note_normal_probes(unsafe { std::slice::from_raw_parts(probes, len) });
    }
    if !new.is_null() {
        // SAFETY: probes are only ever attached through `attach`, which
        // takes `&'static self`; a non-empty array is published only on a
        // tracepoint that had one attached, so `tp` lives for the rest of
        // the process (a static, or leaked).
        note_if_unlisted(unsafe { &*(tp as *const Tracepoint<A>) });
    }
    // Release: pairs with the Acquire load in `fire_probes`.
    let old = tp.probes.swap(new, Ordering::Release);
    if !old.is_null() {
        let old = OldArray(old);
        Flavor::of(tp.kind).call(move || drop(old));
    }
}

/// Note every address (trampoline, function, data) of the probes being
/// published on a normal tracepoint: code there may run under Tasks RCU
/// with no marker. Noted in the *host's* runtime
/// ([`usrcu::tasks::note_reader_code`]), whichever copy of this crate
/// publishes them: a record kept in the defining object's copy (a plugin
/// that defines a tracepoint) was never asked by the host's loader, which
/// then skipped its interrupted proof and unmapped a plugin under a signal
/// handler asleep over its probe (red team 16, SIGSEGV 3/3).
fn note_normal_probes<A>(probes: &[Probe<A>]) {
    let mut addrs = Vec::with_capacity(probes.len() * 3);
    for p in probes {
        addrs.extend([p.call as usize, p.func as usize, p.data as usize]);
    }
    usrcu::tasks::note_reader_code(&addrs);
}

/// The tracepoints of this object that are not in its [`TRACEPOINTS`]
/// slice (made with [`Tracepoint::new`] instead of
/// [`define_tracepoint!`](crate::define_tracepoint), or leaked at run time)
/// and have had a probe attached: the unload notifier searches them too
/// ([`remove_probes_in_within`]), so that a plugin's probe on such a
/// tracepoint is detached before the plugin is unmapped. Noted by the
/// defining object's code ([`replace_probes`]), whichever copy of this crate
/// attached the probe; never shrinks (a tracepoint lives as long as the
/// object that defined it).
static UNLISTED: Mutex<Vec<&'static dyn TracepointOps>> = Mutex::new(Vec::new());

/// Add `tp` to [`UNLISTED`] unless it is listed already (in the slice or
/// there). Runs when a non-empty probe array is published, which is rare
/// (an attach or a detach): two short scans.
fn note_if_unlisted<A: 'static>(tp: &'static Tracepoint<A>) {
    let addr = tp as *const Tracepoint<A> as *const ();
    let same = |t: &&'static dyn TracepointOps| std::ptr::eq(*t as *const dyn TracepointOps as *const (), addr);
    if TRACEPOINTS.iter().any(same) {
        return;
    }
    let mut l = UNLISTED.lock().unwrap_or_else(|p| p.into_inner());
    if !l.iter().any(same) {
        l.push(tp);
    }
}

/// Every tracepoint of this object that may hold probes: the declared ones
/// ([`tracepoints`]), then those made with [`Tracepoint::new`] that have
/// had a probe attached.
fn tracepoints_with_probes() -> Vec<&'static dyn TracepointOps> {
    let mut all: Vec<_> = tracepoints().collect();
    all.extend(UNLISTED.lock().unwrap_or_else(|p| p.into_inner()).iter().copied());
    all
}

/// A replaced probe array on its way to being freed.
struct OldArray<A>(*mut Vec<Probe<A>>);

// SAFETY: the array is owned by this value alone once unpublished; its
// probes' data is `Sync`.
unsafe impl<A> Send for OldArray<A> {}

impl<A> Drop for OldArray<A> {
    fn drop(&mut self) {
        // SAFETY: made by `Box::into_raw` in `publish`, unpublished, and
        // dropped once, after a grace period.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

/// An attached probe. Dropping the handle leaves the probe attached (as the
/// kernel's tracepoints do); unregister it, or let the plugin loader remove
/// it when its object unloads.
#[must_use = "dropping the handle leaves the probe attached"]
pub struct ProbeHandle<A: 'static> {
    tracepoint: &'static Tracepoint<A>,
    id: u64,
}

impl<A> fmt::Debug for ProbeHandle<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeHandle")
            .field("tracepoint", &self.tracepoint.name)
            .field("id", &self.id)
            .finish()
    }
}

impl<A: 'static> ProbeHandle<A> {
    /// Detach the probe and wait for a grace period of the tracepoint's
    /// flavor: when this returns, no thread is inside the probe and none
    /// will enter it. False if it was no longer attached (removed at unload).
    ///
    /// Not from inside a probe: on a faultable tracepoint the wait would
    /// wait for the firing thread's own read section, so it panics (after
    /// detaching; the panic is caught where the probe was attached and
    /// reported), and on a normal one it blocks, which a probe must not.
    /// Use [`unregister_deferred`](Self::unregister_deferred) there.
    pub fn unregister(self) -> bool {
        let found = self.unregister_deferred();
        if found {
            Flavor::of(self.tracepoint.kind).synchronize();
        }
        found
    }

    /// Detach the probe without waiting: threads already inside it may
    /// still run it until a grace period has passed.
    pub fn unregister_deferred(&self) -> bool {
        !self.tracepoint.remove_where(|p| p.id == self.id).is_empty()
    }
}

/// What the unload notifier needs of every tracepoint, whatever its type.
pub trait TracepointOps: Sync {
    /// Its name.
    fn name(&self) -> &'static str;
    /// Normal or faultable.
    fn kind(&self) -> TracepointKind;
    /// Detach every probe whose function or data address satisfies
    /// `inside`, without waiting; return them.
    fn detach_where(&self, inside: &dyn Fn(usize) -> bool) -> Vec<RemovedProbe>;
    /// [`args_fingerprint`] of its argument type.
    fn args_fingerprint(&self) -> u64;
}

impl<A: 'static> TracepointOps for Tracepoint<A> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn kind(&self) -> TracepointKind {
        self.kind
    }

    fn args_fingerprint(&self) -> u64 {
        args_fingerprint::<A>()
    }

    fn detach_where(&self, inside: &dyn Fn(usize) -> bool) -> Vec<RemovedProbe> {
        // `call` too: the trampoline is instantiated in the copy of this
        // crate that attached the probe, so a plugin attaching a host
        // function with host data still leaves its own code in the array.
        self.remove_where(|p| inside(p.call as usize) || inside(p.func as usize) || inside(p.data as usize))
            .into_iter()
            .map(|p| RemovedProbe {
                tracepoint: self.name,
                func: p.func as usize,
                data: p.data as usize,
                may_block: p.may_block,
            })
            .collect()
    }
}

/// Every tracepoint declared with [`define_tracepoint!`](crate::define_tracepoint)
/// in the object this copy of the registry is linked into.
#[linkme::distributed_slice]
pub static TRACEPOINTS: [&'static dyn TracepointOps];

/// This object's tracepoints, in link order.
pub fn tracepoints() -> impl ExactSizeIterator<Item = &'static dyn TracepointOps> + Clone {
    TRACEPOINTS.iter().copied()
}

/// Detach every probe of this object's tracepoints whose function, data,
/// or trampoline (instantiated in the copy of this crate that attached it)
/// satisfies `inside` (an unloading object's address range), wait for a
/// grace period of each flavor that had such probes (no thread is inside
/// them any more), and for the Tasks and Tasks Trace callbacks whose code
/// or argument lies in the object. Returns the probes removed.
pub fn remove_probes_in(inside: &dyn Fn(usize) -> bool) -> Vec<RemovedProbe> {
    // `Duration::MAX`: the waits have no limit, so they complete.
    remove_probes_in_within(inside, std::time::Duration::MAX, false).0
}

/// [`remove_probes_in`] with its waits bounded by `timeout`: the probes are
/// detached at once; the grace period of each flavor that had such probes
/// (and of every flavor in `also_wait`, for probes an earlier, timed-out
/// call detached), then the Tasks and Tasks Trace callbacks whose code or
/// argument lies in the object, are waited for until the deadline; other
/// callbacks of the flavors are not (one that blocks, unrelated to the
/// object, does not hold it up), nor are the frees of replaced probe
/// arrays, which run the defining object's code (`Tracepoint::replace`).
/// Returns the probes removed and whether every wait completed; while one
/// has not, a thread may still be inside a removed probe, so its code must
/// stay mapped.
pub fn remove_probes_in_within(
    inside: &dyn Fn(usize) -> bool,
    timeout: std::time::Duration,
    also_wait: bool,
) -> (Vec<RemovedProbe>, bool) {
    let deadline = std::time::Instant::now()
        .checked_add(timeout)
        .unwrap_or_else(|| std::time::Instant::now() + std::time::Duration::from_secs(100 * 365 * 24 * 3600));
    let mut removed = Vec::new();
    let mut used = [also_wait; 2];
    let mut complete = true;
    // Sweep, wait, and sweep again until a sweep after the waits finds
    // nothing: the object's code still running when a sweep happens (a
    // faultable probe of its own, a callback it queued) may attach a new
    // probe after it (red team: a probe that re-registers a probe of its
    // own as it fires; the new one survived the unload and the next fire
    // called unmapped code, 1 run in 80 under load). Once a sweep's grace
    // periods and callbacks are waited for, none of the code that ran
    // before it runs any more.
    loop {
        let mut found = false;
        for tp in tracepoints_with_probes() {
            let gone = tp.detach_where(inside);
            if !gone.is_empty() {
                used[Flavor::of(tp.kind()) as usize] = true;
                found = true;
            }
            removed.extend(gone);
        }
        if !used.contains(&true) {
            break;
        }
        for f in Flavor::ALL {
            if used[f as usize] {
                complete &= f.synchronize_until(deadline);
            }
        }
        complete &= deferred_frees_gone(inside, deadline);
        if !complete || !found {
            break;
        }
        // Wait again only for what the next sweep finds.
        used = [false; 2];
    }
    (removed, complete)
}

/// Wait, until `deadline`, for every Tasks and Tasks Trace callback whose
/// code or argument satisfies `inside`, queued or running now, to have run
/// (work the object's probes queued as they fired, say). Only those: a barrier would also wait
/// for every unrelated callback of the process, and one that blocks (a
/// host's, say) would keep the object mapped for nothing. The frees of
/// replaced probe arrays run the defining object's code and touch nothing
/// of the unloading one (a probe's function and data are only pointers).
fn deferred_frees_gone(inside: &dyn Fn(usize) -> bool, deadline: std::time::Instant) -> bool {
    // Those queued or running now (and so every callback queued before
    // them), not those the object's code queues from now on: work that
    // keeps coming would keep a count of them above zero.
    let mark = usrcu::runtime::inventory::flavor_callbacks_mark(inside);
    usrcu::runtime::inventory::wait_flavor_mark(&mark, deadline)
}

/// A fingerprint of a tracepoint's argument type `A`: its name as the
/// compiler spells it (`std::any::type_name`), its size and its alignment.
/// Host and plugin are built by the same compiler (the loader checks it), so
/// the same type gives the same fingerprint on both sides.
pub fn args_fingerprint<A: 'static>() -> u64 {
    use crate::interface::fnv;
    let h = fnv(0xcbf2_9ce4_8422_2325, std::any::type_name::<A>().as_bytes());
    let h = fnv(h, &std::mem::size_of::<A>().to_le_bytes());
    fnv(h, &std::mem::align_of::<A>().to_le_bytes())
}

/// This object's tracepoint named `name` whose argument type has
/// fingerprint `args`.
fn find(name: &str, args: u64) -> Option<&'static dyn TracepointOps> {
    tracepoints().find(|t| t.name() == name && t.args_fingerprint() == args)
}

/// The host's tracepoint directory (`HostContext::tracepoint`): this
/// object's tracepoint of that name and argument fingerprint, or null.
///
/// # Safety
/// `name` points to `name_len` readable bytes, for the call.
#[doc(hidden)]
pub unsafe extern "C" fn __find_tracepoint(name: *const u8, name_len: usize, args: u64) -> *const std::ffi::c_void {
    if name.is_null() {
        return std::ptr::null();
    }
    // SAFETY: the caller lends `name_len` readable bytes.
    let name = unsafe { std::slice::from_raw_parts(name, name_len) };
    let Ok(name) = std::str::from_utf8(name) else {
        return std::ptr::null();
    };
    match find(name, args) {
        Some(t) => t as *const dyn TracepointOps as *const std::ffi::c_void,
        None => std::ptr::null(),
    }
}

/// The host's tracepoint `name` with argument type `A`, for a plugin to
/// attach probes to (typically in `init`). In a plugin, the host's
/// directory is asked (the host context, handed over before `init`); where
/// no host context was received (in the host itself), this object's own
/// tracepoints are searched. `None` if there is no such tracepoint, or its
/// argument type's fingerprint ([`args_fingerprint`]) differs.
///
/// # Safety
/// A tracepoint found is a `Tracepoint<A>`: the host's argument type of that
/// name, size and alignment is `A` itself (the same type from the same
/// crate version, as the host's and the plugin's shared API crate provide;
/// two versions of one crate may spell a type the same way).
pub unsafe fn host_tracepoint<A: 'static>(name: &str) -> Option<&'static Tracepoint<A>> {
    let args = args_fingerprint::<A>();
    let p = match crate::host_context::host_tracepoint_fn() {
        // SAFETY: the host's directory borrows the name for the call.
        Some(dir) => (unsafe { dir(name.as_ptr(), name.len(), args) }) as *const Tracepoint<A>,
        None => match find(name, args) {
            Some(t) => t as *const dyn TracepointOps as *const Tracepoint<A>,
            None => std::ptr::null(),
        },
    };
    // SAFETY: non-null pointers are `'static` tracepoints (the host's, or
    // this object's), and the caller vouches that their argument type is `A`.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// Declare a `static` [`Tracepoint`] and list it in this object's
/// [`TRACEPOINTS`] (what the plugin loader's unload notifier searches).
///
/// ```
/// usrcu_registry::define_tracepoint!(pub static CACHE_MISS: Tracepoint<u32> = normal);
/// usrcu_registry::define_tracepoint!(static BLOCK_READ: Tracepoint<(u64, usize)> = faultable "block_read");
///
/// assert_eq!(CACHE_MISS.name(), "CACHE_MISS");
/// assert_eq!(BLOCK_READ.name(), "block_read");
/// ```
#[macro_export]
macro_rules! define_tracepoint {
    ($(#[$attr:meta])* $vis:vis static $name:ident : Tracepoint<$t:ty> = normal $($tpname:literal)? $(;)?) => {
        $crate::define_tracepoint!(@def $(#[$attr])* $vis $name, $t, Normal, [$($tpname)?]);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident : Tracepoint<$t:ty> = faultable $($tpname:literal)? $(;)?) => {
        $crate::define_tracepoint!(@def $(#[$attr])* $vis $name, $t, Faultable, [$($tpname)?]);
    };
    (@def $(#[$attr:meta])* $vis:vis $name:ident, $t:ty, $kind:ident, []) => {
        $crate::define_tracepoint!(@def $(#[$attr])* $vis $name, $t, $kind, [::core::stringify!($name)]);
    };
    (@def $(#[$attr:meta])* $vis:vis $name:ident, $t:ty, $kind:ident, [$tpname:expr]) => {
        $(#[$attr])*
        $vis static $name: $crate::tracepoint::Tracepoint<$t> =
            $crate::tracepoint::Tracepoint::new($tpname, $crate::tracepoint::TracepointKind::$kind);

        const _: () = {
            #[$crate::__private::distributed_slice($crate::tracepoint::TRACEPOINTS)]
            #[linkme(crate = $crate::__private::linkme)]
            static ELEMENT: &'static dyn $crate::tracepoint::TracepointOps = &$name;
        };
    };
}
