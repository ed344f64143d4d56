//! The boot log's view of the raw memory map: adjacent regions of one kind
//! are shown as one run, and the full table only at log level debug.
//!
//! OVMF hands over one region per firmware descriptor, never merged: 127
//! regions for 512 MiB, most of them usable pieces that touch each other.
//! Printed one per line they bury the rest of the boot log, and what a
//! reader wants from them (where memory is, what kind) fits in a dozen runs.

use bootloader_api::info::{MemoryRegion, MemoryRegionKind};

use super::map::{ByteSize, KindName, KindTotals};
use crate::kprintln;

/// Regions of one kind, each starting where the previous one ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub start: u64,
    pub end: u64,
    pub kind: MemoryRegionKind,
    /// How many map entries it merges.
    pub regions: usize,
}

/// The runs of `regions`, in map order. Only neighbours in the map are
/// merged: the BIOS (E820) map is not sorted, and is short anyway.
pub fn runs(regions: &[MemoryRegion]) -> impl Iterator<Item = Run> + '_ {
    let mut rest = regions;
    core::iter::from_fn(move || {
        let (first, tail) = rest.split_first()?;
        let mut run = Run {
            start: first.start,
            end: first.end,
            kind: first.kind,
            regions: 1,
        };
        rest = tail;
        while let Some((next, tail)) = rest.split_first() {
            if next.kind != run.kind || next.start != run.end {
                break;
            }
            run.end = next.end;
            run.regions += 1;
            rest = tail;
        }
        Some(run)
    })
}

/// Prints every region as received (unsorted, unmerged): the full table,
/// for the console's `map` command.
pub fn print_regions(regions: &[MemoryRegion]) {
    kprintln!(
        "memory map from the bootloader: {} regions, as received",
        regions.len()
    );
    kprintln!(
        "    #  {:<18}  {:<18}  {:>10}  kind",
        "start",
        "end",
        "size"
    );
    for (index, region) in regions.iter().enumerate() {
        kprintln!(
            "  {index:>3}  {:#018x}  {:#018x}  {:>10}  {}",
            region.start,
            region.end,
            ByteSize(region.end.saturating_sub(region.start)),
            KindName(region.kind)
        );
    }
}

/// Prints the map as runs and the totals per kind; every region as received
/// (unsorted, unmerged) goes to log level debug.
pub fn print(regions: &[MemoryRegion]) {
    kprintln!(
        "memory map from the bootloader: {} regions in {} runs of adjacent regions of one kind \
         (each region is logged at level debug)",
        regions.len(),
        runs(regions).count()
    );
    kprintln!(
        "  {:<18}  {:<18}  {:>10}  {:<18}  regions",
        "start",
        "end",
        "size",
        "kind"
    );
    for run in runs(regions) {
        kprintln!(
            "  {:#018x}  {:#018x}  {:>10}  {:<18}  {}",
            run.start,
            run.end,
            ByteSize(run.end.saturating_sub(run.start)),
            KindName(run.kind),
            run.regions
        );
    }
    for (index, region) in regions.iter().enumerate() {
        log::debug!(
            "map region {index:>3}: {:#018x}..{:#018x} {:>10} {}",
            region.start,
            region.end,
            ByteSize(region.end.saturating_sub(region.start)),
            KindName(region.kind)
        );
    }
    let totals = KindTotals::of(regions);
    kprintln!("totals per kind:");
    for &(kind, bytes, count) in totals.entries() {
        kprintln!(
            "  {:<22} {:>10} in {count} regions",
            KindName(kind),
            ByteSize(bytes)
        );
    }
    if totals.other > 0 {
        kprintln!("  {:<22} {:>10}", "other kinds", ByteSize(totals.other));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USABLE: MemoryRegionKind = MemoryRegionKind::Usable;
    const BOOT_DATA: MemoryRegionKind = MemoryRegionKind::UnknownUefi(4);

    fn region(start: u64, end: u64, kind: MemoryRegionKind) -> MemoryRegion {
        MemoryRegion { start, end, kind }
    }

    #[test_case]
    fn adjacent_regions_of_one_kind_are_one_run() {
        let regions = [
            region(0x0, 0x1000, USABLE),
            region(0x1000, 0x8000, USABLE),
            region(0x8000, 0xa000, USABLE),
            // Same kind after a gap: a new run.
            region(0x10_0000, 0x20_0000, USABLE),
            region(0x20_0000, 0x30_0000, BOOT_DATA),
            region(0x30_0000, 0x40_0000, BOOT_DATA),
            region(0x40_0000, 0x50_0000, USABLE),
            // Unsorted (E820): not merged with anything before it.
            region(0x9_f000, 0xa_0000, USABLE),
        ];
        let mut found = [Run {
            start: 0,
            end: 0,
            kind: USABLE,
            regions: 0,
        }; 8];
        let mut count = 0;
        for run in runs(&regions) {
            found[count] = run;
            count += 1;
        }
        let expect = [
            (0x0, 0xa000, USABLE, 3),
            (0x10_0000, 0x20_0000, USABLE, 1),
            (0x20_0000, 0x40_0000, BOOT_DATA, 2),
            (0x40_0000, 0x50_0000, USABLE, 1),
            (0x9_f000, 0xa_0000, USABLE, 1),
        ];
        assert_eq!(count, expect.len());
        for (run, &(start, end, kind, regions)) in found.iter().zip(&expect) {
            assert_eq!(
                *run,
                Run {
                    start,
                    end,
                    kind,
                    regions
                }
            );
        }
        assert_eq!(runs(&[]).count(), 0);
    }
}
