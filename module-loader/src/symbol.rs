//! Typed calls into a live module, each inside a read section of the
//! module's liveness domain.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

use crate::error::CallError;
use crate::module::Module;
use crate::plugin_value::{PluginFn, PluginValue};
use crate::state::ModuleState;
use crate::ModuleHandle;

/// A function of a loaded module, of the type its getter claimed.
///
/// [`Symbol::call`] enters a read section of the module's liveness domain,
/// checks that the module is `Live`, and only then hands the function
/// pointer to the closure; `unload` marks the module `Going` and waits for a
/// grace period of that domain before it runs `exit`. So a call either
/// fails with [`CallError::NotLive`] or completes before the module's code
/// goes away. A `Symbol` may outlive its module: it then only fails.
pub struct Symbol<F: Copy> {
    pub(crate) module: Arc<Module>,
    pub(crate) f: F,
}

impl<F: Copy> Clone for Symbol<F> {
    fn clone(&self) -> Self {
        Symbol {
            module: self.module.clone(),
            f: self.f,
        }
    }
}

impl<F: Copy> fmt::Debug for Symbol<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Symbol")
            .field("module", &self.module.name)
            .field("handle", &self.module.handle)
            .finish_non_exhaustive()
    }
}

impl<F: Copy> Symbol<F> {
    /// Call into the module: `body` receives the plugin's function as a
    /// [`PluginFn`] and runs inside the module's liveness read section.
    ///
    /// What `body` returns is a [`PluginValue`]: owned by the host and
    /// borrowing nothing of the module, so it may outlive the module. The
    /// [`PluginFn`] is callable ([`PluginFn::call`], for `extern "C"`
    /// function types of plain arguments and results) but cannot be kept:
    /// it is branded with a lifetime that ends with the call. Safe code has
    /// no way to use the module's code or memory after it is unloaded.
    ///
    /// `body` may block or sleep; `unload` waits for it (up to the loader's
    /// unload timeout, after which the unload gives up and the module stays live).
    ///
    /// ```no_run
    /// # use usrcu_module_loader::{ModuleHandle, ModuleLoader};
    /// # fn demo(loader: &ModuleLoader, m: ModuleHandle) -> Result<(), Box<dyn std::error::Error>> {
    /// // SAFETY: the plugin exports `fx_add` with this type.
    /// let add = unsafe { loader.symbol::<extern "C" fn(u64, u64) -> u64>(m, "fx_add")? };
    /// let sum = add.call(|f| f.call(40, 2))?;
    /// assert_eq!(sum, 42);
    /// # Ok(()) }
    /// ```
    ///
    /// The function cannot be returned from the call ...
    ///
    /// ```compile_fail,E0277
    /// # use usrcu_module_loader::{ModuleHandle, ModuleLoader};
    /// # fn demo(loader: &ModuleLoader, m: ModuleHandle) -> Result<(), Box<dyn std::error::Error>> {
    /// # // SAFETY: a doc example.
    /// let add = unsafe { loader.symbol::<extern "C" fn(u64, u64) -> u64>(m, "fx_add")? };
    /// let kept = add.call(|f| f)?; // error: `PluginFn<'call, _>` is not a `PluginValue`
    /// # Ok(()) }
    /// ```
    ///
    /// ... nor kept outside the closure (its twin, which keeps the result, compiles):
    ///
    /// ```compile_fail,E0521
    /// # use usrcu_module_loader::{ModuleHandle, ModuleLoader};
    /// # fn demo(loader: &ModuleLoader, m: ModuleHandle) -> Result<(), Box<dyn std::error::Error>> {
    /// # // SAFETY: a doc example.
    /// let add = unsafe { loader.symbol::<extern "C" fn(u64, u64) -> u64>(m, "fx_add")? };
    /// let mut kept = None;
    /// add.call(|f| kept = Some(f))?; // error: borrowed data escapes the closure
    /// # Ok(()) }
    /// ```
    ///
    /// ```no_run
    /// # use usrcu_module_loader::{ModuleHandle, ModuleLoader};
    /// # fn demo(loader: &ModuleLoader, m: ModuleHandle) -> Result<(), Box<dyn std::error::Error>> {
    /// # // SAFETY: a doc example.
    /// let add = unsafe { loader.symbol::<extern "C" fn(u64, u64) -> u64>(m, "fx_add")? };
    /// let mut kept = None;
    /// add.call(|f| kept = Some(f.call(1, 2)))?;
    /// # let _ = kept;
    /// # Ok(()) }
    /// ```
    ///
    /// A value borrowed from the plugin (here its name, a `&'static str`
    /// in its read-only data) cannot be returned ...
    ///
    /// ```compile_fail,E0277
    /// # use usrcu_module_loader::{ModuleHandle, ModuleLoader};
    /// # fn demo(loader: &ModuleLoader, m: ModuleHandle) -> Result<(), Box<dyn std::error::Error>> {
    /// # // SAFETY: a doc example.
    /// let name = unsafe { loader.symbol::<extern "C" fn(*mut usize) -> *const u8>(m, "fx_name")? };
    /// let s: &'static str = name.call(|f| {
    ///     let mut len = 0;
    ///     let p = f.call(&mut len);
    ///     // SAFETY: the plugin returns `len` bytes of UTF-8 in its rodata.
    ///     unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(p, len)) }
    /// })?; // error: `&'static str` is not a `PluginValue`
    /// # Ok(()) }
    /// ```
    ///
    /// ... but a copy of it can:
    ///
    /// ```no_run
    /// # use usrcu_module_loader::{ModuleHandle, ModuleLoader};
    /// # fn demo(loader: &ModuleLoader, m: ModuleHandle) -> Result<(), Box<dyn std::error::Error>> {
    /// # // SAFETY: a doc example.
    /// let name = unsafe { loader.symbol::<extern "C" fn(*mut usize) -> *const u8>(m, "fx_name")? };
    /// let s: String = name.call(|f| {
    ///     let mut len = 0;
    ///     let p = f.call(&mut len);
    ///     // SAFETY: the plugin returns `len` bytes of UTF-8 in its rodata.
    ///     unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(p, len)) }.to_owned()
    /// })?;
    /// # let _ = s;
    /// # Ok(()) }
    /// ```
    ///
    /// And a plugin function that returns a borrowed value or a function
    /// pointer directly has no `call` at all:
    ///
    /// ```compile_fail,E0599
    /// # use usrcu_module_loader::{ModuleHandle, ModuleLoader};
    /// # fn demo(loader: &ModuleLoader, m: ModuleHandle) -> Result<(), Box<dyn std::error::Error>> {
    /// # // SAFETY: a doc example.
    /// let get = unsafe { loader.symbol::<extern "C" fn() -> extern "C" fn() -> u64>(m, "fx_getter")? };
    /// let inner = get.call(|f| f.call())?; // error: no `call` for a function returning a fn pointer
    /// # Ok(()) }
    /// ```
    #[track_caller]
    pub fn call<R: PluginValue>(&self, body: impl for<'call> FnOnce(PluginFn<'call, F>) -> R) -> Result<R, CallError> {
        let _section = self.module.liveness.read_lock();
        let state = self.module.state.get();
        if state != ModuleState::Live {
            return Err(CallError::NotLive {
                module: self.module.name.clone(),
                state,
            });
        }
        let _frame = CallFrame::enter(self.module.handle);
        Ok(body(PluginFn::new(self.f)))
    }

    /// The module this symbol belongs to.
    pub fn module(&self) -> ModuleHandle {
        self.module.handle
    }

    /// Is that module still `Live`?
    pub fn is_live(&self) -> bool {
        self.module.state.get() == ModuleState::Live
    }
}

// ---------------------------------------------------------------------------
// Which modules this thread is calling into (to refuse an unload from inside
// a call into the same module, which would wait for itself).

const MAX_DEPTH: usize = 64;

thread_local! {
    // Const-initialised Cells: no destructor is registered.
    static CALLS: [Cell<u64>; MAX_DEPTH] = const { [const { Cell::new(0) }; MAX_DEPTH] };
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// Calls nested past `MAX_DEPTH`, counted by handle modulo 64: a handle
    /// whose count is non-zero may be among them (a collision only refuses
    /// an unload that could have gone ahead).
    static DEEPER: [Cell<u32>; MAX_DEPTH] = const { [const { Cell::new(0) }; MAX_DEPTH] };
}

/// One call in progress on this thread; popped on drop (unwinding included).
struct CallFrame {
    /// Counted in `DEEPER` under this index (the call is nested past
    /// `MAX_DEPTH`).
    deeper: Option<usize>,
}

impl CallFrame {
    fn enter(h: ModuleHandle) -> CallFrame {
        let d = DEPTH.with(|d| d.get());
        let deeper = if d < MAX_DEPTH {
            CALLS.with(|c| c[d].set(h.0));
            None
        } else {
            let i = (h.0 % MAX_DEPTH as u64) as usize;
            DEEPER.with(|c| c[i].set(c[i].get() + 1));
            Some(i)
        };
        DEPTH.with(|x| x.set(d + 1));
        CallFrame { deeper }
    }
}

impl Drop for CallFrame {
    fn drop(&mut self) {
        // The call ran the plugin's code: leave no rseq descriptor of its
        // read sections behind on this thread (`usrcu::clear_rseq_descriptor`).
        usrcu::clear_rseq_descriptor();
        if let Some(i) = self.deeper {
            DEEPER.with(|c| c[i].set(c[i].get().saturating_sub(1)));
        }
        DEPTH.with(|x| x.set(x.get().saturating_sub(1)));
    }
}

/// Is this thread inside a call into module `h`? The calls nested up to 64
/// deep are named; past that they are counted by handle modulo 64 (red
/// team 9: an unload from inside a call into the same module nested 65
/// deep was not refused, and waited for itself).
pub(crate) fn inside_call_into(h: ModuleHandle) -> bool {
    let depth = DEPTH.with(|d| d.get());
    CALLS.with(|c| c[..depth.min(MAX_DEPTH)].iter().any(|x| x.get() == h.0))
        || (depth > MAX_DEPTH && DEEPER.with(|c| c[(h.0 % MAX_DEPTH as u64) as usize].get() > 0))
}

/// Does a frame of the calling thread run code in `ranges` (its return
/// address lies there)? Walks this thread's stack with the unwinder
/// (`backtrace::trace`: no symbols are resolved), then searches the part
/// of the thread's own stack the walk did not cover
/// ([`own_stack_holds_code_in`]).
pub(crate) fn runs_code_in(ranges: &[std::ops::Range<usize>]) -> bool {
    let mut found = false;
    // The canonical frame address and function of the last frame walked,
    // while each frame's address lies at or above the one before it
    // (`None` once not).
    let mut walk_end = Some((0usize, 0usize));
    backtrace::trace(|frame| {
        let ip = frame.ip() as usize;
        // The unwinder ends with a frame of no address past the last one.
        if ip == 0 {
            return false;
        }
        let cfa = frame.sp() as usize;
        walk_end = walk_end
            .filter(|&(end, _)| cfa != 0 && cfa >= end)
            .map(|_| (cfa, frame.symbol_address() as usize));
        found = ranges.iter().any(|r| r.contains(&ip));
        !found
    });
    found || own_stack_holds_code_in(ranges, walk_end.filter(|&(end, _)| end != 0))
}

/// Most bytes of the thread's own stack [`own_stack_holds_code_in`] reads
/// on a stack other than the thread's own.
const OWN_STACK_LIMIT: usize = 16 << 20;

thread_local! {
    /// The calling thread's own stack (`pthread_getattr_np`), once asked:
    /// `(0, 0)` until then. Const-initialised, no destructor.
    static OWN_STACK: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// Does a word of the thread's own stack that the unwinder's walk did not
/// cover point into `ranges`? `walk_end` is the canonical frame address and function of
/// the walk's last frame (`None`: unknown, or the frames did not climb the
/// stack in order).
///
/// The walk ends at the thread's entry (`_start`, `clone3`) or at a
/// fiber's (a coroutine of the host, `makecontext`/`swapcontext`:
/// `__start_context`), and never sees the frames of the stack the fiber was
/// resumed from, where a module's hook may have called the host function
/// that resumed it:
///
/// - on the thread's own stack, every word from the walk's end up to the
///   stack's top is taken for a return address: above a fiber whose stack
///   is a local buffer of the host function that resumed it lie that
///   function's frame and its callers' (review 12,
///   `rv12_unload_checks.rs`: the search was skipped, and the unload went
///   ahead under the module's hook: SIGSEGV). At the thread's entry this
///   is a few KiB: the main thread's start-up words up to the page glibc
///   reports as its stack's top, the static TLS and thread descriptor of
///   the others. When the walk's end is unknown, the search starts from
///   the stack pointer;
/// - on another stack (the fiber's stack is elsewhere), every word of the
///   thread's own stack (its mapping, up to [`OWN_STACK_LIMIT`] below its
///   top), as the words below the stack pointer saved when the thread
///   switched to the fiber cannot be told from the live ones (red team 10,
///   `redteam10_unload_on_a_fiber.rs`: the unload went ahead and the hook
///   returned into unmapped code).
///
/// Conservative: a stale word (of a call that returned) or a pointer into
/// the module's data counts too, and refuses the unload.
fn own_stack_holds_code_in(ranges: &[std::ops::Range<usize>], walk_end: Option<(usize, usize)>) -> bool {
    let marker = 0u8;
    let here = std::hint::black_box(&marker) as *const u8 as usize;
    let Some((lo, hi)) = own_stack() else {
        return false;
    };
    if (lo..hi).contains(&here) {
        // A walk that climbed in order to the thread's entry covered every
        // live frame: what lies above is the thread's static TLS and
        // descriptor (a plugin `Symbol` cached in a thread-local, the
        // address of a stack mapped just below the module), which searched
        // refused ordinary unloads (red team 14, `redteam14_own_stack.rs`).
        if walk_end.is_some_and(|(end, function)| end <= hi && is_thread_entry(function)) {
            return false;
        }
        let from = walk_end
            .map(|(end, _)| end)
            .filter(|end| (here..=hi).contains(end))
            .unwrap_or(here);
        return words_in(from, hi, ranges);
    }
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return false;
    };
    let Some(start) = crate::address_space::maps_lines(&maps)
        .find(|(a, b, _)| (*a..*b).contains(&(hi - 1)))
        .map(|(a, _, _)| a)
    else {
        return false;
    };
    words_in(start.max(lo).max(hi.saturating_sub(OWN_STACK_LIMIT)), hi, ranges)
}

/// Does an aligned word of `[from, to)` of our address space point into
/// `ranges`? Read in chunks of 64 KiB, up to the first byte that is not
/// mapped.
fn words_in(from: usize, to: usize, ranges: &[std::ops::Range<usize>]) -> bool {
    const CHUNK: usize = 64 << 10;
    let mut at = from & !7;
    let mut buf = vec![0u8; CHUNK.min(to.saturating_sub(at))];
    while at < to {
        let want = CHUNK.min(to - at);
        let got = crate::thread_list::read_bytes(at, &mut buf[..want]);
        let hit = buf[..got - got % 8].chunks_exact(8).any(|c| {
            let w = usize::from_ne_bytes(c.try_into().expect("8 bytes"));
            ranges.iter().any(|r| r.contains(&w))
        });
        if hit {
            return true;
        }
        if got < want {
            return false;
        }
        at += want;
    }
    false
}

/// The calling thread's own stack, `[low, high)`, from
/// `pthread_getattr_np` (cached per thread: for the main thread glibc reads
/// `/proc/self/maps` to answer).
fn own_stack() -> Option<(usize, usize)> {
    let cached = OWN_STACK.with(|c| c.get());
    if cached.1 != 0 {
        return Some(cached);
    }
    // SAFETY: an all-zero `pthread_attr_t` is a valid value to pass to
    // `pthread_getattr_np`, which initialises it; it is destroyed below
    // once initialised.
    let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
    // SAFETY: `attr` is valid and writable; `pthread_self` is the caller.
    if unsafe { libc::pthread_getattr_np(libc::pthread_self(), &mut attr) } != 0 {
        return None;
    }
    let mut addr: *mut libc::c_void = std::ptr::null_mut();
    let mut size: libc::size_t = 0;
    // SAFETY: `attr` was initialised by `pthread_getattr_np`; the out
    // pointers are valid and writable.
    let ok = unsafe { libc::pthread_attr_getstack(&attr, &mut addr, &mut size) } == 0;
    // SAFETY: `attr` was initialised above and is not used after this.
    unsafe { libc::pthread_attr_destroy(&mut attr) };
    if !ok || size == 0 {
        return None;
    }
    let s = (addr as usize, (addr as usize).saturating_add(size));
    OWN_STACK.with(|c| c.set(s));
    Some(s)
}

/// Is `function` a thread's entry: the executable's entry point
/// (`AT_ENTRY`, the main thread's `_start`), or the function a thread
/// created by `pthread_create` starts in ([`thread_entry`])?
fn is_thread_entry(function: usize) -> bool {
    // SAFETY: `getauxval` has no preconditions.
    let main_entry = unsafe { libc::getauxval(libc::AT_ENTRY) } as usize;
    function != 0 && (function == main_entry || function == thread_entry())
}

/// The function the outermost frame of a thread created by
/// `pthread_create` runs (glibc: `clone3`, which it does not export, or
/// `clone`), learnt once from a thread spawned to walk its own stack; 0 if
/// that failed.
fn thread_entry() -> usize {
    static ENTRY: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *ENTRY.get_or_init(|| {
        let probe = std::thread::Builder::new().name("usrcu-entry-probe".into()).spawn(|| {
            let mut function = 0usize;
            backtrace::trace(|frame| {
                if frame.ip().is_null() {
                    return false;
                }
                function = frame.symbol_address() as usize;
                true
            });
            function
        });
        probe.ok().and_then(|t| t.join().ok()).unwrap_or(0)
    })
}
