//! A module's lifecycle state, as the kernel's `enum module_state`, plus
//! `Zombie`.
//!
//! # State word
//!
//! | from      | to        | who                                              |
//! |-----------|-----------|--------------------------------------------------|
//! | `Coming`  | `Live`    | `load`, after `init` succeeded                   |
//! | `Coming`  | `Going`   | `load`, rolling back a failed notifier or `init` |
//! | `Live`    | `Going`   | `unload` (a CAS: one unloader wins)              |
//! | `Going`   | `Live`    | `unload` that gave up waiting for calls in flight |
//! | `Going`   | `Unloaded`| teardown, after `dlclose`                        |
//! | `Going`   | `Zombie`  | teardown that refused to `dlclose`               |
//! | `Zombie`  | `Going`   | `unload` retrying a zombie (a CAS)               |
//!
//! Calls into the module read the word inside a read section of the
//! module's liveness domain and proceed only on `Live`; `unload` stores
//! `Going` and then waits for a grace period of that domain, so every call
//! that saw `Live` has returned before `exit` runs.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

/// Where a module is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModuleState {
    /// Loaded and being set up: domains attached, `Coming` notifiers, `init`.
    Coming,
    /// `init` succeeded; calls are served.
    Live,
    /// Being unloaded (or a load being rolled back); new calls fail.
    Going,
    /// Closed with `dlclose`.
    Unloaded,
    /// Kept mapped because something may still run its code (readers inside,
    /// callbacks pending); see the unload report for the cause.
    Zombie,
}

impl ModuleState {
    fn from_u8(v: u8) -> ModuleState {
        match v {
            0 => ModuleState::Coming,
            1 => ModuleState::Live,
            2 => ModuleState::Going,
            3 => ModuleState::Unloaded,
            _ => ModuleState::Zombie,
        }
    }
}

impl fmt::Display for ModuleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ModuleState::Coming => "coming",
            ModuleState::Live => "live",
            ModuleState::Going => "going",
            ModuleState::Unloaded => "unloaded",
            ModuleState::Zombie => "zombie",
        };
        f.write_str(s)
    }
}

/// The atomic state word (see the table above).
#[derive(Debug)]
pub(crate) struct StateWord(AtomicU8);

impl StateWord {
    pub(crate) fn new(s: ModuleState) -> StateWord {
        StateWord(AtomicU8::new(s as u8))
    }

    /// Acquire: pairs with the Release in `set`/`transition`, so a caller
    /// that sees `Live` also sees everything `load` did before publishing it.
    pub(crate) fn get(&self) -> ModuleState {
        ModuleState::from_u8(self.0.load(Ordering::Acquire))
    }

    /// Release: see `get`. The store of `Going` is ordered before the
    /// liveness grace period that follows it by that grace period's heavy
    /// fence (docs/memory-model.md), which is what readers rely on.
    pub(crate) fn set(&self, s: ModuleState) {
        self.0.store(s as u8, Ordering::Release);
    }

    /// Move from `from` to `to` if the word holds `from`; else return what it holds.
    pub(crate) fn transition(&self, from: ModuleState, to: ModuleState) -> Result<(), ModuleState> {
        // AcqRel/Acquire: as `get` and `set`.
        self.0
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(ModuleState::from_u8)
    }
}
