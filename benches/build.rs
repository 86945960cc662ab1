//! Builds the liburcu shim (`csrc/urcu_shim.c`): liburcu's memb flavor, with
//! its inline (LGPL) read side, looped inside C so that one FFI call covers
//! many read sections. Fails with a clear message if liburcu is missing.

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

    let include = std::env::var("URCU_INCLUDE_DIR")
        .ok()
        .map(PathBuf::from)
        .or_else(|| find(INCLUDE_DIRS, "urcu/urcu-memb.h"));
    let lib = std::env::var("URCU_LIB_DIR")
        .ok()
        .map(PathBuf::from)
        .or_else(|| find(LIB_DIRS, "liburcu-memb.so").or_else(|| find(LIB_DIRS, "liburcu-memb.a")));
    let (Some(include), Some(lib)) = (include, lib) else {
        panic!(
            "\n\nusrcu-benches: liburcu (the memb flavor) was not found.\n\
             The benches compare usrcu against liburcu and need its headers and libraries:\n\
             \n    apt-get install -y liburcu-dev\n\n\
             (or set URCU_INCLUDE_DIR to the folder holding urcu/urcu-memb.h and\n\
             URCU_LIB_DIR to the folder holding liburcu-memb.so)\n\n"
        );
    };

    cc::Build::new()
        .file("csrc/urcu_shim.c")
        .include(&include)
        .opt_level(2)
        // The bench executable links liburcu at start-up, so its TLS reader
        // record can be reached the way liburcu's own users reach it: one
        // %fs-relative access, no __tls_get_addr call per read section.
        .flag("-ftls-model=initial-exec")
        .warnings(true)
        .compile("usrcu_urcu_shim");

    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=urcu-memb");
    println!("cargo:rustc-link-lib=dylib=urcu-common");
    println!("cargo:rustc-link-lib=dylib=pthread");
}
