//! The CPUs the firmware reports: the ACPI MADT's local APIC and local
//! x2APIC entries, found from the RSDP the bootloader hands over, read with
//! the rust-osdev `acpi` crate through the linear map of physical memory.

use core::ptr::NonNull;

use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};

use super::percpu::MAX_CPUS;

/// The APIC ids of the enabled CPUs, the boot CPU's first.
pub struct CpuList {
    ids: [u32; MAX_CPUS],
    len: usize,
    /// Enabled CPUs that did not fit in `MAX_CPUS`.
    pub beyond_max: usize,
    /// Entries marked disabled (or only hot-pluggable).
    pub disabled: usize,
}

impl CpuList {
    /// The APIC ids, in MADT order.
    pub fn ids(&self) -> &[u32] {
        &self.ids[..self.len]
    }

    fn push(&mut self, apic_id: u32) {
        if self.ids().contains(&apic_id) {
            return; // both an xAPIC and an x2APIC entry for one CPU
        }
        match self.len < MAX_CPUS {
            true => {
                self.ids[self.len] = apic_id;
                self.len += 1;
            }
            false => self.beyond_max += 1,
        }
    }
}

/// Maps ACPI tables through the bootloader's linear map of all memory.
#[derive(Clone, Copy)]
struct LinearMap(u64);

impl AcpiHandler for LinearMap {
    unsafe fn map_physical_region<T>(
        &self,
        physical: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let virt = (self.0 + physical as u64) as *mut T;
        // SAFETY: the linear map covers all physical memory the firmware
        // describes (at least the first 4 GiB, where ACPI tables live), and
        // it stays mapped; nothing needs undoing on unmap.
        unsafe {
            PhysicalMapping::new(
                physical,
                NonNull::new(virt).expect("the linear map is not at address 0"),
                size,
                size,
                *self,
            )
        }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// Reads the CPUs from the MADT; `Err` says why there is no usable list.
///
/// # Safety
/// `rsdp` must be the RSDP address the bootloader reported (or 0), and
/// `physical_memory_offset` where all physical memory is mapped.
pub unsafe fn cpus(rsdp: u64, physical_memory_offset: u64) -> Result<CpuList, &'static str> {
    if rsdp == 0 {
        return Err("the bootloader found no RSDP");
    }
    // SAFETY: per the contract, `rsdp` points at the firmware's RSDP and
    // the handler maps physical memory correctly; the crate checks every
    // table's signature and checksum.
    let tables = unsafe { AcpiTables::from_rsdp(LinearMap(physical_memory_offset), rsdp as usize) }
        .map_err(|_| "the ACPI tables are invalid")?;
    let madt = tables
        .find_table::<Madt>()
        .map_err(|_| "there is no valid MADT")?;
    let mut list = CpuList {
        ids: [0; MAX_CPUS],
        len: 0,
        beyond_max: 0,
        disabled: 0,
    };
    for entry in madt.get().entries() {
        let (apic_id, flags) = match entry {
            // 0xff in an xAPIC entry stands for "see the x2APIC entry".
            MadtEntry::LocalApic(entry) if entry.apic_id == 0xff => continue,
            MadtEntry::LocalApic(entry) => (u32::from(entry.apic_id), entry.flags),
            MadtEntry::LocalX2Apic(entry) => (entry.x2apic_id, entry.flags),
            _ => continue,
        };
        // Bit 0: enabled. A disabled entry (even "online capable") is a
        // socket to hot-plug into, not a CPU to start.
        match flags & 1 {
            1 => list.push(apic_id),
            _ => list.disabled += 1,
        }
    }
    if list.len == 0 {
        return Err("the MADT lists no enabled CPU");
    }
    Ok(list)
}
