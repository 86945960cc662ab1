//! Running one test of this binary in a child process, for the tests whose
//! scenario may hang or kill the process (`redteam2_*`, `redteam3_child.rs`).

/// Run the test `entry` of this binary in a child process with `child_env`
/// set (ignored tests included); it must exit 0 and print `marker`. A child
/// that hangs dies by the alarm [`in_child`] set.
pub fn run_entry(child_env: &str, entry: &str, marker: &str) {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", entry, "--nocapture", "--test-threads=1", "--include-ignored"])
        .env(child_env, "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child {entry} failed ({:?}; a SIGALRM death is a hang):\n{text}\n{err}",
        out.status
    );
    assert!(text.contains(marker), "{text}\n{err}");
}

/// Is this the child run of [`run_entry`] (`child_env` set)? If so, and
/// `alarm_secs` is given, a hang from here on dies by SIGALRM.
pub fn in_child(child_env: &str, alarm_secs: Option<u32>) -> bool {
    if std::env::var_os(child_env).is_none() {
        return false;
    }
    if let Some(secs) = alarm_secs {
        // SAFETY: alarm has no preconditions.
        unsafe { libc::alarm(secs) };
    }
    true
}
