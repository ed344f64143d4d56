//! Facts from the bootloader that later code needs, kept once at entry.

use core::ops::Range;
use spin::Once;

use bootloader_api::BootInfo;
use bootloader_api::info::MemoryRegion;

use crate::mem::map::SanitisedMap;

/// What we keep from [`BootInfo`] besides the memory map.
#[derive(Debug)]
pub struct BootFacts {
    /// The kernel stack; the page just below it is an unmapped guard page.
    pub kernel_stack: Range<u64>,
    /// Where the bootloader loaded the kernel image (0 for our static build).
    pub kernel_image_offset: u64,
    /// Virtual address of physical address 0.
    pub physical_memory_offset: Option<u64>,
}

static FACTS: Once<BootFacts> = Once::new();

/// Records the facts; the first call wins.
pub fn record(info: &BootInfo) -> &'static BootFacts {
    FACTS.call_once(|| BootFacts {
        kernel_stack: info.kernel_stack_bottom..info.kernel_stack_bottom + info.kernel_stack_len,
        kernel_image_offset: info.kernel_image_offset,
        physical_memory_offset: info.physical_memory_offset.into_option(),
    })
}

/// The recorded facts; `None` before [`record`].
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "read by tests until the memory code uses it")
)]
pub fn facts() -> Option<&'static BootFacts> {
    FACTS.get()
}

/// The memory map as the firmware gave it and as sanitised, kept for the
/// shell's `map` command.
pub struct MemoryMaps {
    /// The bootloader's regions (it leaves them in memory for good).
    pub firmware: &'static [MemoryRegion],
    pub sanitised: SanitisedMap,
}

static MAPS: Once<MemoryMaps> = Once::new();

/// Keeps both maps; the first call wins. Returns the kept sanitised map.
pub fn keep_memory_maps(
    firmware: &'static [MemoryRegion],
    sanitised: SanitisedMap,
) -> &'static SanitisedMap {
    &MAPS
        .call_once(|| MemoryMaps {
            firmware,
            sanitised,
        })
        .sanitised
}

/// The kept maps; `None` before [`keep_memory_maps`].
#[cfg_attr(
    feature = "bench",
    expect(
        dead_code,
        reason = "the bench kernel exits instead of running the shell"
    )
)]
pub fn memory_maps() -> Option<&'static MemoryMaps> {
    MAPS.get()
}
