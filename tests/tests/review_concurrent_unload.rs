//! Review (s5): two modules that share `libfxneeded.so`, unloaded at the
//! same time. Each unload's `partition` sees the library used by two
//! modules (the other's count is dropped only in `release`, after its
//! `dlclose`), so neither decides it is the last user: neither proves the
//! library idle nor deletes its pthread key, and the second `dlclose`
//! unmaps it with the key alive.

use std::sync::{Arc, Barrier};
use std::thread;

use usrcu_module_loader::ModuleLoader;
use usrcu_tests::{fixture_path, fxneeded_holder, fxneeded_mapped};

#[test]
fn of_two_modules_sharing_a_library_unloaded_at_once_one_proves_the_library_idle() {
    let so = fixture_path("needed-lib");
    for round in 0..200 {
        let loader = Arc::new(ModuleLoader::new());
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let a = unsafe { loader.load(&so) }.unwrap();
        // SAFETY: as above.
        let b = unsafe { loader.load(&so) }.unwrap();
        // A value under the library's key on a host thread.
        let (go, holder) = fxneeded_holder(&loader, a);
        let start = Arc::new(Barrier::new(2));
        let ua = {
            let (loader, start) = (loader.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                loader.unload(a)
            })
        };
        let ub = {
            let (loader, start) = (loader.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                loader.unload(b)
            })
        };
        let ra = ua.join().unwrap().unwrap();
        let rb = ub.join().unwrap().unwrap();
        let gone = !fxneeded_mapped();
        let deleted = ra.pthread_keys_deleted + rb.pthread_keys_deleted;
        if gone && deleted == 0 {
            // The holder's exit would run the destructor in unmapped code:
            // leave it blocked.
            std::mem::forget(go);
            std::mem::forget(holder);
            panic!(
                "round {round}: libfxneeded.so unmapped with its key alive (neither unload \
                 was its last user): A {ra:?}\nB {rb:?}"
            );
        }
        go.send(()).unwrap();
        holder.join().unwrap();
        assert!(gone, "round {round}: library still mapped: {ra:?} {rb:?}");
    }
}
