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
