//! Red team 13: `plugin-host watch` on the plugin of `docs/plugins.md`,
//! written the way a newcomer would (the page's `Cargo.toml` lines and
//! `src/lib.rs`), then edited in ways the page does not forbid.
//!
//! The page promises (docs/plugins.md, "3. Hot reload"): "`plugin-host
//! watch` ... builds the crate, loads it ... Change `FACTOR` to `3` and
//! save: one line reports the reload (the new copy's version, ...)", and
//! README.md: "rebuilds and reloads it each time you save, keeping the old
//! copy when the build fails".
//!
//! `watch` reads the crate's `cdylib` name once, at start
//! (`cdylib_name`, module-loader/src/bin/plugin-host/watch.rs), and reloads
//! that file after every build. An edit of `Cargo.toml` that renames the
//! package, or that drops `cdylib` from `crate-type`, builds fine and
//! leaves the old `.so` in the target directory: `watch` reloads that
//! stale file and reports "now serving version 2" for a source that says
//! 3, instead of the new copy or an error.
//!
//! `plugin-host demo --plugin PATH` with a plugin other than the example
//! one (the tutorial's) spins forever, silently, waiting for a call that
//! its readers can never make.
//!
//! The test crate does not depend on the `plugin-host` binary, so each
//! test builds it with cargo (debug, in the workspace's target directory);
//! plugin builds go to the fixtures' `target/plugins`, with the example
//! plugin's lock file (no index resolution). Each step waits for the line
//! that proves it; the bounds only turn a hang into a failure.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use usrcu_module_loader::plugin_build::workspace_target_dir;

/// A generous bound on one step (a cold build of the plugin included).
const STEP: Duration = Duration::from_secs(600);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// The fenced block after `<!-- snippet: NAME -->` in docs/plugins.md.
fn snippet(name: &str) -> String {
    let page = std::fs::read_to_string(repo().join("docs/plugins.md")).unwrap();
    let marker = format!("<!-- snippet: {name} -->");
    let at = page.find(&marker).unwrap_or_else(|| panic!("no snippet {name}"));
    let mut lines = page[at + marker.len()..].lines().skip_while(|l| !l.starts_with("```"));
    lines.next().expect("an opening fence");
    let body: Vec<&str> = lines.take_while(|l| !l.starts_with("```")).collect();
    body.join("\n") + "\n"
}

/// The page's plugin, in a fresh directory: `cargo new`'s manifest plus
/// the page's lines (the repository's path for `../usrcu`), its own
/// workspace, the example plugin's lock file, and the page's `src/lib.rs`.
fn tutorial_crate(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("usrcu-rt13-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    // `cargo new`'s manifest; the package name carries `tag`, so that
    // tests running at once build distinct files in the shared target dir.
    let mut toml = format!(
        "[package]\nname = \"hello-plugin-{tag}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n"
    );
    toml += &snippet("plugin/Cargo.toml").replace("../usrcu", &repo().display().to_string());
    toml += "\n[workspace]\n";
    std::fs::write(dir.join("Cargo.toml"), toml).unwrap();
    std::fs::copy(
        repo().join("module-loader/demo-plugin/Cargo.lock"),
        dir.join("Cargo.lock"),
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), snippet("plugin/src/lib.rs")).unwrap();
    dir
}

/// Replace `from` by `to` in `path` (which must contain it), in one write.
fn edit(path: &Path, from: &str, to: &str) {
    let s = std::fs::read_to_string(path).unwrap();
    assert!(s.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, s.replacen(from, to, 1)).unwrap();
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

struct Host {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Host {
    fn watch(krate: &Path) -> Host {
        let mut child = Command::new(plugin_host())
            .arg("watch")
            .arg(krate)
            .arg("--target-dir")
            .arg(usrcu_tests::plugins_target_dir())
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
        thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
        });
        Host {
            child,
            lines,
            seen: Vec::new(),
        }
    }

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

/// Start `watch` on the tutorial crate, make `manifest_edit` to its
/// `Cargo.toml` and the page's `FACTOR` edit (2 to 3) in `src/lib.rs`, and
/// return the line `watch` printed about it: a reload, a failed build or a
/// failed load.
fn edit_manifest_and_factor(tag: &str, manifest_edit: (&str, &str)) -> (String, Vec<String>) {
    let krate = tutorial_crate(tag);
    let mut host = Host::watch(&krate);
    host.wait_for("'watching ... version 2'", |l| {
        l.starts_with("plugin-host: watching") && l.contains("version 2,")
    });
    edit(&krate.join("Cargo.toml"), manifest_edit.0, manifest_edit.1);
    edit(
        &krate.join("src/lib.rs"),
        "const FACTOR: u64 = 2;",
        "const FACTOR: u64 = 3;",
    );
    let line = host.wait_for("about the edit", |l| {
        l.starts_with("plugin-host: reload")
            || l.starts_with("plugin-host: build failed")
            || l.starts_with("plugin-host: load failed")
    });
    let seen = host.seen.clone();
    drop(host);
    let _ = std::fs::remove_dir_all(&krate);
    (line, seen)
}

/// Renaming the package (its cdylib becomes `libhello_plugin_rename_two.so`)
/// together with the page's `FACTOR` edit: the build succeeds, and watch
/// must serve the new code (or say why not), never the old file as if new.
#[test]
fn watch_serves_the_new_build_after_the_package_is_renamed() {
    let (line, seen) = edit_manifest_and_factor(
        "rename",
        ("name = \"hello-plugin-rename\"", "name = \"hello-plugin-rename-two\""),
    );
    assert!(
        line.contains("now serving version 3") || line.contains("failed"),
        "watch reloaded a stale artifact (the source says FACTOR = 3): {line}\nall output:\n{}",
        seen.join("\n")
    );
}

/// Dropping `cdylib` from `crate-type` (the crate still builds, as an
/// rlib) together with the `FACTOR` edit: there is no new plugin to load,
/// so watch must say so and keep the old copy, not reload the old file as
/// a new version.
#[test]
fn watch_does_not_reload_a_stale_file_when_the_crate_is_no_longer_a_cdylib() {
    let (line, seen) = edit_manifest_and_factor("rlib", ("crate-type = [\"cdylib\"]", "crate-type = [\"rlib\"]"));
    assert!(
        !line.starts_with("plugin-host: reload"),
        "watch reloaded a stale artifact of a crate that is no longer a cdylib: {line}\nall output:\n{}",
        seen.join("\n")
    );
}

/// `plugin-host demo --plugin PATH` (its usage: "plugin-host [demo]
/// [--cycles N] [--threads T] [--plugin PATH]"; the binary's docs: "With no
/// `--plugin`, it builds the example plugin", and `install_hook`: "A plugin
/// without one (given with `--plugin`) runs without it") given the
/// tutorial's plugin, which has no `demo_compute`: the demo must end (run,
/// or refuse the plugin with a message), not wait forever. It waits for a
/// first served call before each reload (`while stats.served == before`),
/// and readers that cannot resolve `demo_compute` never serve one: the host
/// spins silently with `--cycles 1`. The bound only turns the hang into a
/// failure.
#[test]
fn demo_with_another_plugin_ends() {
    let krate = tutorial_crate("demo");
    let so = usrcu_module_loader::plugin_build::PluginBuild::new(&krate)
        .target_dir(usrcu_tests::plugins_target_dir())
        .build_artifact("hello_plugin_demo")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(plugin_host())
        .args(["demo", "--cycles", "1", "--plugin"])
        .arg(&so)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start plugin-host demo");
    let (tx, done) = mpsc::channel();
    let mut stderr = child.stderr.take().unwrap();
    thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    // stderr closes when the host exits; 60 s is far more than one cycle.
    let ended = done.recv_timeout(Duration::from_secs(60));
    let _ = child.kill();
    let status = child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&krate);
    match ended {
        Ok(err) => assert!(
            status.success() || !err.trim().is_empty(),
            "plugin-host demo failed without a message: {status}"
        ),
        Err(_) => panic!(
            "plugin-host demo --cycles 1 --plugin {} still running after 60 s (a manual run prints nothing while it spins)",
            so.display()
        ),
    }
}

/// The page: "a panic in `init`, `exit` or any interface function is caught
/// at the boundary"; watch's module docs
/// (module-loader/src/bin/plugin-host/watch.rs:17): "Each reload prints one
/// line: the new copy's version, and what the old copy's unload did
/// (barriers issued/skipped, callbacks drained, probes removed, hook slots
/// cleared, unmapped or Zombie with its cause, time)". A reload whose old
/// copy's `exit` panics comes back as `ReloadError::Unload` holding
/// `UnloadError::HookFailed`, whose report says the old copy was unloaded
/// and unmapped; watch prints "#N is live, but the old copy did not unload:
/// ... unloaded; unmapped": no version, no unload figures, a claim its own
/// error text contradicts, and the report is left out of the session's
/// table (unloads and "objects verified unmapped" undercount).
#[test]
fn watch_reports_a_reload_whose_old_exit_panicked() {
    let krate = tutorial_crate("exitpanic");
    let lib = krate.join("src/lib.rs");
    let mut host = Host::watch(&krate);
    host.wait_for("'watching ... version 2'", |l| {
        l.starts_with("plugin-host: watching") && l.contains("version 2,")
    });
    // A copy whose exit panics...
    edit(&lib, "fn exit() {}", "fn exit() { panic!(\"exit refuses\") }");
    edit(&lib, "const FACTOR: u64 = 2;", "const FACTOR: u64 = 3;");
    let line = host.wait_for("'reload 1'", |l| l.starts_with("plugin-host: reload 1:"));
    assert!(line.contains("now serving version 3"), "{line}");
    // ... replaced by the next save.
    edit(&lib, "const FACTOR: u64 = 3;", "const FACTOR: u64 = 4;");
    let line = host.wait_for("about the second reload", |l| {
        l.starts_with("plugin-host: reload 2:") || l.contains("did not unload") || l.contains("failed")
    });
    let seen = host.seen.join("\n");
    drop(host);
    let _ = std::fs::remove_dir_all(&krate);
    assert!(
        line.starts_with("plugin-host: reload 2:")
            && line.contains("now serving version 4")
            && line.contains("unmapped"),
        "the reload line: {line}\nall output:\n{seen}"
    );
}

/// docs/plugins.md, "3. Hot reload": "Ctrl-C unloads everything and
/// prints the session's table." A newcomer's plugin with a bug that makes
/// `compute` never return (a deadlock, an endless loop: here a sleep loop)
/// leaves watch's reader threads inside the plugin; Ctrl-C then ends the
/// event loop and joins the readers, which never return: nothing is
/// printed, no unload is tried (it would report `CallsInFlight`), and
/// every further Ctrl-C is swallowed by the handler; only SIGKILL or
/// SIGTERM ends the host. The 60 s bound only turns the hang into a
/// failure.
#[test]
fn watch_stops_on_ctrl_c_while_a_plugin_call_never_returns() {
    let krate = tutorial_crate("stuck");
    edit(
        &krate.join("src/lib.rs"),
        "fn compute(x: u64) -> u64 { x * FACTOR }",
        "fn compute(x: u64) -> u64 {\n        loop {\n            std::thread::sleep(std::time::Duration::from_secs(1));\n            std::hint::black_box(x * FACTOR);\n        }\n    }",
    );
    let mut host = Host::watch(&krate);
    host.wait_for("'watching'", |l| l.starts_with("plugin-host: watching"));
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(host.child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let mut stopped = false;
    while let Ok(l) = host.lines.recv_timeout(Duration::from_secs(60)) {
        host.seen.push(l.clone());
        if l.starts_with("plugin-host: stopping") {
            stopped = true;
            break;
        }
    }
    let seen = host.seen.join("\n");
    drop(host);
    let _ = std::fs::remove_dir_all(&krate);
    assert!(stopped, "no 'stopping' line within 60 s of Ctrl-C; all output:\n{seen}");
}

/// The crate directory deleted and made again (a `git checkout` of another
/// branch and back, an editor's save-by-rename of the whole tree): the old
/// watch saw the deletion, and nothing of the new directory. `watch`
/// checks every second whether what it watches is a new directory, and
/// watches that; the next save reloads.
#[test]
fn watch_follows_a_crate_directory_made_again() {
    let krate = tutorial_crate("remade");
    let mut host = Host::watch(&krate);
    host.wait_for("'watching ... version 2'", |l| {
        l.starts_with("plugin-host: watching") && l.contains("version 2,")
    });
    let keep = std::env::temp_dir().join(format!("usrcu-rt13-{}-remade-keep", std::process::id()));
    let _ = std::fs::remove_dir_all(&keep);
    std::fs::create_dir_all(keep.join("src")).unwrap();
    for f in ["Cargo.toml", "Cargo.lock", "src/lib.rs"] {
        std::fs::copy(krate.join(f), keep.join(f)).unwrap();
    }
    std::fs::remove_dir_all(&krate).unwrap();
    host.wait_for("the failed build of the deleted crate", |l| {
        l.starts_with("plugin-host: build failed")
    });
    std::fs::create_dir_all(krate.join("src")).unwrap();
    for f in ["Cargo.toml", "Cargo.lock", "src/lib.rs"] {
        std::fs::copy(keep.join(f), krate.join(f)).unwrap();
    }
    // The sources differ from the deleted crate's (none): one reload of
    // the same version, and the line that says the directory is watched
    // again, in either order (the rebuild may start from the parent's
    // event before the 1 s tick sees the directory back).
    let mut back = false;
    let mut reloaded = false;
    while !(back && reloaded) {
        let l = host.wait_for("'watching it again' and the reload of the remade crate", |l| {
            l.contains("watching it again") || l.starts_with("plugin-host: reload")
        });
        back |= l.contains("watching it again");
        reloaded |= l.starts_with("plugin-host: reload");
    }
    edit(
        &krate.join("src/lib.rs"),
        "const FACTOR: u64 = 2;",
        "const FACTOR: u64 = 3;",
    );
    let line = host.wait_for("the reload of the edit", |l| {
        l.starts_with("plugin-host: reload") || l.starts_with("plugin-host: build failed")
    });
    let seen = host.seen.join("\n");
    drop(host);
    let _ = std::fs::remove_dir_all(&krate);
    let _ = std::fs::remove_dir_all(&keep);
    assert!(line.contains("now serving version 3"), "{line}\nall output:\n{seen}");
}
