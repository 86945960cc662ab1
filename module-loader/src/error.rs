//! Typed errors. Every mismatch names both sides; every error leaves the
//! host and its other modules as they were.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use usrcu_registry::TypeLayout;

use crate::elf_check::ElfDefect;
use crate::report::{HookFailure, UnloadReport};
use crate::state::ModuleState;
use crate::ModuleHandle;

/// Why [`ModuleLoader::load`](crate::ModuleLoader::load) failed. Nothing of
/// the object stays loaded (except where a rollback report says it could not
/// be unmapped).
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// No file at that path.
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// Reading or copying the file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file is not an ELF shared object.
    NotSharedObject {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },
    /// `dlopen` refused it.
    Dlopen {
        /// The file.
        path: PathBuf,
        /// `dlerror()`.
        message: String,
    },
    /// The object exports no descriptor symbol (not built with `export_module!`).
    NoDescriptor {
        /// The file.
        path: PathBuf,
        /// The symbol looked for.
        symbol: &'static str,
    },
    /// The descriptor function returned null.
    NullDescriptor {
        /// The file.
        path: PathBuf,
    },
    /// The descriptor does not start with the magic number.
    BadMagic {
        /// The file.
        path: PathBuf,
        /// What the plugin has.
        plugin: u64,
        /// What the host expects.
        host: u64,
    },
    /// The module's descriptor names it with a name a host cannot use:
    /// empty, longer than 255 bytes, or with a control character (a NUL, a
    /// newline), a line separator or a bidirectional control. Its `init` was not run.
    BadModuleName {
        /// The file.
        path: PathBuf,
        /// The name (its first 64 characters).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A version the host does not speak.
    VersionMismatch {
        /// The file.
        path: PathBuf,
        /// Which version: `"module ABI"`, `"SRCU layout"`, `"runtime ABI"`,
        /// `"reader protocol"`, `"usrcu"`, `"rustc"`.
        what: &'static str,
        /// The plugin's.
        plugin: String,
        /// The host's.
        host: String,
    },
    /// A shared struct (or the descriptor itself) is laid out differently.
    LayoutMismatch {
        /// The file.
        path: PathBuf,
        /// Which struct.
        structure: &'static str,
        /// The plugin's layout.
        plugin: TypeLayout,
        /// The host's layout.
        host: TypeLayout,
    },
    /// A static domain's header is not that of a `Srcu` of our layout.
    BadDomainHeader {
        /// The module.
        module: String,
        /// Index in the descriptor's domain list.
        index: usize,
        /// (magic, layout version) found.
        plugin: (u32, u32),
        /// (magic, layout version) expected.
        host: (u32, u32),
    },
    /// The plugin refused the host's runtime.
    RuntimeRejected {
        /// The module.
        module: String,
        /// Its message.
        message: String,
    },
    /// A `Coming` notifier failed; the load was rolled back.
    NotifierFailed {
        /// The module.
        module: String,
        /// The notifier's name.
        notifier: String,
        /// Its message.
        message: String,
        /// It panicked.
        panicked: bool,
        /// What the rollback did.
        rollback: Box<UnloadReport>,
    },
    /// `init` failed or panicked; the load was rolled back.
    InitFailed {
        /// The module.
        module: String,
        /// Its message.
        message: String,
        /// It panicked.
        panicked: bool,
        /// What the rollback did.
        rollback: Box<UnloadReport>,
    },
    /// The path names a directory, a FIFO, a socket or a device.
    NotARegularFile {
        /// The path given.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// An ELF object built for another host: another class (32/64-bit),
    /// byte order or machine.
    ForeignObject {
        /// The file.
        path: PathBuf,
        /// What differs: `"ELF class"`, `"byte order"`, `"machine (e_machine)"`.
        what: &'static str,
        /// The file's.
        plugin: String,
        /// The host's.
        host: String,
    },
    /// The copy's ELF structure is inconsistent or truncated: `dlopen` would
    /// map bytes the file does not have or follow addresses it does not map.
    MalformedElf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        defect: ElfDefect,
    },
    /// A shared struct has the same size and alignment but its fields lie
    /// elsewhere (its field-offset fingerprint differs).
    FieldOffsetsMismatch {
        /// The file.
        path: PathBuf,
        /// Which struct.
        structure: &'static str,
        /// The plugin's fingerprint.
        plugin: u64,
        /// The host's.
        host: u64,
    },
    /// After the runtime was handed over, a static domain of the plugin
    /// still dispatches to another runtime table than the host's.
    RuntimeMismatch {
        /// The module.
        module: String,
        /// The domain.
        domain: String,
        /// The table its runtime pointer names.
        plugin: usize,
        /// The host's table.
        host: usize,
    },
    /// The plugin was built with `panic = "abort"` and the host unwinds
    /// (see [`LoaderConfig::allow_panic_abort`](crate::LoaderConfig::allow_panic_abort)).
    PanicStrategyMismatch {
        /// The file.
        path: PathBuf,
        /// The plugin's panic strategy.
        plugin: &'static str,
        /// The host's.
        host: &'static str,
    },
    /// [`LoaderConfig::copy_dir`](crate::LoaderConfig::copy_dir) is not a
    /// private directory (owned by this user, mode 0700, not a symlink).
    UnsafeCopyDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file is larger than
    /// [`LoaderConfig::max_file_size`](crate::LoaderConfig::max_file_size)
    /// (read from its size before anything is copied, or found while
    /// copying a file that grew); nothing was copied past the bound.
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (for a file that grew while copied: the bytes read
        /// when the copy stopped, one past the bound).
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// An unload was still closing a library that a plugin load brought in
    /// (its last user's unload decided to close it and had not `dlclose`d)
    /// when the load's wait for it ran out
    /// ([`LoaderConfig::unload_timeout`](crate::LoaderConfig::unload_timeout)).
    /// The load stopped before its `dlopen`: it could have shared that
    /// library while its pthread keys were being deleted. A retry after
    /// the unload is over loads the library afresh.
    SharedLibraryClosing {
        /// The file.
        path: PathBuf,
        /// How long the load waited.
        waited: Duration,
    },
    /// Another load was still between its `dlopen` and counting the
    /// libraries it brought in when this load's wait for it (bounded by
    /// the unload timeout) ran out. Loads are counted one at a time: this
    /// load could not tell that load's libraries from the host's, and would
    /// not count a library it shares with it. The load stopped before its
    /// `dlopen`; a retry once that load is done loads normally.
    SharedLibraryLoading {
        /// The file.
        path: PathBuf,
        /// How long the load waited.
        waited: Duration,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = |p: &bool| if *p { "panicked" } else { "failed" };
        match self {
            LoadError::NotFound { path } => write!(f, "no module file at {}", path.display()),
            LoadError::Io { path, source } => write!(f, "cannot read or copy {}: {source}", path.display()),
            LoadError::NotSharedObject { path, reason } => {
                write!(f, "{} is not a shared object: {reason}", path.display())
            }
            LoadError::Dlopen { path, message } => write!(f, "dlopen({}) failed: {message}", path.display()),
            LoadError::NoDescriptor { path, symbol } => write!(
                f,
                "{} exports no module descriptor (symbol `{symbol}`; was it built with usrcu_registry::export_module!?)",
                path.display()
            ),
            LoadError::NullDescriptor { path } => {
                write!(f, "{}: the module descriptor function returned null", path.display())
            }
            LoadError::BadMagic { path, plugin, host } => write!(
                f,
                "{}: wrong descriptor magic: plugin has {plugin:#018x}, host expects {host:#018x}",
                path.display()
            ),
            LoadError::BadModuleName { path, name, reason } => {
                write!(f, "{}: unusable module name {name:?}: {reason}", path.display())
            }
            LoadError::VersionMismatch {
                path,
                what,
                plugin,
                host,
            } => write!(
                f,
                "{}: {what} version mismatch: plugin has {plugin}, host has {host}",
                path.display()
            ),
            LoadError::LayoutMismatch {
                path,
                structure,
                plugin,
                host,
            } => write!(
                f,
                "{}: layout of `{structure}` differs: plugin has {plugin}, host has {host}",
                path.display()
            ),
            LoadError::BadDomainHeader {
                module,
                index,
                plugin,
                host,
            } => write!(
                f,
                "module '{module}': static domain #{index} has header (magic {:#x}, layout {}), host expects (magic {:#x}, layout {})",
                plugin.0, plugin.1, host.0, host.1
            ),
            LoadError::RuntimeRejected { module, message } => {
                write!(f, "module '{module}' refused the host runtime: {message}")
            }
            LoadError::NotifierFailed {
                module,
                notifier,
                message,
                panicked,
                ..
            } => write!(
                f,
                "coming notifier '{notifier}' {} for module '{module}': {message}; load rolled back",
                how(panicked)
            ),
            LoadError::InitFailed {
                module,
                message,
                panicked,
                ..
            } => write!(f, "init of module '{module}' {}: {message}; load rolled back", how(panicked)),
            LoadError::NotARegularFile { path, kind } => {
                write!(f, "{} is {kind}, not a shared object file", path.display())
            }
            LoadError::ForeignObject {
                path,
                what,
                plugin,
                host,
            } => write!(
                f,
                "{} is built for another host: {what} is {plugin}, the host's is {host}",
                path.display()
            ),
            LoadError::MalformedElf { path, defect } => {
                write!(f, "{} is a malformed ELF object: {defect}", path.display())
            }
            LoadError::FieldOffsetsMismatch {
                path,
                structure,
                plugin,
                host,
            } => write!(
                f,
                "{}: field offsets of `{structure}` differ: plugin fingerprint {plugin:#018x}, host {host:#018x}",
                path.display()
            ),
            LoadError::RuntimeMismatch {
                module,
                domain,
                plugin,
                host,
            } => write!(
                f,
                "module '{module}': static domain '{domain}' uses the runtime table at {plugin:#x}, not the host's at {host:#x}"
            ),
            LoadError::PanicStrategyMismatch { path, plugin, host } => write!(
                f,
                "{}: built with panic = \"{plugin}\", the host with panic = \"{host}\" (a panic in the plugin would end the process)",
                path.display()
            ),
            LoadError::UnsafeCopyDir { path, reason } => {
                write!(f, "copy directory {} is not private: {reason}", path.display())
            }
            LoadError::TooLarge { path, size, limit } => write!(
                f,
                "{} is too large to load: {size} bytes, the bound (LoaderConfig::max_file_size) is {limit}",
                path.display()
            ),
            LoadError::SharedLibraryClosing { path, waited } => write!(
                f,
                "{} not loaded: an unload was still closing a library that a plugin load brought in after {waited:?} (the unload timeout); retry once it is over",
                path.display()
            ),
            LoadError::SharedLibraryLoading { path, waited } => write!(
                f,
                "{} not loaded: another load was still counting the libraries it brought in after {waited:?} (the unload timeout); retry once it is over",
                path.display()
            ),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Why [`ModuleLoader::unload`](crate::ModuleLoader::unload) did not (fully) succeed.
#[derive(Debug)]
#[non_exhaustive]
pub enum UnloadError {
    /// This loader never loaded such a module.
    UnknownModule {
        /// The handle given.
        handle: ModuleHandle,
    },
    /// The module is not `Live` (nor a `Zombie` to retry): already unloaded,
    /// or being loaded or unloaded by another thread.
    NotLive {
        /// The handle.
        handle: ModuleHandle,
        /// The module's name.
        name: String,
        /// Its state.
        state: ModuleState,
    },
    /// Called from inside a call into that same module: waiting for the
    /// module's calls would wait for itself.
    FromInsideCall {
        /// The handle.
        handle: ModuleHandle,
        /// The module's name.
        name: String,
    },
    /// Called on a thread that is running the module's code: a frame of the
    /// calling thread returns into the module (the unload was called from
    /// the host's logger under the module's hook or tracepoint probe, or
    /// from a host function that such code called). Unmapping the module
    /// would return that frame into unmapped memory. Nothing was done; the
    /// module is still `Live` (or `Zombie`). Unload it from another thread.
    /// Called on a fiber (a stack other than the thread's own), any word of
    /// the thread's own stack that points into the module refuses too,
    /// a stale one included.
    FromInsideModuleCode {
        /// The handle.
        handle: ModuleHandle,
        /// The module's name.
        name: String,
    },
    /// Called inside a *callout* (`usrcu::runtime::callouts`): from the
    /// host's logger (a plugin's `log` record, or a usrcu warning), which
    /// may run under a module's hook or tracepoint probe. A Tasks grace
    /// period counts a callout as part of the hook that called it, so the
    /// unload's grace period would wait for this very thread. Nothing was
    /// done. Unload from another thread, for example one the logger hands
    /// the handle to.
    FromInsideCallout {
        /// The handle.
        handle: ModuleHandle,
        /// The module's name.
        name: String,
    },
    /// Called on the thread that runs the callbacks of a process-wide
    /// flavor (`usrcu-tasks` or `usrcu-trace`, from inside a Tasks or Tasks
    /// Trace callback): the unload waits for that flavor's callbacks and
    /// grace periods, which would wait for itself. Nothing was done; the
    /// module is still `Live` (or `Zombie`). Unload it from another thread,
    /// for example one the callback hands the handle to.
    FromInsideCallback {
        /// The handle.
        handle: ModuleHandle,
        /// The module's name.
        name: String,
        /// The flavor whose callback thread this is ("usrcu::tasks" or
        /// "usrcu::trace").
        flavor: &'static str,
    },
    /// Called inside a Tasks Trace read section (from a faultable
    /// tracepoint's probe, say): the unload waits for Tasks Trace grace
    /// periods, which wait for that section. Nothing was done.
    FromInsideReadSection {
        /// The handle.
        handle: ModuleHandle,
        /// The module's name.
        name: String,
    },
    /// Calls into the module did not return within the unload timeout. The
    /// module is `Live` again and usable.
    CallsInFlight {
        /// The handle.
        handle: ModuleHandle,
        /// The module's name.
        name: String,
        /// How long the unload waited.
        waited: Duration,
    },
    /// `exit` or a `Going` notifier failed. The unload went on; the report
    /// says how it ended.
    HookFailed {
        /// The first failure (all are in the report).
        failure: HookFailure,
        /// What the unload did.
        report: Box<UnloadReport>,
    },
}

impl fmt::Display for UnloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnloadError::UnknownModule { handle } => write!(f, "no module {handle} in this loader"),
            UnloadError::NotLive { handle, name, state } => {
                write!(f, "module '{name}' ({handle}) is {state}, not live")
            }
            UnloadError::FromInsideCallout { handle, name } => write!(
                f,
                "cannot unload module '{name}' ({handle}) from inside the host's logger (a callout): the unload's Tasks \
                 grace period would wait for this thread"
            ),
            UnloadError::FromInsideModuleCode { handle, name } => write!(
                f,
                "cannot unload module '{name}' ({handle}) from code it called (its hook, its probe, the host logger under \
                 them): the unload would return into the unmapped module"
            ),
            UnloadError::FromInsideCall { handle, name } => write!(
                f,
                "cannot unload module '{name}' ({handle}) from inside a call into it: it would wait for itself"
            ),
            UnloadError::FromInsideCallback { handle, name, flavor } => write!(
                f,
                "cannot unload module '{name}' ({handle}) from inside a {flavor} callback: it would wait for that flavor's callbacks, its own thread"
            ),
            UnloadError::FromInsideReadSection { handle, name } => write!(
                f,
                "cannot unload module '{name}' ({handle}) inside a Tasks Trace read section: it would wait for that section"
            ),
            UnloadError::CallsInFlight { handle, name, waited } => write!(
                f,
                "calls into module '{name}' ({handle}) did not return within {waited:?}; the module stays live"
            ),
            UnloadError::HookFailed { failure, report } => {
                write!(f, "while unloading module '{}': {failure}; {report}", report.name)
            }
        }
    }
}

impl std::error::Error for UnloadError {}

/// Why a call through a [`Symbol`](crate::Symbol) or a typed
/// [`Plugin`](crate::Plugin) was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// The module is no longer (or not yet) `Live`.
    NotLive {
        /// The module's name.
        module: String,
        /// Its state.
        state: ModuleState,
    },
    /// The plugin's function panicked; its shim caught the panic at the
    /// boundary. The module stays live.
    Panicked {
        /// The module's name.
        module: String,
        /// The interface function.
        function: String,
        /// The panic's message.
        message: String,
    },
    /// No `Live` module of that name (a typed handle looks one up per reload).
    NoLiveModule {
        /// The module name the handle was made for.
        name: String,
    },
    /// The live module does not export the interface as the host declares it.
    Interface {
        /// The module's name.
        module: String,
        /// What differs.
        error: usrcu_registry::interface::InterfaceError,
    },
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::NotLive { module, state } => write!(f, "module '{module}' is {state}, not live"),
            CallError::Panicked {
                module,
                function,
                message,
            } => write!(f, "module '{module}': `{function}` panicked: {message}"),
            CallError::NoLiveModule { name } => write!(f, "no live module named '{name}'"),
            CallError::Interface { module, error } => write!(f, "module '{module}': {error}"),
        }
    }
}

impl std::error::Error for CallError {}

/// Why [`ModuleLoader::symbol`](crate::ModuleLoader::symbol) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum SymbolError {
    /// See [`UnloadError::UnknownModule`]. A module this loader unloaded is
    /// [`SymbolError::NotLive`] instead (as long as the loader remembers
    /// it: the last 1,024 gone).
    UnknownModule {
        /// The handle.
        handle: ModuleHandle,
    },
    /// The module is not `Live`.
    NotLive {
        /// The module's name.
        module: String,
        /// Its state.
        state: ModuleState,
    },
    /// No such symbol.
    NotFound {
        /// The module's name.
        module: String,
        /// The symbol.
        symbol: String,
        /// `dlerror()`.
        message: String,
    },
    /// The requested type is not pointer-sized (not a function pointer).
    NotAFunctionPointer {
        /// The type's size.
        size: usize,
    },
}

impl fmt::Display for SymbolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SymbolError::UnknownModule { handle } => write!(f, "no module {handle} in this loader"),
            SymbolError::NotLive { module, state } => write!(f, "module '{module}' is {state}, not live"),
            SymbolError::NotFound {
                module,
                symbol,
                message,
            } => write!(f, "module '{module}' has no symbol `{symbol}`: {message}"),
            SymbolError::NotAFunctionPointer { size } => {
                write!(f, "a symbol type must be a function pointer; this one is {size} bytes")
            }
        }
    }
}

impl std::error::Error for SymbolError {}

/// Why [`ModuleLoader::reload`](crate::ModuleLoader::reload) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReloadError {
    /// No live module of that name.
    NoSuchModule {
        /// The name.
        name: String,
    },
    /// The new object did not load; the old one is untouched and live.
    Load(LoadError),
    /// The new object is live, but the old one did not unload cleanly.
    Unload {
        /// The new module.
        new: ModuleHandle,
        /// Why the old one did not unload.
        error: UnloadError,
    },
    /// The file is another module, not a new version of `name`: it was
    /// unloaded again (`rollback`), and the old module is untouched and live.
    NotTheSameModule {
        /// The module to reload.
        name: String,
        /// The name the file's module declares.
        found: String,
        /// The unload of the module the file loaded.
        rollback: Box<Result<UnloadReport, UnloadError>>,
    },
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::NoSuchModule { name } => write!(f, "no live module named '{name}' to reload"),
            ReloadError::Load(e) => write!(f, "reload: the new object did not load (the old one stays live): {e}"),
            ReloadError::Unload { new, error } => {
                write!(
                    f,
                    "reload: the new module {new} is live, but the old one did not unload: {error}"
                )
            }
            ReloadError::NotTheSameModule { name, found, rollback } => {
                write!(
                    f,
                    "reload: the file is module '{found}', not a new version of '{name}' (which stays live); "
                )?;
                match rollback.as_ref() {
                    Ok(r) => write!(f, "'{found}' unloaded again: {r}"),
                    Err(e) => write!(f, "unloading '{found}' again failed: {e}"),
                }
            }
        }
    }
}

impl std::error::Error for ReloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReloadError::Load(e) => Some(e),
            ReloadError::Unload { error, .. } => Some(error),
            ReloadError::NoSuchModule { .. } | ReloadError::NotTheSameModule { .. } => None,
        }
    }
}
