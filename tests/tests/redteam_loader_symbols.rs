//! Red team of `ModuleLoader::symbol` through the public API: "a typed
//! function of a `Live` module". `dlsym` on the module's handle also
//! searches every library the module links (libc among them), so a name the
//! module does not define, but libc does, used to come back as a `Symbol`
//! of the module; a host that misspelt its entry point called `malloc`.
//! A name is found only in the module's object (its own `.so` and the
//! libraries loaded with it); any other is `SymbolError::NotFound`.

use usrcu_module_loader::{ModuleLoader, SymbolError};
use usrcu_tests::fixture_path;

type AddFn = extern "C" fn(u64, u64) -> u64;
type HoldFn = extern "C" fn() -> u32;

#[test]
fn a_name_only_libc_defines_is_not_found_in_the_module() {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    for name in ["malloc", "pthread_create", "printf", "dlopen"] {
        // SAFETY: never called (the lookup must fail).
        match unsafe { loader.symbol::<AddFn>(m, name) } {
            Err(SymbolError::NotFound {
                module,
                symbol,
                message,
            }) => {
                assert_eq!((module.as_str(), symbol.as_str()), ("callbacks", name));
                assert!(!message.is_empty());
            }
            r => panic!("`{name}` resolved in the module: {:?}", r.map(|s| s.module())),
        }
    }
    // What the module does define is still found.
    // SAFETY: the fixture exports it with this signature.
    let add = unsafe { loader.symbol::<AddFn>(m, "fx_add") }.unwrap();
    assert_eq!(add.call(|f| f.call(2, 2)).unwrap(), 4);
    assert!(loader.unload(m).unwrap().unmapped);
}

#[test]
fn a_function_of_a_library_loaded_with_the_module_is_found() {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("needed-lib")) }.unwrap();
    // SAFETY: the fixture's C library exports it with this signature.
    let hold = unsafe { loader.symbol::<HoldFn>(m, "fxneeded_hold") }.unwrap();
    drop(hold);
    assert!(loader.unload(m).unwrap().unmapped);
}
