//! `ModuleLoader`: load, call, unload, reload; the lifecycle in the
//! kernel's order (`docs/abi.md` walks through it step by step).

use std::collections::VecDeque;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use usrcu::diagnostics::{self, Capture, Warning, WarningKind};

use crate::address_space;
use crate::elf_facts;
use crate::error::{LoadError, ReloadError, SymbolError, UnloadError};
use crate::intake::Intake;
use crate::key_interposer;
use crate::module::{self, Module, ModuleHandle, ModuleInfo};
use crate::notifier::{ModuleEvent, NotifierId, Notifiers};
use crate::policy::{self, PlatformSupport, UnmapPolicy};
use crate::proofs::{self, UnloadCx};
use crate::report::{HookFailure, ResidentCause, UnloadReport, ZombieCause};
use crate::state::ModuleState;
use crate::symbol::{inside_call_into, Symbol};
use crate::watchdog;

/// How a [`ModuleLoader`] behaves.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// Issue `barrier` at unload for every static domain that used
    /// `call_srcu` (default). Off: the kernel's behaviour, where a module
    /// that forgot `srcu_barrier` gets a missed-barrier warning, and here
    /// stays mapped as a `Zombie` instead of crashing.
    pub auto_barrier: bool,
    /// How long unload waits for calls in flight, and for readers inside a
    /// module's static domains, before it gives up (default 10 s). A load
    /// waits at most this long, but never less than five seconds
    /// ([`ModuleLoader::LOAD_GATE_MIN_WAIT`]), for another load's `dlopen` or
    /// an unload's `dlclose` in flight before its own `dlopen`; still
    /// waiting then, it fails with [`LoadError::SharedLibraryLoading`] or
    /// [`LoadError::SharedLibraryClosing`].
    pub unload_timeout: Duration,
    /// Where the private copies of loaded files go. `None` (default): a
    /// sealed anonymous `memfd` per load, opened as `/proc/self/fd/N`.
    /// `Some(dir)`: a new file per load in `dir`, which must be (or is
    /// created as) a directory owned by this user with mode 0700; use it for
    /// plugins that find libraries next to them through `$ORIGIN`.
    pub copy_dir: Option<PathBuf>,
    /// Refuse a plugin built by another `rustc` (default: accept it; every
    /// shared struct is `#[repr(C)]` and checked, every crossing `extern "C"`).
    pub require_same_rustc: bool,
    /// When unload may unmap an object (default:
    /// [`UnmapPolicy::WhenProvablyIdle`]). A loader on a platform where
    /// idleness cannot be proven runs as [`UnmapPolicy::Never`] whatever
    /// this says, and says so when it is built (see [`ModuleLoader::platform`]).
    pub unmap_policy: UnmapPolicy,
    /// Accept a plugin built with `panic = "abort"` in a host that unwinds
    /// (default: refuse it, [`LoadError::PanicStrategyMismatch`]): any panic
    /// in its code, even one its `init` wrapper or the runtime would catch,
    /// ends the whole process.
    pub allow_panic_abort: bool,
    /// Before closing an object, detach every tracepoint probe whose code or
    /// data lies in it and wait for its grace period (default). Off only to
    /// show what it prevents: a later fire calls unmapped code.
    pub remove_probes: bool,
    /// Keep the sealed memfd copy of an unloaded module (its object gone
    /// from the address space) in a bounded, process-wide pool, and use it
    /// again for a later load of the same source file if the file's
    /// identity (device, inode, size, modification and change times) is
    /// unchanged (default). A copy is sealed, so the checks it passed still
    /// hold; only a source left unchanged for a few seconds before it was
    /// copied is pooled. Off: every load copies and checks the file afresh
    /// (`docs/abi.md`, "Intake", says what reuse cannot see). No effect
    /// with [`copy_dir`](LoaderConfig::copy_dir).
    pub reuse_copies: bool,
    /// The largest plugin file [`ModuleLoader::load`] copies, in bytes
    /// (default 1 GiB, [`LoaderConfig::DEFAULT_MAX_FILE_SIZE`]). A larger
    /// file, or one that grows past it while it is copied, is
    /// [`LoadError::TooLarge`] before the copy fills memory (a memfd) or
    /// disk (`copy_dir`): the file's size is read before anything is copied.
    pub max_file_size: u64,
}

impl LoaderConfig {
    /// The default [`LoaderConfig::max_file_size`]: 1 GiB, several times
    /// the largest debug build of a Rust `cdylib` with full debug info we
    /// know of, and small enough that a refused file never costs the host
    /// its memory.
    pub const DEFAULT_MAX_FILE_SIZE: u64 = 1 << 30;
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            auto_barrier: true,
            unload_timeout: Duration::from_secs(10),
            copy_dir: None,
            require_same_rustc: false,
            unmap_policy: UnmapPolicy::default(),
            allow_panic_abort: false,
            remove_probes: true,
            reuse_copies: true,
            max_file_size: LoaderConfig::DEFAULT_MAX_FILE_SIZE,
        }
    }
}

/// Handles are unique in the process, across loaders.
static NEXT_HANDLE: AtomicU64 = AtomicU64::new(1);

#[derive(Default)]
struct Table {
    modules: Vec<Arc<Module>>,
    /// The most recent modules that are gone (name and final state), to
    /// tell "already unloaded" from "unknown". Bounded, so that a host that
    /// reloads forever does not grow: an older handle reads as unknown.
    /// A name is kept once for all its records (a host reloads the same
    /// few plugins): a full table is the deque's 32 KiB and one allocation
    /// per distinct name, not one per unload.
    gone: VecDeque<(ModuleHandle, Arc<str>, ModuleState)>,
}

/// How many gone modules a loader remembers.
const GONE_REMEMBERED: usize = 1024;

impl Table {
    fn gone(&self, h: ModuleHandle) -> Option<(&str, ModuleState)> {
        self.gone.iter().find(|(g, _, _)| *g == h).map(|(_, n, s)| (&**n, *s))
    }

    fn remember_gone(&mut self, h: ModuleHandle, name: &str, state: ModuleState) {
        if self.gone.len() == GONE_REMEMBERED {
            self.gone.pop_front();
        }
        // The most recent record of the same name, if any, shares its string.
        let name = match self.gone.iter().rev().find(|(_, n, _)| **n == *name) {
            Some((_, n, _)) => n.clone(),
            None => Arc::from(name),
        };
        self.gone.push_back((h, name, state));
    }
}

/// Loads `cdylib` plugins built with `usrcu_registry::export_module!`,
/// calls into them, and unloads them safely: calls in flight drained, every
/// static domain's callbacks drained by `barrier` (skipped where `call_srcu`
/// was never used), the object closed and verified gone from the address
/// space, or kept mapped as a `Zombie` when something might still run its code.
///
/// ```no_run
/// use usrcu_module_loader::ModuleLoader;
///
/// let loader = ModuleLoader::new();
/// // SAFETY: the demo plugin upholds the plugin author's contract (see
/// // `ModuleLoader::load` and docs/abi.md).
/// let m = unsafe { loader.load("target/plugins/release/libusrcu_demo_plugin.so")? };
/// // SAFETY: the demo plugin exports `demo_compute` with this signature.
/// let compute = unsafe { loader.symbol::<extern "C" fn(u64) -> u64>(m, "demo_compute")? };
/// let y = compute.call(|f| f.call(20))?;
/// let report = loader.unload(m)?;
/// assert!(report.unmapped);
/// # let _ = y;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A process that forks does so while no loader of it is loading or
/// unloading on another thread (and while `usrcu`'s runtime and flavors
/// are idle): the child otherwise inherits the loader's gate, and perhaps
/// glibc's dynamic-linker lock, held by a thread it does not have
/// (docs/abi.md, "`fork` and the loader").
pub struct ModuleLoader {
    config: LoaderConfig,
    table: Mutex<Table>,
    notifiers: Notifiers,
    platform: PlatformSupport,
    /// The thread running a [`ModuleLoader::reload`], if any: reloads run
    /// one at a time (see there).
    reloading: Mutex<Option<std::thread::ThreadId>>,
    reload_done: std::sync::Condvar,
}

impl std::fmt::Debug for ModuleLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleLoader")
            .field("config", &self.config)
            .field("modules", &crate::lock(&self.table).modules)
            .finish_non_exhaustive()
    }
}

impl Default for ModuleLoader {
    fn default() -> Self {
        ModuleLoader::new()
    }
}

/// A reload's turn ([`ModuleLoader::reload_turn`]); handed on when dropped,
/// even by a panic.
struct ReloadTurn<'a>(&'a ModuleLoader);

impl Drop for ReloadTurn<'_> {
    fn drop(&mut self) {
        *crate::lock(&self.0.reloading) = None;
        self.0.reload_done.notify_one();
    }
}

impl ModuleLoader {
    /// The least a load waits at the gate for another load's `dlopen` or an
    /// unload's `dlclose` in flight, whatever
    /// [`LoaderConfig::unload_timeout`] says.
    pub const LOAD_GATE_MIN_WAIT: Duration = Duration::from_secs(5);

    /// A loader with the default [`LoaderConfig`].
    pub fn new() -> ModuleLoader {
        ModuleLoader::with_config(LoaderConfig::default())
    }

    /// A loader with `config`. Checks once whether this process can prove a
    /// module idle (see [`ModuleLoader::platform`]); where it cannot, warns
    /// (through `usrcu::diagnostics` and `log`) and runs as
    /// [`UnmapPolicy::Never`].
    pub fn with_config(config: LoaderConfig) -> ModuleLoader {
        ModuleLoader {
            platform: policy::check(config.unmap_policy),
            config,
            table: Mutex::new(Table::default()),
            notifiers: Notifiers::default(),
            reloading: Mutex::new(None),
            reload_done: std::sync::Condvar::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// What the platform check at construction found: whether this process
    /// can prove a module idle, and the policy the loader runs as.
    pub fn platform(&self) -> &PlatformSupport {
        &self.platform
    }

    /// The policy unloads follow: the configured one, or
    /// [`UnmapPolicy::Never`] where the platform cannot prove idleness.
    pub fn unmap_policy(&self) -> UnmapPolicy {
        self.platform.effective
    }

    // --- notifiers ----------------------------------------------------------

    /// Register a notifier, called for every module's `Coming`, `Live` and
    /// `Going`. An error (or a panic) from a `Coming` notifier fails the
    /// load; from `Live` it is reported as a warning; from `Going` it is
    /// recorded in the unload's report and the unload goes on.
    pub fn register_notifier<F, E>(&self, name: &str, f: F) -> NotifierId
    where
        F: Fn(ModuleEvent, &ModuleInfo) -> Result<(), E> + Send + Sync + 'static,
        E: Display,
    {
        self.notifiers.register(name, f)
    }

    /// Unregister a notifier; false if it was not registered.
    pub fn unregister_notifier(&self, id: NotifierId) -> bool {
        self.notifiers.unregister(id)
    }

    // --- queries ------------------------------------------------------------

    /// Every module this loader holds (`Coming`, `Live`, `Going`, `Zombie`),
    /// oldest first.
    pub fn list(&self) -> Vec<ModuleInfo> {
        crate::lock(&self.table).modules.iter().map(|m| m.info()).collect()
    }

    /// The module's info, while the loader holds it.
    pub fn info(&self, h: ModuleHandle) -> Option<ModuleInfo> {
        self.get(h).map(|m| m.info())
    }

    /// The module's state; `Unloaded` for a module that is gone, `None` for
    /// a handle this loader never gave out.
    pub fn state(&self, h: ModuleHandle) -> Option<ModuleState> {
        let t = crate::lock(&self.table);
        if let Some(m) = t.modules.iter().find(|m| m.handle == h) {
            return Some(m.state.get());
        }
        t.gone(h).map(|(_, s)| s)
    }

    /// The newest `Live` module named `name`.
    pub fn find(&self, name: &str) -> Option<ModuleHandle> {
        crate::lock(&self.table)
            .modules
            .iter()
            .rev()
            .find(|m| m.name == name && m.state.get() == ModuleState::Live)
            .map(|m| m.handle)
    }

    pub(crate) fn get(&self, h: ModuleHandle) -> Option<Arc<Module>> {
        crate::lock(&self.table).modules.iter().find(|m| m.handle == h).cloned()
    }

    /// The module of `h`; else its name and final state if it is gone (one
    /// of the modules this loader remembers unloading), else `None`.
    pub(crate) fn get_or_gone(&self, h: ModuleHandle) -> Result<Arc<Module>, Option<(String, ModuleState)>> {
        let t = crate::lock(&self.table);
        if let Some(m) = t.modules.iter().find(|m| m.handle == h) {
            return Ok(m.clone());
        }
        Err(t.gone(h).map(|(n, s)| (n.to_owned(), s)))
    }

    // --- load ---------------------------------------------------------------

    /// Load the plugin at `path`: copy it into private storage and check the
    /// copy's ELF structure, `dlopen` it (`RTLD_NOW | RTLD_LOCAL`), check its
    /// descriptor, hand it the host runtime, check that its static domains
    /// use it, attach them, run the `Coming` notifiers, call `init`, mark it
    /// `Live`, run the `Live` notifiers.
    ///
    /// # Safety
    ///
    /// Loading runs the plugin's code (its ELF initialisers, the install
    /// hook, `init`), and unloading unmaps it on the strength of what the
    /// loader can see. The loader checks the file's structure and the
    /// descriptor's ABI, but it cannot check the code. The caller vouches
    /// that the plugin, as its author's contract (`docs/abi.md`, "The plugin
    /// author's contract"):
    ///
    /// - is a `cdylib` built with `usrcu_registry::export_module!` against a
    ///   `usrcu` of the host's release line, whose initialisers and hooks are
    ///   sound (no undefined behaviour, no unwinding across `extern "C"`);
    /// - exports every symbol the host asks for with the type the host names
    ///   ([`ModuleLoader::symbol`] is `unsafe` for that part too);
    /// - leaves nothing that runs its code or reads its memory after `exit`
    ///   returns, other than what the loader finds and waits for: callbacks
    ///   on its static domains, readers inside them, pthread-key destructors
    ///   (the loader's unload inventory, `docs/abi.md`); in particular it joins
    ///   the threads it started, and does not register its code with other
    ///   libraries (`atexit`, C callbacks) without removing it in `exit`.
    ///   Signal handlers are checked instead: one whose address lies in the
    ///   object (or an alternate signal stack of the unloading thread that
    ///   lies in it) keeps the module mapped as a `Zombie` naming the
    ///   signal, where the next delivery would have crashed the host;
    /// - does not replace the global allocator for memory it hands the host,
    ///   and hands the host no value that borrows its memory except through
    ///   raw pointers the host dereferences under its own `unsafe`.
    pub unsafe fn load(&self, path: impl AsRef<Path>) -> Result<ModuleHandle, LoadError> {
        let source = path.as_ref();
        crate::phase_timing::mark();
        // Relaxed: a unique number, nothing else.
        let handle = ModuleHandle(NEXT_HANDLE.fetch_add(1, Ordering::Relaxed));
        // A fresh, private, validated copy for every load: dlopen of a path
        // that is still mapped returns the old image (see intake.rs).
        let intake = Intake::take(
            source,
            self.config.copy_dir.as_deref(),
            &module::copy_name(source, handle),
            self.config.reuse_copies,
            self.config.max_file_size,
        )?;
        // Not while an unload is closing a library this load could share
        // (`proofs/needed.rs`); held until the libraries are counted. Still
        // closing after the unload timeout: fail before `dlopen`, as if the
        // load had not started (the copy was never mapped).
        // The floor: another load's `dlopen` takes milliseconds, so a
        // short (even zero) unload timeout must not turn two concurrent
        // loads into a failed one.
        let gate_wait = self.config.unload_timeout.max(Self::LOAD_GATE_MIN_WAIT);
        let gate = match proofs::needed::load_gate(deadline_after(Instant::now(), gate_wait)) {
            Ok(gate) => gate,
            Err(closed) => {
                intake.release(true);
                let (path, waited) = (source.to_owned(), closed.waited);
                return Err(if closed.closing {
                    LoadError::SharedLibraryClosing { path, waited }
                } else {
                    LoadError::SharedLibraryLoading { path, waited }
                });
            }
        };
        let before = proofs::needed::snapshot();
        crate::phase_timing::lap("load: needed: snapshot");
        // SAFETY: forwarded from the caller (this fn's contract).
        let mut module = unsafe { module::open(handle, source, intake, &self.config) }?;
        crate::phase_timing::lap("load: module record");
        let loaded = module.loaded_path.clone();
        // Read from the copy at intake, from the mapping that was checked.
        let facts = match &module.intake {
            Some(copy) => copy.facts.at(&module.mapping),
            None => elf_facts::read(&loaded, &module.mapping),
        };
        crate::phase_timing::lap("load: elf facts");
        crate::test_pause::reached(crate::test_pause::PausePoint::LoadBeforeCount);
        if !proofs::test_switch::skipped("needed") {
            module.needed = proofs::needed::brought_in(&before, &loaded, &module.mapping);
        }
        drop(gate);
        crate::phase_timing::lap("load: needed: brought_in");
        if !proofs::test_switch::skipped("key-interposer") {
            // SAFETY: the object and the libraries it brought in are loaded
            // at their mappings and only their constructors have run; `init`
            // has not.
            unsafe {
                key_interposer::interpose(&facts.key_slots, &module.mapping);
                for (path, mapping) in &module.needed {
                    key_interposer::interpose(&elf_facts::read(path, mapping).key_slots, mapping);
                }
            }
        }
        crate::phase_timing::lap("load: key interposer");
        module.srcu_statics = facts.srcu_statics;
        let m = Arc::new(module);
        // Before anything of the module can run under Tasks RCU (a probe
        // `init` attaches to a normal tracepoint, a hook): `resident.rs`.
        crate::resident::populate(&m);
        crate::phase_timing::lap("load: populate");
        crate::lock(&self.table).modules.push(m.clone());
        // The host context (logger bridge), before notifiers and init.
        crate::host_context::deliver(&m);
        crate::phase_timing::lap("load: table, host context");

        // Coming notifiers, in order; on failure, Going to those already told, in reverse.
        let chain = self.notifiers.snapshot();
        for (i, n) in chain.iter().enumerate() {
            if let Err((message, panicked)) = n.call(ModuleEvent::Coming, &m.info()) {
                m.state.set(ModuleState::Going);
                let mut report = self.empty_report(&m);
                for earlier in chain[..i].iter().rev() {
                    if let Err((msg, p)) = earlier.call(ModuleEvent::Going, &m.info()) {
                        report.hook_failures.push(HookFailure::Notifier {
                            notifier: earlier.name.clone(),
                            message: msg,
                            panicked: p,
                        });
                    }
                }
                // No `exit` for a module that never ran `init`.
                m.hooks_done.store(true, Ordering::Relaxed);
                let deadline = deadline_after(Instant::now(), self.config.unload_timeout);
                let rollback = Box::new(self.teardown(&m, report, Vec::new(), deadline));
                return Err(LoadError::NotifierFailed {
                    module: m.name.clone(),
                    notifier: n.name.clone(),
                    message,
                    panicked,
                    rollback,
                });
            }
        }

        crate::phase_timing::lap("load: coming notifiers");
        let (init, suspects) = run_watching_missed_barriers(|| m.run_hook(m.init));
        crate::phase_timing::lap("load: init");
        if let Err((message, panicked)) = init {
            m.state.set(ModuleState::Going);
            let mut report = self.empty_report(&m);
            m.hooks_done.store(true, Ordering::Relaxed);
            let deadline = deadline_after(Instant::now(), self.config.unload_timeout);
            let overruns = Arc::new(Mutex::new(Vec::new()));
            self.going_notifiers(&m, &mut report, &overruns);
            report.overruns = std::mem::take(&mut *crate::lock(&overruns));
            let rollback = Box::new(self.teardown(&m, report, suspects, deadline));
            return Err(LoadError::InitFailed {
                module: m.name.clone(),
                message,
                panicked,
                rollback,
            });
        }
        m.state.set(ModuleState::Live);
        for n in self.notifiers.snapshot() {
            if let Err((message, panicked)) = n.call(ModuleEvent::Live, &m.info()) {
                diagnostics::emit(Warning::new(
                    WarningKind::Other,
                    m.name.clone(),
                    format!(
                        "usrcu-module-loader: live notifier '{}' {} for module '{}': {message}",
                        n.name,
                        if panicked { "panicked" } else { "failed" },
                        m.name
                    ),
                ));
            }
        }
        crate::phase_timing::lap("load: live notifiers");
        Ok(handle)
    }

    // --- symbols ------------------------------------------------------------

    /// A typed function of a `Live` module: one its object defines (its own
    /// `.so`, or a library loaded with it); a name found only in another
    /// library it links (libc's `malloc`) is [`SymbolError::NotFound`].
    ///
    /// # Safety
    /// `F` must be the function pointer type the module really exports under
    /// `name`. (That the function cannot be kept or called outside
    /// [`Symbol::call`]'s closure, and that nothing it returns borrows the
    /// module, the types enforce: see [`PluginFn`](crate::PluginFn).)
    pub unsafe fn symbol<F: Copy>(&self, h: ModuleHandle, name: &str) -> Result<Symbol<F>, SymbolError> {
        if std::mem::size_of::<F>() != std::mem::size_of::<*const ()>() {
            return Err(SymbolError::NotAFunctionPointer {
                size: std::mem::size_of::<F>(),
            });
        }
        let m = self.get_or_gone(h).map_err(|gone| match gone {
            // Unloaded: not live, as for `unload` (red team 12).
            Some((module, state)) => SymbolError::NotLive { module, state },
            None => SymbolError::UnknownModule { handle: h },
        })?;
        let state = m.state.get();
        if state != ModuleState::Live {
            return Err(SymbolError::NotLive {
                module: m.name.clone(),
                state,
            });
        }
        let f = {
            let lib = crate::lock(&m.lib);
            let Some(lib) = lib.as_ref() else {
                return Err(SymbolError::NotLive {
                    module: m.name.clone(),
                    state: m.state.get(),
                });
            };
            // SAFETY: the caller vouches for the type; the library is open.
            let sym = unsafe { lib.get::<F>(name.as_bytes()) }.map_err(|e| SymbolError::NotFound {
                module: m.name.clone(),
                symbol: name.to_owned(),
                message: e.to_string(),
            })?;
            *sym
        };
        // `dlsym` on the handle also searches every library the object
        // links (libc among them): a name the object does not define, but
        // libc does, is not the module's.
        // SAFETY: `F` is pointer-sized (checked above) and `Copy`; its bits
        // are the address `dlsym` returned.
        let addr: usize = unsafe { std::mem::transmute_copy(&f) };
        if !m.mapping.contains(addr) && !m.needed.iter().any(|(_, o)| o.contains(addr)) {
            return Err(SymbolError::NotFound {
                module: m.name.clone(),
                symbol: name.to_owned(),
                message: format!(
                    "the name resolves to {addr:#x}, in a library the module links, not in the module's object"
                ),
            });
        }
        Ok(Symbol { module: m, f })
    }

    // --- unload -------------------------------------------------------------

    /// Unload a module, in this order: `Going` (new calls fail); a grace
    /// period of its liveness domain (calls in flight return; bounded by
    /// the unload timeout, after which the module is `Live` again and the
    /// unload fails); `exit`; `Going` notifiers in reverse; the built-in
    /// probe notifier (tracepoint probes whose code or data lies in the
    /// object detached, their grace period waited for); the built-in SRCU
    /// notifier (per static domain: `barrier` if `call_srcu` was used, else
    /// skipped; then `cleanup`); pthread keys with plugin destructors
    /// deleted; `dlclose`; the address-space check.
    ///
    /// Anything that might still run the module's code (readers inside,
    /// callbacks pending) keeps it mapped as a `Zombie`, with a warning; the
    /// report says why. Unloading a `Zombie` again retries from the SRCU
    /// notifier on, with a budget of its own: a `barrier` that an earlier
    /// attempt gave up on, still running on a helper thread, is waited for
    /// (up to the unload timeout) before the retry decides, so a retry made
    /// just after the blocked callbacks ran unmaps instead of finding that
    /// barrier a moment before it returns. A retry of a module whose
    /// callbacks still block therefore takes the unload timeout too.
    pub fn unload(&self, h: ModuleHandle) -> Result<UnloadReport, UnloadError> {
        let m = match self.get(h) {
            Some(m) => m,
            None => {
                let t = crate::lock(&self.table);
                return Err(match t.gone(h) {
                    Some((name, state)) => UnloadError::NotLive {
                        handle: h,
                        name: name.to_owned(),
                        state,
                    },
                    None => UnloadError::UnknownModule { handle: h },
                });
            }
        };
        crate::phase_timing::mark();
        if inside_call_into(h) {
            return Err(UnloadError::FromInsideCall {
                handle: h,
                name: m.name.clone(),
            });
        }
        // Called from the module's code some other way: from a hook or a
        // probe of it (Tasks readers, which a waiting thread does not hold),
        // through the host's logger or a host function it called. The
        // unload would unmap the frames it returns to (red team 9).
        if crate::symbol::runs_code_in(&m.mapping.segments) {
            return Err(UnloadError::FromInsideModuleCode {
                handle: h,
                name: m.name.clone(),
            });
        }
        // Inside a callout (the host's logger, under any module's hook or
        // probe, or a plugin's log record): a Tasks grace period counts the
        // callout as part of a hook, so the unload's would wait for this
        // very thread.
        if usrcu::runtime::callouts::inside() {
            return Err(UnloadError::FromInsideCallout {
                handle: h,
                name: m.name.clone(),
            });
        }
        crate::phase_timing::lap("unload: own frames");
        // The unload waits for Tasks and Tasks Trace callbacks and grace
        // periods, each run by one thread of the host's: not from there.
        let callback_flavor = if usrcu::tasks::on_callback_thread() {
            Some("usrcu::tasks")
        } else if usrcu::trace::on_callback_thread() {
            Some("usrcu::trace")
        } else {
            None
        };
        if let Some(flavor) = callback_flavor {
            return Err(UnloadError::FromInsideCallback {
                handle: h,
                name: m.name.clone(),
                flavor,
            });
        }
        if usrcu::trace::in_read_section() {
            return Err(UnloadError::FromInsideReadSection {
                handle: h,
                name: m.name.clone(),
            });
        }
        let t0 = Instant::now();
        let retry = match m.state.transition(ModuleState::Live, ModuleState::Going) {
            Ok(()) => false,
            Err(ModuleState::Zombie) => match m.state.transition(ModuleState::Zombie, ModuleState::Going) {
                Ok(()) => true,
                Err(state) => return Err(self.not_live(&m, state)),
            },
            Err(state) => return Err(self.not_live(&m, state)),
        };
        let deadline = deadline_after(t0, self.config.unload_timeout);
        let mut report = self.empty_report(&m);
        let mut suspects = Vec::new();
        if !retry {
            match proofs::readers::wait_for_grace_period(
                &m.liveness,
                deadline.saturating_duration_since(Instant::now()),
            ) {
                Ok(waited) => {
                    report.calls_drained_in = waited;
                    crate::phase_timing::lap("unload: liveness grace period");
                }
                Err(waited) => {
                    m.state.set(ModuleState::Live);
                    return Err(UnloadError::CallsInFlight {
                        handle: h,
                        name: m.name.clone(),
                        waited,
                    });
                }
            }
        }
        // Relaxed: `hooks_done` is read and written only by the one unloader
        // that won the transition to `Going` (or by `load` before the module
        // is published); that transition's AcqRel orders it between them.
        if !m.hooks_done.load(Ordering::Relaxed) {
            // Callbacks queued before `exit` run before it (bounded): `exit`
            // may tear down what they use.
            if let Err(cause) = proofs::callbacks::drain_before_exit(&m, self.config.auto_barrier, deadline) {
                let mut report = self.zombie(&m, report, cause);
                report.elapsed = t0.elapsed();
                return Ok(report);
            }
            crate::phase_timing::lap("unload: drain before exit");
            // Hook slots pointing into the object are emptied and a Tasks
            // grace period waited for, before `exit` (as on main).
            crate::hook_slots::going(&m, deadline.saturating_duration_since(Instant::now()), &mut report);
            crate::phase_timing::lap("unload: hook slots before exit");
            let overruns = Arc::new(Mutex::new(Vec::new()));
            let (exit, missed) = watchdog::watch(&m.name, "exit", self.config.unload_timeout, &overruns, || {
                run_watching_missed_barriers(|| m.run_hook(m.exit))
            });
            suspects = missed;
            crate::phase_timing::lap("unload: exit");
            if let Err((message, panicked)) = exit {
                report.hook_failures.push(HookFailure::Exit { message, panicked });
            }
            self.going_notifiers(&m, &mut report, &overruns);
            report.overruns = std::mem::take(&mut *crate::lock(&overruns));
            m.hooks_done.store(true, Ordering::Relaxed);
            crate::phase_timing::lap("unload: going notifiers");
        }
        let mut report = self.teardown(&m, report, suspects, deadline);
        report.elapsed = t0.elapsed();
        match report.hook_failures.first() {
            Some(f) => Err(UnloadError::HookFailed {
                failure: f.clone(),
                report: Box::new(report),
            }),
            None => Ok(report),
        }
    }

    /// Load `path` as the new version of the live module `name`, then unload
    /// the old one. Calls switch over without a gap: both are live for a
    /// moment (each copy sees only its own static domains). If the new one
    /// does not load, or is another module (its descriptor declares another
    /// name: [`ReloadError::NotTheSameModule`], and it is unloaded again),
    /// the old one stays live.
    ///
    /// Reloads of one loader run one at a time: two threads reloading the
    /// same module at once (two file watchers firing on one save) each
    /// replace the copy live when they start, one after the other, and leave
    /// one live copy; each gets its own new handle, the first of which the
    /// second reload has unloaded. A reload called from a notifier or a
    /// module's `init` during a reload on the same thread is not held up.
    ///
    /// # Safety
    /// As for [`ModuleLoader::load`], for the plugin at `path`.
    pub unsafe fn reload(
        &self,
        name: &str,
        path: impl AsRef<Path>,
    ) -> Result<(ModuleHandle, UnloadReport), ReloadError> {
        // Without this, two concurrent reloads could both find the same old
        // copy: both loaded a new one, one unloaded the old, the other then
        // failed to and left its new copy live beside the first's
        // (tests/tests/redteam7_loader.rs, seen with two live copies).
        let _turn = self.reload_turn();
        let old = self
            .find(name)
            .ok_or_else(|| ReloadError::NoSuchModule { name: name.to_owned() })?;
        // SAFETY: forwarded from the caller.
        let new = unsafe { self.load(path) }.map_err(ReloadError::Load)?;
        if let Some(found) = self.get(new).map(|m| m.name.clone()).filter(|n| n != name) {
            return Err(ReloadError::NotTheSameModule {
                name: name.to_owned(),
                found,
                rollback: Box::new(self.unload(new)),
            });
        }
        match self.unload(old) {
            Ok(r) => Ok((new, r)),
            Err(error) => Err(ReloadError::Unload { new, error }),
        }
    }

    /// Wait for this thread's turn to reload (none is needed when this
    /// thread already holds it: a reload from inside a reload).
    fn reload_turn(&self) -> Option<ReloadTurn<'_>> {
        let me = std::thread::current().id();
        let mut owner = crate::lock(&self.reloading);
        if *owner == Some(me) {
            return None;
        }
        while owner.is_some() {
            owner = self.reload_done.wait(owner).unwrap_or_else(|p| p.into_inner());
        }
        *owner = Some(me);
        Some(ReloadTurn(self))
    }

    /// Unload every module, newest first: each `Live` one, and each
    /// `Zombie` again (a retry, as [`ModuleLoader::unload`] does: one whose
    /// cause has gone is unmapped, one whose cause remains stays a Zombie);
    /// returns each outcome. Modules in the middle of a load or an unload
    /// on another thread are left to it, and are not in the result (one
    /// that another thread began to unload after this call listed it is
    /// left too).
    pub fn unload_all(&self) -> Vec<(ModuleHandle, Result<UnloadReport, UnloadError>)> {
        let handles: Vec<ModuleHandle> = crate::lock(&self.table)
            .modules
            .iter()
            .rev()
            .filter(|m| matches!(m.state.get(), ModuleState::Live | ModuleState::Zombie))
            .map(|m| m.handle)
            .collect();
        // A module another thread began to unload since the list was taken
        // is left to it, as the docs say: no `NotLive` error for its work
        // (red team 8: two `unload_all` at once reported each other's).
        handles
            .into_iter()
            .map(|h| (h, self.unload(h)))
            .filter(|(_, r)| {
                !matches!(
                    r,
                    Err(UnloadError::NotLive {
                        state: ModuleState::Going | ModuleState::Unloaded,
                        ..
                    })
                )
            })
            .collect()
    }

    fn not_live(&self, m: &Module, state: ModuleState) -> UnloadError {
        UnloadError::NotLive {
            handle: m.handle,
            name: m.name.clone(),
            state,
        }
    }

    fn empty_report(&self, m: &Module) -> UnloadReport {
        UnloadReport {
            handle: m.handle,
            name: m.name.clone(),
            loaded_path: m.loaded_path.clone(),
            state: ModuleState::Going,
            domains: Vec::new(),
            hook_failures: Vec::new(),
            pthread_keys_deleted: 0,
            dlclosed: false,
            unmapped: false,
            resident_cause: None,
            zombie_cause: None,
            calls_drained_in: Duration::ZERO,
            elapsed: Duration::ZERO,
            probes_removed: Vec::new(),
            libraries_still_mapped: Vec::new(),
            overruns: Vec::new(),
            hook_slots: Default::default(),
        }
    }

    /// `Going` notifiers, in reverse registration order, each watched
    /// against the unload timeout from its own start (`watchdog::watch`).
    fn going_notifiers(&self, m: &Module, report: &mut UnloadReport, overruns: &Arc<Mutex<Vec<String>>>) {
        for n in self.notifiers.snapshot().iter().rev() {
            let step = format!("going notifier '{}'", n.name);
            let r = watchdog::watch(&m.name, &step, self.config.unload_timeout, overruns, || {
                n.call(ModuleEvent::Going, &m.info())
            });
            if let Err((message, panicked)) = r {
                report.hook_failures.push(HookFailure::Notifier {
                    notifier: n.name.clone(),
                    message,
                    panicked,
                });
            }
        }
    }

    /// Keep the module mapped as a `Zombie` for `cause`, with a warning.
    fn zombie(&self, m: &Module, mut report: UnloadReport, cause: ZombieCause) -> UnloadReport {
        diagnostics::emit(Warning::new(
            WarningKind::Other,
            m.name.clone(),
            format!(
                "usrcu-module-loader: module '{}' ({}) kept mapped as a zombie: {cause}",
                m.name, m.handle
            ),
        ));
        *crate::lock(&m.zombie_cause) = Some(cause.clone());
        report.zombie_cause = Some(cause);
        report.state = ModuleState::Zombie;
        m.state.set(ModuleState::Zombie);
        report
    }

    /// From the proofs of idleness to the address-space check.
    /// `suspects` are the missed-barrier warnings emitted while the module's
    /// last hook (`exit`, or a failing `init`) ran: one about a domain the
    /// loader cannot see (a dynamic domain of the plugin) keeps the object
    /// mapped.
    fn teardown(
        &self,
        m: &Arc<Module>,
        mut report: UnloadReport,
        suspects: Vec<Warning>,
        deadline: Instant,
    ) -> UnloadReport {
        let t0 = Instant::now();
        if self.config.remove_probes {
            let retry = matches!(*crate::lock(&m.zombie_cause), Some(ZombieCause::ProbesInUse));
            let (removed, complete) =
                crate::probes::going(&m.mapping, deadline.saturating_duration_since(Instant::now()), retry);
            report.probes_removed.extend(removed);
            // Under `UnmapPolicy::Never` nothing is unmapped anyway.
            if !complete && self.platform.effective != UnmapPolicy::Never {
                let mut report = self.zombie(m, report, ZombieCause::ProbesInUse);
                report.elapsed += t0.elapsed();
                return report;
            }
        }
        crate::phase_timing::lap("unload: probes");
        crate::hook_slots::going(m, deadline.saturating_duration_since(Instant::now()), &mut report);
        crate::phase_timing::lap("unload: hook slots");
        let hooks_busy = report.hook_slots.timed_out;
        let never = self.platform.effective == UnmapPolicy::Never;
        // Its libraries that another live module also uses stay with that
        // module: they are proven idle on its unload, the one that unmaps them.
        // Marked closing while `closing` lives: dropped on the paths that
        // keep the module mapped (or unwind), released after `dlclose`.
        // Another unload of a module sharing one of them decides first, and
        // this one after it is done (`proofs/needed.rs`).
        let closing = match proofs::needed::partition(&m.needed, deadline) {
            Ok(closing) => {
                if !m.needed.is_empty() {
                    crate::test_pause::reached(crate::test_pause::PausePoint::UnloadAfterDecision);
                }
                closing
            }
            // Nothing is unmapped: no library is closed either.
            Err(_) if never => proofs::needed::Closing::none(m.needed.len()),
            // A load may yet share a library, or another unload count its
            // share off: decide on a retry.
            Err(undecided) => {
                let mut report = self.zombie(m, report, undecided.cause());
                report.elapsed += t0.elapsed();
                return report;
            }
        };
        let last_user = closing.last_user.clone();
        let mine = || {
            m.needed
                .iter()
                .zip(&last_user)
                .filter(|(_, last)| **last)
                .map(|(n, _)| n)
        };
        let mut cx = UnloadCx {
            module: m,
            config: &self.config,
            objects: std::iter::once(m.mapping.clone())
                .chain(mine().map(|(_, o)| o.clone()))
                .collect(),
            report: &mut report,
            suspects,
            readers_stuck: Vec::new(),
            deadline,
            key_table: self.platform.key_table,
        };
        let proven = proofs::prove_idle(&mut cx, never).and(if hooks_busy {
            Err(ZombieCause::HooksBusy)
        } else {
            Ok(())
        });
        if never {
            // The barriers ran (the first proofs); nothing is unmapped.
            return self.keep_mapped_by_policy(m, report, t0);
        }
        if let Err(cause) = proven {
            let mut report = self.zombie(m, report, cause);
            report.elapsed += t0.elapsed();
            return report;
        }
        if last_user.contains(&true) {
            crate::test_pause::reached(crate::test_pause::PausePoint::UnloadBeforeDlclose);
        }
        // Every proof passed: no thread runs the objects' code through a
        // hook slot or a normal probe any more. Their records go now, while
        // they are still mapped (no other object can be at these addresses
        // yet), so that an object mapped there next starts clean.
        for o in std::iter::once(&m.mapping).chain(mine().map(|(_, o)| o)) {
            usrcu::tasks::forget_hooks_ever_into(&o.segments);
        }
        // Drop every handle into the object, then close it. Under `DLCLOSE`,
        // with the check that follows: an object that stays (a thread-local
        // destructor of the plugin is pending on a live thread) is pinned
        // before another `dlclose` of this loader could make glibc unmap it.
        let dlclose = crate::lock(&DLCLOSE);
        let lib = crate::lock(&m.lib).take();
        if let Some(lib) = lib {
            // The object's ELF destructors run in `dlclose`, on this thread,
            // right before the unmap: without an rseq registration, so that
            // their read sections leave no descriptor behind (`proofs/rseq.rs`).
            report.dlclosed = proofs::rseq::without_rseq(|| lib.close()).is_ok();
        }
        crate::phase_timing::lap("unload: dlclose");
        report.unmapped = !address_space::is_mapped(&m.loaded_path);
        if !report.unmapped && !m.mapping.nodelete && !test_switch_no_pin() {
            // glibc keeps such an object only until the thread exits, runs
            // the destructor (plugin code, which may queue callbacks of the
            // plugin), then unmaps it at the next `dlclose` in the process,
            // with that work possibly still pending: never unmapped, then.
            address_space::pin_forever(&m.loaded_path);
        }
        drop(dlclose);
        crate::phase_timing::lap("unload: is_mapped");
        // The libraries it was the last user of must have left too (one that
        // a load racing with this unload took meanwhile stays, with it).
        // Looked at before the closing marks are released: after, a load
        // waiting at the gate may map the library anew, at the same path.
        let left_mapped: Vec<bool> = (0..m.needed.len())
            .map(|i| last_user[i] && address_space::is_mapped(&m.needed[i].0))
            .collect();
        let taken = closing.release();
        if last_user.contains(&true) {
            crate::test_pause::reached(crate::test_pause::PausePoint::UnloadAfterRelease);
        }
        report.libraries_still_mapped = (0..m.needed.len())
            .filter(|&i| left_mapped[i] && !taken[i])
            .map(|i| m.needed[i].0.clone())
            .collect();
        report.unmapped &= report.libraries_still_mapped.is_empty();
        if !report.unmapped {
            report.resident_cause = Some(if m.mapping.nodelete {
                ResidentCause::NoDelete
            } else {
                ResidentCause::ThreadLocalDestructor
            });
        }
        crate::phase_timing::lap("unload: needed still mapped?");
        if let Some(copy) = &m.intake {
            copy.release(report.unmapped);
        }
        crate::phase_timing::lap("unload: release copy");
        let report = self.gone(m, report, t0);
        crate::phase_timing::lap("unload: gone");
        report
    }

    /// [`UnmapPolicy::Never`]: the object stays mapped (its library handle
    /// and its copy are leaked on purpose); the module is gone from the loader.
    fn keep_mapped_by_policy(&self, m: &Arc<Module>, mut report: UnloadReport, t0: Instant) -> UnloadReport {
        if let Some(lib) = crate::lock(&m.lib).take() {
            std::mem::forget(lib);
        }
        if let Some(copy) = &m.intake {
            copy.release(false);
        }
        report.resident_cause = Some(ResidentCause::KeptMappedByPolicy);
        self.gone(m, report, t0)
    }

    /// The module leaves the loader: its hook-slot bookkeeping is dropped,
    /// it is `Unloaded`, and its handle is remembered as gone.
    fn gone(&self, m: &Arc<Module>, mut report: UnloadReport, t0: Instant) -> UnloadReport {
        crate::hook_slots::forget(m);
        report.state = ModuleState::Unloaded;
        m.state.set(ModuleState::Unloaded);
        let mut t = crate::lock(&self.table);
        t.modules.retain(|x| !Arc::ptr_eq(x, m));
        t.remember_gone(m.handle, &m.name, ModuleState::Unloaded);
        report.elapsed += t0.elapsed();
        report
    }
}

impl Drop for ModuleLoader {
    /// Unloads every live module and retries every zombie
    /// ([`ModuleLoader::unload_all`]; best effort: a module whose calls do
    /// not drain in time, or that is (still) a zombie, stays mapped, leaked).
    /// A module whose unload failed (it stays loaded and `Live` for the rest
    /// of the process, its `exit` never run) is named in a warning
    /// ([`usrcu::diagnostics`]); a zombie is named by the zombie warning.
    fn drop(&mut self) {
        for (h, r) in self.unload_all() {
            if let Err(e) = r {
                let name = crate::lock(&self.table)
                    .modules
                    .iter()
                    .find(|m| m.handle == h)
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                diagnostics::emit(Warning::new(
                    WarningKind::Other,
                    name.clone(),
                    format!(
                        "usrcu-module-loader: the loader was dropped but module '{name}' ({h}) could not \
                         be unloaded: {e}; it stays loaded for the rest of the process and its exit never runs"
                    ),
                ));
            }
        }
        // Zombies and modules that stay loaded keep their libraries open for
        // the rest of the process: never unmap code that may still run.
        let t = crate::lock(&self.table);
        for m in &t.modules {
            if let Some(lib) = crate::lock(&m.lib).take() {
                std::mem::forget(lib);
            }
        }
    }
}

/// Held around each `dlclose` of a module and the check after it (see
/// `teardown`).
static DLCLOSE: Mutex<()> = Mutex::new(());

/// Test switch: `USRCU_LOADER_TEST_NO_PIN=1` (read once) leaves an object
/// kept resident by a thread-local destructor unpinned, to show what the
/// pin prevents (`tests/tests/redteam2_deferred_work.rs`, in a child).
fn test_switch_no_pin() -> bool {
    static NO_PIN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *NO_PIN.get_or_init(|| std::env::var_os("USRCU_LOADER_TEST_NO_PIN").is_some_and(|v| v == "1"))
}

/// `t0 + timeout`: the deadline of an unload. Every `Duration` is a valid
/// timeout: one that does not fit in an `Instant` (`Duration::MAX`, "as long
/// as it takes") gives the farthest deadline that does, a century or less
/// away, instead of the panic of `Instant + Duration`.
fn deadline_after(t0: Instant, timeout: Duration) -> Instant {
    if let Some(d) = t0.checked_add(timeout) {
        return d;
    }
    let mut span = Duration::from_secs(100 * 365 * 24 * 3600);
    loop {
        match t0.checked_add(span) {
            Some(d) => return d,
            None if span.is_zero() => return t0,
            None => span /= 2,
        }
    }
}

/// Run a module hook and collect the missed-barrier warnings that this
/// thread emitted meanwhile: those of dynamic domains the plugin dropped in
/// its hook without a barrier. Warnings carry the emitting thread's id, so
/// warnings from other threads in the same window are not counted.
fn run_watching_missed_barriers<R>(hook: impl FnOnce() -> R) -> (R, Vec<Warning>) {
    let capture = Capture::start();
    let me = diagnostics::current_tid();
    let r = hook();
    let missed = capture
        .warnings()
        .into_iter()
        .filter(|w| w.kind == WarningKind::MissedBarrier && w.tid == me)
        .collect();
    (r, missed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gone_record_is_bounded_and_keeps_each_name_once() {
        let mut t = Table::default();
        for i in 0..3 * GONE_REMEMBERED as u64 {
            let name = ["callbacks", "dynamic-domain", "thread-current"][(i % 3) as usize];
            t.remember_gone(ModuleHandle(i), name, ModuleState::Unloaded);
        }
        assert_eq!(t.gone.len(), GONE_REMEMBERED);
        // The newest are remembered, the oldest read as unknown.
        let last = 3 * GONE_REMEMBERED as u64 - 1;
        assert_eq!(
            t.gone(ModuleHandle(last)),
            Some(("thread-current", ModuleState::Unloaded))
        );
        assert_eq!(t.gone(ModuleHandle(0)), None);
        // One string per distinct name for the whole table.
        let mut distinct: Vec<*const u8> = t.gone.iter().map(|(_, n, _)| n.as_ptr()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "names allocated once each, not once per unload");
    }
}
