//! The firmware memory map as the bootloader hands it over: names and
//! totals per kind, and the sanitised ranges the allocator may manage. The
//! boot log's summary of the raw map is in [`super::map_summary`].

use core::fmt;

use bootloader_api::info::{MemoryRegion, MemoryRegionKind};

use crate::console::text::FixedText;
use crate::kprintln;

/// A byte count printed the way people read it: `639.0 KiB`, `7.9 GiB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut unit = 0;
        let mut scaled = self.0;
        while scaled >= 1024 && unit + 1 < UNITS.len() {
            scaled /= 1024;
            unit += 1;
        }
        if unit == 0 {
            return f.pad(&FixedText::<16>::format(format_args!("{} B", self.0)));
        }
        // One decimal, computed in integers: tenths of the unit, rounded down.
        let tenths = ((self.0 as u128 * 10) >> (10 * unit)) as u64;
        f.pad(&FixedText::<16>::format(format_args!(
            "{}.{} {}",
            tenths / 10,
            tenths % 10,
            UNITS[unit]
        )))
    }
}

/// A human name for a region kind; firmware-specific types are decoded.
pub struct KindName(pub MemoryRegionKind);

impl fmt::Display for KindName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            MemoryRegionKind::Usable => "usable",
            MemoryRegionKind::Bootloader => "bootloader",
            MemoryRegionKind::UnknownUefi(kind) => match kind {
                0 => "uefi reserved",
                1 => "uefi loader code",
                2 => "uefi loader data",
                3 => "uefi boot code",
                4 => "uefi boot data",
                5 => "uefi runtime code",
                6 => "uefi runtime data",
                7 => "uefi conventional",
                8 => "uefi unusable",
                9 => "acpi reclaimable",
                10 => "acpi nvs",
                11 => "uefi mmio",
                12 => "uefi mmio ports",
                13 => "uefi pal code",
                14 => "persistent memory",
                other => return f.pad(&FixedText::<24>::format(format_args!("uefi type {other}"))),
            },
            MemoryRegionKind::UnknownBios(kind) => match kind {
                2 => "reserved",
                3 => "acpi reclaimable",
                4 => "acpi nvs",
                5 => "bad memory",
                other => return f.pad(&FixedText::<24>::format(format_args!("e820 type {other}"))),
            },
            _ => "unknown",
        };
        f.pad(name)
    }
}

/// Per-kind totals without a heap: the map has few distinct kinds.
pub struct KindTotals {
    kinds: [(MemoryRegionKind, u64, usize); Self::CAPACITY],
    len: usize,
    /// Bytes of kinds beyond CAPACITY, lumped together.
    pub other: u64,
}

impl KindTotals {
    const CAPACITY: usize = 16;

    pub fn of(regions: &[MemoryRegion]) -> Self {
        let mut totals = Self {
            kinds: [(MemoryRegionKind::Usable, 0, 0); Self::CAPACITY],
            len: 0,
            other: 0,
        };
        for region in regions {
            let size = region.end.saturating_sub(region.start);
            match totals.kinds[..totals.len]
                .iter_mut()
                .find(|entry| entry.0 == region.kind)
            {
                Some(entry) => {
                    entry.1 += size;
                    entry.2 += 1;
                }
                None if totals.len < Self::CAPACITY => {
                    totals.kinds[totals.len] = (region.kind, size, 1);
                    totals.len += 1;
                }
                None => totals.other += size,
            }
        }
        totals
    }

    /// (kind, bytes, regions) in order of first appearance.
    pub fn entries(&self) -> &[(MemoryRegionKind, u64, usize)] {
        &self.kinds[..self.len]
    }

    #[cfg_attr(not(test), expect(dead_code, reason = "used by tests"))]
    pub fn bytes_of(&self, kind: MemoryRegionKind) -> u64 {
        self.entries()
            .iter()
            .filter(|entry| entry.0 == kind)
            .map(|entry| entry.1)
            .sum()
    }
}

/// Physical memory below this stays out of general use: it holds frame 0
/// and is where the start-up trampoline for other CPUs will live.
pub const LOW_MEMORY_END: u64 = 0x10_0000;
const PAGE_SIZE: u64 = 4096;
/// x86_64 physical addresses have at most 52 bits.
const PHYS_LIMIT: u64 = 1 << 52;

/// A page-aligned physical range `[start, end)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PhysRange {
    pub start: u64,
    pub end: u64,
}

impl PhysRange {
    pub fn bytes(&self) -> u64 {
        self.end - self.start
    }

    pub fn pages(&self) -> u64 {
        self.bytes() / PAGE_SIZE
    }
}

/// A fixed-capacity list of ranges: the map is sanitised before any heap exists.
pub struct RangeList<const N: usize> {
    items: [PhysRange; N],
    len: usize,
    /// Ranges that did not fit.
    pub overflowed: usize,
}

impl<const N: usize> RangeList<N> {
    pub const fn new() -> Self {
        Self {
            items: [PhysRange { start: 0, end: 0 }; N],
            len: 0,
            overflowed: 0,
        }
    }

    fn push(&mut self, range: PhysRange) {
        if range.start >= range.end {
            return;
        }
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = range;
                self.len += 1;
            }
            None => self.overflowed += 1,
        }
    }

    pub fn as_slice(&self) -> &[PhysRange] {
        &self.items[..self.len]
    }

    /// Sorts and merges overlapping or touching ranges; returns how many
    /// pairs overlapped (touching is normal: UEFI splits memory finely).
    fn sort_and_merge(&mut self) -> usize {
        self.items[..self.len].sort_unstable();
        let mut overlaps = 0;
        let mut merged = 0;
        for index in 0..self.len {
            let range = self.items[index];
            if merged > 0 && range.start <= self.items[merged - 1].end {
                let last = &mut self.items[merged - 1];
                overlaps += usize::from(range.start < last.end);
                last.end = last.end.max(range.end);
            } else {
                self.items[merged] = range;
                merged += 1;
            }
        }
        self.len = merged;
        overlaps
    }

    pub fn total_bytes(&self) -> u64 {
        self.as_slice().iter().map(PhysRange::bytes).sum()
    }
}

/// The memory map after sanitising: what the allocator may manage.
pub struct SanitisedMap {
    /// Sorted, merged, page-aligned usable ranges at or above 1 MiB.
    pub usable: RangeList<128>,
    /// Usable memory below 1 MiB, kept out of general use.
    pub low_memory: RangeList<8>,
    /// Entries ignored as absurd (empty, reversed, beyond 52 bits).
    pub absurd: usize,
    /// Usable entries that overlapped each other.
    pub overlapping: usize,
    /// Usable bytes dropped because a reserved entry claims them too.
    pub conflicting_bytes: u64,
    /// Usable bytes dropped by page alignment.
    pub unaligned_bytes: u64,
}

/// Turns the bootloader's map (untrusted) into ranges the allocator may
/// manage: sorted and merged, aligned inward to pages, minus anything any
/// other entry claims (bootloader frames, firmware, ACPI...), minus the first
/// MiB. Problems are logged and the offending parts skipped.
pub fn sanitise(regions: &[MemoryRegion]) -> SanitisedMap {
    let mut usable = RangeList::<512>::new();
    let mut claimed = RangeList::<512>::new();
    let mut map = SanitisedMap {
        usable: RangeList::new(),
        low_memory: RangeList::new(),
        absurd: 0,
        overlapping: 0,
        conflicting_bytes: 0,
        unaligned_bytes: 0,
    };
    for region in regions {
        if region.start >= region.end || region.end > PHYS_LIMIT {
            log::warn!(
                "memory map: skipping absurd entry {:#x}..{:#x} ({})",
                region.start,
                region.end,
                KindName(region.kind)
            );
            map.absurd += 1;
            continue;
        }
        if region.kind == MemoryRegionKind::Usable {
            // Inward: a partial page is not ours to hand out.
            let start = region.start.next_multiple_of(PAGE_SIZE);
            let end = region.end & !(PAGE_SIZE - 1);
            let aligned = end.saturating_sub(start);
            map.unaligned_bytes += (region.end - region.start) - aligned;
            usable.push(PhysRange { start, end });
        } else {
            // Outward: a partial page that anyone else claims is not usable.
            let start = region.start & !(PAGE_SIZE - 1);
            let end = region.end.next_multiple_of(PAGE_SIZE);
            claimed.push(PhysRange { start, end });
        }
    }
    if usable.overflowed + claimed.overflowed > 0 {
        log::warn!(
            "memory map: {} entries beyond capacity ignored",
            usable.overflowed + claimed.overflowed
        );
    }
    map.overlapping = usable.sort_and_merge();
    if map.overlapping > 0 {
        log::warn!(
            "memory map: {} usable entries overlap each other",
            map.overlapping
        );
    }
    claimed.sort_and_merge();

    // Subtract every claimed range from the usable ones; both are sorted.
    let claimed = claimed.as_slice();
    let mut next_claim = 0;
    for range in usable.as_slice() {
        let mut cursor = range.start;
        while next_claim < claimed.len() && claimed[next_claim].end <= cursor {
            next_claim += 1;
        }
        let mut index = next_claim;
        while index < claimed.len() && claimed[index].start < range.end {
            let claim = claimed[index];
            if claim.start > cursor {
                keep(
                    &mut map,
                    PhysRange {
                        start: cursor,
                        end: claim.start,
                    },
                );
            }
            let overlap_end = claim.end.min(range.end);
            let overlap_start = claim.start.max(cursor);
            if overlap_end > overlap_start {
                log::warn!(
                    "memory map: usable {:#x}..{:#x} is also claimed by another entry; not used",
                    overlap_start,
                    overlap_end
                );
                map.conflicting_bytes += overlap_end - overlap_start;
            }
            cursor = cursor.max(claim.end);
            index += 1;
        }
        if cursor < range.end {
            keep(
                &mut map,
                PhysRange {
                    start: cursor,
                    end: range.end,
                },
            );
        }
    }
    map
}

/// Files a clean usable range: the part below 1 MiB is kept back.
fn keep(map: &mut SanitisedMap, range: PhysRange) {
    if range.start < LOW_MEMORY_END {
        let low_end = range.end.min(LOW_MEMORY_END);
        map.low_memory.push(PhysRange {
            start: range.start,
            end: low_end,
        });
    }
    map.usable.push(PhysRange {
        start: range.start.max(LOW_MEMORY_END),
        end: range.end,
    });
}

/// Prints the sanitised map.
pub fn print_sanitised(map: &SanitisedMap) {
    kprintln!(
        "usable memory after sanitising: {} in {} ranges",
        ByteSize(map.usable.total_bytes()),
        map.usable.as_slice().len()
    );
    for range in map.usable.as_slice() {
        kprintln!(
            "  {:#018x}  {:#018x}  {:>10}",
            range.start,
            range.end,
            ByteSize(range.bytes())
        );
    }
    kprintln!(
        "  kept back below 1 MiB: {}; lost to alignment: {}; claimed twice: {}; absurd entries: {}",
        ByteSize(map.low_memory.total_bytes()),
        ByteSize(map.unaligned_bytes),
        ByteSize(map.conflicting_bytes),
        map.absurd
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(args: fmt::Arguments<'_>) -> FixedText<64> {
        FixedText::format(args)
    }

    #[test_case]
    fn sizes_print_readably() {
        assert_eq!(&*render(format_args!("{}", ByteSize(0))), "0 B");
        assert_eq!(&*render(format_args!("{}", ByteSize(1023))), "1023 B");
        assert_eq!(
            &*render(format_args!("{}", ByteSize(639 * 1024))),
            "639.0 KiB"
        );
        assert_eq!(
            &*render(format_args!("{}", ByteSize(1536 * 1024))),
            "1.5 MiB"
        );
        assert_eq!(&*render(format_args!("{}", ByteSize(8 << 30))), "8.0 GiB");
        assert_eq!(
            &*render(format_args!("{:>10}", ByteSize(4096))),
            "   4.0 KiB"
        );
    }

    #[test_case]
    fn firmware_kinds_are_named() {
        assert_eq!(
            &*render(format_args!(
                "{}",
                KindName(MemoryRegionKind::UnknownUefi(10))
            )),
            "acpi nvs"
        );
        assert_eq!(
            &*render(format_args!(
                "{}",
                KindName(MemoryRegionKind::UnknownBios(2))
            )),
            "reserved"
        );
        assert_eq!(
            &*render(format_args!(
                "{}",
                KindName(MemoryRegionKind::UnknownBios(77))
            )),
            "e820 type 77"
        );
    }

    #[test_case]
    fn totals_add_up_per_kind() {
        let region = |start, end, kind| MemoryRegion { start, end, kind };
        let regions = [
            region(0x1000, 0x9f000, MemoryRegionKind::Usable),
            region(0x100000, 0x200000, MemoryRegionKind::Bootloader),
            region(0x200000, 0x1000000, MemoryRegionKind::Usable),
            region(0xfeffc000, 0xff000000, MemoryRegionKind::UnknownBios(2)),
        ];
        let totals = KindTotals::of(&regions);
        assert_eq!(totals.entries().len(), 3);
        assert_eq!(
            totals.bytes_of(MemoryRegionKind::Usable),
            0x9e000 + 0xe00000
        );
        assert_eq!(totals.bytes_of(MemoryRegionKind::Bootloader), 0x100000);
        assert_eq!(totals.entries()[0].2, 2);
    }

    fn region(start: u64, end: u64, kind: MemoryRegionKind) -> MemoryRegion {
        MemoryRegion { start, end, kind }
    }

    #[test_case]
    fn sanitising_merges_aligns_and_keeps_low_memory_back() {
        use MemoryRegionKind::{Bootloader, Usable};
        // Unsorted, with fine UEFI-style fragments and an unaligned end.
        let regions = [
            region(0x0020_0000, 0x0030_0000, Usable),
            region(0x0000_0000, 0x0009_fc00, Usable),
            region(0x0010_0000, 0x0020_0000, Usable),
            region(0x0030_0000, 0x0040_0800, Usable),
            region(0x0100_0000, 0x0101_0000, Bootloader),
            region(0x0040_1000, 0x0100_0000, Usable),
            region(0x0101_0000, 0x0200_0000, Usable),
        ];
        let map = sanitise(&regions);
        let expected = [
            PhysRange {
                start: 0x0010_0000,
                end: 0x0040_0000,
            },
            PhysRange {
                start: 0x0040_1000,
                end: 0x0100_0000,
            },
            PhysRange {
                start: 0x0101_0000,
                end: 0x0200_0000,
            },
        ];
        assert_eq!(map.usable.as_slice(), &expected);
        assert_eq!(
            map.low_memory.as_slice(),
            &[PhysRange {
                start: 0,
                end: 0x9f000
            }]
        );
        assert_eq!(map.unaligned_bytes, 0xc00 + 0x800);
        assert_eq!(
            map.conflicting_bytes, 0,
            "the bootloader region was never usable"
        );
    }

    #[test_case]
    fn sanitising_distrusts_overlaps_and_absurd_entries() {
        use MemoryRegionKind::{Bootloader, UnknownBios, Usable};
        let regions = [
            region(0x0100_0000, 0x0200_0000, Usable),
            // Claims part of the usable range: that part must not be used.
            region(0x0180_0000, 0x0190_0000, Bootloader),
            // Overlaps the first usable entry.
            region(0x01f0_0000, 0x0210_0000, Usable),
            // Reserved straddling the end.
            region(0x020f_f800, 0x0300_0000, UnknownBios(2)),
            // Reversed and beyond 52 bits.
            region(0x0500_0000, 0x0400_0000, Usable),
            region(1 << 60, (1 << 60) + 0x1000, Usable),
        ];
        let map = sanitise(&regions);
        let expected = [
            PhysRange {
                start: 0x0100_0000,
                end: 0x0180_0000,
            },
            PhysRange {
                start: 0x0190_0000,
                end: 0x020f_f000,
            },
        ];
        assert_eq!(map.usable.as_slice(), &expected);
        assert_eq!(map.absurd, 2);
        assert_eq!(map.overlapping, 1);
        assert_eq!(map.conflicting_bytes, 0x10_0000 + 0x1000);
    }

    #[test_case]
    fn boot_facts_are_recorded() {
        let facts = crate::boot::facts().expect("boot facts recorded before tests");
        assert!(facts.kernel_stack.end > facts.kernel_stack.start);
        assert!(
            facts.physical_memory_offset.is_some(),
            "physical memory must be mapped"
        );
        assert_eq!(
            facts.kernel_image_offset, 0,
            "the kernel is linked static, not relocated"
        );
    }
}
