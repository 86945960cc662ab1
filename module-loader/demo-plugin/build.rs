//! Keep linkme's section start/stop symbols even under section GC.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nostart-stop-gc");
    println!("cargo:rerun-if-changed=build.rs");
}
