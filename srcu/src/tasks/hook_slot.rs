//! `HookSlot<F>`: an atomically replaceable `extern "C"` function pointer,
//! called with no read-side marker; replacing or clearing it waits for (or
//! defers to) a Tasks grace period.
//!
//! | `ptr` | meaning | who changes it |
//! |---|---|---|
//! | null | empty: `call` returns `None` | |
//! | a function | `call` loads it and calls it | `set*`/`clear*`, and the loader's `Going` notifier, all through the host's registry lock |
//!
//! Every store goes through the host runtime (`TasksVTable::hook_swap`),
//! which keeps the list of non-empty slots, so that a loader can clear every
//! slot whose target lies in an object it is about to unmap
//! ([`clear_hooks_into`](super::clear_hooks_into)), and then wait for a Tasks
//! grace period.

use super::vtable;
use super::Cookie;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicPtr, Ordering};

mod sealed {
    pub trait Sealed {}
}

/// The `extern "C"` function pointer types a [`HookSlot`] can hold:
/// `extern "C" fn(A0, .., An) -> R` for 0 to 4 arguments, where `R` is a
/// [`HookValue`] (a value that cannot borrow from or be owned by the code
/// that returned it). Sealed.
///
/// # Safety
/// Implemented only here, for function pointer types, whose size is that
/// of `*mut ()`.
pub unsafe trait HookFn: sealed::Sealed + Copy + 'static {
    /// The pointer as an untyped address.
    fn into_raw(self) -> *mut ();
    /// Back from an address made by `into_raw` of the same type.
    ///
    /// # Safety
    /// `p` came from `into_raw` of this type and is not null.
    unsafe fn from_raw(p: *mut ()) -> Self;
}

/// Values a hook may return: integers, floats, `bool`, `()`, raw pointers.
/// A reference or an owning type could outlive the plugin that made it.
///
/// ```compile_fail
/// // A `&'static str` from a plugin would dangle once it is unmapped.
/// static S: usrcu::tasks::HookSlot<extern "C" fn() -> &'static str> = usrcu::tasks::HookSlot::new();
/// ```
///
/// ```
/// // A raw pointer is fine: dereferencing it is the caller's `unsafe`.
/// static S: usrcu::tasks::HookSlot<extern "C" fn() -> *const u8> = usrcu::tasks::HookSlot::new();
/// ```
pub trait HookValue: value_sealed::Sealed {}

mod value_sealed {
    pub trait Sealed {}
}

macro_rules! hook_values {
    ($($t:ty),*) => {$(
        impl value_sealed::Sealed for $t {}
        impl HookValue for $t {}
    )*};
}
hook_values!((), bool, u8, u16, u32, u64, usize, i8, i16, i32, i64, isize, f32, f64);
impl<T: ?Sized> value_sealed::Sealed for *const T {}
impl<T: ?Sized> HookValue for *const T {}
impl<T: ?Sized> value_sealed::Sealed for *mut T {}
impl<T: ?Sized> HookValue for *mut T {}

/// A slot for a hot hook: an `extern "C"` function pointer, or nothing.
///
/// [`call`](HookSlot::call) is one Acquire load and an indirect call: no
/// read-side marker, no fence, no counter. What makes replacing the target
/// safe is Tasks RCU: the target never blocks, so a thread that has blocked,
/// switched voluntarily (with no stop in between) or passed
/// [`tasks::quiescent`](super::quiescent) since the old target became
/// unreachable is no longer running it.
///
/// # The contract of an installed function
///
/// Installing a pointer ([`set`](HookSlot::set), [`set_sync`](HookSlot::set_sync))
/// is `unsafe`; the installer promises, for the function and everything it calls:
///
/// * **It never blocks**: no lock that may sleep, no blocking system call,
///   no sleep, no `println!` (stdout's lock), and no heap allocation
///   (`malloc` waits for its arena's lock when another thread holds it:
///   seen under red team 10's load). A blocked thread reads as quiescent,
///   so blocking inside the hook lets a grace period end while the thread
///   is still inside it. The one exception is a *callout*
///   ([`runtime::callouts`](crate::runtime::callouts)): the `log` bridge
///   of `usrcu-registry` and the report of a plugin's caught panic mark
///   themselves, formatting included, and a grace period does not count a thread
///   blocked inside one as quiescent, so a hook may log.
/// * **It never faults on non-resident memory**: a page fault that waits for
///   I/O is a voluntary switch. Its code must be resident (the loader
///   `mlock`s the text of an object whose functions it installs) and so
///   must the data it touches (heap and stack that are in use are; a
///   freshly `mmap`ed file is not).
/// * **Nobody stores the pointer**: the slot is the only way to reach the
///   function; a copy kept elsewhere would outlive the grace period that
///   clearing the slot waits for.
/// * It does not unwind out of the call (an `extern "C"` function that
///   panics aborts).
/// * It never calls [`tasks::quiescent`](super::quiescent) (nor anything
///   that does): that says "this thread is inside no hook", which would let
///   a grace period end while the thread is still inside this one.
///
/// A thread that spins inside hooks for long (a loop that calls hooks and
/// never blocks) holds every Tasks grace period: it should call
/// [`tasks::quiescent`](super::quiescent) between calls.
///
/// # Unloading an object whose code a slot held
///
/// Every store into a slot goes through the host's runtime, which records
/// the function's address and the slot's ([`hooks_ever_into`](super::hooks_ever_into)).
/// A plugin loader waits for a Tasks grace period at unload only for an
/// object that record names (or when it empties a slot then, or Tasks
/// callbacks are pending), so a host thread that computes without blocking
/// holds the unload of no other object. What a hook *calls* is not
/// recorded: a host hook that calls an object's code through a table of
/// the host's own must remove the object's entries and call
/// [`tasks::synchronize`](super::synchronize) itself before the object is
/// unmapped (in the loader's `Going` notifier, which runs before the
/// object is closed).
///
/// ```
/// use usrcu::tasks::HookSlot;
///
/// static FILTER: HookSlot<extern "C" fn(u64) -> u64> = HookSlot::new();
///
/// extern "C" fn double(x: u64) -> u64 { x * 2 }
///
/// assert_eq!(FILTER.call(21), None);
/// // SAFETY: `double` never blocks, is in the executable's (resident) text,
/// // and nothing else stores the pointer.
/// unsafe { FILTER.set_sync(Some(double)) };
/// assert_eq!(FILTER.call(21), Some(42));
/// FILTER.clear_sync(); // waits for a Tasks grace period
/// assert_eq!(FILTER.call(21), None);
/// ```
pub struct HookSlot<F: HookFn> {
    ptr: AtomicPtr<()>,
    _f: PhantomData<F>,
}

impl<F: HookFn> HookSlot<F> {
    /// An empty slot (usable in a `static`).
    pub const fn new() -> HookSlot<F> {
        HookSlot {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            _f: PhantomData,
        }
    }

    /// Does the slot hold a function?
    pub fn is_set(&self) -> bool {
        // Relaxed: a snapshot for the caller's information only.
        !self.ptr.load(Ordering::Relaxed).is_null()
    }

    /// The address of the function the slot holds (for diagnostics and for
    /// a loader's "does it point into this object?"); null if empty.
    pub fn target_addr(&self) -> usize {
        // Relaxed: an address compared, never called.
        self.ptr.load(Ordering::Relaxed) as usize
    }

    fn swap(&self, new: *mut ()) -> *mut () {
        // SAFETY: `self.ptr` is a live slot for the duration of the call.
        unsafe { (vtable::current().hook_swap)(&self.ptr, new) }
    }

    /// Install `f` (or empty the slot with `None`); if a function was
    /// replaced, wait for a Tasks grace period, after which no thread runs
    /// the old one.
    ///
    /// # Panics
    /// As [`clear_sync`](HookSlot::clear_sync), from a Tasks callback when
    /// a function is replaced.
    ///
    /// # Safety
    /// `f` keeps the contract in the type's documentation for as long as it
    /// is installed and until a grace period after it is replaced. And the
    /// slot stays where it is while it holds a function: not moved, and not
    /// forgotten without being dropped in place (`mem::forget` of a slot on
    /// the stack, `ManuallyDrop`): the host registers the slot's *address*
    /// ([`clear_hooks_into`](super::clear_hooks_into) writes through it), and
    /// only the slot's drop at that address takes it back. A `static` slot,
    /// or one behind a `Box` that is dropped or leaked, keeps this.
    pub unsafe fn set_sync(&self, f: Option<F>) {
        let old = self.swap(f.map_or(std::ptr::null_mut(), HookFn::into_raw));
        if !old.is_null() {
            super::synchronize();
        }
    }

    /// Install `f` (or empty the slot) without waiting: the old function is
    /// unreachable for new calls at once; the returned cookie (if a function
    /// was replaced) completes when no thread runs it any more (its grace
    /// period is started).
    ///
    /// # Safety
    /// As for [`set_sync`](HookSlot::set_sync), the slot's place included.
    pub unsafe fn set(&self, f: Option<F>) -> Option<Cookie> {
        let old = self.swap(f.map_or(std::ptr::null_mut(), HookFn::into_raw));
        (!old.is_null()).then(super::start_poll)
    }

    /// Empty the slot and wait for a Tasks grace period (if it held a
    /// function). Safe: it only removes a target.
    ///
    /// # Panics
    /// From a Tasks callback ([`call`](super::call)), when the slot held a
    /// function: the wait would wait for the callback itself, as
    /// [`synchronize`](super::synchronize) would (the slot is emptied
    /// first). There, use [`set`](HookSlot::set)`(None)` and defer the free
    /// to another [`call`](super::call).
    pub fn clear_sync(&self) {
        // SAFETY: `None` installs nothing, so there is no contract to keep.
        unsafe { self.set_sync(None) }
    }

    /// Empty the slot without waiting; see [`set`](HookSlot::set).
    pub fn clear(&self) -> Option<Cookie> {
        // SAFETY: as in `clear_sync`.
        unsafe { self.set(None) }
    }
}

impl<F: HookFn> Default for HookSlot<F> {
    fn default() -> Self {
        HookSlot::new()
    }
}

impl<F: HookFn> fmt::Debug for HookSlot<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookSlot")
            .field("target", &(self.target_addr() as *const ()))
            .finish()
    }
}

impl<F: HookFn> Drop for HookSlot<F> {
    fn drop(&mut self) {
        // An atomic load, not `get_mut`: a loader's clearing may store null
        // into a registered slot concurrently (under the registry's lock,
        // which `hook_forget` takes).
        // Relaxed: only null-ness is used, and `hook_forget` synchronises
        // with the registry.
        if !self.ptr.load(Ordering::Relaxed).is_null() {
            // SAFETY: the slot is live until the end of this call.
            unsafe { (vtable::current().hook_forget)(&self.ptr) };
        }
    }
}

macro_rules! hook_arity {
    ($($a:ident : $A:ident),*) => {
        impl<R: HookValue + 'static $(, $A: 'static)*> sealed::Sealed for extern "C" fn($($A),*) -> R {}

        // SAFETY: a function pointer, the size of `*mut ()` on every target
        // this crate supports (Linux).
        unsafe impl<R: HookValue + 'static $(, $A: 'static)*> HookFn for extern "C" fn($($A),*) -> R {
            #[inline(always)]
            fn into_raw(self) -> *mut () {
                self as *mut ()
            }

            #[inline(always)]
            unsafe fn from_raw(p: *mut ()) -> Self {
                // SAFETY: `p` came from `into_raw` of this very type.
                unsafe { std::mem::transmute::<*mut (), Self>(p) }
            }
        }

        impl<R: HookValue + 'static $(, $A: 'static)*> HookSlot<extern "C" fn($($A),*) -> R> {
            /// Call the installed function, if any: one load and an
            /// indirect call, no read-side marker; then the thread's rseq
            /// descriptor is cleared (a load, a test and a store; see
            /// [`crate::clear_rseq_descriptor`]), so that a thread that
            /// called a plugin's hook that entered read sections does not
            /// keep that plugin from unloading.
            #[inline(always)]
            pub fn call(&self $(, $a: $A)*) -> Option<R> {
                // Acquire: pairs with the Release half of the installer's
                // swap, so that what the installer initialised for the
                // function is visible to it.
                let p = self.ptr.load(Ordering::Acquire);
                if p.is_null() {
                    return None;
                }
                // SAFETY: non-null pointers in the slot were stored by
                // `set`/`set_sync` from this type; the installer's contract
                // keeps the function callable until a grace period after it
                // is replaced, and this thread is not quiescent before the
                // call returns (the function never blocks).
                let f = unsafe { <extern "C" fn($($A),*) -> R as HookFn>::from_raw(p) };
                let r = f($($a),*);
                crate::reader::rseq::clear_descriptor();
                Some(r)
            }
        }
    };
}

hook_arity!();
hook_arity!(a0: A0);
hook_arity!(a0: A0, a1: A1);
hook_arity!(a0: A0, a1: A1, a2: A2);
hook_arity!(a0: A0, a1: A1, a2: A2, a3: A3);

/// Host side: the non-empty slots of the process, and every address a slot
/// ever held or lived at.
pub(crate) mod registry {
    use std::collections::BTreeMap;
    use std::ops::Range;
    use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
    use std::sync::{Mutex, MutexGuard};

    /// What `SLOTS` guards.
    pub(crate) struct Slots {
        /// The addresses of the slots that hold a function now.
        live: Vec<usize>,
        /// Every function address ever stored into a slot, and the address
        /// of every slot ever set: code at (or a slot in) an object whose
        /// ranges hold one of them may have run under Tasks RCU with no
        /// marker (`ever_into`). Entries of an object leave with it
        /// (`forget_ever_into`, before its unmap). `swap` is not a hot
        /// path; a set of distinct addresses stays small. Each with the
        /// `generation` it was last recorded at (`last_into`).
        ever: BTreeMap<usize, u64>,
        /// Counts the records (`swap` of a function, `note`).
        generation: u64,
    }

    static SLOTS: Mutex<Slots> = Mutex::new(Slots {
        live: Vec::new(),
        ever: BTreeMap::new(),
        generation: 0,
    });
    /// Has any slot ever held a function? Relaxed: read by the loader after
    /// it took `SLOTS` (which orders it), or as a hint.
    static EVER: AtomicBool = AtomicBool::new(false);

    fn slots() -> MutexGuard<'static, Slots> {
        SLOTS.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `SLOTS`, for the fork handler (`runtime/fork.rs`; a leaf: nothing
    /// else is taken under it).
    pub(crate) fn lock_for_fork() -> MutexGuard<'static, Slots> {
        slots()
    }

    /// # Safety
    /// `slot` is live for the call.
    pub(crate) unsafe fn swap(slot: *const AtomicPtr<()>, new: *mut ()) -> *mut () {
        let mut g = slots();
        let addr = slot as usize;
        if !new.is_null() {
            // Recorded before the store, under `SLOTS`: a loader that asks
            // `ever_into` (under `SLOTS`) after this store sees both.
            g.generation += 1;
            let n = g.generation;
            g.ever.insert(new as usize, n);
            g.ever.insert(addr, n);
        }
        // AcqRel: Release publishes what the installer initialised for the
        // new function to callers' Acquire loads; Acquire is not needed for
        // the old value (it is only compared with null) but keeps the
        // swap's position in the slot's order plain.
        // SAFETY: the caller's promise.
        let old = unsafe { (*slot).swap(new, Ordering::AcqRel) };
        let at = g.live.iter().position(|s| *s == addr);
        match (new.is_null(), at) {
            (true, Some(i)) => {
                g.live.swap_remove(i);
            }
            (false, None) => {
                EVER.store(true, Ordering::Relaxed);
                g.live.push(addr);
            }
            _ => {}
        }
        old
    }

    /// Record addresses of code or data that ran, or may run, as a Tasks
    /// reader with no marker (`tasks::note_reader_code`): `ever_into` then
    /// names the object holding them.
    pub(crate) fn note(addrs: &[usize]) {
        let mut g = slots();
        g.generation += 1;
        let n = g.generation;
        g.ever.extend(addrs.iter().map(|a| (*a, n)));
    }

    /// The generation of the newest record in `ranges` (0: none): a loader
    /// that waited for a grace period asked for when this was `n` may rely
    /// on it again only while it is still `n` (a hook of the object set
    /// since may have been entered after that grace period began).
    pub(crate) fn last_into(ranges: &[Range<usize>]) -> u64 {
        let g = slots();
        ranges
            .iter()
            .filter_map(|r| g.ever.range(r.clone()).map(|(_, n)| *n).max())
            .max()
            .unwrap_or(0)
    }

    /// Did a slot ever hold a function that lies in `ranges`, or did a slot
    /// that lies in `ranges` ever hold one (since `forget_ever_into` of
    /// these ranges)?
    pub(crate) fn ever_into(ranges: &[Range<usize>]) -> bool {
        let g = slots();
        ranges.iter().any(|r| g.ever.range(r.clone()).next().is_some())
    }

    /// Forget the addresses of `ranges` recorded for `ever_into`: the
    /// object there is about to be unmapped, after no thread runs its code
    /// any more, and another object may be mapped there next.
    pub(crate) fn forget_ever_into(ranges: &[Range<usize>]) {
        let mut g = slots();
        for r in ranges {
            let gone: Vec<usize> = g.ever.range(r.clone()).map(|(a, _)| *a).collect();
            for a in gone {
                g.ever.remove(&a);
            }
        }
    }

    pub(crate) fn forget(slot: *const AtomicPtr<()>) {
        let mut g = slots();
        g.live.retain(|s| *s != slot as usize);
    }

    pub(crate) fn ever_set() -> bool {
        EVER.load(Ordering::Relaxed)
    }

    /// # Safety
    /// Every registered slot is live (see `tasks::clear_hooks_into`).
    pub(crate) unsafe fn clear_into(ranges: &[Range<usize>]) -> usize {
        let inside = |a: usize| ranges.iter().any(|r| r.contains(&a));
        let mut g = slots();
        let mut cleared = 0;
        g.live.retain(|&s| {
            let slot = s as *const AtomicPtr<()>;
            // SAFETY: the caller's promise: registered slots are live.
            let p = unsafe { (*slot).load(Ordering::Relaxed) };
            if inside(p as usize) {
                // Relaxed: the grace period the caller waits for next starts
                // with a full membarrier (T1), which orders this store
                // before every thread's later loads.
                // SAFETY: as above.
                unsafe { (*slot).store(std::ptr::null_mut(), Ordering::Relaxed) };
                cleared += 1;
                return false;
            }
            // A slot that lives in the object goes away with it.
            !inside(s)
        });
        cleared
    }
}
