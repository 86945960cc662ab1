//! Red team (round 8): notifier ids across loaders. `unregister_notifier`
//! is documented "false if it was not registered"; a host with two loaders
//! (one per plugin family) that passes the id of one loader's notifier to
//! the other must not silently remove an unrelated notifier of the other.
//! Module handles already get this check (`loader_bad_input.rs`,
//! `unknown_module_is_refused`).

use std::sync::atomic::{AtomicUsize, Ordering};

use usrcu_module_loader::{ModuleEvent, ModuleLoader};
use usrcu_tests::{fixture_path, leak};

#[test]
fn a_notifier_id_of_another_loader_unregisters_nothing() {
    let a = ModuleLoader::new();
    let b = ModuleLoader::new();
    let seen_b: &'static AtomicUsize = leak(AtomicUsize::new(0));
    let id_a = a.register_notifier("a's notifier", |_, _| -> Result<(), String> { Ok(()) });
    let _id_b = b.register_notifier("b's audit notifier", move |ev, _| -> Result<(), String> {
        if ev == ModuleEvent::Coming {
            seen_b.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    });
    let removed = b.unregister_notifier(id_a);
    // SAFETY: the fixtures uphold the plugin contract (docs/abi.md).
    let m = unsafe { b.load(fixture_path("callbacks")) }.unwrap();
    let ran = seen_b.load(Ordering::SeqCst);
    assert!(b.unload(m).unwrap().unmapped);
    assert!(
        !removed && ran == 1,
        "loader B's unregister_notifier with loader A's id returned {removed} and B's own notifier then ran {ran} time(s) (expected false, 1)"
    );
    assert!(a.unregister_notifier(id_a));
    assert!(!a.unregister_notifier(id_a));
}
