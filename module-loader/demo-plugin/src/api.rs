//! The example plugin's own typed interface, beside `Calc` (the one
//! `plugin-host` calls), declared once: the plugin compiles this file as
//! `mod api`, and the loader's tests include the same file, so both sides
//! expand the same declaration.

usrcu_registry::plugin_interface! {
    /// The example plugin's administration.
    pub trait DemoAdmin ["demo-admin", version 1] {
        /// Replace the config; the old one is freed by `call_srcu`.
        fn update(factor: u64);
        /// Calls served by this copy.
        fn calls() -> u64;
        /// Panics when `code` is odd (the shim turns it into an error).
        fn check(code: u32) -> u32;
    }
}

/// The host's event the plugin attaches a probe to in `init` (a faultable
/// `Tracepoint<u64>`, fired by `plugin-host` on every guarded call).
#[allow(dead_code)]
pub const CALL_EVENT: &str = "plugin_host.call";

/// The plugin's hot hook, which `plugin-host` installs into a `HookSlot`:
/// its symbol and its type.
#[allow(dead_code)]
pub const HOOK_SYMBOL: &str = "demo_hook";

/// The hot hook's type.
#[allow(dead_code)]
pub type Hook = extern "C" fn(u64) -> u64;
