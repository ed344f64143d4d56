//! Memory reports: zones, free blocks, the memory maps, the kernel heap.

use framekeep::{PAGE_SIZE, PCP_ORDERS, Zone};

use crate::boot;
use crate::kprintln;
use crate::mem::frames;
use crate::mem::map::{self, ByteSize};
use crate::mem::map_summary;

/// `mem`: the zone table and buddyinfo, as printed at boot.
pub fn zones() {
    frames::print_report();
}

/// `buddyinfo`: free blocks per zone and order.
pub fn buddyinfo() {
    kprintln!("{}", frames::stats());
}

/// `map`: the firmware's map as received, then what the allocator manages.
pub fn maps() {
    match boot::memory_maps() {
        Some(maps) => {
            map_summary::print_regions(maps.firmware);
            map::print_sanitised(&maps.sanitised);
        }
        None => kprintln!("map: the memory maps were not kept at boot"),
    }
}

/// `heap`: slabs, descriptors, the per-CPU page caches and bad frees.
pub fn heap() {
    let stats = frames::heap_stats();
    let config = frames::cache_config();
    kprintln!("kernel heap (objects up to 2 KiB from per-CPU slabs, larger ones in pages):");
    kprintln!(
        "  slab pages         {:>10}  {}",
        stats.slab_pages,
        ByteSize(stats.slab_pages * PAGE_SIZE)
    );
    kprintln!(
        "  slab descriptors   {:>10}  of {} registered",
        stats.descriptors,
        stats.descriptor_capacity
    );
    kprintln!("  bad frees caught   {:>10}", stats.faults);
    kprintln!(
        "per-CPU page caches: {} pages held ({})",
        stats.frames.cached_pages(),
        ByteSize(stats.frames.cached_pages() * PAGE_SIZE)
    );
    for zone in Zone::ALL {
        kprintln!(
            "  {:<6} {:>8} pages cached, {:>8} free in all",
            zone.name(),
            stats.frames.cached[zone as usize],
            stats.frames.zone_free_pages(zone)
        );
    }
    kprintln!("  per CPU, orders 0..{}:", PCP_ORDERS - 1);
    kprintln!("    most kept  {:?}", config.high);
    kprintln!("    batch      {:?}", config.batch);
}
