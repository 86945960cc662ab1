//! Red team (round 9): `unload` from inside a call into the same module is
//! refused at once (`UnloadError::FromInsideCall`): the unload would wait
//! for the very call it runs in. The check looks at a per-thread list of
//! the modules this thread is calling into, which keeps the first 64
//! (`symbol.rs`: "Calls nested deeper than 64 are not tracked"). A host
//! whose calls nest deeper (a plugin calling back into the host, which calls
//! another plugin, ...) and whose innermost call unloads its own module is
//! not refused. In a debug build `unload` then panics (usrcu's "Illegal
//! synchronize_timeout() in same-domain SRCU read-side critical section"
//! check on the module's liveness domain) and leaves the module `Going`
//! for good: calls fail, and every later `unload` is `NotLive`. In a
//! release build (no such check) the unload waits for itself the whole
//! `unload_timeout` (with `Duration::MAX`, "as long as it takes", forever)
//! and answers `CallsInFlight`.

use std::sync::Mutex;
use std::time::Duration;

use usrcu_module_loader::{LoaderConfig, ModuleLoader, Symbol, UnloadError};
use usrcu_tests::{bounded, fixture_path};

type AddFn = extern "C" fn(u64, u64) -> u64;

fn nest(depth: usize, a: &Symbol<AddFn>, innermost: &dyn Fn()) {
    if depth == 0 {
        return innermost();
    }
    a.call(|f| {
        assert_eq!(f.call(depth as u64, 1), depth as u64 + 1);
        nest(depth - 1, a, innermost);
    })
    .unwrap();
}

#[test]
fn unload_from_inside_a_deeply_nested_call_is_refused_at_once() {
    let so = fixture_path("callbacks");
    let outcome = bounded("deep nesting", move || {
        let loader = ModuleLoader::with_config(LoaderConfig {
            unload_timeout: Duration::from_secs(1),
            ..LoaderConfig::default()
        });
        // Two copies of one file: `a` to nest in, `m` to unload.
        // SAFETY: the fixtures uphold the plugin contract (docs/abi.md).
        let (a, m) = unsafe { (loader.load(&so).unwrap(), loader.load(&so).unwrap()) };
        // SAFETY: `fx_add` has this type in the fixture.
        let (add_a, add_m) = unsafe {
            (
                loader.symbol::<AddFn>(a, "fx_add").unwrap(),
                loader.symbol::<AddFn>(m, "fx_add").unwrap(),
            )
        };
        let result = Mutex::new(None);
        nest(64, &add_a, &|| {
            add_m
                .call(|_| {
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loader.unload(m)));
                    *result.lock().unwrap() = Some(r.map(|r| r.map(|rep| rep.to_string())));
                })
                .unwrap();
        });
        let r = result.lock().unwrap().take().unwrap();
        let state = loader.state(m);
        drop((add_a, add_m));
        let again = loader.unload(m).map(|r| r.unmapped);
        loader.unload_all();
        match r {
            Ok(Err(UnloadError::FromInsideCall { .. })) => Ok(()),
            Ok(other) => Err(format!("unload returned {other:?}")),
            Err(_) => Err(format!(
                "unload panicked (its message is above); the module is then {state:?}, and unloading it again gives {again:?}"
            )),
        }
    });
    if let Err(e) = outcome {
        panic!("an unload from inside a call into the same module, 65 calls deep, was not refused: {e}");
    }
}
