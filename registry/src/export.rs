//! `export_module!` and the plugin-side hooks it wires into the descriptor.

use crate::descriptor::{HookMessage, HookStatus};
use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};
use usrcu::runtime::{InstallError, RuntimeVTable};

/// What a module's `init` may return: `()` or `Result<(), E: Display>`.
pub trait IntoHookResult {
    /// `Err(message)` on failure.
    fn into_hook_result(self) -> Result<(), String>;
}

impl IntoHookResult for () {
    fn into_hook_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Display> IntoHookResult for Result<(), E> {
    fn into_hook_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// Run a hook body: catch a panic, write the message, return the status.
///
/// # Safety
/// `msg` is null or a valid [`HookMessage`] (see [`HookMessage::write`]).
pub unsafe fn run_hook(msg: *mut HookMessage, body: impl FnOnce() -> Result<(), String>) -> u32 {
    let status = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => HookStatus::Ok,
        Ok(Err(e)) => {
            // SAFETY: forwarded from the caller.
            unsafe { HookMessage::write(msg, &e) };
            HookStatus::Failed
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic payload".to_owned());
            // The payload is the plugin's data: its drop may panic again,
            // which inside this `extern "C"` hook would abort the host. Drop
            // it under a catch of its own and leak what that throws.
            if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
                std::mem::forget(again);
            }
            // SAFETY: forwarded from the caller.
            unsafe { HookMessage::write(msg, &what) };
            HookStatus::Panicked
        }
    };
    status as u32
}

/// The install hook of every descriptor: make this object's copy of `usrcu`
/// use the host's runtime, and point each of its static domains at it, before
/// any of them is used.
///
/// # Safety
/// `vt` must be the host's `'static` runtime table, valid for as long as this
/// object is mapped; `msg` as in [`run_hook`].
pub unsafe extern "C" fn install_runtime(vt: *const RuntimeVTable, msg: *mut HookMessage) -> u32 {
    let body = || {
        // SAFETY: the caller hands us the host's 'static table.
        unsafe { usrcu::runtime::install(vt) }.map_err(|e| match e {
            InstallError::Null => "the host passed a null runtime table".to_owned(),
            InstallError::Version(host, plugin) => format!("runtime ABI version: host {host}, plugin {plugin}"),
            InstallError::Size(host, plugin) => format!("runtime table size: host {host}, plugin {plugin}"),
        })?;
        // SAFETY: `install` accepted `vt`, so it is non-null and of our
        // version; the caller guarantees it outlives this object.
        let vt: &'static RuntimeVTable = unsafe { &*vt };
        for d in crate::domains() {
            // SAFETY: as above, the table outlives the domain's use.
            unsafe { d.set_runtime(vt) };
        }
        install_panic_hook();
        Ok(())
    };
    // SAFETY: `msg` is forwarded from our caller.
    unsafe { run_hook(msg, body) }
}

/// Give this object's own copy of `std` a panic hook that prints no
/// backtrace, before the plugin's code runs (its `init` may replace it).
///
/// `std`'s default hook, with `RUST_BACKTRACE` set, symbolizes the
/// backtrace with a cache, global to the copy of `std` that panicked, that
/// maps the files of the objects on the stack (the host's executable, with
/// its debug info, among them) and keeps them mapped. A plugin's copy is
/// unmapped with the plugin, and nothing ever unmaps what its cache held:
/// each plugin whose code panicked once (an `init` that panics, caught and
/// reported as a failed load) left about 8 mappings and 60 MB resident
/// behind (`tests/tests/redteam7_failed_loads.rs`: 300 such loads took the
/// test from 1.2 GB to 19.9 GB resident, seen failing).
///
/// Only when `std` is this object's own (a `cdylib` links it in): where it
/// is shared with the host (a `prefer-dynamic` build), the hook would be
/// the host's.
fn install_panic_hook() {
    if !std_is_this_objects() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let p = info.payload();
        let what = p
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| p.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a non-string panic payload");
        let at = info
            .location()
            .map_or_else(|| "an unknown location".to_owned(), |l| l.to_string());
        // Not `std::thread::current()`, which registers a thread-local
        // destructor in this object (docs/abi.md).
        let tid = usrcu::diagnostics::current_tid();
        eprintln!(
            "thread {tid} panicked at {at}:\n{what}\nnote: a plugin's copy of std captures no backtrace \
             (its symbolizer's file mappings would outlive the plugin)"
        );
    }));
}

/// Is the `std` this code calls linked into the same object as this code?
fn std_is_this_objects() -> bool {
    fn base(addr: *const ()) -> Option<usize> {
        // SAFETY: `dladdr` only reads the dynamic linker's tables; `info` is
        // written by it on success.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let found = unsafe { libc::dladdr(addr as *const libc::c_void, &mut info) } != 0;
        (found && !info.dli_fbase.is_null()).then_some(info.dli_fbase as usize)
    }
    let std_fn = std::panic::set_hook as fn(_) as *const ();
    let ours = std_is_this_objects as fn() -> bool as *const ();
    matches!((base(std_fn), base(ours)), (Some(a), Some(b)) if a == b)
}

/// Export this object's [`ModuleDescriptor`](crate::ModuleDescriptor) as
/// the C symbol [`DESCRIPTOR_SYMBOL`](crate::DESCRIPTOR_SYMBOL). Use once,
/// in a `cdylib`.
///
/// `init` is a `fn()` returning `()` or `Result<(), E: Display>`; `exit` is
/// a `fn()`. Both run on the host thread that loads or unloads the module;
/// a panic in either is caught and reported to the host as an error.
///
/// ```no_run
/// fn init() -> Result<(), String> { Ok(()) }
/// fn exit() {}
/// usrcu_registry::export_module! { name: "example", init: init, exit: exit }
/// ```
#[macro_export]
macro_rules! export_module {
    { name: $name:expr, init: $init:path, exit: $exit:path $(,)? } => {
        const _: () = {
            unsafe extern "C" fn __usrcu_module_init(msg: *mut $crate::HookMessage) -> u32 {
                let body = || $crate::IntoHookResult::into_hook_result($init());
                // SAFETY: the host passes a valid message buffer.
                unsafe { $crate::__private::run_hook(msg, body) }
            }

            unsafe extern "C" fn __usrcu_module_exit(msg: *mut $crate::HookMessage) -> u32 {
                let body = || {
                    $exit();
                    ::core::result::Result::Ok(())
                };
                // SAFETY: the host passes a valid message buffer.
                unsafe { $crate::__private::run_hook(msg, body) }
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn usrcu_module_descriptor() -> *const $crate::ModuleDescriptor {
                static DESCRIPTOR: $crate::__private::OnceLock<$crate::ModuleDescriptor> =
                    $crate::__private::OnceLock::new();
                DESCRIPTOR.get_or_init(|| {
                    $crate::ModuleDescriptor::for_this_object(
                        $name,
                        $crate::__private::install_runtime,
                        __usrcu_module_init,
                        __usrcu_module_exit,
                    )
                })
            }

            $crate::__export_host_context!();
        };
    };
}
