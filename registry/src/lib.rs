//! Static SRCU domains collected per linked object, and the module
//! descriptor a plugin exports.
//!
//! # Static domains
//!
//! [`define_static_srcu!`] declares a `const`-initialised static
//! [`Srcu`](usrcu::Srcu) and puts a pointer to it into the linkme
//! distributed slice [`SRCU_DOMAINS`]. The slice's start and stop symbols
//! bind inside the object that is being linked, so every linked object (the
//! host executable, each `cdylib` plugin, each copy of one plugin loaded
//! side by side) has its own slice and sees only its own domains through
//! [`domains()`]. This is the userspace twin of the kernel's
//! `DEFINE_STATIC_SRCU` plus the `srcu_struct_ptrs` section of a module.
//!
//! ```
//! usrcu_registry::define_static_srcu!(pub static CONFIG_SRCU);
//!
//! let _guard = CONFIG_SRCU.read_lock();
//! assert!(usrcu_registry::domains().any(|d| d.name() == "CONFIG_SRCU"));
//! ```
//!
//! # The module descriptor
//!
//! [`export_module!`] exports one C symbol, [`DESCRIPTOR_SYMBOL`], returning
//! a `#[repr(C)]` [`ModuleDescriptor`]: a magic number, the ABI version, the
//! sizes and alignments of every struct the plugin and the host share, the
//! `usrcu` and `rustc` versions, the module's name, its static domains (this
//! object's slice), the hook that installs the host's runtime, and `init` and
//! `exit` wrappers that catch panics. A loader (`usrcu-module-loader`) reads
//! and checks it before it runs anything else of the plugin. The layout and
//! the lifecycle are written down in `docs/abi.md`.
//!
//! ```no_run
//! usrcu_registry::define_static_srcu!(static CACHE);
//!
//! fn init() -> Result<(), String> { Ok(()) }
//! fn exit() { CACHE.barrier() }
//!
//! usrcu_registry::export_module! { name: "cache", init: init, exit: exit }
//! ```
//!
//! Build plugins as `cdylib`s, and link them with `-z nostart-stop-gc` so
//! that a linker that garbage-collects sections keeps the slice (linkme's
//! `#[used]` statics survive with today's linkers, release and LTO builds
//! included; the flag keeps a future linker default from changing that).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod descriptor;
mod domains;
pub mod example;
mod export;
mod host_context;
pub mod interface;
pub mod tracepoint;

pub use descriptor::{
    HookMessage, HookStatus, ModuleDescriptor, SharedLayouts, StrRef, TypeLayout, DESCRIPTOR_SYMBOL,
    MODULE_ABI_VERSION, MODULE_MAGIC,
};
pub use domains::{domains, SRCU_DOMAINS};
pub use export::IntoHookResult;
pub use host_context::{HostContext, HostLogFn, HOST_CONTEXT_SYMBOL, HOST_CONTEXT_VERSION};
pub use usrcu;

/// The version of `usrcu` this object was built against (the registry and
/// the core are released together, with one workspace version).
pub const USRCU_VERSION: &str = usrcu::VERSION;

/// `rustc --version` of the compiler that built this object.
pub const RUSTC_VERSION: &str = env!("USRCU_REGISTRY_RUSTC_VERSION");

/// What the macros expand to. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::domains::SRCU_DOMAINS;
    pub use crate::export::{install_runtime, run_hook};
    pub use crate::host_context::receive as receive_host_context;
    pub use linkme;
    pub use linkme::distributed_slice;
    pub use std::sync::OnceLock;
    pub use usrcu::Srcu;
}

/// The README's examples (SRCU, and a plugin probe on a host tracepoint) are
/// compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
