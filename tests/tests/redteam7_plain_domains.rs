//! Red team (round 7): read sections and in-flight grace periods of a
//! plugin's *unlisted* domains (a plain `static Srcu`, the README's own
//! pattern, and a leaked dynamic one) at unload. The design's table:
//! "readers inside a domain that lives in the object: bounded wait, else
//! Zombie". After the unload the host keeps using SRCU for a while, in a
//! child process, so that a runtime thread touching the unmapped `Srcu`
//! (its active index and per-CPU pointer live in the plugin's `.bss`, or in
//! its heap for the leaked one) would show as a signal.

use std::time::Duration;

use usrcu_module_loader::{LoaderConfig, ModuleLoader};
use usrcu_tests::{fixture_path, object_is_mapped, Child};

type U32Fn = extern "C" fn(u32);
type SyncFn = extern "C" fn(u32, u64) -> u32;
type PollFn = extern "C" fn(u32) -> u64;

fn host_keeps_working() {
    let d = usrcu::Srcu::new("rt7-host-after");
    for _ in 0..200 {
        d.call_srcu(|| {});
        d.synchronize_expedited();
        std::thread::sleep(Duration::from_millis(2));
    }
    d.barrier();
}

/// mode: 0 = reader left open forever; 1 = reader + timed-out synchronize,
/// reader ended by `exit`; 2 = reader + start_poll, reader ended by `exit`.
fn scenario(which: u32, mode: u32) {
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_millis(500),
        ..LoaderConfig::default()
    });
    // SAFETY: the fixture upholds the plugin contract.
    let m = unsafe { loader.load(fixture_path("redteam7-plain")) }.unwrap();
    let path = loader.info(m).unwrap().loaded_path;
    // SAFETY: the fixture's signatures.
    let (lock, sync, poll, rel) = unsafe {
        (
            loader.symbol::<U32Fn>(m, "fx_lock").unwrap(),
            loader.symbol::<SyncFn>(m, "fx_sync_timeout").unwrap(),
            loader.symbol::<PollFn>(m, "fx_start_poll").unwrap(),
            loader.symbol::<U32Fn>(m, "fx_release_in_exit").unwrap(),
        )
    };
    lock.call(|f| f.call(which)).unwrap();
    match mode {
        1 => assert_eq!(sync.call(|f| f.call(which, 5)).unwrap(), 0),
        2 => {
            poll.call(|f| f.call(which)).unwrap();
        }
        _ => {}
    }
    if mode != 0 {
        rel.call(|f| f.call(1)).unwrap();
    }
    drop((lock, sync, poll, rel));
    let r = loader.unload(m);
    match &r {
        Ok(r) => println!("unload: unmapped {} zombie {:?}", r.unmapped, r.zombie_cause),
        Err(e) => println!("unload error: {e}"),
    }
    if mode == 0 {
        if let Ok(r) = &r {
            assert!(!r.unmapped, "unmapped under an open reader of an unlisted domain: {r}");
        }
        assert!(object_is_mapped(&path), "the object left while a reader was inside");
    }
    host_keeps_working();
    let _ = loader.unload_all();
    host_keeps_working();
    println!("RT7-PLAIN-OK");
}

fn run(name: &str) {
    let ran = Child::new(name).env("RT7_PLAIN_CHILD", "1").run();
    ran.assert_passed("RT7-PLAIN-OK", "host did not survive");
    let text = ran.text();
    for l in text.lines().filter(|l| l.contains("unload")) {
        eprintln!("{name}: {l}");
    }
}

macro_rules! case {
    ($outer:ident, $entry:ident, $which:expr, $mode:expr) => {
        #[test]
        fn $outer() {
            fixture_path("redteam7-plain");
            run(stringify!($entry));
        }
        #[test]
        fn $entry() {
            if std::env::var_os("RT7_PLAIN_CHILD").is_some() {
                scenario($which, $mode);
            }
        }
    };
}

case!(
    a_reader_left_open_in_a_plain_static_domain_keeps_the_object_mapped,
    plain_open_entry,
    0,
    0
);
case!(
    a_reader_left_open_in_a_leaked_dynamic_domain_keeps_the_object_mapped,
    leaked_open_entry,
    1,
    0
);
case!(
    a_timed_out_synchronize_on_a_plain_static_domain_then_exit_ends_the_reader,
    plain_sync_entry,
    0,
    1
);
case!(
    a_timed_out_synchronize_on_a_leaked_dynamic_domain_then_exit_ends_the_reader,
    leaked_sync_entry,
    1,
    1
);
case!(
    a_started_poll_on_a_plain_static_domain_then_exit_ends_the_reader,
    plain_poll_entry,
    0,
    2
);
case!(
    a_started_poll_on_a_leaked_dynamic_domain_then_exit_ends_the_reader,
    leaked_poll_entry,
    1,
    2
);
