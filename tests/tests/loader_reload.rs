//! Hot reload under load: 200 cycles while two threads call in continuously
//! (and queue callbacks), with no crash and every cycle unmapped.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;

use usrcu_module_loader::{BarrierOutcome, CallError, ModuleLoader, ReloadError, Symbol};
use usrcu_tests::{fixture_path, leak};

type AddFn = extern "C" fn(u64, u64) -> u64;
type QueueFn = unsafe extern "C" fn(usize, u64, *const AtomicUsize);

const CYCLES: usize = 200;

fn resolve(loader: &ModuleLoader) -> Option<(Symbol<AddFn>, Symbol<QueueFn>)> {
    let h = loader.find("callbacks")?;
    // SAFETY: the fixture exports these with these signatures.
    unsafe {
        Some((
            loader.symbol(h, "fx_add").ok()?,
            loader.symbol(h, "fx_queue_callbacks").ok()?,
        ))
    }
}

#[test]
fn two_hundred_reloads_under_two_calling_threads_all_unmap() {
    let loader = ModuleLoader::new();
    let path = fixture_path("callbacks");
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    unsafe { loader.load(&path) }.unwrap();
    let stop = AtomicBool::new(false);
    let served = AtomicU64::new(0);
    let ran = leak(AtomicUsize::new(0));
    let queued = AtomicUsize::new(0);

    let reports = thread::scope(|s| {
        for t in 0..2u64 {
            let (loader, stop, served, queued) = (&loader, &stop, &served, &queued);
            s.spawn(move || {
                let mut syms = resolve(loader);
                let mut i = t;
                while !stop.load(Ordering::SeqCst) {
                    let Some((add, queue)) = &syms else {
                        thread::yield_now();
                        syms = resolve(loader);
                        continue;
                    };
                    i += 1;
                    let r = add.call(|f| f.call(i, 1)).and_then(|v| {
                        assert_eq!(v, i + 1);
                        if i % 16 == 0 {
                            // SAFETY: `ran` lives for the process.
                            queue.call(|f| unsafe { f.call(1, 0, ran) })?;
                            queued.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(())
                    });
                    match r {
                        Ok(()) => {
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(CallError::NotLive { .. }) => syms = resolve(loader),
                        Err(e) => panic!("unexpected call error: {e}"),
                    }
                }
            });
        }
        let mut reports = Vec::with_capacity(CYCLES);
        for _ in 0..CYCLES {
            let before = served.load(Ordering::SeqCst);
            // Let the callers get at least one call into this copy.
            while served.load(Ordering::SeqCst) == before {
                thread::yield_now();
            }
            // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
            match unsafe { loader.reload("callbacks", &path) } {
                Ok((_, r)) => reports.push(r),
                Err(e) => panic!("reload failed: {e}"),
            }
        }
        stop.store(true, Ordering::SeqCst);
        reports
    });

    assert_eq!(reports.len(), CYCLES);
    for (i, r) in reports.iter().enumerate() {
        assert!(r.unmapped, "cycle {i}: {r}");
        assert_eq!(r.domains.len(), 3);
        assert_eq!(r.barriers_skipped() + r.barriers_issued(), 3);
        assert_ne!(r.domain("callbacks.idle").unwrap().barrier, BarrierOutcome::Issued);
    }
    assert!(served.load(Ordering::SeqCst) >= CYCLES as u64);
    let last = loader.find("callbacks").unwrap();
    assert!(loader.unload(last).unwrap().unmapped);
    // Every callback queued into any copy ran before that copy was unmapped.
    assert_eq!(ran.load(Ordering::SeqCst), queued.load(Ordering::SeqCst));
}

#[test]
fn reload_that_fails_to_load_keeps_the_old_module_live() {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let err = unsafe { loader.reload("callbacks", fixture_path("no-descriptor")) }.unwrap_err();
    assert!(matches!(err, ReloadError::Load(_)), "{err}");
    assert_eq!(loader.find("callbacks"), Some(m));
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let err = unsafe { loader.reload("no-such-module", fixture_path("callbacks")) }.unwrap_err();
    assert!(matches!(err, ReloadError::NoSuchModule { .. }), "{err}");
    assert!(loader.unload(m).unwrap().unmapped);
}
