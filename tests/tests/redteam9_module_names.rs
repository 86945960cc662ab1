//! Red team (round 9): module names a plugin declares in its descriptor
//! (`export_module! { name: ... }`, any `&'static str`): empty, with a
//! newline, with a NUL, 64 KiB long. The name is how a host finds a module
//! (`find`, `reload`, `interface`) and what reports and warnings print. The
//! fixture `redteam9-reenter` takes its name from `RT9_REENTER_NAME` (`%00`
//! for a NUL; read
//! when each copy's descriptor is built), so one test process tries each
//! name in turn. Expected: a typed `LoadError` for a name a host cannot
//! use or print safely, and the loader going on.

use usrcu_module_loader::ModuleLoader;
use usrcu_tests::fixture_path;

#[test]
fn odd_module_names_are_refused() {
    let so = fixture_path("redteam9-reenter");
    let loader = ModuleLoader::new();
    let long = "x".repeat(64 * 1024);
    let mut accepted = Vec::new();
    for name in ["", "a\nb", "a\0b", long.as_str()] {
        // The fixture reads it when the copy's descriptor is built.
        std::env::set_var("RT9_REENTER_NAME", name.replace('\0', "%00"));
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let r = unsafe { loader.load(&so) };
        std::env::remove_var("RT9_REENTER_NAME");
        match r {
            Ok(m) => {
                let info = loader.info(m).unwrap();
                assert_eq!(info.name, name);
                assert_eq!(loader.find(name), Some(m));
                let report = loader.unload(m).unwrap();
                assert!(report.unmapped);
                accepted.push(format!("{:?}", &name[..name.len().min(8)]));
            }
            Err(e) => {
                assert!(
                    matches!(e, usrcu_module_loader::LoadError::BadModuleName { .. }),
                    "a typed error naming the name: {e}"
                );
                println!("{:?}: {e}", &name[..name.len().min(8)])
            }
        }
    }
    // SAFETY: as above.
    let m = unsafe { loader.load(&so) }.unwrap();
    assert_eq!(loader.info(m).unwrap().name, "redteam9-reenter");
    assert!(loader.unload(m).unwrap().unmapped);
    assert!(accepted.is_empty(), "loaded and served under these names: {accepted:?}");
}
