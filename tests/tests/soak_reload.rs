//! The reload soak (`usrcu-soak`) in its CI size: load, call and unload the
//! `callbacks`, `dynamic-domain` and `thread-current` fixture plugins 60
//! times under three reader threads that keep calling in (and are retired
//! and replaced every ten cycles). Every cycle must unmap every object and
//! run every callback before its unmap; after 20 warm-up cycles, mappings
//! and pthread keys must not grow, and resident memory not by more than
//! 4 MiB (the measured run of 1000 cycles holds it to 1 MiB: see
//! `docs/reliability.md`).

use std::process::Command;

#[test]
fn sixty_reloads_under_calling_readers_unmap_run_every_callback_and_do_not_grow() {
    let out = Command::new(env!("CARGO_BIN_EXE_usrcu-soak"))
        .args([
            "--cycles",
            "60",
            "--warmup",
            "20",
            "--report-every",
            "20",
            "--max-rss-growth-kib",
            "4096",
        ])
        .output()
        .expect("cannot run usrcu-soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let text = format!(
        "--- stdout\n{stdout}--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && stdout.lines().last() == Some("usrcu-soak: SUCCESS"),
        "soak failed:\n{text}"
    );
    assert!(stdout.contains("unloads_unmapped=180"), "{text}");
}
