//! Red team (round 8): `Symbol` handles kept by a host past the module's
//! reload, unload, `unload_all`, and the loader's drop. Each use must be a
//! typed error (`CallError::NotLive`, `SymbolError`), never a call into an
//! unmapped object.

use usrcu_module_loader::{CallError, ModuleLoader, ModuleState, SymbolError};
use usrcu_tests::{bounded, fixture_path};

type AddFn = extern "C" fn(u64, u64) -> u64;

#[test]
fn symbols_of_a_reloaded_unloaded_or_dropped_module_are_typed_errors() {
    let so = fixture_path("callbacks");
    bounded("stale symbols", move || {
        let loader = ModuleLoader::new();
        // SAFETY: the fixtures uphold the plugin contract (docs/abi.md).
        let m1 = unsafe { loader.load(&so) }.unwrap();
        // SAFETY: `fx_add` has this type in the fixture.
        let add1 = unsafe { loader.symbol::<AddFn>(m1, "fx_add") }.unwrap();
        let add1b = add1.clone();
        assert_eq!(add1.call(|f| f.call(1, 2)).unwrap(), 3);

        // SAFETY: as for `load`.
        let (m2, rep) = unsafe { loader.reload("callbacks", &so) }.unwrap();
        assert_ne!(m1, m2);
        assert!(rep.unmapped, "{rep:?}");
        assert!(!add1.is_live());
        assert_eq!(add1.module(), m1);
        match add1b.call(|f| f.call(1, 2)) {
            Err(CallError::NotLive { state, .. }) => assert_eq!(state, ModuleState::Unloaded),
            other => panic!("a symbol of the replaced copy: {other:?}"),
        }
        // SAFETY: as above.
        match unsafe { loader.symbol::<AddFn>(m1, "fx_add") } {
            Err(SymbolError::NotLive { .. } | SymbolError::UnknownModule { .. }) => {}
            other => panic!("symbol() of the replaced copy: {:?}", other.map(|_| ())),
        }
        // SAFETY: as above.
        let add2 = unsafe { loader.symbol::<AddFn>(m2, "fx_add") }.unwrap();
        assert_eq!(add2.call(|f| f.call(2, 2)).unwrap(), 4);

        let all = loader.unload_all();
        assert_eq!(all.len(), 1);
        assert!(all[0].1.as_ref().unwrap().unmapped);
        assert!(matches!(add2.call(|f| f.call(2, 2)), Err(CallError::NotLive { .. })));

        // SAFETY: as for `load`.
        let m3 = unsafe { loader.load(&so) }.unwrap();
        // SAFETY: as above.
        let add3 = unsafe { loader.symbol::<AddFn>(m3, "fx_add") }.unwrap();
        drop(loader);
        assert!(!add3.is_live(), "a symbol reads live after its loader was dropped");
        assert!(matches!(add3.call(|f| f.call(2, 2)), Err(CallError::NotLive { .. })));
        // A fresh loader does not know the old handles.
        let other = ModuleLoader::new();
        assert!(other.state(m3).is_none() || other.state(m3) != Some(ModuleState::Live));
        // SAFETY: as above.
        assert!(unsafe { other.symbol::<AddFn>(m3, "fx_add") }.is_err());
        assert!(other.unload(m3).is_err());
    });
}

#[test]
fn a_symbol_of_a_non_pointer_sized_type_is_a_typed_error() {
    let so = fixture_path("callbacks");
    let loader = ModuleLoader::new();
    // SAFETY: the fixtures uphold the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(&so) }.unwrap();
    // SAFETY: refused before any lookup.
    match unsafe { loader.symbol::<[u64; 2]>(m, "fx_add") } {
        Err(SymbolError::NotAFunctionPointer { size: 16 }) => {}
        other => panic!("{:?}", other.map(|_| ())),
    }
    // SAFETY: refused before any lookup.
    match unsafe { loader.symbol::<()>(m, "fx_add") } {
        Err(SymbolError::NotAFunctionPointer { size: 0 }) => {}
        other => panic!("{:?}", other.map(|_| ())),
    }
    for name in ["", "fx_add\0junk", "\0", "no_such_symbol_rt8"] {
        // SAFETY: a lookup that must fail.
        match unsafe { loader.symbol::<AddFn>(m, name) } {
            Err(SymbolError::NotFound { .. }) => {}
            other => panic!("symbol({name:?}): {:?}", other.map(|_| ())),
        }
    }
    assert!(loader.unload(m).unwrap().unmapped);
}
