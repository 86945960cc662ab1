//! Running one test of this test binary again, alone, in a child process:
//! the one harness of the workspace's tests, for scenarios that may hang or
//! kill the process (a defense switched off, a fork, a signal, an alarm).
//!
//! Used by `srcu/tests/*.rs` (`#[path = "common/child.rs"] mod child;`)
//! and, through the same file, by the `usrcu_tests` crate
//! (`usrcu_tests::{Child, Ran, in_child}`) for `tests/tests/*.rs`.
//!
//! The parent side builds a [`Child`] and runs it; the child side is the
//! same test, which asks [`in_child`] whether it is the child:
//!
//! ```ignore
//! const CHILD_ENV: &str = "MY_TEST_CHILD";
//!
//! #[test]
//! fn the_host_survives() {
//!     if !in_child(CHILD_ENV, Some(60)) {
//!         // The parent: run this test again in a child, which must pass
//!         // and print the marker.
//!         Child::new("the_host_survives").env(CHILD_ENV, "1").must_pass("SURVIVED");
//!         return;
//!     }
//!     // The child: the dangerous part, under a 60 s alarm.
//!     println!("SURVIVED");
//! }
//! ```
//!
//! Every child runs `<test> --exact --nocapture --test-threads=1
//! --include-ignored` (an ignored test runs in the child too) with
//! [`CHILD_ENV`] set to `1` besides the variables given, and its output is
//! captured. [`Child::must_pass`] requires that the child ran the test
//! (`running 1 test`), exited 0 and printed a marker;
//! [`Child::must_die_of`] that it ran the test and died of one of the given
//! signals (a negative twin: a defense switched off must crash the host).
//! Anything else is read from the [`Ran`] that [`Child::run`] returns.
#![allow(dead_code)] // each test binary uses a part of it

use std::ffi::{OsStr, OsString};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Set to `1` in every child, besides the variables given with
/// [`Child::env`]: `in_child(CHILD_ENV, None)` is true in any child.
pub const CHILD_ENV: &str = "USRCU_TEST_CHILD";

/// One test of the running test binary, to be run again in a child process.
#[derive(Debug)]
#[must_use = "a Child does nothing until it is run"]
pub struct Child {
    test: String,
    env: Vec<(OsString, Option<OsString>)>,
    timeout: Option<Duration>,
}

/// How a [`Child`] ended.
#[derive(Debug)]
pub struct Ran {
    /// The test that was run.
    pub test: String,
    /// Its exit status.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// Whether it was killed for running past [`Child::timeout`].
    pub timed_out: bool,
}

impl Child {
    /// The test `test` (its name, matched exactly) of this test binary.
    pub fn new(test: &str) -> Child {
        Child {
            test: test.to_owned(),
            env: Vec::new(),
            timeout: None,
        }
    }

    /// Set `key` to `value` in the child (the child's marker variable, a
    /// switch of the library under test, ...).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Child {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Remove `key` from the child's environment.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Child {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Kill the child (`SIGKILL`) if it still runs after `limit`: a hang
    /// then fails the test instead of stalling it ([`Ran::timed_out`]).
    /// Without it the child may run as long as it likes (a child that may
    /// hang usually arms an alarm itself, see [`in_child`]).
    pub fn timeout(mut self, limit: Duration) -> Child {
        self.timeout = Some(limit);
        self
    }

    /// Run the child and wait for it.
    pub fn run(self) -> Ran {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut cmd = Command::new(exe);
        cmd.args([
            self.test.as_str(),
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let Some(limit) = self.timeout else {
            // No thread of ours: a test may count this process's mappings.
            let out = cmd.output().expect("cannot re-run the test binary");
            return Ran {
                test: self.test,
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                timed_out: false,
            };
        };
        // With a timeout the output goes to files, and this thread polls
        // the child: still no thread of ours, and `Child::kill` never
        // signals a reaped child.
        let (out_path, err_path) = (output_file("stdout"), output_file("stderr"));
        let create = |p: &std::path::Path| std::fs::File::create(p).expect("the child's output file");
        cmd.stdout(create(&out_path)).stderr(create(&err_path));
        let mut child = cmd.spawn().expect("cannot re-run the test binary");
        let deadline = Instant::now() + limit;
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for the child") {
                break status;
            }
            if Instant::now() >= deadline {
                timed_out = true;
                let _ = child.kill(); // SIGKILL
                break child.wait().expect("wait for the child");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let read = |p: &std::path::Path| {
            let text = String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
            let _ = std::fs::remove_file(p);
            text
        };
        Ran {
            test: self.test,
            status,
            stdout: read(&out_path),
            stderr: read(&err_path),
            timed_out,
        }
    }

    /// Run the child; it must run the test, exit 0 and print `marker`
    /// (`""`: any output). Fails naming how it ended, with its output.
    pub fn must_pass(self, marker: &str) -> Ran {
        let ran = self.run();
        ran.assert_passed(marker, "the child failed");
        ran
    }

    /// Run the child; it must run the test and die of one of `signals`.
    /// Fails naming how it ended, with its output.
    pub fn must_die_of(self, signals: &[i32]) -> Ran {
        let ran = self.run();
        ran.assert_died_of(signals, "the child was expected to die of a signal");
        ran
    }
}

impl Ran {
    /// Its standard output, then its standard error.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// The signal that ended it, if one did.
    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }

    /// Did it run the test (the harness printed `running 1 test`)? A name
    /// that matches no test, or an ignored test run without
    /// `--include-ignored`, runs nothing and exits 0.
    pub fn ran(&self) -> bool {
        self.stdout.contains("running 1 test")
    }

    /// How it ended and what it printed, for a failure message.
    pub fn describe(&self) -> String {
        format!(
            "child {} ended with {:?} (signal {:?}{}; SIGALRM is a hang)\n--- stdout\n{}\n--- stderr\n{}",
            self.test,
            self.status,
            self.signal(),
            if self.timed_out {
                ", killed after its timeout"
            } else {
                ""
            },
            self.stdout,
            self.stderr
        )
    }

    /// Require that it ran the test, exited 0 and printed `marker` (on
    /// stdout or stderr; `""`: anything); else fail with `what` and
    /// [`Ran::describe`].
    pub fn assert_passed(&self, marker: &str, what: &str) {
        assert!(
            self.ran(),
            "{what}: the child did not run the test\n{}",
            self.describe()
        );
        assert!(
            self.status.success() && (self.stdout.contains(marker) || self.stderr.contains(marker)),
            "{what} (expected success and {marker:?})\n{}",
            self.describe()
        );
    }

    /// Require that it ran the test and died of one of `signals`; else
    /// fail with `what` and [`Ran::describe`].
    pub fn assert_died_of(&self, signals: &[i32], what: &str) {
        assert!(
            self.ran(),
            "{what}: the child did not run the test\n{}",
            self.describe()
        );
        assert!(
            self.signal().is_some_and(|s| signals.contains(&s)),
            "{what} (expected one of the signals {signals:?})\n{}",
            self.describe()
        );
    }
}

/// A fresh path in the temporary directory for a child's `stream`.
fn output_file(stream: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    // Relaxed: only makes the names unique.
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("usrcu-test-child-{}-{n}.{stream}", std::process::id()))
}

/// Is this the child run by a [`Child`] with `child_env` set? If so, and
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
