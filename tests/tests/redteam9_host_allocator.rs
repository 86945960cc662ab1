//! Red team (round 9): a host with a `#[global_allocator]` of its own (as
//! any host using mimalloc or jemalloc has) and a typed interface with a
//! `String` parameter. `docs/abi.md` says "Strings and buffers never change
//! owner: nothing allocated on one side is freed on the other", and the
//! registry's docs say parameters are `PlainData`; `plugin_interface!`
//! accepts `fn append(buf: &Mutex<String>) -> u64`, and the plugin's
//! `push_str` grows the host's allocation with the plugin's own (the
//! system) allocator: `realloc` of a block it never handed out.
//!
//! The host's allocator here is the system one with a 16-byte header of
//! zeros before each block (a stand-in for any allocator that is not
//! glibc's): glibc's `realloc` of such a block aborts ("realloc(): invalid
//! pointer" or "invalid size"). In a child; the parent asserts the child exited cleanly.

use std::alloc::{GlobalAlloc, Layout, System};

use usrcu_module_loader::ModuleLoader;
use usrcu_tests::{fixture_path, killed_by};

include!("../fixtures/redteam9-leaky/src/iface.rs");

/// The system allocator, each block preceded by `max(16, align)` bytes of
/// zeros: a block glibc's `free` did not hand out.
struct Headered;

fn offset(l: Layout) -> usize {
    l.align().max(16)
}

fn outer(l: Layout) -> Layout {
    Layout::from_size_align(l.size() + offset(l), l.align().max(16)).unwrap()
}

// SAFETY: every block is a block of `System` of the outer layout, shifted
// by `offset`; `dealloc` undoes the shift with the same layout.
unsafe impl GlobalAlloc for Headered {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: `outer(l)` has a non-zero size.
        let base = unsafe { System.alloc_zeroed(outer(l)) };
        if base.is_null() {
            return base;
        }
        // SAFETY: `offset(l)` bytes lie before the block, inside `base`'s.
        unsafe { base.add(offset(l)) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `alloc` with this layout.
        unsafe { System.dealloc(p.sub(offset(l)), outer(l)) }
    }
}

#[global_allocator]
static HOST_ALLOCATOR: Headered = Headered;

const CHILD: &str = "RT9_ALLOC_CHILD";

#[test]
#[ignore = "FINDING: a typed interface parameter &Mutex<String> lets the plugin realloc a host allocation with its own allocator: a host with its own #[global_allocator] aborts"]
fn host_string_is_not_reallocated_by_the_plugin() {
    if std::env::var_os(CHILD).is_none() {
        fixture_path("redteam9-leaky");
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "host_string_is_not_reallocated_by_the_plugin",
                "--exact",
                "--nocapture",
                "--test-threads=1",
                "--include-ignored",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("running 1 test"), "the child ran nothing");
        assert!(
            out.status.success(),
            "the child host ended with {:?} (signal {:?}) after lending a String to the plugin\n--- stdout\n{stdout}\n--- stderr\n{}",
            out.status,
            killed_by(out.status),
            String::from_utf8_lossy(&out.stderr),
        );
        return;
    }
    let loader = ModuleLoader::new();
    loader.require_interface::<dyn Leaky>("redteam9-leaky");
    // SAFETY: the fixture is safe Rust and upholds the plugin contract.
    let m = unsafe { loader.load(fixture_path("redteam9-leaky")) }.unwrap();
    let h = loader.interface::<dyn Leaky>("redteam9-leaky");
    let buf = std::sync::Mutex::new(String::from("allocated by the host's global allocator"));
    println!("calling append");
    let n = h.append(&buf).unwrap();
    println!("append returned {n}");
    drop(h);
    // The host frees what the plugin's allocator handed out.
    drop(buf);
    assert!(loader.unload(m).unwrap().unmapped);
}
