//! The host context: what a host hands a plugin before `init`, beside the
//! runtime: a logger bridge, so that a plugin's `log` records reach the
//! host's logger, and a directory of the host's tracepoints, so that a
//! plugin can attach probes to them in `init`
//! ([`host_tracepoint`](crate::tracepoint::host_tracepoint)).
//!
//! `export_module!` exports [`HOST_CONTEXT_SYMBOL`] (the module descriptor
//! is unchanged; a host that does not know the hook never calls it, and a
//! loader that finds no such symbol in an older plugin goes on without it).
//! The hook installs, in the plugin's own copy of the `log` crate, a logger
//! whose `log` formats the record in the plugin and calls the host's
//! `extern "C"` function with (level, target, message) as pointer and
//! length; the host copies both strings before it returns, so nothing the
//! host keeps points into the plugin. A plugin that installed a logger of
//! its own first keeps it.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::descriptor::HookMessage;

/// The C symbol of the hook: `unsafe extern "C" fn(*const HostContext, *mut HookMessage) -> u32`.
pub const HOST_CONTEXT_SYMBOL: &str = "usrcu_host_context";

/// Version of [`HostContext`]'s layout.
pub const HOST_CONTEXT_VERSION: u32 = 1;

/// The host's log sink: `(level, target, target_len, message, message_len)`.
/// `level` is `log::Level as u32` (1 = error .. 5 = trace). Both strings are
/// borrowed for the call only.
pub type HostLogFn = unsafe extern "C" fn(u32, *const u8, usize, *const u8, usize);

/// The host's tracepoint directory: `(name, name_len, args_fingerprint)`
/// to the host's `&'static Tracepoint<A>` of that name whose argument type
/// has that fingerprint, or null. The name is borrowed for the call only.
pub type HostTracepointFn = unsafe extern "C" fn(*const u8, usize, u64) -> *const std::ffi::c_void;

/// What a host lends a plugin. `#[repr(C)]`, `'static` in the host; fields
/// are only appended, and `size` says how many the host filled in.
#[repr(C)]
#[derive(Debug)]
pub struct HostContext {
    /// [`HOST_CONTEXT_VERSION`].
    pub version: u32,
    /// `size_of::<HostContext>()` in the host.
    pub size: u32,
    /// The host's `log::max_level()` (`LevelFilter as u32`, 0 = off).
    pub max_level: extern "C" fn() -> u32,
    /// The host's log sink.
    pub log: HostLogFn,
    /// The host's tracepoint directory (appended after version 1's first
    /// layout: read only when `size` covers it).
    pub tracepoint: HostTracepointFn,
}

/// The size of the context before `tracepoint` was appended: what a host
/// must fill in at least.
const MIN_SIZE: usize = std::mem::offset_of!(HostContext, tracepoint);

/// The context the hook received (null before, or in an object no host
/// has handed one).
static CONTEXT: AtomicPtr<HostContext> = AtomicPtr::new(std::ptr::null_mut());

fn context() -> Option<&'static HostContext> {
    // Acquire: pairs with the Release store in `receive`, so the fields
    // the host wrote are visible.
    let p = CONTEXT.load(Ordering::Acquire);
    // SAFETY: non-null only once `receive` stored the host's 'static table.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// The host's tracepoint directory, if the host filled it in.
pub(crate) fn host_tracepoint_fn() -> Option<HostTracepointFn> {
    context()
        .filter(|c| c.size as usize >= std::mem::size_of::<HostContext>())
        .map(|c| c.tracepoint)
}

fn level_from(v: u32) -> log::LevelFilter {
    match v {
        0 => log::LevelFilter::Off,
        1 => log::LevelFilter::Error,
        2 => log::LevelFilter::Warn,
        3 => log::LevelFilter::Info,
        4 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// The plugin's logger: forwards every record to the host.
struct Bridge;

impl log::Log for Bridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        context().is_some_and(|c| metadata.level() <= level_from((c.max_level)()))
    }

    fn log(&self, record: &log::Record<'_>) {
        // The host's level now, first: the plugin's own filter lets every
        // level through (see `receive`), so this is where a disabled
        // record stops, before any formatting or callout.
        let Some(c) = context() else { return };
        if record.level() > level_from((c.max_level)()) {
            return;
        }
        // A callout from here on, formatting included: the record may come
        // from a hook or a probe, and the formatting's allocations may wait
        // for a lock of the allocator (red team 10 saw glibc's arena lock,
        // under host threads that logged too) as the host's logger may;
        // a Tasks grace period does not count a thread blocked inside a
        // callout as quiescent (`usrcu::runtime::callouts`).
        let _callout = usrcu::runtime::callouts::enter();
        let mut owned = String::new();
        let message = match record.args().as_str() {
            Some(s) => s,
            None => {
                let _ = write!(owned, "{}", record.args());
                &owned
            }
        };
        let target = record.target();
        // SAFETY: the host's sink takes two borrowed UTF-8 strings, valid
        // for the call, and copies them before it returns.
        unsafe {
            (c.log)(
                record.level() as u32,
                target.as_ptr(),
                target.len(),
                message.as_ptr(),
                message.len(),
            )
        };
    }

    fn flush(&self) {}
}

static BRIDGE: Bridge = Bridge;

/// The hook behind [`HOST_CONTEXT_SYMBOL`].
///
/// # Safety
/// `ctx` is null or the host's `'static` context, valid while this object is
/// mapped; `msg` as in [`crate::__private::run_hook`].
#[doc(hidden)]
pub unsafe fn receive(ctx: *const HostContext, msg: *mut HookMessage) -> u32 {
    let body = || {
        if ctx.is_null() {
            return Err("the host passed a null context".to_owned());
        }
        // SAFETY: non-null, and the caller guarantees it is the host's table.
        let c = unsafe { &*ctx };
        if c.version != HOST_CONTEXT_VERSION || (c.size as usize) < MIN_SIZE {
            return Err(format!(
                "host context version {} size {}, plugin expects version {HOST_CONTEXT_VERSION} size {MIN_SIZE} or more",
                c.version, c.size,
            ));
        }
        // Release: pairs with the Acquire in `context`.
        CONTEXT.store(ctx as *mut HostContext, Ordering::Release);
        // A plugin that set its own logger keeps it. The plugin's own
        // filter (`log::max_level()` of its copy of `log`) lets every level
        // through, and the bridge filters by the host's level at each
        // record: set to the host's level at load, it never learnt of a
        // later `log::set_max_level` of the host, whose raised level then
        // never reached the plugin (newcomer review). A disabled record
        // costs the bridge's call and one load of the host's level.
        if log::set_logger(&BRIDGE).is_ok() {
            log::set_max_level(log::LevelFilter::Trace);
        }
        Ok(())
    };
    // SAFETY: forwarded from the caller.
    unsafe { crate::export::run_hook(msg, body) }
}

/// Export the host-context hook (part of `export_module!`).
#[doc(hidden)]
#[macro_export]
macro_rules! __export_host_context {
    () => {
        /// Receives the host's context before `init`.
        ///
        /// # Safety
        /// Called by the loader with its `'static` context and a message buffer.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn usrcu_host_context(
            ctx: *const $crate::HostContext,
            msg: *mut $crate::HookMessage,
        ) -> u32 {
            // SAFETY: forwarded from the loader.
            unsafe { $crate::__private::receive_host_context(ctx, msg) }
        }
    };
}
