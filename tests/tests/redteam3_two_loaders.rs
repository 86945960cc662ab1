//! Red team 3: one plugin file loaded by two `ModuleLoader`s of one process,
//! and twice by one loader, with typed handles on each; unloads in both
//! orders. Each loader's copy is private (a fresh copy per load), so each
//! unload unmaps only its own copy and the others keep serving.

use usrcu_module_loader::usrcu_registry::example::Calc;
use usrcu_module_loader::{CallError, ModuleHandle, ModuleLoader, ModuleState};
use usrcu_tests::{fixture_path, object_is_mapped};

fn load(loader: &ModuleLoader) -> ModuleHandle {
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    unsafe { loader.load(fixture_path("redteam3-calc")) }.unwrap()
}

fn two_loaders_unload(first_a: bool) {
    let (a, b) = (ModuleLoader::new(), ModuleLoader::new());
    let (ma, mb) = (load(&a), load(&b));
    let (ha, hb) = (
        a.interface::<dyn Calc>("redteam3-calc"),
        b.interface::<dyn Calc>("redteam3-calc"),
    );
    assert_eq!((ha.compute(1), hb.compute(2)), (Ok(2), Ok(4)));
    let (pa, pb) = (a.info(ma).unwrap().loaded_path, b.info(mb).unwrap().loaded_path);
    assert_ne!(pa, pb, "each loader maps its own copy");
    let order = if first_a {
        [(&a, ma, &pa, &ha, &hb, &pb), (&b, mb, &pb, &hb, &ha, &pa)]
    } else {
        [(&b, mb, &pb, &hb, &ha, &pa), (&a, ma, &pa, &ha, &hb, &pb)]
    };
    for (i, (loader, m, path, gone, other, other_path)) in order.into_iter().enumerate() {
        let r = loader.unload(m).unwrap();
        assert!(r.unmapped && !object_is_mapped(path), "{r}");
        assert!(matches!(gone.compute(3), Err(CallError::NoLiveModule { .. })));
        if i == 0 {
            assert!(object_is_mapped(other_path), "the other loader's copy stays mapped");
            assert_eq!(other.compute(4), Ok(8), "the other loader's copy still serves");
        }
        assert_eq!(loader.state(m), Some(ModuleState::Unloaded));
    }
}

#[test]
fn two_loaders_of_one_file_unload_in_load_order_without_touching_each_other() {
    two_loaders_unload(true);
}

#[test]
fn two_loaders_of_one_file_unload_in_reverse_order_without_touching_each_other() {
    two_loaders_unload(false);
}

#[test]
fn a_typed_handle_falls_back_to_the_older_copy_when_the_newer_of_two_is_unloaded() {
    let loader = ModuleLoader::new();
    let (old, new) = (load(&loader), load(&loader));
    let h = loader.interface::<dyn Calc>("redteam3-calc");
    assert_eq!(h.compute(1), Ok(2));
    assert_eq!(loader.find("redteam3-calc"), Some(new));
    assert!(loader.unload(new).unwrap().unmapped);
    assert_eq!(h.compute(2), Ok(4), "the older copy still serves the handle");
    assert_eq!(loader.find("redteam3-calc"), Some(old));
    assert!(loader.unload(old).unwrap().unmapped);
    assert!(matches!(h.compute(3), Err(CallError::NoLiveModule { .. })));
    // A fresh load is picked up by the same handle.
    let again = load(&loader);
    assert_eq!(h.compute(4), Ok(8));
    assert!(loader.unload(again).unwrap().unmapped);
}
