//! The reload soak (`usrcu-soak`) in its CI size: load, call and unload the
//! `callbacks`, `dynamic-domain` and `thread-current` fixture plugins 60
//! times under three reader threads that keep calling in (and are retired
//! and replaced every ten cycles). Every cycle must unmap every object and
//! run every callback before its unmap; after 20 warm-up cycles, mappings
//! and pthread keys must not grow, and resident memory not by more than
//! 4 MiB (the measured run of 1000 cycles holds it to 1 MiB: see
//! `docs/reliability.md`).
//!
//! And the soak's broken flavors, each of which must end in FAILURE with the
//! check that should catch it: a loader without its automatic barrier, and
//! a leak of memory or of a mapping per cycle.

use std::process::{Command, Output};

fn soak(args: &[&str]) -> (Output, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_usrcu-soak"))
        .args(args)
        .output()
        .expect("cannot run usrcu-soak");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = format!(
        "usrcu-soak {}\n--- stdout\n{stdout}--- stderr\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, stdout, text)
}

#[test]
fn sixty_reloads_under_calling_readers_unmap_run_every_callback_and_do_not_grow() {
    let (out, stdout, text) = soak(&[
        "--cycles",
        "60",
        "--warmup",
        "20",
        "--report-every",
        "20",
        "--max-rss-growth-kib",
        "4096",
    ]);
    assert!(
        out.status.success() && stdout.lines().last() == Some("usrcu-soak: SUCCESS"),
        "soak failed:\n{text}"
    );
    assert!(stdout.contains("unloads_unmapped=180"), "{text}");
}

fn broken_flavor_fails(broken: &str, expected: &str) {
    let (out, stdout, text) = soak(&[
        "--cycles",
        "30",
        "--warmup",
        "10",
        "--report-every",
        "10",
        "--max-rss-growth-kib",
        "4096",
        "--broken",
        broken,
    ]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("usrcu-soak: FAILURE")),
        "{text}"
    );
    assert!(stdout.contains(expected), "expected {expected:?}:\n{text}");
}

#[test]
fn unload_without_auto_barrier_is_reported_as_failure() {
    broken_flavor_fails("no-auto-barrier", "not unmapped");
}

#[test]
fn memory_leaked_per_cycle_is_reported_as_failure() {
    broken_flavor_fails("leak-memory", "resident memory grew");
}

#[test]
fn mapping_leaked_per_cycle_is_reported_as_failure() {
    broken_flavor_fails("leak-mapping", "/proc/self/maps grew");
}
