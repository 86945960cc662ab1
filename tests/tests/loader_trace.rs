//! Tasks Trace across objects: a plugin's copy of `usrcu` reaches the host's
//! thread records through the runtime vtable, so host and plugin count one
//! nesting per thread, and the host's grace periods wait for readers that
//! entered through the plugin.

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use usrcu::trace;
use usrcu_module_loader::ModuleLoader;
use usrcu_tests::fixture_path;

type Inside = extern "C" fn() -> u32;
type ReadSleep = unsafe extern "C" fn(u64, *const AtomicU64, *const AtomicU64);

#[test]
fn a_plugin_sees_the_hosts_section_and_the_host_waits_for_the_plugins_reader() {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("probes")) }.unwrap();
    // SAFETY: the fixture exports these with these signatures.
    let (inside, read_sleep) = unsafe {
        (
            loader.symbol::<Inside>(m, "fx_trace_inside").unwrap(),
            loader.symbol::<ReadSleep>(m, "fx_trace_read_sleep").unwrap(),
        )
    };

    // One nesting per thread: the plugin sees the host's section. The host
    // enters first, so the plugin's copy meets this thread only when the
    // host already holds a record for it.
    let g = trace::read_lock();
    assert_eq!(
        inside.call(|f| f.call()).unwrap(),
        1,
        "the plugin's copy does not see the host's section: two records for one thread"
    );
    drop(g);
    assert_eq!(inside.call(|f| f.call()).unwrap(), 0);

    // The host's synchronize waits for a reader that entered in the plugin.
    static ENTERED: AtomicU64 = AtomicU64::new(0);
    static LEFT: AtomicU64 = AtomicU64::new(0);
    let reader = {
        let read_sleep = read_sleep.clone();
        thread::spawn(move || {
            // SAFETY: the flags are statics.
            read_sleep.call(|f| unsafe { f.call(150, &ENTERED, &LEFT) }).unwrap();
        })
    };
    let t0 = Instant::now();
    // Acquire: pairs with the plugin's Release store.
    while ENTERED.load(Ordering::Acquire) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the plugin reader never entered"
        );
        thread::sleep(Duration::from_millis(1));
    }
    trace::synchronize();
    // Acquire: pairs with the plugin's Release store before it left.
    assert_eq!(
        LEFT.load(Ordering::Acquire),
        1,
        "synchronize returned while a reader inside the plugin's section was sleeping"
    );
    reader.join().unwrap();
    drop((inside, read_sleep));
    let report = loader.unload(m).unwrap();
    assert!(report.unmapped, "{report}");
}
