//! Every linked object sees its own static domains and only those: the
//! host executable, each loaded plugin, each of two copies of one plugin;
//! and the slice survives release builds with fat LTO.

use usrcu::Srcu;
use usrcu_module_loader::ModuleLoader;
use usrcu_registry::define_static_srcu;
use usrcu_tests::{fixture_path, fixture_path_with_profile};

define_static_srcu!(static HOST_A);
define_static_srcu!(pub static HOST_B = Srcu::new_static("host.b"));

type CountFn = extern "C" fn() -> usize;
type DomainFn = extern "C" fn() -> *const Srcu;

const CALLBACKS_DOMAINS: [&str; 3] = ["callbacks.queue", "callbacks.readers", "callbacks.idle"];

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn host_slice_holds_exactly_the_host_domains() {
    let names = sorted(usrcu_registry::domains().map(|d| d.name().to_owned()).collect());
    assert_eq!(names, vec!["HOST_A".to_owned(), "host.b".to_owned()]);
    assert!(usrcu_registry::domains().any(|d| std::ptr::eq(d, &HOST_A)));
    assert!(usrcu_registry::domains().any(|d| std::ptr::eq(d, &HOST_B)));
}

#[test]
fn plugin_slice_holds_exactly_the_plugin_domains() {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("callbacks")) }.unwrap();
    let info = loader.info(m).unwrap();
    assert_eq!(
        sorted(info.domains.clone()),
        sorted(CALLBACKS_DOMAINS.map(String::from).to_vec())
    );
    // SAFETY: the fixture exports it with this signature.
    let count = unsafe { loader.symbol::<CountFn>(m, "fx_domain_count").unwrap() };
    assert_eq!(count.call(|f| f.call()).unwrap(), 3);
    // Loading a plugin adds nothing to the host's slice.
    assert_eq!(usrcu_registry::domains().len(), 2);
    assert!(loader.unload(m).unwrap().unmapped);
}

#[test]
fn plugin_without_static_domains_has_an_empty_slice() {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("dynamic-domain")) }.unwrap();
    assert!(loader.info(m).unwrap().domains.is_empty());
    // SAFETY: the fixture exports it with this signature.
    let count = unsafe { loader.symbol::<CountFn>(m, "fx_domain_count").unwrap() };
    assert_eq!(count.call(|f| f.call()).unwrap(), 0);
    assert!(loader.unload(m).unwrap().unmapped);
}

#[test]
fn two_copies_of_one_plugin_each_see_their_own_domains() {
    let loader = ModuleLoader::new();
    let path = fixture_path("callbacks");
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let (a, b) = (
        unsafe { loader.load(&path) }.unwrap(),
        unsafe { loader.load(&path) }.unwrap(),
    );
    // SAFETY: the fixture exports it with this signature.
    let (qa, qb) = unsafe {
        (
            loader.symbol::<DomainFn>(a, "fx_queue_domain").unwrap(),
            loader.symbol::<DomainFn>(b, "fx_queue_domain").unwrap(),
        )
    };
    let (pa, pb) = (qa.call(|f| f.call()).unwrap(), qb.call(|f| f.call()).unwrap());
    assert_ne!(pa, pb, "each copy has its own static domain");
    let (ia, ib) = (loader.info(a).unwrap(), loader.info(b).unwrap());
    assert_ne!(ia.loaded_path, ib.loaded_path);
    assert_eq!(ia.domains.len(), 3);
    assert_eq!(ib.domains.len(), 3);
    assert!(loader.unload(a).unwrap().unmapped);
    // The other copy is untouched by the first one's unload.
    // SAFETY: as above.
    let count = unsafe { loader.symbol::<CountFn>(b, "fx_domain_count").unwrap() };
    assert_eq!(count.call(|f| f.call()).unwrap(), 3);
    assert!(loader.unload(b).unwrap().unmapped);
}

#[test]
fn slice_survives_release_build_with_fat_lto() {
    let loader = ModuleLoader::new();
    let path = fixture_path_with_profile("callbacks", "release-lto");
    assert!(path.to_string_lossy().contains("release-lto"));
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(&path) }.unwrap();
    assert_eq!(
        sorted(loader.info(m).unwrap().domains),
        sorted(CALLBACKS_DOMAINS.map(String::from).to_vec())
    );
    // SAFETY: the fixture exports it with this signature.
    let count = unsafe { loader.symbol::<CountFn>(m, "fx_domain_count").unwrap() };
    assert_eq!(count.call(|f| f.call()).unwrap(), 3);
    let report = loader.unload(m).unwrap();
    assert_eq!(report.domains.len(), 3);
    assert!(report.unmapped);
}
