//! `plugin-host` as a newcomer types it (README, docs/plugins.md): help on
//! stdout with exit 0; a bad command line named on stderr with exit 2 and
//! the usage, never a bare usage or a panic; a stdout closed early (`| head`)
//! ends the run without a panic.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};

fn host(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plugin-host"))
        .args(args)
        .output()
        .expect("run plugin-host")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_prints_the_usage_on_stdout_and_exits_0() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["help"],
        &["demo", "--help"],
        &["watch", "--help"],
    ] {
        let o = host(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("usage: plugin-host"), "{args:?}: {out}");
        assert!(out.contains("watch <plugin crate dir>"), "{args:?}: {out}");
    }
}

#[test]
fn bad_command_lines_are_named_on_stderr_and_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["bogus"], "unknown argument `bogus`"),
        (&["demo", "--frobnicate"], "unknown argument `--frobnicate`"),
        (&["demo", "--cycles", "abc"], "--cycles abc: not a count"),
        (&["demo", "--threads", "-1"], "--threads -1: not a count"),
        (&["demo", "--cycles"], "--cycles needs a value"),
        (&["watch"], "watch needs the plugin crate's directory"),
        (&["watch", "/nonexistent-usrcu-crate"], "/nonexistent-usrcu-crate"),
        (&["watch", ".", "--threads", "x"], "--threads x: not a count"),
    ];
    for (args, says) in cases {
        let o = host(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: expected {says:?} in {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn watch_on_a_directory_without_cargo_toml_says_so_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let o = host(&["watch", dir.path().to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("is not a cargo crate (no Cargo.toml)"), "{err}");
}

#[test]
fn demo_with_stdout_closed_early_ends_without_a_panic() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_plugin-host"))
        .args(["demo", "--cycles", "1", "--threads", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run plugin-host");
    // Close the read end before the demo prints its table: every write to
    // stdout then fails with EPIPE, as under `plugin-host demo | head -1`.
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    // Ended by SIGPIPE like other tools, or finished; never exit 101.
    assert!(
        o.status.signal() == Some(libc::SIGPIPE) || o.status.success(),
        "{:?}: {err}",
        o.status
    );
}
