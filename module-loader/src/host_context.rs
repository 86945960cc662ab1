//! The host side of the host context (`usrcu_registry::HostContext`): the
//! logger bridge that a plugin's `log` records come through, the directory
//! of the host's tracepoints (those declared with `define_tracepoint!` in
//! the object this loader is linked into), and the context's delivery to
//! each module before `init`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use usrcu::diagnostics::{self, Warning, WarningKind};
use usrcu_registry::{HookMessage, HookStatus, HostContext, HOST_CONTEXT_SYMBOL, HOST_CONTEXT_VERSION};

use crate::module::Module;

extern "C" fn host_max_level() -> u32 {
    log::max_level() as u32
}

/// The log sink plugins call: copies the target and the message into the
/// host, then hands the record to the host's logger. Never unwinds.
unsafe extern "C" fn host_log(
    level: u32,
    target: *const u8,
    target_len: usize,
    message: *const u8,
    message_len: usize,
) {
    // A callout, from the first instruction to the last (the copies below
    // allocate, and a host allocator may block too: red team 10): the
    // plugin's hook or probe may be below it, and a Tasks grace period does
    // not count a thread blocked inside one as quiescent
    // (`usrcu::runtime::callouts`).
    let _callout = usrcu::runtime::callouts::enter();
    let copy = |p: *const u8, n: usize| {
        if p.is_null() || n == 0 {
            return String::new();
        }
        // SAFETY: the plugin lends `n` readable bytes for this call; we copy
        // them before returning.
        String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(p, n) }).into_owned()
    };
    let target = copy(target, target_len);
    let message = copy(message, message_len);
    let level = match level {
        1 => log::Level::Error,
        2 => log::Level::Warn,
        3 => log::Level::Info,
        4 => log::Level::Debug,
        _ => log::Level::Trace,
    };
    // A panicking host logger must not unwind into the plugin's frames. Its
    // payload is leaked, not dropped: the drop is user code too, and a panic
    // in it here, inside an `extern "C"` function, would abort the process
    // (tests/tests/redteam7_plugin_log.rs, seen failing).
    let logged = catch_unwind(AssertUnwindSafe(|| {
        log::logger().log(
            &log::Record::builder()
                .level(level)
                .target(&target)
                .args(format_args!("{message}"))
                .build(),
        )
    }));
    if let Err(p) = logged {
        std::mem::forget(p);
    }
}

/// The host's context, lent to every module for as long as it is mapped.
static CONTEXT: HostContext = HostContext {
    version: HOST_CONTEXT_VERSION,
    size: std::mem::size_of::<HostContext>() as u32,
    max_level: host_max_level,
    log: host_log,
    tracepoint: usrcu_registry::tracepoint::__find_tracepoint,
};

type ContextHook = unsafe extern "C" fn(*const HostContext, *mut HookMessage) -> u32;

/// Hand `m` the host context, if it exports the hook (older plugins do not;
/// they run without a logger). A refusal is a warning, not a failed load.
pub(crate) fn deliver(m: &Module) {
    let lib = crate::lock(&m.lib);
    let Some(lib) = lib.as_ref() else { return };
    // SAFETY: `export_module!` exports the hook under this name with this
    // type; the library is open.
    let Ok(hook) = (unsafe { lib.get::<ContextHook>(HOST_CONTEXT_SYMBOL.as_bytes()) }) else {
        return;
    };
    let mut buf = [0u8; 512];
    let mut msg = HookMessage {
        buf: buf.as_mut_ptr(),
        cap: buf.len(),
        len: 0,
    };
    // SAFETY: the plugin's panic-catching hook; the context is 'static and
    // `msg` lends `buf`.
    let status = unsafe { hook(&CONTEXT, &mut msg) };
    if HookStatus::from_u32(status) != HookStatus::Ok {
        let text = String::from_utf8_lossy(&buf[..msg.len.min(buf.len())]).into_owned();
        diagnostics::emit(Warning::new(
            WarningKind::Other,
            m.name.clone(),
            format!(
                "usrcu-module-loader: module '{}' refused the host context ({text}); its log records go nowhere",
                m.name
            ),
        ));
    }
}
