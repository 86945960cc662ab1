//! Red team of `ModuleLoader::reload` through the public API: "load `path`
//! as the new version of the live module `name`". A file that is another
//! module (a host's mix-up of two paths) is not a new version: the reload
//! is a typed error naming both modules, the module that was live stays
//! live and callable, and the other module is rolled back, not left loaded.

use usrcu_module_loader::{ModuleLoader, ModuleState, ReloadError};
use usrcu_tests::fixture_path;

type AddFn = extern "C" fn(u64, u64) -> u64;

#[test]
fn reloading_a_module_from_the_file_of_another_module_is_a_typed_error_and_the_old_one_stays_live() {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let old = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    // SAFETY: the fixture exports it with this signature.
    let add = unsafe { loader.symbol::<AddFn>(old, "fx_add") }.unwrap();

    // SAFETY: as above, for the other fixture.
    let r = unsafe { loader.reload("callbacks", fixture_path("needed-lib")) };

    match r {
        Err(ReloadError::NotTheSameModule { name, found, rollback }) => {
            assert_eq!((name.as_str(), found.as_str()), ("callbacks", "needed-lib"));
            let rollback = rollback.as_ref().as_ref().expect("the other module unloads");
            assert!(rollback.unmapped, "{rollback}");
        }
        r => panic!(
            "expected NotTheSameModule, got {:?}",
            r.map(|(h, rep)| (h, rep.to_string()))
        ),
    }
    assert_eq!(loader.state(old), Some(ModuleState::Live));
    assert_eq!(add.call(|f| f.call(40, 2)).unwrap(), 42);
    assert_eq!(loader.find("callbacks"), Some(old));
    let names: Vec<String> = loader.list().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["callbacks"]);
    assert!(loader.unload(old).unwrap().unmapped);
}

#[test]
fn reloading_a_module_from_its_own_file_replaced_by_rename_switches_to_the_new_copy() {
    let dir = std::env::temp_dir().join(format!("usrcu-rt-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("plugin.so");
    std::fs::copy(fixture_path("callbacks"), &path).unwrap();
    let loader = ModuleLoader::new();
    // SAFETY: a copy of a fixture that upholds the plugin contract.
    let old = unsafe { loader.load(&path) }.unwrap();
    // A build tool writes the next version beside it and renames it over.
    let next = dir.join("plugin.so.tmp");
    std::fs::copy(fixture_path("callbacks"), &next).unwrap();
    std::fs::rename(&next, &path).unwrap();
    // SAFETY: as above.
    let (new, report) = unsafe { loader.reload("callbacks", &path) }.unwrap();
    assert!(report.unmapped, "{report}");
    assert_ne!(new, old);
    assert_eq!(loader.find("callbacks"), Some(new));
    // SAFETY: the fixture exports it with this signature.
    let add = unsafe { loader.symbol::<AddFn>(new, "fx_add") }.unwrap();
    assert_eq!(add.call(|f| f.call(2, 3)).unwrap(), 5);
    assert!(loader.unload(new).unwrap().unmapped);
    let _ = std::fs::remove_dir_all(&dir);
}
