//! At load, every page of the plugin's code and data is present in the page
//! tables before anything of it can run under Tasks RCU
//! (module-loader/src/resident.rs): a first touch of a fresh copy's page by
//! a thread firing its probe could sleep in the fault, which the unload's
//! Tasks grace period takes as quiescent (a hot reload under load died of
//! SIGSEGV at the first instruction of a probe's trampoline, 1 run in 33 to
//! 105). Checked with `/proc/self/pagemap` (bit 63: present), for the
//! mappings `/proc/self/maps` names after the module's copy. With the
//! population off, most of the fixture's code pages are not present right
//! after the load (seen).

use std::io::{Read, Seek, SeekFrom};

use usrcu_module_loader::ModuleLoader;
use usrcu_tests::fixture_path;

/// (start, end, perms) of the mappings whose path names `needle`.
fn mappings_of(needle: &str) -> Vec<(u64, u64, String)> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| {
            let mut f = l.split_ascii_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            let (a, b) = range.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
                perms.to_owned(),
            ))
        })
        .collect()
}

/// Pages of `[a, b)` not present in the page tables.
fn absent_pages(a: u64, b: u64) -> usize {
    let mut pm = std::fs::File::open("/proc/self/pagemap").unwrap();
    let mut absent = 0;
    let mut page = a;
    while page < b {
        let mut e = [0u8; 8];
        pm.seek(SeekFrom::Start(page / 4096 * 8)).unwrap();
        pm.read_exact(&mut e).unwrap();
        if u64::from_le_bytes(e) >> 63 == 0 {
            absent += 1;
        }
        page += 4096;
    }
    absent
}

#[test]
fn a_loaded_plugins_code_and_data_pages_are_present_before_it_runs() {
    let loader = ModuleLoader::new();
    // SAFETY: the fixture upholds the plugin contract (docs/abi.md).
    let m = unsafe { loader.load(fixture_path("redteam6-probes")) }.unwrap();
    let maps = mappings_of("libfixture_redteam6_probes");
    assert!(
        maps.iter().any(|(_, _, p)| p.contains('x')),
        "no code mapping found: {maps:?}"
    );
    let mut report = Vec::new();
    for (a, b, perms) in &maps {
        if perms.starts_with("---") {
            continue; // the gaps between segments
        }
        let absent = absent_pages(*a, *b);
        report.push(format!(
            "{a:#x}-{b:#x} {perms}: {absent} of {} pages absent",
            (b - a) / 4096
        ));
    }
    let r = loader.unload(m).unwrap();
    assert!(r.unmapped, "{r}");
    assert!(
        report.iter().all(|l| l.contains(": 0 of")),
        "pages of the plugin not present right after its load:\n{}",
        report.join("\n")
    );
}
