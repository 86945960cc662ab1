//! Red team 3: `plugin-host watch`-style use, with the plugin file replaced
//! while reloads run: renamed over, truncated and rewritten in small
//! pieces, deleted and re-created. Every reload must end `Ok` or with a
//! typed error that leaves the old copy live and serving (a copy of a
//! half-written file must be refused, never mapped and run). In a child, so
//! a crash (a truncated copy mapped and called) fails the test.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use usrcu_module_loader::usrcu_registry::example::Calc;
use usrcu_module_loader::{LoaderConfig, ModuleLoader, ModuleState, ReloadError};
use usrcu_tests::{fixture_path, in_child, Child, CHILD_ENV};

const NAME: &str =
    "reloads_race_a_file_renamed_over_truncated_and_deleted_and_end_ok_or_typed_with_the_old_copy_serving";

#[test]
fn reloads_race_a_file_renamed_over_truncated_and_deleted_and_end_ok_or_typed_with_the_old_copy_serving() {
    if !in_child(CHILD_ENV, None) {
        Child::new(NAME).run().assert_passed("", "the child failed");
        return;
    }
    let bytes = std::fs::read(fixture_path("redteam3-calc")).unwrap();
    let dir = tempfile_dir();
    let path = dir.join("libwatched.so");
    std::fs::write(&path, &bytes).unwrap();
    let loader = ModuleLoader::with_config(LoaderConfig {
        unload_timeout: Duration::from_secs(20),
        ..LoaderConfig::default()
    });
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    unsafe { loader.load(&path) }.expect("first load");
    let handle = loader.interface::<dyn Calc>("redteam3-calc");
    let stop = AtomicBool::new(false);
    let rewrites = AtomicU64::new(0);
    let (mut ok, mut refused) = (0, Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| {
            let tmp = dir.join("libwatched.so.tmp");
            let mut i = 0u64;
            // Acquire: pairs with the Release store below (only ends the loop).
            while !stop.load(Ordering::Acquire) {
                match i % 3 {
                    0 => {
                        std::fs::write(&tmp, &bytes).unwrap();
                        std::fs::rename(&tmp, &path).unwrap();
                    }
                    1 => {
                        let mut f = std::fs::OpenOptions::new()
                            .write(true)
                            .truncate(true)
                            .open(&path)
                            .unwrap();
                        for chunk in bytes.chunks(bytes.len() / 7 + 1) {
                            f.write_all(chunk).unwrap();
                            std::thread::yield_now();
                        }
                    }
                    _ => {
                        let _ = std::fs::remove_file(&path);
                        std::thread::yield_now();
                        std::fs::write(&path, &bytes).unwrap();
                    }
                }
                i += 1;
                // A whole file between rewrites, for some reloads to succeed.
                std::thread::sleep(Duration::from_micros(500));
                rewrites.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Until the rewriter has replaced the file 90 times (30 of each kind).
        while rewrites.load(Ordering::Relaxed) < 90 {
            // SAFETY: every complete version of the file is the fixture.
            match unsafe { loader.reload("redteam3-calc", &path) } {
                Ok((_, report)) => {
                    assert!(report.unmapped, "{report}");
                    ok += 1;
                }
                Err(ReloadError::Load(e)) => refused.push(e.to_string()),
                Err(e) => panic!("reload: {e}"),
            }
            assert_eq!(handle.compute(21), Ok(42), "a live copy serves after each reload");
            let states: Vec<_> = loader.list().into_iter().map(|m| m.state).collect();
            assert_eq!(states, [ModuleState::Live]);
            std::thread::sleep(Duration::from_micros(100));
        }
        // Release: pairs with the Acquire load of the rewriter.
        stop.store(true, Ordering::Release);
    });
    println!(
        "{ok} reloads ok, {} refused, {} rewrites; refusals: {:?}",
        refused.len(),
        rewrites.load(Ordering::Relaxed),
        {
            let mut kinds: Vec<String> = refused
                .iter()
                .map(|e| e.split(": ").last().unwrap_or("").chars().take(60).collect())
                .collect();
            kinds.sort();
            kinds.dedup();
            kinds
        }
    );
    assert!(ok > 0);
    for (_, r) in loader.unload_all() {
        assert!(r.unwrap().unmapped);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("usrcu-rt3-watch-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
