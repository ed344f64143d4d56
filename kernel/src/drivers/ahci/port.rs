//! One port of the HBA with its disk: taken over from the firmware (whose
//! command list and FIS area lie in memory that is now ours), pointed at
//! structures in DMA32 frames from our allocator, and one read at a time.

use super::command::{
    COMMAND_LIST_BYTES, COMMAND_TABLE_BYTES, RECEIVED_FIS_BYTES, SECTOR_SIZE, dma_address,
    write_header, write_read_table,
};
use super::error::AhciError;
use super::hba::{Hba, PX_CMD, PX_IE, PX_IS, PX_SERR, PX_SSTS, PX_TFD, find_controller};
use crate::arch::x86_64::tsc;
use crate::mem::dma::DmaBuffer;

// PxCMD bits.
const CMD_START: u32 = 1 << 0;
const CMD_FIS_RECEIVE: u32 = 1 << 4;
const CMD_FIS_RUNNING: u32 = 1 << 14;
const CMD_LIST_RUNNING: u32 = 1 << 15;
/// PxSSTS.DET: a device is present and communication is established.
const DET_PRESENT: u32 = 3;
/// PxIS bit 30: task-file error.
const IS_TASK_FILE_ERROR: u32 = 1 << 30;
// PxTFD status bits.
const TFD_ERR: u32 = 1 << 0;
const TFD_DRQ: u32 = 1 << 3;
const TFD_BSY: u32 = 1 << 7;
/// The spec gives the engines 500 ms to stop; a read of a few sectors from
/// an emulated disk takes microseconds.
const ENGINE_MS: u64 = 500;
const COMMAND_MS: u64 = 2_000;
/// The command slot every read uses.
const SLOT: u8 = 0;
/// The command list and the FIS area share one page, the table has another.
const PAGE: usize = 4096;
const _: () = assert!(COMMAND_LIST_BYTES + RECEIVED_FIS_BYTES <= PAGE);
const _: () = assert!(COMMAND_TABLE_BYTES <= PAGE);

/// A port with a disk, its command list and FIS area (one page) and its
/// command table (another), all below 4 GiB.
pub struct Port {
    hba: Hba,
    port: u8,
    /// Command list at 0, received FIS at `COMMAND_LIST_BYTES`.
    list: DmaBuffer,
    table: DmaBuffer,
}

impl Port {
    /// The first port with a device on the first AHCI controller, taken over.
    pub fn first_disk() -> Result<Self, AhciError> {
        let hba = Hba::claim(find_controller()?)?;
        let implemented = hba.ports_implemented();
        let port = (0..32u8)
            .filter(|&port| implemented & 1 << port != 0)
            .find(|&port| hba.port_read(port, PX_SSTS) & 0xf == DET_PRESENT)
            .ok_or(AhciError::NoDisk)?;
        let page = || DmaBuffer::new(PAGE).map_err(|_| AhciError::NoMemory);
        let mut this = Self {
            hba,
            port,
            list: page()?,
            table: page()?,
        };
        this.take_over()?;
        Ok(this)
    }

    pub fn number(&self) -> u8 {
        self.port
    }

    /// Stops the command and FIS engines; after this the HBA touches none
    /// of the port's memory.
    fn stop(&self) -> Result<(), AhciError> {
        let (hba, port) = (&self.hba, self.port);
        let command = hba.port_read(port, PX_CMD);
        hba.port_write(port, PX_CMD, command & !CMD_START);
        if !tsc::poll_until(ENGINE_MS * 1_000, || {
            hba.port_read(port, PX_CMD) & CMD_LIST_RUNNING == 0
        }) {
            return Err(AhciError::EngineStuck {
                port,
                what: "stopping the command engine",
            });
        }
        let command = hba.port_read(port, PX_CMD);
        hba.port_write(port, PX_CMD, command & !CMD_FIS_RECEIVE);
        if !tsc::poll_until(ENGINE_MS * 1_000, || {
            hba.port_read(port, PX_CMD) & CMD_FIS_RUNNING == 0
        }) {
            return Err(AhciError::EngineStuck {
                port,
                what: "stopping FIS reception",
            });
        }
        Ok(())
    }

    /// Stops whatever the firmware left running, points the port at our
    /// structures, clears old errors and starts the engines.
    fn take_over(&mut self) -> Result<(), AhciError> {
        self.stop()?;
        let list = self.list.device_address();
        let list32 = dma_address("the command list", list, 1024)?;
        let fis = dma_address("the FIS area", list + COMMAND_LIST_BYTES as u64, 256)?;
        let (hba, port) = (&self.hba, self.port);
        // SAFETY: the engines are stopped (above); both areas lie in
        // `self.list`, which lives as long as `self`, whose `Drop` stops the
        // engines before the page is freed.
        unsafe { hba.set_port_memory(port, list32, fis) };
        hba.port_write(port, PX_IE, 0);
        hba.port_write(port, PX_SERR, !0);
        hba.port_write(port, PX_IS, !0);
        let command = hba.port_read(port, PX_CMD);
        hba.port_write(port, PX_CMD, command | CMD_FIS_RECEIVE);
        if !tsc::poll_until(ENGINE_MS * 1_000, || {
            hba.port_read(port, PX_TFD) & (TFD_BSY | TFD_DRQ) == 0
        }) {
            return Err(AhciError::EngineStuck {
                port,
                what: "the device becoming idle",
            });
        }
        let command = hba.port_read(port, PX_CMD);
        hba.port_write(port, PX_CMD, command | CMD_START);
        Ok(())
    }

    /// Reads `sectors` sectors from `lba` into the start of `buffer` by DMA.
    pub fn read(
        &mut self,
        lba: u64,
        sectors: u16,
        buffer: &mut DmaBuffer,
    ) -> Result<(), AhciError> {
        let bytes = usize::from(sectors) * SECTOR_SIZE;
        if buffer.len() < bytes {
            return Err(AhciError::BadBuffer {
                what: "the data buffer",
                len: buffer.len(),
            });
        }
        let data = dma_address("the data buffer", buffer.device_address(), 2)?;
        let table = dma_address("the command table", self.table.device_address(), 128)?;
        write_read_table(self.table.as_mut_slice(), lba, sectors, data)?;
        write_header(self.list.as_mut_slice(), table);
        let (hba, port) = (&self.hba, self.port);
        hba.port_write(port, PX_IS, !0);
        // We return only once the command completed or the engines are
        // stopped (or not at all: see `stop_or_die`).
        // SAFETY: header and table are in `self`'s pages, and the buffer
        // is borrowed mutably until we return.
        unsafe { hba.issue(port, SLOT) };
        let finished = tsc::poll_until(COMMAND_MS * 1_000, || {
            !hba.issued(port, SLOT) || hba.port_read(port, PX_IS) & IS_TASK_FILE_ERROR != 0
        });
        let tfd = hba.port_read(port, PX_TFD);
        let failed = hba.port_read(port, PX_IS) & IS_TASK_FILE_ERROR != 0 || tfd & TFD_ERR != 0;
        if finished && !failed {
            return Ok(());
        }
        // Stop the engines before the buffer goes back, then start afresh.
        self.stop_or_die();
        let _ = self.take_over();
        Err(if finished {
            AhciError::Device {
                port,
                status: tfd as u8,
                error: (tfd >> 8) as u8,
            }
        } else {
            AhciError::Timeout { port }
        })
    }

    /// Stops the engines, or stops the kernel: memory the HBA may still
    /// write must never go back to the allocator.
    fn stop_or_die(&self) {
        if let Err(error) = self.stop() {
            panic!("AHCI: {error}; the HBA may still write our memory");
        }
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        // Before the command pages are freed (fields drop after this).
        self.stop_or_die();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kprintln;

    /// Filled in before a read, so a transfer that never happened cannot pass.
    const POISON: u8 = 0xa5;
    /// Offset of the first partition entry's type byte in an MBR (the BIOS
    /// image's partition table, or the UEFI image's protective MBR).
    const FIRST_PARTITION_TYPE: usize = 446 + 4;

    /// The port, or the test ends as skipped on a machine without AHCI.
    fn disk() -> Port {
        match Port::first_disk() {
            Ok(port) => port,
            Err(AhciError::NoController) => {
                crate::ktest::skip("no AHCI controller on this machine (QEMU's pc has IDE instead)")
            }
            Err(error) => panic!("taking over the AHCI disk: {error}"),
        }
    }

    /// q35's boot disk sits on the ICH9's AHCI: sectors 0..8 read by DMA
    /// into a DMA32 page from our allocator hold the boot sector (its
    /// signature and a partition entry), and a second read of the same
    /// sectors into another page gives the same bytes.
    #[test_case]
    fn dma_read_into_memory_below_4gib_has_the_boot_sector() {
        let mut port = disk();
        let mut first = DmaBuffer::new(4096).expect("a DMA32 page");
        let mut second = DmaBuffer::new(4096).expect("a DMA32 page");
        kprintln!(
            "# port {}: data at physical {:#x} and {:#x}",
            port.number(),
            first.device_address(),
            second.device_address()
        );
        for buffer in [&mut first, &mut second] {
            buffer.as_mut_slice().fill(POISON);
            port.read(0, 8, buffer)
                .unwrap_or_else(|error| panic!("DMA read: {error}"));
        }
        let sector = &first.as_slice()[..SECTOR_SIZE];
        assert_eq!(
            sector[510..512],
            [0x55, 0xaa],
            "sector 0 has no boot signature: {:02x?}",
            &sector[..16]
        );
        assert_ne!(sector[FIRST_PARTITION_TYPE], 0, "no first partition entry");
        assert!(
            first.as_slice()[SECTOR_SIZE..]
                .iter()
                .any(|&byte| byte != POISON),
            "sectors 1..8 were not written"
        );
        assert!(
            first.as_slice() == second.as_slice(),
            "two reads of sectors 0..8 differ"
        );
        // A read past any disk's end fails with the device's error, and the
        // port works afterwards.
        let past_end = port.read(1 << 40, 1, &mut first);
        assert!(
            matches!(past_end, Err(AhciError::Device { .. })),
            "read past the end: {past_end:?}"
        );
        kprintln!("# past the end: {}", past_end.unwrap_err());
        second.as_mut_slice().fill(POISON);
        port.read(0, 1, &mut second)
            .unwrap_or_else(|error| panic!("read after an error: {error}"));
        assert_eq!(second.as_slice()[510..512], [0x55, 0xaa]);
    }
}
