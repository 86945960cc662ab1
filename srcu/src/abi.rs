//! What a plugin's copy of this crate and the host's must agree on, beyond
//! the sizes a module descriptor already carries: the reader protocol, and
//! the field offsets of every struct both copies touch.
//!
//! A loader compares each with the plugin's (the module descriptor carries
//! the plugin's values) and refuses a plugin that differs, naming both.
//! Sizes and alignments alone miss two fields swapped, or one moved into
//! padding; the fingerprints hash every field's offset, in declaration
//! order, with the size and the alignment.

use crate::callbacks::CallbackHead;
use crate::domain::{Srcu, SrcuConfig};
use crate::percpu::{PerCpu, Slot};
use crate::runtime::RuntimeVTable;
use crate::stats::SrcuStats;
use std::mem::{align_of, offset_of, size_of};

/// Version of the read-side protocol: how a reader's lock and unlock touch
/// the per-CPU counters (ranks, the rseq and atomic paths, the fence pair)
/// and what the updater's scan reads of them. A plugin's inlined readers
/// and the host's grace periods must speak the same one. Bumped on any
/// change of either side's meaning, even with an unchanged layout.
///
/// 2: a read section leaves `rseq->rseq_cs` pointing at its descriptor
/// after the commit (version 1 cleared it); a host that unloads such a
/// plugin must clear or prove it (`docs/abi.md`, "rseq and unload"), which
/// a host of version 1 does not, so the two refuse each other.
pub const READER_PROTOCOL_VERSION: u32 = 2;

/// The shared structs, in the order of [`field_fingerprints`] (the order of
/// the module descriptor's layout table).
pub const SHARED_STRUCTS: [&str; 7] = [
    "Srcu",
    "SrcuConfig",
    "PerCpu",
    "Slot",
    "CallbackHead",
    "SrcuStats",
    "RuntimeVTable",
];

/// FNV-1a over the eight little-endian bytes of `x`.
const fn mix(mut h: u64, x: u64) -> u64 {
    let mut i = 0;
    while i < 8 {
        h ^= (x >> (8 * i)) & 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// Fingerprint of one struct: size, alignment, field count, each offset.
const fn fingerprint(size: usize, align: usize, offsets: &[usize]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325;
    h = mix(h, size as u64);
    h = mix(h, align as u64);
    h = mix(h, offsets.len() as u64);
    let mut i = 0;
    while i < offsets.len() {
        h = mix(h, offsets[i] as u64);
        i += 1;
    }
    h
}

const STATS_OFFSETS: [usize; 9] = [
    offset_of!(SrcuStats, grace_periods),
    offset_of!(SrcuStats, expedited_grace_periods),
    offset_of!(SrcuStats, callbacks_queued),
    offset_of!(SrcuStats, callbacks_invoked),
    offset_of!(SrcuStats, barriers_issued),
    offset_of!(SrcuStats, barriers_skipped),
    offset_of!(SrcuStats, slots_scanned),
    offset_of!(SrcuStats, scan_nanos),
    offset_of!(SrcuStats, possible_cpus),
];

const VTABLE_OFFSETS: [usize; 13] = [
    offset_of!(RuntimeVTable, abi_version),
    offset_of!(RuntimeVTable, size),
    offset_of!(RuntimeVTable, attach),
    offset_of!(RuntimeVTable, synchronize),
    offset_of!(RuntimeVTable, call_srcu),
    offset_of!(RuntimeVTable, barrier),
    offset_of!(RuntimeVTable, get_state),
    offset_of!(RuntimeVTable, poll_state),
    offset_of!(RuntimeVTable, cleanup),
    offset_of!(RuntimeVTable, stats),
    offset_of!(RuntimeVTable, reader_enter),
    offset_of!(RuntimeVTable, reader_exit),
    offset_of!(RuntimeVTable, report),
];

/// The field-offset fingerprints of this build's shared structs, in the
/// order of [`SHARED_STRUCTS`].
pub const fn field_fingerprints() -> [u64; 7] {
    [
        fingerprint(size_of::<Srcu>(), align_of::<Srcu>(), &Srcu::FIELD_OFFSETS),
        fingerprint(
            size_of::<SrcuConfig>(),
            align_of::<SrcuConfig>(),
            &SrcuConfig::FIELD_OFFSETS,
        ),
        fingerprint(size_of::<PerCpu>(), align_of::<PerCpu>(), &PerCpu::FIELD_OFFSETS),
        fingerprint(size_of::<Slot>(), align_of::<Slot>(), &Slot::FIELD_OFFSETS),
        fingerprint(
            size_of::<CallbackHead>(),
            align_of::<CallbackHead>(),
            &CallbackHead::FIELD_OFFSETS,
        ),
        fingerprint(size_of::<SrcuStats>(), align_of::<SrcuStats>(), &STATS_OFFSETS),
        fingerprint(size_of::<RuntimeVTable>(), align_of::<RuntimeVTable>(), &VTABLE_OFFSETS),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_differ_when_two_fields_swap_places() {
        // Same size, same alignment, two offsets exchanged.
        assert_ne!(fingerprint(16, 8, &[0, 8]), fingerprint(16, 8, &[8, 0]));
        assert_ne!(fingerprint(16, 8, &[0, 8]), fingerprint(16, 8, &[0, 4]));
        assert_eq!(fingerprint(16, 8, &[0, 8]), fingerprint(16, 8, &[0, 8]));
    }

    #[test]
    fn every_shared_struct_has_a_distinct_fingerprint() {
        let f = field_fingerprints();
        for i in 0..f.len() {
            for j in i + 1..f.len() {
                assert_ne!(f[i], f[j], "{} and {}", SHARED_STRUCTS[i], SHARED_STRUCTS[j]);
            }
        }
    }
}
