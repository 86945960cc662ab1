//! Review 12: `plugin-host demo --plugin <not the demo's plugin>` says so
//! and exits 1 (red team 13's fix), but its message carries two runs of 18
//! spaces mid-sentence (module-loader/src/bin/plugin-host.rs: a string
//! literal broken over lines without `\`, the indentation kept).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use usrcu_module_loader::plugin_build::workspace_target_dir;
use usrcu_tests::fixture_path;

/// The workspace root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `plugin-host`, built with cargo (debug) in the workspace's target dir.
fn plugin_host() -> PathBuf {
    let target = workspace_target_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let st = Command::new(cargo)
        .args([
            "build",
            "-p",
            "usrcu-module-loader",
            "--bin",
            "plugin-host",
            "--manifest-path",
        ])
        .arg(repo().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo");
    assert!(st.success(), "building plugin-host failed");
    target.join("debug/plugin-host")
}

#[test]
fn demo_with_another_plugin_says_so_in_one_clean_message() {
    let so = fixture_path("redteam7-plain");
    // `timeout`: the demo exits at once with this plugin (it spun forever
    // before red team 13's fix).
    let out = Command::new("timeout")
        .arg("60")
        .arg(plugin_host())
        .args(["demo", "--cycles", "1", "--plugin"])
        .arg(&so)
        .stdin(Stdio::null())
        .output()
        .expect("run plugin-host demo");
    let err = String::from_utf8_lossy(&out.stderr);
    println!("status {}; stderr:\n{err}", out.status);
    assert_eq!(out.status.code(), Some(1), "the demo refuses another plugin");
    let line = err
        .lines()
        .find(|l| l.contains("is not a demo plugin"))
        .expect("the refusal is explained");
    assert!(!line.contains("   "), "runs of spaces inside the message: {line:?}");
}
