//! The interface that `plugin-host` (the loader's example host) calls: a
//! plugin that implements it can be run by `plugin-host demo` and
//! hot-reloaded by `plugin-host watch`. Also the smallest complete example
//! of [`plugin_interface!`](crate::plugin_interface).
//!
//! ```no_run
//! use usrcu_registry::example::Calc;
//!
//! struct Plugin;
//! impl Calc for Plugin {
//!     fn compute(x: u64) -> u64 { x * 2 }
//!     fn version() -> u64 { 1 }
//! }
//! usrcu_registry::export_interface!(Calc for Plugin);
//! ```

crate::plugin_interface! {
    /// What `plugin-host` calls: reader threads call `compute` continuously,
    /// and each reload line shows the new copy's `version`.
    pub trait Calc ["calc", version 1] {
        /// Any function of `x`.
        fn compute(x: u64) -> u64;
        /// A number that tells builds apart (a constant of the plugin).
        fn version() -> u64;
    }
}
