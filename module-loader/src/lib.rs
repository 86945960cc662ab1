//! A plugin loader with the Linux kernel's module lifecycle, that drains
//! every SRCU callback of a plugin before its code is unmapped, and then
//! checks that it really was.
//!
//! # Lifecycle
//!
//! `Coming -> Live -> Going -> Unloaded`, plus `Zombie` for an object kept
//! mapped because something might still run its code. [`ModuleLoader::load`]
//! copies the file to a unique path, opens it with `RTLD_NOW | RTLD_LOCAL`,
//! checks the `#[repr(C)]` descriptor that `usrcu_registry::export_module!`
//! exported (every mismatch an error naming both sides), hands the plugin
//! the host's SRCU runtime (so that no thread ever runs plugin code the host
//! did not call), attaches its static domains, runs the `Coming` notifiers
//! and `init`. [`ModuleLoader::unload`] runs the same steps down: `Going`,
//! calls in flight drained, `exit`, `Going` notifiers, and the built-in SRCU
//! notifier, which issues `barrier` for every static domain that ever saw
//! `call_srcu`, skips it for the others, and cleans each up. Then pthread
//! keys with destructors in the plugin are deleted, the object is closed, and
//! `dl_iterate_phdr` and `dlopen(RTLD_NOLOAD)` confirm it is gone. The
//! [`UnloadReport`] says what happened, domain by domain. `docs/abi.md` has
//! the descriptor and every step.
//!
//! # Calls
//!
//! [`ModuleLoader::symbol`] gives a typed [`Symbol`]; [`Symbol::call`] runs
//! inside a read section of the module's liveness domain and fails once the
//! module is `Going`, so unload waits for calls in flight and never unmaps
//! code a thread is running.
//!
//! # What the loader refuses to do
//!
//! Unmap an object whose static domain still has readers inside, callbacks
//! pending, or a grace period in flight; or one of whose dynamic domains was
//! dropped with callbacks pending (a missed-barrier warning while the module
//! was going); or on a libc whose pthread-key table it cannot check. Such a
//! module becomes a `Zombie`, with a warning, and can be unloaded again later.
//!
//! Since issue 9 the refusals come from proofs of idleness over what the
//! process holds, not over what the plugin declared (`docs/abi.md`, "What
//! the loader proves before it unmaps"): callbacks of every static domain of
//! the object, listed or not, drained with a bounded barrier before and after
//! `exit`; threads whose start routine lies in the object (named in the
//! Zombie's cause); pthread-key destructors of the object, interposed at load
//! so that a thread exiting during the unload is waited for; and the
//! libraries loaded together with the plugin, in every check. The whole
//! unload is bounded by `unload_timeout`.
//!
//! An object that glibc itself keeps mapped after `dlclose` (a plugin that
//! registered a thread-local destructor on a thread that is still alive) is
//! reported as resident, with that likely cause.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod address_space;
mod elf_facts;
mod error;
mod key_interposer;
mod loader;
mod module;
mod notifier;
pub mod plugin_build;
mod proofs;
pub mod pthread_keys;
mod report;
mod state;
mod symbol;
pub mod thread_list;
mod watchdog;

pub use error::{CallError, LoadError, ReloadError, SymbolError, UnloadError};
pub use loader::{LoaderConfig, ModuleLoader};
pub use module::{ModuleHandle, ModuleInfo};
pub use notifier::{ModuleEvent, NotifierId};
pub use report::{BarrierOutcome, DomainReport, HookFailure, PluginThread, ResidentCause, UnloadReport, ZombieCause};
pub use state::ModuleState;
pub use symbol::Symbol;
pub use usrcu_registry;

/// Lock a mutex, going on after a panic elsewhere (every critical section of
/// this crate leaves its data consistent).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
