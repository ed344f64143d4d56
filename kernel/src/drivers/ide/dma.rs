//! Bus-master DMA: the memory a caller lends for one transfer, and the
//! read that describes it in a PRD table, starts the engine and polls the
//! transfer to its end.

use core::hint::spin_loop;

use super::channel::PrimaryChannel;
use super::error::IdeError;
use super::prd::build_prd_table;
use super::protocol::{AtaCommand, DATA_TIMEOUT_MS, Drive, SECTOR_SIZE, check_request};
use super::registers::{BM_ACTIVE, BM_ERROR, BM_INTERRUPT};
use crate::arch::x86_64::tsc::{Deadline, delay_micros};

/// Memory a device reaches by bus address, lent to a driver for one
/// transfer: a kernel-virtual byte slice plus where the device sees it.
///
/// # Safety
/// Implementors guarantee that [`bytes`](Self::bytes) always returns the same
/// memory, that this memory is physically contiguous and starts at
/// [`device_address`](Self::device_address) as the device sees it (on these
/// machines there is no IOMMU: the physical address), and that nothing else
/// reads or writes it while the value is mutably borrowed. The driver gives
/// the address to hardware that writes there behind the compiler's back: a
/// wrong address corrupts whatever memory it names.
pub unsafe trait DmaMemory {
    /// The memory, through its kernel virtual mapping.
    fn bytes(&mut self) -> &mut [u8];
    /// The address the device uses for the first byte.
    fn device_address(&self) -> u64;
}

// SAFETY: a `DmaBuffer` is physically contiguous frames owned by the
// buffer alone, and its device address is their physical address (no
// IOMMU); `&mut self` keeps the CPU out while the device writes.
unsafe impl DmaMemory for crate::mem::dma::DmaBuffer {
    fn bytes(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }

    fn device_address(&self) -> u64 {
        crate::mem::dma::DmaBuffer::device_address(self)
    }
}

impl PrimaryChannel {
    /// Reads `sectors` sectors from `lba` on by bus-master DMA into the
    /// start of `buffer`, describing it in `prd_table`. Both must lie below
    /// 4 GiB; the buffer must be 2-byte and the table 4-byte aligned, and
    /// the table must not cross a 64 KiB boundary (the buffer may: it is
    /// split into one descriptor per 64 KiB piece).
    pub fn read_dma<B, T>(
        &mut self,
        drive: Drive,
        lba: u32,
        sectors: usize,
        buffer: &mut B,
        prd_table: &mut T,
    ) -> Result<(), IdeError>
    where
        B: DmaMemory + ?Sized,
        T: DmaMemory + ?Sized,
    {
        check_request(lba, sectors)?;
        let len = sectors * SECTOR_SIZE;
        let available = buffer.bytes().len();
        if available < len {
            return Err(IdeError::BufferTooSmall {
                needed: len,
                len: available,
            });
        }
        let table_address = prd_table.device_address();
        build_prd_table(
            buffer.device_address(),
            len,
            prd_table.bytes(),
            table_address,
        )?;
        // build_prd_table checked the table lies below 4 GiB.
        let table_address = table_address as u32;
        let result = self.read_dma_inner(drive, lba, sectors, table_address);
        self.recover_after(&result);
        result
    }

    fn read_dma_inner(
        &mut self,
        drive: Drive,
        lba: u32,
        sectors: usize,
        table: u32,
    ) -> Result<(), IdeError> {
        let command = AtaCommand::ReadDma;
        self.registers.stop_dma();
        self.registers.set_prd_table(table);
        self.registers.clear_bus_master_status();
        self.issue(command, drive, lba, sectors)?;
        // SAFETY: `read_dma` validated the PRD table and its buffer (below 4 GiB,
        // aligned, in the lent memory); both stay mutably borrowed until this
        // returns, and every path out of here stops the engine first.
        unsafe { self.registers.start_dma() };
        let outcome = self.wait_for_dma();
        self.registers.stop_dma();
        self.registers.clear_bus_master_status();
        outcome?;
        self.finish(command)
    }

    /// Polls the bus-master status until the transfer ends.
    fn wait_for_dma(&self) -> Result<(), IdeError> {
        let deadline = Deadline::after_millis(DATA_TIMEOUT_MS);
        loop {
            let status = self.registers.bus_master_status();
            if status & BM_ERROR != 0 {
                return Err(IdeError::BusMaster { status });
            }
            // INT with ACTIVE clear: the transfer filled the table exactly;
            // INT with ACTIVE set: the table was longer (fine, we stop it).
            if status & BM_INTERRUPT != 0 {
                return Ok(());
            }
            if status & BM_ACTIVE == 0 {
                // Idle without the drive's interrupt: the table ran out
                // first. Allow the interrupt a moment to land, in case the
                // engine went idle just before it.
                delay_micros(100);
                let status = self.registers.bus_master_status();
                if status & BM_INTERRUPT != 0 {
                    return Ok(());
                }
                return Err(IdeError::PrdTableShort {
                    bus_master_status: status,
                });
            }
            if deadline.passed() {
                return Err(self.timeout("the bus-master DMA transfer to end"));
            }
            spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::ide::prd::PRD_END_OF_TABLE;
    use crate::drivers::ide::test_support::{
        DMA_SECTORS, DmaPages, PAGE_SIZE, POISON, assert_boot_signature, check, claim, prd_entry,
    };
    use crate::kprintln;

    fn first_difference(left: &[u8], right: &[u8]) -> Option<usize> {
        left.iter().zip(right).position(|(one, other)| one != other)
    }

    #[test_case]
    fn dma_read_into_memory_below_4gib_matches_pio() {
        let mut channel = claim();
        let mut pages = DmaPages::below_4gib();
        kprintln!(
            "# DMA buffer at physical {:#x}, PRD table at physical {:#x}",
            pages.data.device_address(),
            pages.prd.device_address()
        );
        // Sectors 0..8, then 8..16: the second command proves the first left
        // the channel and the engine ready for more.
        for lba in [0, DMA_SECTORS as u32] {
            pages.data.as_mut_slice().fill(POISON);
            let read = channel.read_dma(
                Drive::Master,
                lba,
                DMA_SECTORS,
                &mut pages.data,
                &mut pages.prd,
            );
            check(read, "bus-master DMA read");
            assert_eq!(
                prd_entry(pages.prd.as_slice(), 0),
                (
                    pages.data.device_address() as u32,
                    PAGE_SIZE as u16,
                    PRD_END_OF_TABLE
                ),
                "one descriptor for the whole page, flagged last"
            );
            let mut pio = [0u8; PAGE_SIZE];
            check(
                channel.read_pio(Drive::Master, lba, &mut pio),
                "PIO read of the same sectors",
            );
            assert!(
                pio.iter().any(|&byte| byte != POISON),
                "the disk holds only poison bytes?"
            );
            if let Some(at) = first_difference(pages.data.as_slice(), &pio) {
                panic!(
                    "DMA and PIO differ for sectors {lba}..{}: first at byte {at} (DMA {:#04x}, PIO {:#04x})",
                    lba + DMA_SECTORS as u32,
                    pages.data.as_slice()[at],
                    pio[at]
                );
            }
            if lba == 0 {
                assert_boot_signature(pages.data.as_slice(), "DMA");
            }
        }
        kprintln!(
            "# {} sectors by DMA equal PIO, boot signature present",
            2 * DMA_SECTORS
        );
    }
}
