//! Callbacks on domains the plugin does not list: drained before the
//! object goes (bounded), or the object stays a Zombie naming the domain.
//! (A dynamic domain kept in a `static LazyLock` and a host domain given
//! plugin closures are found through the runtime's inventory by address.)
//! Without the loader's search of the object for its domains (a test
//! switch), a plain `static` domain with slow callbacks pending kills the
//! host with SIGSEGV when the runtime runs one in the unmapped object (seen
//! in a child process): the crash issue 9 reports.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use usrcu::Srcu;
use usrcu_module_loader::{BarrierOutcome, LoaderConfig, ModuleLoader, ModuleState, ZombieCause};
use usrcu_tests::{fixture_path, in_child, leak, object_is_mapped, Child, CHILD_ENV};

type QueueFn = unsafe extern "C" fn(usize, u64, *const AtomicBool, *const AtomicUsize);
type HostQueueFn = unsafe extern "C" fn(*const Srcu, usize, u64, *const AtomicBool, *const AtomicUsize);

fn queue(
    loader: &ModuleLoader,
    m: usrcu_module_loader::ModuleHandle,
    which: &str,
    n: usize,
    sleep_ms: u64,
    gate: &'static AtomicBool,
    ran: &'static AtomicUsize,
) {
    // SAFETY: the fixture exports it with this signature.
    let f = unsafe { loader.symbol::<QueueFn>(m, which).unwrap() };
    // SAFETY: both atomics live for the process.
    f.call(|f| unsafe { f.call(n, sleep_ms, gate, ran) }).unwrap();
}

fn drained_and_unmapped(which: &str, domain: Option<&str>) {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("unlisted-domains")) }.unwrap();
    let path = loader.info(m).unwrap().loaded_path;
    let (gate, ran) = (leak(AtomicBool::new(true)), leak(AtomicUsize::new(0)));
    queue(&loader, m, which, 5, 20, gate, ran);

    let report = loader.unload(m).unwrap();

    assert!(report.unmapped, "{report}");
    // Every callback ran before the object went.
    assert_eq!(ran.load(Ordering::SeqCst), 5);
    // A plain static is one of the object's static domains (found among
    // its symbols), with a report of its own; a dynamic domain is drained
    // through the runtime's inventory.
    if let Some(domain) = domain {
        assert_eq!(
            report.domain(domain).map(|d| d.barrier),
            Some(BarrierOutcome::Issued),
            "{report}"
        );
    }
    assert!(!object_is_mapped(&path));
}

#[test]
fn unlisted_plain_static_domain_is_drained_before_unmap() {
    drained_and_unmapped("fx_plain_queue", Some("unlisted.plain"));
}

/// Through the runtime's inventory: a dynamic domain's bytes in the object
/// cannot be told from those of one moved away and dropped, but the runtime
/// knows its live domains and where their structs lie.
#[test]

fn dynamic_domain_kept_in_a_static_lazylock_is_drained_before_unmap() {
    drained_and_unmapped("fx_lazy_queue", None);
}

#[test]
fn callbacks_that_never_finish_on_an_unlisted_domain_leave_a_zombie_naming_it() {
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_millis(200),
        ..Default::default()
    });
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("unlisted-domains")) }.unwrap();
    let path = loader.info(m).unwrap().loaded_path;
    let (gate, ran) = (leak(AtomicBool::new(false)), leak(AtomicUsize::new(0)));
    queue(&loader, m, "fx_plain_queue", 3, 0, gate, ran);

    let report = loader.unload(m).unwrap();

    assert_eq!(report.state, ModuleState::Zombie, "{report}");
    match &report.zombie_cause {
        Some(ZombieCause::CallbacksInObject { domain, callbacks, .. }) => {
            assert_eq!(domain, "unlisted.plain");
            assert!(*callbacks > 0);
        }
        c => panic!("expected the unlisted domain named, got {c:?}"),
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the callbacks are still blocked");
    // The callbacks finish in mapped code; then the zombie unloads.
    gate.store(true, Ordering::SeqCst);
    usrcu_tests::unload_until_unmapped(&loader, m);
    assert_eq!(ran.load(Ordering::SeqCst), 3);
    assert!(!object_is_mapped(&path));
}

/// Through the runtime's inventory by address: a host domain holds
/// closures of the plugin, which no domain of the plugin shows.
#[test]

fn plugin_closures_queued_on_a_host_domain_are_drained_before_unmap() {
    static HOST: Srcu = Srcu::new_static("host.domain");
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("unlisted-domains")) }.unwrap();
    let (gate, ran) = (leak(AtomicBool::new(true)), leak(AtomicUsize::new(0)));
    // SAFETY: the fixture exports it with this signature.
    let f = unsafe { loader.symbol::<HostQueueFn>(m, "fx_host_queue").unwrap() };
    // SAFETY: HOST and both atomics live for the process.
    f.call(|f| unsafe { f.call(&HOST, 5, 20, gate, ran) }).unwrap();
    let report = loader.unload(m).unwrap();
    assert!(report.unmapped, "{report}");
    assert_eq!(ran.load(Ordering::SeqCst), 5);
}

/// The deferred-work proof is a second line against the same hazard: with
/// the search and the inventory drain switched off, its own drain and
/// snapshot still find the callbacks on the unlisted domain, and the child
/// of the test below lives.
#[test]
fn with_only_the_deferred_proof_an_unlisted_static_domain_is_still_drained() {
    Child::new("without_searching_the_object_an_unlisted_static_domain_kills_the_host")
        .env("USRCU_LOADER_TEST_SKIP_PROOFS", "unlisted-domains,inventory")
        .run()
        .assert_passed("", "the child should have lived");
}

#[test]
fn without_searching_the_object_an_unlisted_static_domain_kills_the_host() {
    if in_child(CHILD_ENV, None) {
        let loader = ModuleLoader::new();
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(fixture_path("unlisted-domains")) }.unwrap();
        let (gate, ran) = (leak(AtomicBool::new(true)), leak(AtomicUsize::new(0)));
        queue(&loader, m, "fx_plain_queue", 5, 50, gate, ran);
        let report = loader.unload(m).unwrap();
        assert!(report.unmapped, "{report}");
        std::thread::sleep(Duration::from_secs(3));
        std::process::exit(0);
    }
    Child::new("without_searching_the_object_an_unlisted_static_domain_kills_the_host")
        .env("USRCU_LOADER_TEST_SKIP_PROOFS", "unlisted-domains,inventory,deferred")
        .run()
        .assert_died_of(
            &[libc::SIGSEGV, libc::SIGBUS, libc::SIGILL],
            "the child should have died in a callback of the unmapped object",
        );
}

#[test]
fn without_the_inventory_plugin_closures_on_a_host_domain_kill_the_host() {
    static HOST: Srcu = Srcu::new_static("host.domain.crash");
    if in_child(CHILD_ENV, None) {
        let loader = ModuleLoader::new();
        // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
        let m = unsafe { loader.load(fixture_path("unlisted-domains")) }.unwrap();
        let (gate, ran) = (leak(AtomicBool::new(true)), leak(AtomicUsize::new(0)));
        // SAFETY: the fixture exports it with this signature.
        let f = unsafe { loader.symbol::<HostQueueFn>(m, "fx_host_queue").unwrap() };
        // SAFETY: HOST and both atomics live for the process.
        f.call(|f| unsafe { f.call(&HOST, 5, 50, gate, ran) }).unwrap();
        let report = loader.unload(m).unwrap();
        assert!(report.unmapped, "{report}");
        std::thread::sleep(Duration::from_secs(3));
        std::process::exit(0);
    }
    Child::new("without_the_inventory_plugin_closures_on_a_host_domain_kill_the_host")
        .env("USRCU_LOADER_TEST_SKIP_PROOFS", "inventory,deferred")
        .run()
        .assert_died_of(
            &[libc::SIGSEGV, libc::SIGBUS, libc::SIGILL],
            "the child should have died in a plugin closure run by the host domain",
        );
}
