//! When the loader may unmap a plugin: [`UnmapPolicy`], and the check, once
//! per loader at [`ModuleLoader::new`](crate::ModuleLoader::new), of
//! whether this process's libc lets the loader prove a plugin idle.
//!
//! Unmapping is safe only when nothing can run the object's code any more,
//! and part of that proof reads glibc's own tables: the pthread-key table
//! (destructors in the plugin), through the `_thread_db_*` layout
//! descriptors glibc exports for debuggers (see [`crate::pthread_keys`]).
//! Where that is impossible, every unload would end as a `Zombie` the host
//! did not expect. Instead the loader says so up front — a warning through
//! `usrcu::diagnostics` (and so `log`) when it is built, and
//! [`ModuleLoader::platform`](crate::ModuleLoader::platform) to ask — and
//! runs as [`UnmapPolicy::Never`]: unload still runs `exit`, the notifiers
//! and the barriers, and then keeps the object mapped for the life of the
//! process, reported as [`ResidentCause::KeptMappedByPolicy`](crate::ResidentCause::KeptMappedByPolicy).
//!
//! | platform | can prove idle | why not |
//! |---|---|---|
//! | glibc ≥ 2.34, 64-bit, key table readable | yes | |
//! | glibc < 2.34, or the `_thread_db_*` descriptors missing or unexpected | no | the key table cannot be read |
//! | musl and other libcs | no | musl's `dlclose` never unmaps anyway |
//! | 32-bit targets | no | the table check reads 64-bit words |
//!
//! Test switch: `USRCU_LOADER_FORCE_NO_PROOF=1` in the environment when a
//! loader is built makes the check fail and hides the key table from that
//! loader, as on a platform without one, so that the fallback can be tested
//! where it would pass. It is read at `new()` only and is not meant for
//! production use.

use std::fmt;

use usrcu::diagnostics::{self, Warning, WarningKind};

use crate::pthread_keys::KeyTable;

/// When unload may unmap a module's object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnmapPolicy {
    /// Unmap an object once every check proves it idle; otherwise keep it
    /// as a `Zombie` naming the cause (the default).
    #[default]
    WhenProvablyIdle,
    /// Never unmap: unload runs `exit`, the notifiers and the barriers,
    /// then keeps the object mapped for the rest of the process. What a
    /// loader runs as where the platform check fails.
    Never,
}

/// The environment variable that forces the platform check to fail (a
/// test switch, read when a loader is built).
pub const FORCE_NO_PROOF_ENV: &str = "USRCU_LOADER_FORCE_NO_PROOF";

/// What the platform check found, once per loader.
#[derive(Clone, Debug)]
pub struct PlatformSupport {
    /// The policy the loader was configured with.
    pub configured: UnmapPolicy,
    /// The policy it runs as.
    pub effective: UnmapPolicy,
    /// Why this process cannot prove a module idle, if it cannot.
    pub cannot_prove_idle: Option<String>,
    /// glibc's key table, as this loader may use it: `None` where it cannot
    /// be read, and under the test switch (which stands for such a platform).
    pub(crate) key_table: Option<KeyTable>,
}

impl fmt::Display for PlatformSupport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cannot_prove_idle {
            None => write!(f, "can prove modules idle; unmap policy {:?}", self.effective),
            Some(why) => write!(
                f,
                "cannot prove modules idle ({why}); running as UnmapPolicy::Never: unloaded modules stay mapped"
            ),
        }
    }
}

/// Why this process cannot prove a module idle, or `None` if it can.
fn why_not(forced: bool) -> Option<String> {
    if forced {
        return Some(format!("forced by {FORCE_NO_PROOF_ENV} (a test switch)"));
    }
    if cfg!(not(target_pointer_width = "64")) {
        return Some("a 32-bit target: the pthread-key table check reads 64-bit words".to_owned());
    }
    if cfg!(not(target_env = "gnu")) {
        return Some("not glibc: no readable pthread-key table (and musl's dlclose never unmaps)".to_owned());
    }
    if let Some((major, minor)) = glibc_version() {
        if (major, minor) < (2, 34) {
            return Some(format!(
                "glibc {major}.{minor} (before 2.34 the key table layout descriptors may be missing)"
            ));
        }
    }
    if KeyTable::open().is_none() {
        return Some(
            "glibc's pthread-key table cannot be read (the _thread_db_* layout descriptors are missing or unexpected)"
                .to_owned(),
        );
    }
    None
}

#[cfg(target_env = "gnu")]
fn glibc_version() -> Option<(u32, u32)> {
    // SAFETY: returns a static NUL-terminated string.
    let v = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    let mut it = v.to_str().ok()?.split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

#[cfg(not(target_env = "gnu"))]
fn glibc_version() -> Option<(u32, u32)> {
    None
}

/// Run the check for a loader configured with `configured`; warn if it
/// fails.
pub(crate) fn check(configured: UnmapPolicy) -> PlatformSupport {
    let forced = std::env::var_os(FORCE_NO_PROOF_ENV).is_some_and(|v| !v.is_empty() && v != "0");
    let cannot_prove_idle = why_not(forced);
    let effective = if cannot_prove_idle.is_some() {
        UnmapPolicy::Never
    } else {
        configured
    };
    let support = PlatformSupport {
        configured,
        effective,
        cannot_prove_idle,
        key_table: if forced { None } else { KeyTable::open() },
    };
    if support.cannot_prove_idle.is_some() && configured != UnmapPolicy::Never {
        diagnostics::emit(Warning::new(
            WarningKind::Other,
            "usrcu-module-loader",
            format!("usrcu-module-loader: {support}"),
        ));
    }
    support
}
