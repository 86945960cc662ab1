//! Callbacks on domains the plugin does not list: drained before the
//! object goes (bounded), or the object stays a Zombie naming the domain.
//! (A dynamic domain kept in a `static LazyLock` and a host domain given
//! plugin closures need the runtime's inventory: their tests are ignored
//! until it lands.)
//! Without the loader's search of the object for its domains (a test
//! switch), a plain `static` domain with slow callbacks pending kills the
//! host with SIGSEGV when the runtime runs one in the unmapped object (seen
//! in a child process): the crash issue 9 reports.

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use usrcu::Srcu;
use usrcu_module_loader::{BarrierOutcome, LoaderConfig, ModuleLoader, ModuleState, ZombieCause};
use usrcu_tests::{fixture_path, in_child, leak, object_is_mapped, rerun_in_child};

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
    f.call(|f| unsafe { f(n, sleep_ms, gate, ran) }).unwrap();
}

fn drained_and_unmapped(which: &str, domain: &str) {
    let loader = ModuleLoader::new();
    let m = loader.load(fixture_path("unlisted-domains")).unwrap();
    let path = loader.info(m).unwrap().loaded_path;
    let (gate, ran) = (leak(AtomicBool::new(true)), leak(AtomicUsize::new(0)));
    queue(&loader, m, which, 5, 20, gate, ran);

    let report = loader.unload(m).unwrap();

    assert!(report.unmapped, "{report}");
    // Every callback ran before the object went.
    assert_eq!(ran.load(Ordering::SeqCst), 5);
    assert_eq!(
        report.domain(domain).map(|d| d.barrier),
        Some(BarrierOutcome::Issued),
        "{report}"
    );
    assert!(!object_is_mapped(&path));
}

#[test]
fn unlisted_plain_static_domain_is_drained_before_unmap() {
    drained_and_unmapped("fx_plain_queue", "unlisted.plain");
}

/// Needs the runtime's inventory (issue 8): a dynamic domain's bytes in the
/// object cannot be told from those of one moved away and dropped.
#[test]
#[ignore = "pending: needs usrcu::runtime::inventory (the runtime engine, issue 8)"]
fn dynamic_domain_kept_in_a_static_lazylock_is_drained_before_unmap() {
    drained_and_unmapped("fx_lazy_queue", "unlisted.lazy");
}

#[test]
fn callbacks_that_never_finish_on_an_unlisted_domain_leave_a_zombie_naming_it() {
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_millis(200),
        ..Default::default()
    });
    let m = loader.load(fixture_path("unlisted-domains")).unwrap();
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
    let mut r = loader.unload(m).unwrap();
    while r.state == ModuleState::Zombie {
        std::thread::sleep(Duration::from_millis(5));
        r = loader.unload(m).unwrap();
    }
    assert!(r.unmapped, "{r}");
    assert_eq!(ran.load(Ordering::SeqCst), 3);
    assert!(!object_is_mapped(&path));
}

/// Needs the runtime's inventory by address (issue 8): a host domain holds
/// closures of the plugin, which no domain of the plugin shows.
#[test]
#[ignore = "pending: needs usrcu::runtime::inventory (the runtime engine, issue 8)"]
fn plugin_closures_queued_on_a_host_domain_are_drained_before_unmap() {
    static HOST: Srcu = Srcu::new_static("host.domain");
    let loader = ModuleLoader::new();
    let m = loader.load(fixture_path("unlisted-domains")).unwrap();
    let (gate, ran) = (leak(AtomicBool::new(true)), leak(AtomicUsize::new(0)));
    // SAFETY: the fixture exports it with this signature.
    let f = unsafe { loader.symbol::<HostQueueFn>(m, "fx_host_queue").unwrap() };
    // SAFETY: HOST and both atomics live for the process.
    f.call(|f| unsafe { f(&HOST, 5, 20, gate, ran) }).unwrap();
    let report = loader.unload(m).unwrap();
    assert!(report.unmapped, "{report}");
    assert_eq!(ran.load(Ordering::SeqCst), 5);
}

#[test]
fn without_searching_the_object_an_unlisted_static_domain_kills_the_host() {
    if in_child() {
        let loader = ModuleLoader::new();
        let m = loader.load(fixture_path("unlisted-domains")).unwrap();
        let (gate, ran) = (leak(AtomicBool::new(true)), leak(AtomicUsize::new(0)));
        queue(&loader, m, "fx_plain_queue", 5, 50, gate, ran);
        let report = loader.unload(m).unwrap();
        assert!(report.unmapped, "{report}");
        std::thread::sleep(Duration::from_secs(3));
        std::process::exit(0);
    }
    let status = rerun_in_child(
        "without_searching_the_object_an_unlisted_static_domain_kills_the_host",
        &[("USRCU_LOADER_TEST_SKIP_PROOFS", "unlisted-domains")],
    );
    assert!(
        matches!(status.signal(), Some(libc::SIGSEGV | libc::SIGBUS | libc::SIGILL)),
        "the child should have died in a callback of the unmapped object: {status:?}"
    );
}
