//! The example plugin: a configuration read under SRCU and replaced with
//! `call_srcu` freeing the old one.
//!
//! Three static domains: `demo.config` (readers and `call_srcu`: the loader
//! issues a barrier for it at unload), `demo.stats` (readers only: barrier
//! skipped), `demo.audit` (never used: barrier skipped).
//!
//! The host calls it through the typed interfaces `Calc` (the registry's
//! example, what `plugin-host` calls) and `DemoAdmin` (`src/api.rs`);
//! the `#[no_mangle]` functions below stay for hosts that resolve symbols
//! by name.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use usrcu_registry::example::Calc;
use usrcu_registry::usrcu::Srcu;
use usrcu_registry::{define_static_srcu, export_interface, export_module};

mod api;

/// What `Calc::version` serves. `plugin-host watch` shows it after each reload.
const VERSION: u64 = 1;

define_static_srcu!(static CONFIG_SRCU = Srcu::new_static("demo.config"));
define_static_srcu!(static STATS_SRCU = Srcu::new_static("demo.stats"));
define_static_srcu!(static AUDIT_SRCU = Srcu::new_static("demo.audit"));

struct Config {
    factor: u64,
    generation: u64,
}

static CONFIG: AtomicPtr<Config> = AtomicPtr::new(std::ptr::null_mut());
static CALLS: AtomicU64 = AtomicU64::new(0);

fn init() -> Result<(), String> {
    log::info!("demo plugin version {VERSION} initialised");
    let c = Box::into_raw(Box::new(Config {
        factor: 3,
        generation: 0,
    }));
    // Release: publishes the config to readers' Acquire loads.
    CONFIG.store(c, Ordering::Release);
    Ok(())
}

fn exit() {
    // Calls have drained (the loader waited for them) and none can start:
    // no reader can still see the config.
    // AcqRel: takes the last config published with Release by `demo_update`.
    let c = CONFIG.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if !c.is_null() {
        // SAFETY: made by Box::into_raw, and no reader is left.
        drop(unsafe { Box::from_raw(c) });
    }
}

export_module! { name: "demo", init: init, exit: exit }

/// The implementation of the typed interfaces.
struct Plugin;

impl Calc for Plugin {
    fn compute(x: u64) -> u64 {
        demo_compute(x)
    }
    fn version() -> u64 {
        VERSION
    }
}

impl api::DemoAdmin for Plugin {
    fn update(factor: u64) {
        demo_update(factor)
    }
    fn calls() -> u64 {
        demo_calls()
    }
    fn check(code: u32) -> u32 {
        assert!(code % 2 == 0, "check({code}): odd codes are refused");
        code / 2
    }
}

export_interface!(Calc for Plugin, api::DemoAdmin for Plugin);

/// `x * factor + generation`, under the config's read section.
#[no_mangle]
pub extern "C" fn demo_compute(x: u64) -> u64 {
    let _g = CONFIG_SRCU.read_lock();
    // Acquire: pairs with the Release stores in `init` and `demo_update`.
    let c = CONFIG.load(Ordering::Acquire);
    {
        let _s = STATS_SRCU.read_lock();
        // Relaxed: a statistic.
        CALLS.fetch_add(1, Ordering::Relaxed);
    }
    if c.is_null() {
        return 0;
    }
    // SAFETY: non-null configs are freed only by a callback after a grace
    // period, and we are inside a read section.
    let c = unsafe { &*c };
    x.wrapping_mul(c.factor).wrapping_add(c.generation)
}

/// Replace the config; the old one is freed by `call_srcu` after readers leave.
#[no_mangle]
pub extern "C" fn demo_update(factor: u64) {
    // Acquire: pairs with the Release in `init` (the generation is read).
    let cur = CONFIG.load(Ordering::Acquire);
    // SAFETY: only update calls (from the host) free configs, through call_srcu.
    let generation = if cur.is_null() {
        0
    } else {
        unsafe { (*cur).generation + 1 }
    };
    let new = Box::into_raw(Box::new(Config { factor, generation }));
    // AcqRel: publish `new` (Release) and take `old` (Acquire).
    let old = CONFIG.swap(new, Ordering::AcqRel);
    if !old.is_null() {
        let old = old as usize;
        CONFIG_SRCU.call_srcu(move || {
            // SAFETY: unpublished above, and a grace period has passed.
            drop(unsafe { Box::from_raw(old as *mut Config) });
        });
    }
}

/// Calls served by this copy of the plugin.
#[no_mangle]
pub extern "C" fn demo_calls() -> u64 {
    // Relaxed: a statistic.
    CALLS.load(Ordering::Relaxed)
}

/// The audit domain's name (it is never read, so its barrier is skipped).
#[no_mangle]
pub extern "C" fn demo_audit_domain() -> *const Srcu {
    &AUDIT_SRCU
}
