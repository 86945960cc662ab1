//! `plugin-host watch` end to end, on a temporary copy of the example
//! plugin crate: an edit is served after a reload; a compile error keeps
//! the old copy serving and shows the compiler's error; the fix reloads;
//! SIGINT unloads everything, and every copy ends unmapped.
//!
//! The host's stdout is read line by line; every step waits for the line
//! that proves it (the bounds only turn a hang into a failure).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use common::{copy_demo_crate, edit, plugins_target_dir};

/// A generous bound on one step (a cold plugin build included).
const STEP: Duration = Duration::from_secs(600);

struct Host {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Host {
    /// Wait for a line that satisfies `want`; return it.
    fn wait_for(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if want(&l) {
                        return l;
                    }
                }
                Err(_) => panic!("no line {what} in plugin-host's output:\n{}", self.seen.join("\n")),
            }
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_reloads_on_edit_keeps_old_copy_on_compile_error_and_unloads_all_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    copy_demo_crate(dir.path(), "usrcu-watch-test-plugin");
    let lib = dir.path().join("src/lib.rs");

    let mut child = Command::new(env!("CARGO_BIN_EXE_plugin-host"))
        .arg("watch")
        .arg(dir.path())
        .arg("--target-dir")
        .arg(plugins_target_dir())
        .args(["--threads", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start plugin-host watch");
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    // Drain stderr so the host never blocks on a full pipe.
    let mut stderr = child.stderr.take().unwrap();
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut host = Host {
        child,
        lines,
        seen: Vec::new(),
    };

    host.wait_for("'watching ... version 1'", |l| {
        l.starts_with("plugin-host: watching") && l.contains("version 1,")
    });

    // 1. Edit a constant: the new value is served.
    edit(&lib, "const VERSION: u64 = 1;", "const VERSION: u64 = 2;");
    let line = host.wait_for("'reload 1'", |l| l.starts_with("plugin-host: reload 1:"));
    assert!(line.contains("now serving version 2"), "{line}");
    assert!(line.contains("unmapped"), "{line}");
    assert!(line.contains("barriers 1 issued / 2 skipped"), "{line}");

    // 2. A compile error: the old copy keeps serving, the error is shown.
    edit(&lib, "const VERSION: u64 = 2;", "const VERSION: u64 = 2 +;");
    host.wait_for("'build failed'", |l| {
        l.starts_with("plugin-host: build failed;") && l.contains("stays live")
    });
    host.wait_for("the compiler's error", |l| l.contains("error: expected expression"));
    host.wait_for("'still serving version 2'", |l| {
        l == "plugin-host: still serving version 2"
    });

    // 3. The fix reloads.
    edit(&lib, "const VERSION: u64 = 2 +;", "const VERSION: u64 = 3;");
    let line = host.wait_for("'reload 2'", |l| l.starts_with("plugin-host: reload 2:"));
    assert!(line.contains("now serving version 3"), "{line}");
    assert!(line.contains("unmapped"), "{line}");

    // 4. SIGINT: everything is unloaded, the table is printed.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(host.child.id() as libc::pid_t, libc::SIGINT) }, 0);
    host.wait_for("'stopping'", |l| l.starts_with("plugin-host: stopping"));
    let row = |host: &mut Host, name: &str| -> String {
        let l = host.wait_for(&format!("row '{name}'"), |l| l.trim_start().starts_with(name));
        l.trim_start()[name.len()..].trim().to_owned()
    };
    assert_eq!(row(&mut host, "reloads"), "2", "{}", host.seen.join("\n"));
    assert_eq!(row(&mut host, "builds failed (old copy kept)"), "1");
    assert_eq!(row(&mut host, "unloads"), "3");
    assert_eq!(row(&mut host, "objects verified unmapped"), "3 / 3");
    assert_eq!(row(&mut host, "modules still loaded"), "0");
    assert_eq!(row(&mut host, "failures"), "0");
    let status = host.child.wait().unwrap();
    let stderr = err.join().unwrap();
    assert!(
        status.success(),
        "plugin-host exited {status}:\n{}\n{stderr}",
        host.seen.join("\n")
    );
}
