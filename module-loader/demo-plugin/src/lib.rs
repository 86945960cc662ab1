//! The example plugin: a configuration read under SRCU and replaced with
//! `call_srcu` freeing the old one; a probe on the host's `plugin_host.call`
//! tracepoint (faultable: it takes a lock and sleeps now and then), attached
//! in `init` and never detached (the loader's probe notifier removes it at
//! unload); a hot hook (`demo_hook`, never blocks) for a host `HookSlot`.
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
use std::sync::Mutex;
use std::time::Duration;

use usrcu_registry::example::Calc;
use usrcu_registry::tracepoint::host_tracepoint;
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

/// Events the probe saw, under a lock (plugin data: lies in the object).
static EVENTS: Mutex<u64> = Mutex::new(0);

/// The probe on the host's `plugin_host.call` event: takes a lock, and
/// every 1000th event sleeps 1 ms (a faultable probe may).
fn on_call(events: &Mutex<u64>, _x: &u64) {
    let n = {
        let mut n = events.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        *n
    };
    if n % 1000 == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn init() -> Result<(), String> {
    log::info!("demo plugin version {VERSION} initialised");
    // SAFETY: the host's `plugin_host.call` carries a `u64` (`api.rs`, shared
    // with the host); a host without it gives `None`.
    if let Some(tp) = unsafe { host_tracepoint::<u64>(api::CALL_EVENT) } {
        // The handle is dropped, the probe stays: the loader's probe notifier
        // removes it when this copy unloads, and lists it in the report.
        let _attached = tp.register_may_block(on_call, &EVENTS).map_err(|e| e.to_string())?;
    }
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

/// The hot hook the host installs into a `HookSlot` and calls with no
/// read-side marker: it never blocks, faults or keeps a pointer (the
/// `HookSlot` contract), so it only mixes its argument.
#[no_mangle]
pub extern "C" fn demo_hook(x: u64) -> u64 {
    (x ^ (x >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17)
}
