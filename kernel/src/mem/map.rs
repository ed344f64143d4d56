//! The firmware memory map as the bootloader hands it over, printed as a
//! table with totals per kind.

use core::fmt;

use bootloader_api::info::{MemoryRegion, MemoryRegionKind};

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
            return f.pad(&Fixed::<16>::format(format_args!("{} B", self.0)));
        }
        // One decimal, computed in integers: tenths of the unit, rounded down.
        let tenths = ((self.0 as u128 * 10) >> (10 * unit)) as u64;
        f.pad(&Fixed::<16>::format(format_args!(
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
                1 | 2 => "uefi loader",
                3 | 4 => "uefi boot services",
                5 | 6 => "uefi runtime services",
                7 => "uefi conventional",
                8 => "uefi unusable",
                9 => "acpi reclaimable",
                10 => "acpi nvs",
                11 | 12 => "uefi mmio",
                13 => "uefi pal code",
                14 => "persistent memory",
                other => return f.pad(&Fixed::<24>::format(format_args!("uefi type {other}"))),
            },
            MemoryRegionKind::UnknownBios(kind) => match kind {
                2 => "reserved",
                3 => "acpi reclaimable",
                4 => "acpi nvs",
                5 => "bad memory",
                other => return f.pad(&Fixed::<24>::format(format_args!("e820 type {other}"))),
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
    other: u64,
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

/// Prints the map exactly as received (unsorted, unmerged) and the totals.
pub fn print(regions: &[MemoryRegion]) {
    kprintln!("memory map from the bootloader: {} regions", regions.len());
    kprintln!(
        "  {:>3}  {:<18}  {:<18}  {:>10}  kind",
        "#",
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

/// A small stack buffer so padding applies to a whole formatted value.
struct Fixed<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Fixed<N> {
    fn format(args: fmt::Arguments<'_>) -> Self {
        let mut fixed = Self {
            bytes: [0; N],
            len: 0,
        };
        // Overlong text is cut, never a failure: this is for display only.
        let _ = fmt::write(&mut fixed, args);
        fixed
    }
}

impl<const N: usize> fmt::Write for Fixed<N> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let take = text.len().min(N - self.len);
        self.bytes[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

impl<const N: usize> core::ops::Deref for Fixed<N> {
    type Target = str;

    fn deref(&self) -> &str {
        // Only whole ASCII/UTF-8 text is written; a cut could split a
        // character, so fall back to the valid prefix.
        match core::str::from_utf8(&self.bytes[..self.len]) {
            Ok(text) => text,
            Err(error) => {
                // SAFETY: valid_up_to() bytes were just checked to be UTF-8.
                unsafe { core::str::from_utf8_unchecked(&self.bytes[..error.valid_up_to()]) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(args: fmt::Arguments<'_>) -> Fixed<64> {
        Fixed::format(args)
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
