//! Builds the liburcu shim (`csrc/urcu_shim.c`): liburcu's memb flavor, with
//! its inline (LGPL) read side, looped inside C so that one FFI call covers
//! many read sections.
//!
//! liburcu is a peer of the benches, not a dependency of the workspace: when
//! its headers or libraries are not found, nothing is compiled or linked,
//! the cfg `usrcu_have_liburcu` stays unset, and each liburcu bench is
//! skipped at run time with a one-line note naming the package to install.
//! `cargo build` and `cargo test` work on a machine without it.

use std::path::{Path, PathBuf};

/// Where Debian and other distributions put liburcu's headers and libraries.
const INCLUDE_DIRS: &[&str] = &[
    "/usr/include/x86_64-linux-gnu",
    "/usr/include/aarch64-linux-gnu",
    "/usr/include",
    "/usr/local/include",
];
const LIB_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
];

fn find(dirs: &[&str], rel: &str) -> Option<PathBuf> {
    dirs.iter()
        .map(Path::new)
        .find(|d| d.join(rel).exists())
        .map(Path::to_path_buf)
}

fn main() {
    println!("cargo:rerun-if-changed=csrc/urcu_shim.c");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=URCU_INCLUDE_DIR");
    println!("cargo:rerun-if-env-changed=URCU_LIB_DIR");

    println!("cargo::rustc-check-cfg=cfg(usrcu_have_liburcu)");

    // An explicit URCU_INCLUDE_DIR / URCU_LIB_DIR replaces the default
    // search, and must itself hold the files (pointing it at an empty
    // folder is how CI proves the build without liburcu).
    let search = |var: &str, dirs: &[&str], files: &[&str]| -> Option<PathBuf> {
        match std::env::var_os(var) {
            Some(d) => {
                let d = PathBuf::from(d);
                files.iter().any(|f| d.join(f).exists()).then_some(d)
            }
            None => files.iter().find_map(|f| find(dirs, f)),
        }
    };
    let include = search("URCU_INCLUDE_DIR", INCLUDE_DIRS, &["urcu/urcu-memb.h"]);
    let lib = search("URCU_LIB_DIR", LIB_DIRS, &["liburcu-memb.so", "liburcu-memb.a"]);
    let (Some(include), Some(lib)) = (include, lib) else {
        // Run again once liburcu appears (cargo scans these folders for
        // changes; an install adds files to them).
        for d in INCLUDE_DIRS.iter().chain(LIB_DIRS) {
            if Path::new(d).is_dir() {
                println!("cargo:rerun-if-changed={d}");
            }
        }
        println!(
            "cargo:warning=liburcu (memb flavor) not found: the liburcu peer benches will be skipped \
             (apt-get install -y liburcu-dev, or set URCU_INCLUDE_DIR and URCU_LIB_DIR)"
        );
        return;
    };

    cc::Build::new()
        .file("csrc/urcu_shim.c")
        .include(&include)
        .opt_level(2)
        // The bench executable links liburcu at start-up, so its TLS reader
        // record can be reached the way liburcu's own users reach it: one
        // %fs-relative access, no __tls_get_addr call per read section.
        .flag("-ftls-model=initial-exec")
        // Loops and functions on 64-byte boundaries: where the linker
        // happens to place the shim otherwise decides whether liburcu's
        // read loop crosses a 32-byte fetch boundary, which moved its speed
        // between 1.4 and 2.0 ns from one bench binary to the next.
        .flag("-falign-functions=64")
        .flag("-falign-loops=64")
        .warnings(true)
        .compile("usrcu_urcu_shim");

    println!("cargo:rerun-if-changed={}", include.join("urcu/urcu-memb.h").display());
    println!("cargo:rustc-cfg=usrcu_have_liburcu");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=urcu-memb");
    println!("cargo:rustc-link-lib=dylib=urcu-common");
    println!("cargo:rustc-link-lib=dylib=pthread");
}
