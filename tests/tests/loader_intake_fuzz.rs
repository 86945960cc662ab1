//! Intake fuzz: files derived from a real plugin — truncated at random
//! offsets, with bytes flipped in the ELF header and the program headers,
//! patched for another machine, class or byte order, a directory, a FIFO, an
//! empty file, symlinks — each loaded in a child process so that a signal is
//! seen. Every one must end as a typed error or a clean load and unload,
//! with zero signals (nor any other death of the host), while a module
//! loaded before them keeps serving calls. And two races: a symlink swapped
//! between a plugin, a truncated plugin and a directory while another
//! thread loads it; and a writer rewriting the plugin file slowly, in place,
//! while another thread loads it.
//!
//! The children are this test binary run again (`usrcu_tests::Child`),
//! with an environment variable that says what to do. A child loads many
//! files, printing `@@begin N` before and `@@end N <outcome>` after each; the
//! parent reads which one a signal interrupted, records it, and starts a
//! new child after it.

use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use usrcu_module_loader::{LoadError, ModuleLoader};
use usrcu_tests::{fixture_path, Child};

/// How many derived files the first test loads.
const CASES: usize = 520;
/// The seed; `USRCU_INTAKE_FUZZ_SEED=<u64>` picks another (children inherit it).
fn seed() -> u64 {
    std::env::var("USRCU_INTAKE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1a7a_ce00_0009)
}

/// xorshift64*: a seeded, reproducible stream (no dependency needed).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What case `i` is.
#[derive(Debug)]
#[allow(dead_code)] // `region` is read through `Debug`, in failure messages
enum Case {
    /// The plugin as built.
    Intact,
    /// The first `len` bytes.
    Truncated {
        len: usize,
    },
    /// Bytes XORed with non-zero values at these offsets.
    Flipped {
        at: Vec<(usize, u8)>,
        region: &'static str,
    },
    /// `e_machine` set to another machine.
    OtherMachine,
    /// `EI_CLASS` set to 32-bit.
    OtherClass,
    /// `EI_DATA` set to big-endian.
    OtherByteOrder,
    Directory,
    Fifo,
    Empty,
    /// A symlink to the intact plugin.
    SymlinkToPlugin,
    /// A symlink to a truncated plugin.
    SymlinkToTruncated {
        len: usize,
    },
}

fn u16_at(b: &[u8], o: usize) -> usize {
    u16::from_le_bytes([b[o], b[o + 1]]) as usize
}

fn u64_at(b: &[u8], o: usize) -> usize {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize
}

/// The program header table's byte range (64-bit little-endian fixture).
fn phdr_range(plugin: &[u8]) -> (usize, usize) {
    let phoff = u64_at(plugin, 32);
    (phoff, phoff + u16_at(plugin, 54) * u16_at(plugin, 56))
}

/// Case `i`, derived from the seed and `i` alone, so that the parent and
/// every child agree on it.
fn case(i: usize, plugin: &[u8]) -> Case {
    let mut rng = Rng::new(seed() ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let len = plugin.len();
    let (ph_start, ph_end) = phdr_range(plugin);
    let flips = |rng: &mut Rng, lo: usize, hi: usize, n: u64| {
        (0..1 + rng.below(n))
            .map(|_| (lo + rng.below((hi - lo) as u64) as usize, 1 + rng.below(255) as u8))
            .collect::<Vec<_>>()
    };
    match i {
        0..=9 => Case::Intact,
        10 => Case::Truncated { len: 4096 },
        11..=259 => Case::Truncated {
            len: rng.below(len as u64) as usize,
        },
        260..=339 => Case::Flipped {
            at: flips(&mut rng, 0, 64, 3),
            region: "ELF header",
        },
        340..=459 => Case::Flipped {
            at: flips(&mut rng, ph_start, ph_end, 3),
            region: "program headers",
        },
        460..=509 => {
            // One bit of one program header field.
            let at = ph_start + rng.below((ph_end - ph_start) as u64) as usize;
            Case::Flipped {
                at: vec![(at, 1 << rng.below(8))],
                region: "program headers (one bit)",
            }
        }
        510 => Case::OtherMachine,
        511 => Case::OtherClass,
        512 => Case::OtherByteOrder,
        513 => Case::Directory,
        514 => Case::Fifo,
        515 => Case::Empty,
        516 => Case::SymlinkToPlugin,
        _ => Case::SymlinkToTruncated {
            len: rng.below(len as u64) as usize,
        },
    }
}

/// Lay case `c` out at `path` (replacing what was there).
fn materialize(c: &Case, plugin: &[u8], plugin_path: &Path, dir: &Path, path: &Path) {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.is_dir() {
            std::fs::remove_dir(path).unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
    }
    let write = |bytes: &[u8]| std::fs::write(path, bytes).unwrap();
    match c {
        Case::Intact => write(plugin),
        Case::Truncated { len } => write(&plugin[..*len]),
        Case::Flipped { at, .. } => {
            let mut b = plugin.to_vec();
            for &(o, x) in at {
                b[o] ^= x;
            }
            write(&b)
        }
        Case::OtherMachine => {
            let mut b = plugin.to_vec();
            let other: u16 = if u16_at(plugin, 18) == 183 { 62 } else { 183 };
            b[18..20].copy_from_slice(&other.to_le_bytes());
            write(&b)
        }
        Case::OtherClass => {
            let mut b = plugin.to_vec();
            b[4] = 1;
            write(&b)
        }
        Case::OtherByteOrder => {
            let mut b = plugin.to_vec();
            b[5] = 2;
            write(&b)
        }
        Case::Directory => std::fs::create_dir(path).unwrap(),
        Case::Fifo => {
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid C string; mkfifo only creates a node.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        }
        Case::Empty => write(b""),
        Case::SymlinkToPlugin => std::os::unix::fs::symlink(plugin_path, path).unwrap(),
        Case::SymlinkToTruncated { len } => {
            let t = dir.join("symlink-target.so");
            std::fs::write(&t, &plugin[..*len]).unwrap();
            std::os::unix::fs::symlink(&t, path).unwrap();
        }
    }
}

/// The variant name of a load error.
fn variant(e: &LoadError) -> String {
    let d = format!("{e:?}");
    d.split([' ', '{', '(']).next().unwrap_or("?").to_owned()
}

/// Load, and unload if it loaded: "loaded+unloaded", or "error <Variant>",
/// or "loaded, NOT unmapped".
fn load_and_unload(loader: &ModuleLoader, path: &Path) -> String {
    // SAFETY: every file is derived from a fixture that upholds the plugin
    // contract; what the intake check lets through is that plugin or one
    // whose headers changed in fields ld.so ignores.
    match unsafe { loader.load(path) } {
        Ok(m) => match loader.unload(m) {
            Ok(r) if r.unmapped => "loaded+unloaded".to_owned(),
            Ok(r) => format!("loaded, NOT unmapped: {r}"),
            Err(e) => format!("loaded, unload FAILED: {e}"),
        },
        Err(e) => format!("error {}", variant(&e)),
    }
}

fn scratch_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("usrcu-intake-fuzz-{}-{what}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const CHILD_FROM: &str = "USRCU_INTAKE_FUZZ_CHILD_FROM";
const CHILD_DIR: &str = "USRCU_INTAKE_FUZZ_CHILD_DIR";

/// The child: load cases `from..CASES`, reporting each.
fn fuzz_child(from: usize, dir: &Path) {
    let plugin_path = fixture_path("callbacks");
    let plugin = std::fs::read(&plugin_path).unwrap();
    let loader = ModuleLoader::new();
    // A module loaded before the bad files, which must keep serving calls.
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let good = unsafe { loader.load(&plugin_path) }.unwrap();
    // SAFETY: the fixture exports it with this signature.
    let add = unsafe { loader.symbol::<extern "C" fn(u64, u64) -> u64>(good, "fx_add") }.unwrap();
    let path = dir.join("case.so");
    for i in from..CASES {
        let c = case(i, &plugin);
        materialize(&c, &plugin, &plugin_path, dir, &path);
        // On lines of their own: the harness may have printed a partial line.
        println!("\n@@begin {i}");
        let mut outcome = load_and_unload(&loader, &path);
        if add.call(|f| f.call(i as u64, 1)) != Ok(i as u64 + 1) {
            outcome = format!("{outcome}, and the module loaded before it STOPPED serving");
        }
        println!("\n@@end {i} {outcome}");
    }
    assert!(loader.unload(good).unwrap().unmapped);
}

#[test]
fn five_hundred_derived_files_end_as_typed_errors_or_clean_loads_with_zero_signals() {
    if let Some(from) = std::env::var_os(CHILD_FROM) {
        let dir = PathBuf::from(std::env::var_os(CHILD_DIR).unwrap());
        fuzz_child(from.to_str().unwrap().parse().unwrap(), &dir);
        return;
    }
    let plugin = std::fs::read(fixture_path("callbacks")).unwrap();
    let dir = scratch_dir("cases");
    let mut outcomes: BTreeMap<usize, String> = BTreeMap::new();
    let mut deaths: Vec<(usize, String)> = Vec::new();
    let mut from = 0;
    while from < CASES {
        let out = Child::new("five_hundred_derived_files_end_as_typed_errors_or_clean_loads_with_zero_signals")
            .env(CHILD_FROM, from.to_string())
            .env(CHILD_DIR, &dir)
            .run();
        let stdout = &out.stdout;
        let mut last_begun = None;
        for line in stdout.lines() {
            if let Some(n) = line.strip_prefix("@@begin ") {
                last_begun = n.parse::<usize>().ok();
            } else if let Some(rest) = line.strip_prefix("@@end ") {
                let (n, outcome) = rest.split_once(' ').unwrap();
                outcomes.insert(n.parse().unwrap(), outcome.to_owned());
                last_begun = None;
            }
        }
        match (out.signal(), last_begun) {
            (None, None) if out.status.success() => break,
            // The host died inside case `i`: a signal, or ld.so's own
            // fatal exit ("Inconsistency detected by ld.so").
            (sig, Some(i)) => {
                let how = match sig {
                    Some(sig) => format!("SIGNAL {sig}"),
                    None => format!("DIED ({})", out.status),
                };
                deaths.push((i, how.clone()));
                outcomes.insert(i, how);
                from = i + 1;
            }
            _ => panic!("the fuzz child ended outside a case:\n{}", out.describe()),
        }
    }

    let mut histogram: BTreeMap<String, usize> = BTreeMap::new();
    for o in outcomes.values() {
        *histogram.entry(o.clone()).or_default() += 1;
    }
    println!(
        "intake fuzz, {CASES} files from the callbacks fixture, seed {}: {histogram:#?}",
        seed()
    );
    let describe = |i: usize| format!("case {i} ({:?}): {}", case(i, &plugin), outcomes[&i]);
    assert!(
        deaths.is_empty(),
        "the host died: {:#?}",
        deaths.iter().map(|(i, _)| describe(*i)).collect::<Vec<_>>()
    );
    assert_eq!(outcomes.len(), CASES, "every case ended");
    let bad: Vec<String> = outcomes
        .iter()
        .filter(|(_, o)| !(o.as_str() == "loaded+unloaded" || o.starts_with("error ")) || o.contains("STOPPED"))
        .map(|(&i, _)| describe(i))
        .collect();
    assert!(
        bad.is_empty(),
        "neither a typed error nor a clean load+unload: {bad:#?}"
    );
    // Every truncation is refused, and the plugin itself loads.
    for i in 0..CASES {
        match case(i, &plugin) {
            Case::Truncated { .. } | Case::SymlinkToTruncated { .. } => {
                assert!(outcomes[&i].starts_with("error "), "{}", describe(i))
            }
            Case::Intact | Case::SymlinkToPlugin => assert_eq!(outcomes[&i], "loaded+unloaded", "{}", describe(i)),
            Case::Directory | Case::Fifo => {
                assert_eq!(outcomes[&i], "error NotARegularFile", "{}", describe(i))
            }
            Case::OtherMachine | Case::OtherClass | Case::OtherByteOrder => {
                assert_eq!(outcomes[&i], "error ForeignObject", "{}", describe(i))
            }
            _ => {}
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Run `test` in a child with `var` set; assert it exited cleanly (no signal).
fn in_child(test: &str, var: &str) {
    let ran = Child::new(test).env(var, "1").run();
    ran.assert_passed("", "the child died of a signal or failed");
    print!("{}", ran.text());
}

const CHILD_SWAP: &str = "USRCU_INTAKE_FUZZ_CHILD_SWAP";

#[test]
fn a_symlink_swapped_while_loading_never_crashes_the_host() {
    if std::env::var_os(CHILD_SWAP).is_none() {
        return in_child("a_symlink_swapped_while_loading_never_crashes_the_host", CHILD_SWAP);
    }
    let dir = scratch_dir("swap");
    let plugin_path = fixture_path("callbacks");
    let plugin = std::fs::read(&plugin_path).unwrap();
    let truncated = dir.join("truncated.so");
    std::fs::write(&truncated, &plugin[..plugin.len() / 2]).unwrap();
    let a_dir = dir.join("a-directory");
    std::fs::create_dir(&a_dir).unwrap();
    let link = dir.join("plugin.so");
    std::os::unix::fs::symlink(&plugin_path, &link).unwrap();

    let stop = AtomicBool::new(false);
    let swaps = AtomicUsize::new(0);
    let outcomes = std::thread::scope(|s| {
        s.spawn(|| {
            let targets = [plugin_path.as_path(), truncated.as_path(), a_dir.as_path()];
            let tmp = dir.join("plugin.so.tmp");
            let mut k = 0;
            while !stop.load(Ordering::SeqCst) {
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(targets[k % 3], &tmp).unwrap();
                // rename(2) replaces the link atomically.
                std::fs::rename(&tmp, &link).unwrap();
                k += 1;
                swaps.store(k, Ordering::SeqCst);
            }
        });
        let loader = ModuleLoader::new();
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..300 {
            *outcomes.entry(load_and_unload(&loader, &link)).or_default() += 1;
        }
        stop.store(true, Ordering::SeqCst);
        outcomes
    });
    println!(
        "300 loads of a symlink swapped {} times: {outcomes:?}",
        swaps.load(Ordering::SeqCst)
    );
    for o in outcomes.keys() {
        assert!(o == "loaded+unloaded" || o.starts_with("error "), "{o}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

const CHILD_WRITER: &str = "USRCU_INTAKE_FUZZ_CHILD_WRITER";

#[test]
fn a_plugin_rewritten_in_place_while_loading_never_crashes_the_host() {
    if std::env::var_os(CHILD_WRITER).is_none() {
        return in_child(
            "a_plugin_rewritten_in_place_while_loading_never_crashes_the_host",
            CHILD_WRITER,
        );
    }
    let dir = scratch_dir("writer");
    let plugin = std::fs::read(fixture_path("callbacks")).unwrap();
    let path = dir.join("plugin.so");
    std::fs::write(&path, &plugin).unwrap();
    let done = AtomicBool::new(false);
    let outcomes = std::thread::scope(|s| {
        s.spawn(|| {
            use std::io::Write;
            // Rewrite the file in place, as a build that writes its output
            // directly would: truncate, then 16 KiB at a time, slowly.
            for _ in 0..8 {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&path)
                    .unwrap();
                for chunk in plugin.chunks(16 << 10) {
                    f.write_all(chunk).unwrap();
                    std::thread::sleep(Duration::from_micros(300));
                }
            }
            done.store(true, Ordering::SeqCst);
        });
        let loader = ModuleLoader::new();
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        while !done.load(Ordering::SeqCst) {
            *outcomes.entry(load_and_unload(&loader, &path)).or_default() += 1;
        }
        // Once the writer is done, the file is whole and loads.
        assert_eq!(load_and_unload(&loader, &path), "loaded+unloaded");
        outcomes
    });
    println!("loads while the plugin was rewritten 8 times: {outcomes:?}");
    for o in outcomes.keys() {
        assert!(o == "loaded+unloaded" || o.starts_with("error "), "{o}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = scratch_dir("fifo");
    let plugin = std::fs::read(fixture_path("callbacks")).unwrap();
    let p = dir.join("fifo.so");
    materialize(&Case::Fifo, &plugin, Path::new("/"), &dir, &p);
    assert!(std::fs::symlink_metadata(&p).unwrap().file_type().is_fifo());
    // SAFETY: refused before dlopen.
    let err = unsafe { ModuleLoader::new().load(&p) }.unwrap_err();
    assert!(
        matches!(err, LoadError::NotARegularFile { kind: "a FIFO", .. }),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
