//! A plugin loader with the Linux kernel's module lifecycle, that drains
//! every SRCU callback of a plugin before its code is unmapped, and then
//! checks that it really was.
//!
//! # Lifecycle
//!
//! `Coming -> Live -> Going -> Unloaded`, plus `Zombie` for an object kept
//! mapped because something might still run its code. [`ModuleLoader::load`]
//! copies the file into private storage (a sealed memfd by default),
//! validates the copy's ELF structure (a truncated, foreign or inconsistent
//! file is a typed error before `dlopen` sees it), opens it with
//! `RTLD_NOW | RTLD_LOCAL`,
//! checks the `#[repr(C)]` descriptor that `usrcu_registry::export_module!`
//! exported (every mismatch an error naming both sides), hands the plugin
//! the host's SRCU runtime (so that no thread ever runs plugin code the host
//! did not call), attaches its static domains, runs the `Coming` notifiers
//! and `init`. [`ModuleLoader::unload`] runs the same steps down: `Going`,
//! calls in flight drained, `exit`, `Going` notifiers, the built-in probe
//! notifier (every tracepoint probe whose code or data lies in the object
//! detached and its grace period waited for), and the built-in SRCU
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
//! Typed interfaces (`usrcu_registry::plugin_interface!`) need no `unsafe`:
//! [`ModuleLoader::require_interface`] refuses, at load, a module whose
//! interface differs (naming the function), and [`ModuleLoader::interface`]
//! gives a [`Plugin`] handle whose calls go to the newest live copy of a
//! module, through the same liveness section; a panic in the plugin comes
//! back as [`CallError::Panicked`]. `docs/plugins.md` is the tutorial.
//!
//! # What the loader refuses to do
//!
//! Unmap an object whose static domain still has readers inside, callbacks
//! pending, or a grace period in flight; or one of whose dynamic domains was
//! dropped with callbacks pending (a missed-barrier warning while the module
//! was going). Such a module becomes a `Zombie`, with a warning, and can be
//! unloaded again later. On a platform where it cannot prove a module idle
//! at all (musl, glibc before 2.34, 32-bit), the loader says so when it is
//! built and runs as [`UnmapPolicy::Never`]: unloaded modules stay mapped,
//! reported as such, never as surprise zombies.
//!
//! Load a file that is truncated, built for another machine, or
//! inconsistent: every such file is a typed [`LoadError`] before `dlopen`
//! sees it. And let safe code keep anything of a module past a call:
//! [`ModuleLoader::load`] is `unsafe` (the plugin author's contract), and
//! [`Symbol::call`] lends the function only for the call and returns only
//! [`PluginValue`]s.
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
mod elf_check;
mod elf_facts;
mod error;
mod hook_slots;
mod host_context;
mod intake;
mod interface;
mod key_interposer;
mod loader;
mod module;
mod notifier;
#[doc(hidden)]
pub mod phase_timing;
pub mod plugin_build;
mod plugin_value;
pub mod policy;
mod probes;
mod proofs;
pub mod pthread_keys;
mod report;
mod resident;
mod state;
mod symbol;
mod test_pause;
pub mod thread_list;
mod watchdog;

pub use elf_check::ElfDefect;
pub use error::{CallError, LoadError, ReloadError, SymbolError, UnloadError};
pub use hook_slots::{__set_skip_hook_clearing, __set_tasks_wait_always, HookError, HookSlotsReport};
pub use interface::{LiveGate, Plugin};
pub use loader::{LoaderConfig, ModuleLoader};
pub use module::{ModuleHandle, ModuleInfo};
pub use notifier::{ModuleEvent, NotifierId};
pub use plugin_value::{FfiArg, FfiValue, PluginFn, PluginValue};
pub use policy::{PlatformSupport, UnmapPolicy};
pub use report::{BarrierOutcome, DomainReport, HookFailure, PluginThread, ResidentCause, UnloadReport, ZombieCause};
pub use state::ModuleState;
pub use symbol::Symbol;
pub use usrcu_registry;

/// Test-only hooks: pause points in the load and unload paths, the count
/// of loads waiting at the shared-library gate and of unloads waiting to
/// decide, for integration tests that race a load against an unload, or
/// two unloads (`src/test_pause.rs`). Not part of the API; never armed by
/// the loader itself.
#[doc(hidden)]
pub mod __testing {
    pub use crate::test_pause::{
        loads_waiting_at_gate, pause_at, unloads_waiting_to_decide, wait_for_loads_at_gate,
        wait_for_unloads_waiting_to_decide, Pause, PausePoint,
    };
}

/// How many sealed copies of unloaded modules are idle in the pool that
/// [`LoaderConfig::reuse_copies`] keeps, and their bytes (for tests of its
/// bounds).
#[doc(hidden)]
pub fn __idle_copies() -> (usize, u64) {
    intake::reuse::idle()
}

/// How long a source must have been unchanged before a copy of it is
/// pooled ([`LoaderConfig::reuse_copies`]).
#[doc(hidden)]
pub const __REUSE_QUIET: std::time::Duration = intake::reuse::QUIET;

/// At most this many idle copies are pooled.
#[doc(hidden)]
pub const __REUSE_MAX_IDLE: usize = intake::reuse::MAX_IDLE;

/// At most this many bytes of idle copies are pooled.
#[doc(hidden)]
pub const __REUSE_MAX_IDLE_BYTES: u64 = intake::reuse::MAX_IDLE_BYTES;

/// Lock a mutex, going on after a panic elsewhere (every critical section of
/// this crate leaves its data consistent).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Unit tests that create and delete pthread keys run one at a time (one
/// of them relies on glibc handing out the lowest free key).
#[cfg(test)]
pub(crate) static KEY_TEST_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
