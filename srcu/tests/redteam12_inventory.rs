//! Red team (round 12): `usrcu::runtime::inventory::query` as documented
//! (srcu/src/runtime/inventory.rs): `callbacks` counts callbacks "queued or
//! running" whose function or callback head lies in the ranges, on any
//! domain, and `holding` names "the other domains (a host's) on which
//! callbacks of the ranges are queued or running, each once".
#![allow(clippy::single_range_in_vec_init)] // one range is the common query

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use usrcu::runtime::inventory;
use usrcu::{CallbackHead, Srcu};

static HOST: Srcu = Srcu::new_static("rt12-inv-host");

#[repr(C)]
struct Heads {
    h: [CallbackHead; 2],
}

static ENTERED: AtomicUsize = AtomicUsize::new(0);
static RELEASE: AtomicBool = AtomicBool::new(false);

unsafe extern "C" fn blocking(_h: *mut CallbackHead) {
    ENTERED.fetch_add(1, Ordering::SeqCst);
    let mut n = 0;
    while !RELEASE.load(Ordering::SeqCst) && n < 30_000 {
        std::thread::sleep(Duration::from_millis(1));
        n += 1;
    }
}

#[test]
fn query_counts_queued_and_running_callbacks_by_head_and_names_the_holding_domain() {
    let heads: &'static mut Heads = Box::leak(Box::new(Heads {
        h: [CallbackHead::new(), CallbackHead::new()],
    }));
    let base = heads as *mut Heads as usize;
    let range = [base..base + std::mem::size_of::<Heads>()];
    let p0 = &mut heads.h[0] as *mut CallbackHead;
    let p1 = &mut heads.h[1] as *mut CallbackHead;
    // Hold the grace period so both stay queued.
    let idx = HOST.read_lock_raw();
    // SAFETY: the heads are leaked (valid forever), queued once each;
    // `blocking` does not unwind.
    unsafe {
        HOST.call_srcu_raw(p0, blocking);
        HOST.call_srcu_raw(p1, blocking);
    }
    let inv = inventory::query(&range);
    assert_eq!(inv.callbacks, 2, "queued: {inv:?}");
    assert_eq!(inv.holding, vec!["rt12-inv-host".to_owned()], "{inv:?}");
    assert!(inv.domains.is_empty(), "{inv:?}");
    assert!(!inv.is_idle());
    // SAFETY: `idx` came from `HOST.read_lock_raw()` and is ended once.
    unsafe { HOST.read_unlock_raw(idx) };
    // Wait until the first one runs (it blocks): one running, one queued.
    let mut n = 0;
    while ENTERED.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
        n += 1;
        assert!(n < 30_000, "the callback never ran");
    }
    let inv = inventory::query(&range);
    RELEASE.store(true, Ordering::SeqCst);
    assert_eq!(inv.callbacks, 2, "one running, one queued: {inv:?}");
    assert_eq!(inv.holding, vec!["rt12-inv-host".to_owned()], "{inv:?}");
    inventory::drain(&range, Duration::from_secs(60)).expect("drain");
    let inv = inventory::query(&range);
    assert!(inv.is_idle() && inv.holding.is_empty(), "{inv:?}");
    assert_eq!(ENTERED.load(Ordering::SeqCst), 2);
}
