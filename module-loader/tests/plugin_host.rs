//! The demo runs end to end: `plugin-host` builds the example plugin,
//! reloads it under reader threads, and reports every object unmapped.

use std::process::Command;

#[test]
fn plugin_host_reloads_the_example_plugin_and_verifies_every_unmap() {
    let out = Command::new(env!("CARGO_BIN_EXE_plugin-host"))
        .args(["demo", "--cycles", "8", "--threads", "2"])
        .output()
        .expect("run plugin-host");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "plugin-host failed:\n{stdout}\n{stderr}");
    let row = |name: &str| -> String {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no '{name}' row in:\n{stdout}"))
            .trim_start()[name.len()..]
            .trim()
            .to_owned()
    };
    assert_eq!(row("reload cycles"), "8");
    // 8 reloads plus the final unload, each with one barrier issued
    // (demo.config) and two skipped (demo.stats, demo.audit).
    assert_eq!(row("objects verified unmapped"), "9 / 9");
    assert_eq!(row("barriers issued"), "9");
    assert_eq!(row("barriers skipped"), "18");
    assert_eq!(row("failures"), "0");
    assert!(row("calls served").parse::<u64>().unwrap() > 0);
    assert!(row("unload latency median").ends_with("ms"));
}
