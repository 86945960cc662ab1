//! `--smaps`: which mappings' resident memory grew between the baseline and
//! the end of the run (`/proc/self/smaps`), to tell heap growth (a leak or
//! fragmentation in `[heap]` and the malloc arenas' anonymous heaps) from
//! thread stacks, file pages touched late, and the like.

use std::collections::BTreeMap;

/// One mapping: its start address, size, permissions, name and `Rss`.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub start: u64,
    pub size_kib: u64,
    pub perms: String,
    pub name: String,
    pub rss_kib: u64,
}

/// The process's mappings now, or empty if `/proc/self/smaps` can't be read.
pub fn snapshot() -> Vec<Mapping> {
    let text = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                let perms = f.next().unwrap_or("").to_owned();
                // offset, device, inode, then the name (may contain spaces).
                let name = f.skip(3).collect::<Vec<_>>().join(" ");
                out.push(Mapping {
                    start: a,
                    size_kib: (b - a) / 1024,
                    perms,
                    name,
                    rss_kib: 0,
                });
                continue;
            }
        }
        if first == "Rss:" {
            if let (Some(m), Some(v)) = (out.last_mut(), f.next().and_then(|v| v.parse().ok())) {
                m.rss_kib = v;
            }
        }
    }
    out
}

/// A mapping's kind, for the totals: `[heap]`, `[stack]`, a file's name, or
/// `anon` (malloc arenas' heaps, thread stacks, the runtime's own maps).
fn kind(m: &Mapping) -> String {
    if m.name.is_empty() {
        "anon".to_owned()
    } else {
        m.name.clone()
    }
}

/// Print the growth of resident memory from `base` to `now`: totals by
/// kind, then the mappings (matched by start address) that grew most.
pub fn print_growth(base: &[Mapping], now: &[Mapping]) {
    let total = |v: &[Mapping]| v.iter().map(|m| m.rss_kib).sum::<u64>();
    println!(
        "usrcu-soak: smaps: Rss {} -> {} KiB over {} -> {} mappings",
        total(base),
        total(now),
        base.len(),
        now.len()
    );
    let mut by_kind: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for m in base {
        by_kind.entry(kind(m)).or_default().0 += m.rss_kib as i64;
    }
    for m in now {
        by_kind.entry(kind(m)).or_default().1 += m.rss_kib as i64;
    }
    let mut kinds: Vec<_> = by_kind.into_iter().filter(|(_, (a, b))| a != b).collect();
    kinds.sort_by_key(|(_, (a, b))| -(b - a).abs());
    for (k, (a, b)) in kinds.iter().take(12) {
        println!("usrcu-soak: smaps:   {:+6} KiB  {a} -> {b}  {k}", b - a);
    }
    let old: BTreeMap<u64, &Mapping> = base.iter().map(|m| (m.start, m)).collect();
    let mut grown: Vec<(i64, &Mapping, Option<&Mapping>)> = now
        .iter()
        .map(|m| {
            let o = old.get(&m.start).copied().filter(|o| o.name == m.name);
            (m.rss_kib as i64 - o.map_or(0, |o| o.rss_kib as i64), m, o)
        })
        .filter(|(d, _, _)| *d != 0)
        .collect();
    grown.sort_by_key(|(d, _, _)| -*d);
    for (d, m, o) in grown.iter().take(12) {
        println!(
            "usrcu-soak: smaps:   {d:+6} KiB  {:#x} {} size {} KiB{} rss {} KiB  {}",
            m.start,
            m.perms,
            m.size_kib,
            if o.is_none() { " (new)" } else { "" },
            m.rss_kib,
            if m.name.is_empty() { "anon" } else { &m.name },
        );
    }
}
