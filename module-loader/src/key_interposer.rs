//! pthread-key creation interposed for plugins, so that a key's destructor
//! is never called into an unmapped object: not by a thread that exits
//! *during* an unload either.
//!
//! # The race this closes
//!
//! When a thread exits, glibc walks its key values; for each non-null value
//! it clears the value, then reads the key's sequence number and
//! destructor, and calls the destructor. A loader that deletes a plugin's
//! keys before `dlclose` narrows the window but cannot close it: a thread
//! that read the destructor just before the delete calls it just after, and
//! if the object is unmapped meanwhile, the host dies. Nothing in glibc's
//! table tells that such a thread exists (its value is already cleared).
//!
//! # How
//!
//! Right after `dlopen`, before the plugin's `init`, the loader rewrites the
//! plugin's GOT entries for `pthread_key_create` and `pthread_key_delete`
//! (found in its dynamic relocations with the `object` crate) to point here.
//! A key the plugin creates with a destructor is created in glibc *without*
//! one; its slot (one per glibc key, [`SLOTS`] of them) records the plugin's
//! destructor and the key's sequence number, and then glibc's table is given
//! the key's *host* trampoline as destructor. The trampoline enters a read
//! section of the host domain `usrcu-loader:key-destructors`, loads the
//! slot's destructor and calls it if it is still there *and* the calling
//! thread's value was stored under this very incarnation of the key (its own
//! per-thread sequence number, which glibc keeps beside the value, equals
//! the slot's). At unload the loader clears the slots of the object, deletes
//! their keys, and waits for a grace period of that domain: every thread that
//! had entered a trampoline has left the plugin's destructor, and every later
//! one finds the slot empty. The wait is bounded by the unload's budget; a
//! thread still inside a destructor then keeps the object mapped as a Zombie
//! naming the key, and a later unload waits again.
//!
//! A thread may have read the trampoline's address from glibc's table before
//! the key was deleted and call it arbitrarily late, with a value of the old
//! key. When glibc hands the same key out again, the slot gets a new
//! destructor and a new sequence number; that late call carries the old
//! sequence number and is not passed on. So slots are reused with their
//! keys, and a process never runs out of them before glibc runs out of keys.
//! The grace period at unload is waited for whenever any key was ever
//! created through a slot, so a slot is free as soon as it is retired.
//!
//! Keys created before the GOT is rewritten (by ELF constructors, which run
//! inside `dlopen`) and keys created through another path (`dlsym`) are not
//! interposed: the key proof deletes them from glibc's table, which narrows
//! the race but does not close it.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use usrcu::diagnostics::{self, Warning, WarningKind};
use usrcu::Srcu;

use crate::address_space::ObjectMapping;

/// A key destructor.
type Dtor = unsafe extern "C" fn(*mut c_void);

/// One slot per glibc key (`PTHREAD_KEYS_MAX`, 1024 on Linux).
pub const SLOTS: usize = 16 * 64;

/// No key.
const NO_KEY: u32 = u32::MAX;

struct Slot {
    /// The plugin's destructor while it may be called; 0 once retired.
    destr: AtomicUsize,
    /// The plugin's destructor as created (kept after retirement until the
    /// grace period that follows it, so that unload knows to wait).
    owner: AtomicUsize,
    /// The glibc key bound to this slot (its index; kept after retirement,
    /// to name it), or `NO_KEY`.
    key: AtomicU32,
    /// The key's sequence number when it was created through this slot.
    seq: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)] // one fresh slot per array element
const EMPTY: Slot = Slot {
    destr: AtomicUsize::new(0),
    owner: AtomicUsize::new(0),
    key: AtomicU32::new(NO_KEY),
    seq: AtomicUsize::new(0),
};

static SLOT: [Slot; SLOTS] = [EMPTY; SLOTS];
/// Slots used so far: one past the highest key created through a slot.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Readers: threads inside a trampoline. The loader's grace period on it
/// proves that no thread still runs a retired destructor.
static KEY_DTORS: Srcu = Srcu::new_static("usrcu-loader:key-destructors");

/// Threads inside a trampoline now. Lets unload skip the grace period when
/// none is: see [`Retired::wait`].
static INSIDE: AtomicUsize = AtomicUsize::new(0);

/// Counts the calling thread inside a trampoline, for as long as it lives.
struct Inside;

impl Inside {
    fn enter() -> Inside {
        // SeqCst: with the SeqCst swap of the slot in `retire` and the SeqCst
        // load of `INSIDE` after it, a Dekker pair: either the unloader sees
        // this thread counted (and waits for the grace period), or this
        // thread's load of the slot, later in the total order, sees it
        // cleared.
        INSIDE.fetch_add(1, Ordering::SeqCst);
        Inside
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        // Release: the destructor's work happens before an unloader that
        // sees the count drop (and skips the grace period) unmaps it.
        INSIDE.fetch_sub(1, Ordering::Release);
    }
}

fn run(i: usize, data: *mut c_void) {
    let _inside = KEY_DTORS.read_lock();
    let _counted = Inside::enter();
    // Acquire: pairs with the Release store in `create`; a retiring store
    // of 0 is ordered against this load by the grace period that follows it
    // (its heavy fence pairs with this read section's light fence).
    let d = SLOT[i].destr.load(Ordering::Acquire);
    if d == 0 || own_seq(i) != Some(SLOT[i].seq.load(Ordering::Acquire)) {
        // Retired, or a late call with a value of an older incarnation of
        // this key (see the module documentation).
        return;
    }
    // SAFETY: a non-zero slot holds the destructor the plugin passed to
    // `pthread_key_create` for this incarnation of the key, and the object
    // stays mapped until a grace period of `KEY_DTORS` after the slot is
    // cleared.
    unsafe { std::mem::transmute::<usize, Dtor>(d)(data) };
    // The destructor is the plugin's and may run after the unload's rseq
    // proof (the keys proof comes later): leave no rseq descriptor of its
    // read sections behind on this exiting thread. The unlock of `_inside`
    // below would overwrite it only if it takes the rseq path.
    usrcu::clear_rseq_descriptor();
}

/// The layout of a thread's key values, as glibc publishes it for
/// debuggers: `struct pthread`'s `specific` (pointers to blocks of
/// `level2` entries of `{ seq, data }`).
#[derive(Clone, Copy)]
struct Specific {
    offset: usize,
    level2: usize,
    entry: usize,
    seq: usize,
}

fn specific_layout() -> Option<Specific> {
    static LAYOUT: std::sync::OnceLock<Option<Specific>> = std::sync::OnceLock::new();
    *LAYOUT.get_or_init(|| {
        let d = |n: &std::ffi::CStr| {
            // SAFETY: dlsym with RTLD_DEFAULT only looks a symbol up; glibc
            // defines these as `const uint32_t[3]`.
            let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, n.as_ptr()) } as *const [u32; 3];
            // SAFETY: as above.
            (!p.is_null()).then(|| unsafe { *p })
        };
        let spec = d(c"_thread_db_pthread_specific")?;
        let l2 = d(c"_thread_db_pthread_key_data_level2_data")?;
        let seq = d(c"_thread_db_pthread_key_data_seq")?;
        let word = usize::BITS;
        let sane = spec[0] % word == 0 && l2[1] > 0 && l2[0] % 8 == 0 && seq[0] == word;
        sane.then_some(Specific {
            offset: spec[2] as usize,
            level2: l2[1] as usize,
            entry: (l2[0] / 8) as usize,
            seq: seq[2] as usize,
        })
    })
}

/// The sequence number glibc stored beside the calling thread's value of
/// `key` (the key's sequence number when the value was set).
fn own_seq(key: usize) -> Option<usize> {
    let l = specific_layout()?;
    // SAFETY: pthread_self has no preconditions; the descriptor is ours.
    let me = unsafe { libc::pthread_self() } as usize;
    // SAFETY: our own thread's descriptor, at glibc's published offsets;
    // nothing else writes our key values while we run their destructors.
    unsafe {
        let block = *((me + l.offset + (key / l.level2) * 8) as *const usize);
        if block == 0 {
            return None;
        }
        Some(*((block + (key % l.level2) * l.entry + l.seq) as *const usize))
    }
}

unsafe extern "C" fn trampoline<const R: usize, const C: usize>(data: *mut c_void) {
    run(R * 64 + C, data);
}

macro_rules! row {
    ($r:literal; $($c:literal)*) => { [$(trampoline::<$r, $c> as Dtor),*] };
}
macro_rules! table {
    ($($r:literal)*) => { [$(row!($r; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63)),*] };
}
static TRAMPOLINES: [[Dtor; 64]; 16] = table!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);

/// `pthread_key_create` as the plugin sees it.
unsafe extern "C" fn create(key: *mut libc::pthread_key_t, destr: Option<Dtor>) -> c_int {
    let (Some(d), Some(table), Some(_)) = (destr, crate::pthread_keys::KeyTable::open(), specific_layout()) else {
        // SAFETY: the plugin's own call, passed on unchanged.
        return unsafe { libc::pthread_key_create(key, destr) };
    };
    // Created without a destructor: none can be called before ours is set.
    // SAFETY: the plugin's call, with the destructor given below.
    let rc = unsafe { libc::pthread_key_create(key, None) };
    if rc != 0 {
        return rc;
    }
    // SAFETY: glibc wrote the key.
    let k = unsafe { *key } as usize;
    // Acquire: pairs with the Release stores of 0 in `retire` and `delete`.
    let reusable = k < SLOTS && k < table.count() && SLOT[k].owner.load(Ordering::Acquire) == 0;
    let given = if reusable {
        let slot = &SLOT[k];
        slot.owner.store(d as usize, Ordering::Relaxed);
        slot.key.store(k as u32, Ordering::Relaxed);
        slot.seq.store(table.seq(k), Ordering::Relaxed);
        // Release: pairs with the Acquire load in `run`.
        slot.destr.store(d as usize, Ordering::Release);
        NEXT.fetch_max(k + 1, Ordering::Relaxed);
        TRAMPOLINES[k / 64][k % 64] as usize
    } else {
        warn_not_interposed();
        d as usize
    };
    // SAFETY: the key was just created without a destructor, for this call.
    unsafe { table.set_destructor(k, given) };
    0
}

/// `pthread_key_delete` as the plugin sees it: the slot is retired first.
unsafe extern "C" fn delete(key: libc::pthread_key_t) -> c_int {
    if let Some(slot) = SLOT.get(key as usize) {
        // Acquire: pairs with the Release store of the key in `create`.
        if slot.key.load(Ordering::Acquire) == key && slot.destr.load(Ordering::Relaxed) != 0 {
            // Release: see `run`. The slot is free for the key's next
            // incarnation at once: a late call of this one carries its old
            // sequence number, and a thread still inside the destructor is
            // waited for by the grace period of the plugin's unload.
            slot.destr.store(0, Ordering::Release);
            slot.owner.store(0, Ordering::Release);
        }
    }
    // SAFETY: the plugin's own call, passed on.
    unsafe { libc::pthread_key_delete(key) }
}

fn warn_not_interposed() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        diagnostics::emit(Warning::new(
            WarningKind::Other,
            "usrcu-loader:key-destructors".to_owned(),
            "usrcu-module-loader: a plugin key was created outside the interposer's slots; its destructor \
             is registered directly and deleted from glibc's table at unload (a thread exiting during that \
             unload is not covered)"
                .to_owned(),
        ))
    });
}

/// Rewrite the GOT entries of `pthread_key_create`, `pthread_key_delete` and
/// `__cxa_thread_atexit_impl`
/// of an object (the addresses in `slots`, read from its dynamic
/// relocations by `crate::elf_facts`) to the interposers; returns how many
/// entries were rewritten.
///
/// # Safety
/// The object must be loaded at `mapping`, and none of its code may run
/// concurrently (it is being loaded: only its constructors ran).
pub(crate) unsafe fn interpose(slots: &[(usize, crate::elf_facts::KeyFn)], mapping: &ObjectMapping) -> usize {
    use crate::elf_facts::KeyFn;

    let real_create = real(c"pthread_key_create");
    let real_delete = real(c"pthread_key_delete");
    let real_atexit = real(c"__cxa_thread_atexit_impl");
    // Only a word that holds the resolved function is a GOT entry of it.
    let mut words: Vec<(usize, usize)> = slots
        .iter()
        .filter_map(|&(addr, which)| {
            let (real, ours) = match which {
                KeyFn::Create => (real_create, create as *const () as usize),
                KeyFn::Delete => (real_delete, delete as *const () as usize),
                KeyFn::ThreadAtexit => (real_atexit, thread_atexit as *const () as usize),
            };
            (mapping.contains(addr) && real != 0 && crate::thread_list::peek::<usize>(addr) == Some(real))
                .then_some((addr, ours))
        })
        .collect();
    // One protection change per page, not per word: the GOT entries of
    // both functions usually share a page.
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    words.sort_unstable();
    let mut n = 0;
    for page in words.chunk_by(|a, b| a.0 & !(page_size - 1) == b.0 & !(page_size - 1)) {
        // SAFETY: every word is an aligned word of the object's relocated
        // data (checked above) on this one page, holding the resolved
        // function; no code of the object runs.
        if unsafe { write_words(page, page_size, mapping.relro.as_ref()) } {
            n += page.len();
        }
    }
    n
}

/// A thread-local destructor the object registered, and its argument.
struct TlsDtor {
    dtor: Dtor,
    obj: *mut c_void,
}

/// `__cxa_thread_atexit_impl` as the object sees it (its GOT entry is
/// rewritten to this by [`interpose`]): glibc's, under the object's own
/// `dso_symbol` (so glibc still keeps the object mapped until the destructor
/// has run, `ResidentCause::ThreadLocalDestructor`), but with a host
/// trampoline around the destructor that clears the thread's
/// `rseq->rseq_cs` after it.
///
/// Why: glibc runs a thread-local destructor straight from the exiting
/// thread, with no host code after it, then drops its hold on the object.
/// A destructor with read sections leaves `rseq_cs` pointing at a
/// descriptor in the object; if that happens after the unload's `rseq`
/// proof looked at the thread (it may run any time until `dlclose`), the
/// `dlclose` unmaps the object and the kernel kills the process at the
/// thread's next context switch (tests/tests/redteam4_rseq.rs, the
/// destructor run between the proofs and `dlclose`). The clear runs before
/// glibc's release of the object, so no unmap can come between.
///
/// # Safety
/// glibc's contract for `__cxa_thread_atexit_impl`.
unsafe extern "C" fn thread_atexit(dtor: Dtor, obj: *mut c_void, dso_symbol: *mut c_void) -> c_int {
    type AtexitFn = unsafe extern "C" fn(Dtor, *mut c_void, *mut c_void) -> c_int;
    static REAL: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let real = *REAL.get_or_init(|| real(c"__cxa_thread_atexit_impl"));
    // Never 0: `interpose` rewrites only an entry that holds glibc's function.
    // SAFETY: `real` is glibc's `__cxa_thread_atexit_impl`, of that type.
    let real = unsafe { std::mem::transmute::<usize, AtexitFn>(real) };
    let boxed = Box::into_raw(Box::new(TlsDtor { dtor, obj }));
    // SAFETY: glibc's function with the caller's `dso_symbol`; the trampoline
    // is a host function and `boxed` lives until the trampoline takes it back.
    let rc = unsafe { real(tls_trampoline, boxed.cast(), dso_symbol) };
    if rc != 0 {
        // SAFETY: not registered: still ours.
        drop(unsafe { Box::from_raw(boxed) });
    }
    rc
}

/// Run one of the object's thread-local destructors, then clear the
/// thread's rseq descriptor (see [`thread_atexit`]).
///
/// # Safety
/// `p` came from `Box::into_raw` in [`thread_atexit`]; glibc calls this once.
unsafe extern "C" fn tls_trampoline(p: *mut c_void) {
    // SAFETY: the caller's contract.
    let d = unsafe { Box::from_raw(p.cast::<TlsDtor>()) };
    // SAFETY: the destructor and argument the object registered; glibc keeps
    // the object mapped until this returns (the registration holds it).
    unsafe { (d.dtor)(d.obj) };
    usrcu::clear_rseq_descriptor();
}

fn real(name: &std::ffi::CStr) -> usize {
    // SAFETY: dlsym with RTLD_DEFAULT only looks a symbol up.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
}

/// Store each `(addr, value)` of `words`, all on one page, lifting the
/// RELRO protection of the page if the dynamic linker applied it
/// (`[relro.start, relro.end)` rounded down to pages, as `_dl_protect_relro`
/// does) and putting it back once.
///
/// # Safety
/// Every `addr` is an aligned, mapped word that nothing else writes.
unsafe fn write_words(words: &[(usize, usize)], page_size: usize, relro: Option<&std::ops::Range<usize>>) -> bool {
    let Some(&(first, _)) = words.first() else {
        return true;
    };
    let page = first & !(page_size - 1);
    let protected = relro.is_some_and(|r| page >= r.start & !(page_size - 1) && page < r.end & !(page_size - 1));
    let store = || {
        for &(addr, value) in words {
            // SAFETY: caller's contract; the page is writable (not RELRO,
            // or made writable below).
            unsafe { (*(addr as *const AtomicUsize)).store(value, Ordering::SeqCst) };
        }
    };
    if !protected {
        store();
        return true;
    }
    // SAFETY: the page belongs to the object's RELRO segment, made read-only
    // by the dynamic linker; it is made writable for these stores.
    if unsafe { libc::mprotect(page as *mut c_void, page_size, libc::PROT_READ | libc::PROT_WRITE) } != 0 {
        return false;
    }
    store();
    // SAFETY: as above, back to what the dynamic linker left.
    unsafe { libc::mprotect(page as *mut c_void, page_size, libc::PROT_READ) };
    true
}

/// What [`retire`] did.
pub(crate) struct Retired {
    /// Keys of the object deleted now.
    pub(crate) deleted: Vec<u32>,
    /// A grace period of [`domain`] must pass before the object may go: a
    /// thread was inside a trampoline after the slots were cleared (it may
    /// be running one of the object's destructors, or a late call of an
    /// earlier plugin delete of the object's key). When none was, none can
    /// be: a thread entering later finds the slots cleared.
    pub(crate) wait: bool,
}

/// Retire every slot whose destructor lies in the object (`contains`):
/// clear it, free it for the next key, and delete its glibc key. The
/// caller then waits for a grace period of [`domain`] (see [`Retired`]):
/// a thread that entered the trampoline before has left the destructor,
/// and a later one finds the slot empty or bound to another incarnation.
///
/// # Safety
/// No code of the object may create or delete keys concurrently.
pub(crate) unsafe fn retire(contains: impl Fn(usize) -> bool) -> Retired {
    let mut r = Retired {
        deleted: Vec::new(),
        wait: false,
    };
    for slot in &SLOT[..NEXT.load(Ordering::Relaxed).min(SLOTS)] {
        let owner = slot.owner.load(Ordering::Relaxed);
        if owner == 0 || !contains(owner) {
            continue;
        }
        let key = slot.key.load(Ordering::Relaxed);
        // SeqCst: see `Inside::enter`.
        let live = slot.destr.swap(0, Ordering::SeqCst) != 0;
        // Release: pairs with the Acquire load in `create`; the slot may be
        // bound to the key's next incarnation once glibc hands it out again.
        slot.owner.store(0, Ordering::Release);
        // SAFETY: the key is the one glibc gave for this slot, still in use
        // (its slot was live), and no code of the object deletes it
        // concurrently (caller's contract).
        if live && key != NO_KEY && unsafe { libc::pthread_key_delete(key) } == 0 {
            r.deleted.push(key);
        }
    }
    // SeqCst: the other half of the Dekker pair in `Inside::enter`, after
    // every slot of the object was cleared. Acquire (in SeqCst): pairs with
    // the Release decrement, so a destructor that left is over.
    r.wait = NEXT.load(Ordering::Relaxed) > 0 && INSIDE.load(Ordering::SeqCst) > 0;
    r
}

/// The domain whose grace period proves no thread runs a retired destructor.
pub(crate) fn domain() -> &'static Srcu {
    &KEY_DTORS
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    static FIRST: AtomicUsize = AtomicUsize::new(0);
    static SECOND: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "C" fn first(_: *mut c_void) {
        FIRST.fetch_add(1, Ordering::SeqCst);
    }
    unsafe extern "C" fn second(_: *mut c_void) {
        SECOND.fetch_add(1, Ordering::SeqCst);
    }

    /// A thread that read a key's trampoline before the key was deleted may
    /// call it after glibc handed the key out again: its old value must not
    /// reach the new incarnation's destructor.
    #[test]
    fn a_late_call_with_a_value_of_a_deleted_key_does_not_reach_the_next_incarnation() {
        let _one_at_a_time = crate::lock(&crate::KEY_TEST_LOCK);
        let mut k1: libc::pthread_key_t = 0;
        // SAFETY: the interposer called as the plugin would call glibc.
        assert_eq!(unsafe { create(&mut k1, Some(first)) }, 0);
        let (set_tx, set_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<usize>();
        let t = std::thread::spawn(move || {
            // SAFETY: a key created above; the value is a dummy pointer.
            unsafe { libc::pthread_setspecific(k1, std::ptr::dangling::<c_void>()) };
            set_tx.send(()).unwrap();
            // The late call: the trampoline of the key's slot, with this
            // thread's value of the deleted incarnation.
            let k = go_rx.recv().unwrap();
            TRAMPOLINES[k / 64][k % 64] as usize
        });
        set_rx.recv().unwrap();
        // SAFETY: as above: delete, and create again (glibc hands out the
        // lowest free key: the same one).
        assert_eq!(unsafe { delete(k1) }, 0);
        let mut k2: libc::pthread_key_t = 0;
        // SAFETY: as above.
        assert_eq!(unsafe { create(&mut k2, Some(second)) }, 0);
        assert_eq!(k1, k2, "glibc reused the key");
        go_tx.send(k2 as usize).unwrap();
        let tramp = t.join().unwrap();
        assert_eq!(tramp, TRAMPOLINES[k2 as usize / 64][k2 as usize % 64] as usize);
        // Run the late call on a thread that holds the old incarnation's value.
        let (tx, rx) = std::sync::mpsc::channel();
        let (k_old, seq_new) = (k1, SLOT[k2 as usize].seq.load(Ordering::SeqCst));
        std::thread::spawn(move || {
            // SAFETY: store a value under the key as it is now...
            unsafe { libc::pthread_setspecific(k_old, 2 as *const c_void) };
            // ...then pretend it was stored under the old incarnation, as
            // the late caller's was: its own sequence number is the old one.
            let l = specific_layout().unwrap();
            // SAFETY: pthread_self has no preconditions.
            let me = unsafe { libc::pthread_self() } as usize;
            // SAFETY: this thread's own key block, at glibc's offsets.
            unsafe {
                let block = *((me + l.offset + (k_old as usize / l.level2) * 8) as *const usize);
                let seq = (block + (k_old as usize % l.level2) * l.entry + l.seq) as *mut usize;
                *seq = seq_new - 2;
                run(k_old as usize, 2 as *mut c_void);
                // Back to the current incarnation, and its destructor runs.
                *seq = seq_new;
                run(k_old as usize, 3 as *mut c_void);
                libc::pthread_setspecific(k_old, std::ptr::null());
            }
            tx.send(()).unwrap();
        });
        rx.recv().unwrap();
        assert_eq!(
            SECOND.load(Ordering::SeqCst),
            1,
            "only the current incarnation's call passed"
        );
        assert_eq!(FIRST.load(Ordering::SeqCst), 0);
        // SAFETY: our key.
        assert_eq!(unsafe { delete(k2) }, 0);
    }
}
