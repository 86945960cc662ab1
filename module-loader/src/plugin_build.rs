//! Building plugin crates with cargo, the way the registry needs them
//! linked: the `plugin-host` demo builds its example plugin with this, and
//! the integration tests their fixtures.
//!
//! A plugin crate links with `-z nostart-stop-gc` through its own build
//! script (`cargo:rustc-cdylib-link-arg`), so that the flag survives any
//! `RUSTFLAGS` of the caller. Concurrent builds into one target directory
//! (several test binaries at once) are serialised by an `flock` on a file in
//! it; cargo finds the work already done for all but the first.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A cargo workspace (or package) of plugins to build.
#[derive(Clone, Debug)]
pub struct PluginBuild {
    manifest_dir: PathBuf,
    target_dir: PathBuf,
    profile: String,
    packages: Vec<String>,
    quiet: bool,
}

/// Why a build failed.
#[derive(Debug)]
pub enum BuildError {
    /// Cargo could not be started, or the lock file not opened.
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// Cargo failed.
    Cargo {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its error output (empty when not captured).
        stderr: String,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Io { what, source } => write!(f, "{what}: {source}"),
            BuildError::Cargo {
                command,
                status,
                stderr,
            } => write!(f, "`{command}` failed ({status}):\n{stderr}"),
        }
    }
}

impl std::error::Error for BuildError {}

/// The cargo that built this crate, else the one the environment names, else `cargo`.
fn cargo() -> OsString {
    std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(OsString::from))
        .unwrap_or_else(|| OsString::from("cargo"))
}

impl PluginBuild {
    /// Build the cargo workspace (or package) at `manifest_dir`, release
    /// profile, into `<manifest_dir>/target` unless told otherwise.
    pub fn new(manifest_dir: impl Into<PathBuf>) -> PluginBuild {
        let manifest_dir = manifest_dir.into();
        PluginBuild {
            target_dir: manifest_dir.join("target"),
            manifest_dir,
            profile: "release".to_owned(),
            packages: Vec::new(),
            quiet: true,
        }
    }

    /// Put the build in `dir` (several plugin workspaces may share one).
    pub fn target_dir(mut self, dir: impl Into<PathBuf>) -> PluginBuild {
        self.target_dir = dir.into();
        self
    }

    /// Use the cargo profile `profile` (`release` by default).
    pub fn profile(mut self, profile: &str) -> PluginBuild {
        self.profile = profile.to_owned();
        self
    }

    /// Build only `package` (may be given several times; default: the whole workspace).
    pub fn package(mut self, package: &str) -> PluginBuild {
        self.packages.push(package.to_owned());
        self
    }

    /// Show cargo's progress on stderr (default: capture it, and show it
    /// only in the error).
    pub fn verbose(mut self, on: bool) -> PluginBuild {
        self.quiet = !on;
        self
    }

    /// The directory cargo puts this profile's artifacts in.
    pub fn artifact_dir(&self) -> PathBuf {
        let dir = match self.profile.as_str() {
            "dev" | "test" => "debug",
            "bench" => "release",
            p => p,
        };
        self.target_dir.join(dir)
    }

    /// Where the `cdylib` of crate `crate_name` (dashes or underscores) lands.
    pub fn artifact(&self, crate_name: &str) -> PathBuf {
        self.artifact_dir().join(format!(
            "{}{}{}",
            std::env::consts::DLL_PREFIX,
            crate_name.replace('-', "_"),
            std::env::consts::DLL_SUFFIX
        ))
    }

    /// Run `cargo build`, holding an exclusive lock on the target directory.
    pub fn build(&self) -> Result<(), BuildError> {
        let io = |what: String| move |source| BuildError::Io { what, source };
        fs::create_dir_all(&self.target_dir).map_err(io(format!("creating {}", self.target_dir.display())))?;
        let lock_path = self.target_dir.join(".usrcu-plugin-build.lock");
        let lock = File::create(&lock_path).map_err(io(format!("opening {}", lock_path.display())))?;
        let _held = FileLock::exclusive(&lock).map_err(io(format!("locking {}", lock_path.display())))?;

        let mut cmd = Command::new(cargo());
        cmd.arg("build")
            .arg("--manifest-path")
            .arg(self.manifest_dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&self.target_dir)
            .arg("--profile")
            .arg(&self.profile);
        if self.packages.is_empty() {
            cmd.arg("--workspace");
        }
        for p in &self.packages {
            cmd.arg("-p").arg(p);
        }
        // The plugin workspace is its own: nothing of an enclosing cargo
        // invocation's target selection applies to it.
        for var in [
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "RUSTC_WORKSPACE_WRAPPER",
        ] {
            cmd.env_remove(var);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(if self.quiet {
            Stdio::piped()
        } else {
            Stdio::inherit()
        });
        let command = format!("{cmd:?}");
        let out = cmd.output().map_err(io(format!("running {command}")))?;
        if !out.status.success() {
            return Err(BuildError::Cargo {
                command,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(())
    }

    /// Build, then return the artifact of `crate_name`.
    pub fn build_artifact(&self, crate_name: &str) -> Result<PathBuf, BuildError> {
        self.build()?;
        Ok(self.artifact(crate_name))
    }
}

/// An `flock(LOCK_EX)` held until drop.
struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    fn exclusive(f: &'a File) -> io::Result<FileLock<'a>> {
        loop {
            // SAFETY: a valid open file descriptor.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(FileLock(f));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // SAFETY: a valid open file descriptor that we locked.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// The directory of the workspace that holds `manifest_dir` (the nearest
/// ancestor whose `Cargo.toml` has a `[workspace]` table), or `manifest_dir`.
pub fn workspace_root(manifest_dir: &Path) -> PathBuf {
    manifest_dir
        .ancestors()
        .find(|d| {
            fs::read_to_string(d.join("Cargo.toml"))
                .map(|s| s.lines().any(|l| l.trim() == "[workspace]"))
                .unwrap_or(false)
        })
        .unwrap_or(manifest_dir)
        .to_owned()
}

/// The target directory of the workspace that holds `manifest_dir`:
/// `CARGO_TARGET_DIR` if set, else `<workspace root>/target`.
pub fn workspace_target_dir(manifest_dir: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root(manifest_dir).join("target"))
}
