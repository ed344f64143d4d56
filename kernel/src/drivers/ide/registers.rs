//! The channel's registers: the command block (drive registers), the
//! control block (alternate status, device control) and the bus-master
//! block of the PIIX's DMA engine. Every port access of the driver is here.
//!
//! The `x86_64` crate declares its port instructions `nomem`, so the
//! compiler may move ordinary loads and stores across them. Starting and
//! stopping the DMA engine therefore sit behind full fences: the PRD table's
//! stores land before the engine starts, and the caller's reads of the
//! buffer come after the engine stopped.

use core::sync::atomic::{Ordering, fence};
use x86_64::instructions::port::{PortReadOnly, PortWriteOnly};

/// Compatibility-mode ports of the primary channel.
pub(super) const COMPAT_COMMAND_BLOCK: u16 = 0x1f0;
pub(super) const COMPAT_CONTROL_BLOCK: u16 = 0x3f6;

// Command block registers, as offsets.
const REG_DATA: u16 = 0;
pub(super) const REG_ERROR: u16 = 1;
pub(super) const REG_FEATURES: u16 = 1;
pub(super) const REG_SECTOR_COUNT: u16 = 2;
pub(super) const REG_LBA_LOW: u16 = 3;
pub(super) const REG_LBA_MID: u16 = 4;
pub(super) const REG_LBA_HIGH: u16 = 5;
pub(super) const REG_DEVICE: u16 = 6;
pub(super) const REG_STATUS: u16 = 7;
pub(super) const REG_COMMAND: u16 = 7;

// Status register bits.
pub(super) const BSY: u8 = 0x80;
pub(super) const DRDY: u8 = 0x40;
pub(super) const DF: u8 = 0x20;
pub(super) const DRQ: u8 = 0x08;
pub(super) const ERR: u8 = 0x01;

/// Device control: software reset of both drives on the channel. Written
/// without nIEN (bit 1), so the drive's interrupt reaches the bus-master
/// status register, which is what DMA completion is polled on.
pub(super) const SRST: u8 = 0x04;
/// Device register: bits 7 and 5 are obsolete ones, bit 6 selects LBA.
pub(super) const DEVICE_LBA: u8 = 0xe0;

// Bus-master registers of the primary channel, as offsets from BAR4.
const BM_COMMAND: u16 = 0;
const BM_STATUS: u16 = 2;
const BM_PRD_TABLE: u16 = 4;
const BM_START: u8 = 0x01;
/// Direction: the engine writes memory (a device-to-memory "read").
const BM_WRITES_MEMORY: u8 = 0x08;
pub(super) const BM_ACTIVE: u8 = 0x01;
pub(super) const BM_ERROR: u8 = 0x02;
pub(super) const BM_INTERRUPT: u8 = 0x04;

/// The port bases of one channel, owned by whoever holds this value.
pub(super) struct Registers {
    command_block: u16,
    control_block: u16,
    bus_master: u16,
}

impl Registers {
    /// # Safety
    /// The three bases must be the command block, the device-control port
    /// and the bus-master block of one IDE channel, and nothing else may use
    /// those ports while this value lives.
    pub(super) unsafe fn new(command_block: u16, control_block: u16, bus_master: u16) -> Self {
        Self {
            command_block,
            control_block,
            bus_master,
        }
    }

    pub(super) fn read_register(&self, register: u16) -> u8 {
        // SAFETY: a command-block register of our channel (see `new`);
        // reading one changes no memory (reading the status register
        // acknowledges the drive's interrupt, which nobody else waits for).
        unsafe { PortReadOnly::<u8>::new(self.command_block + register).read() }
    }

    pub(super) fn write_register(&mut self, register: u16, value: u8) {
        // SAFETY: a command-block register of our channel; at most this
        // starts a drive command, whose data moves only through the data
        // port or through the bus-master engine, which `start_dma` alone starts.
        unsafe { PortWriteOnly::<u8>::new(self.command_block + register).write(value) }
    }

    pub(super) fn read_data_word(&mut self) -> u16 {
        // SAFETY: the data register of our channel; the word lands in a
        // register, not in memory.
        unsafe { PortReadOnly::<u16>::new(self.command_block + REG_DATA).read() }
    }

    pub(super) fn alternate_status(&self) -> u8 {
        // SAFETY: the alternate status register of our channel; reading it
        // has no side effect at all (unlike the status register).
        unsafe { PortReadOnly::<u8>::new(self.control_block).read() }
    }

    pub(super) fn write_device_control(&mut self, value: u8) {
        // SAFETY: device control of our channel: reset and interrupt enable
        // of its drives, nothing that touches memory.
        unsafe { PortWriteOnly::<u8>::new(self.control_block).write(value) }
    }

    pub(super) fn bus_master_status(&self) -> u8 {
        // SAFETY: our channel's bus-master status register; reads are pure.
        unsafe { PortReadOnly::<u8>::new(self.bus_master + BM_STATUS).read() }
    }

    pub(super) fn clear_bus_master_status(&mut self) {
        let status = self.bus_master_status();
        // SAFETY: our bus-master status register; writing 1 clears the
        // error and interrupt bits, and the capability bits are written back.
        unsafe {
            PortWriteOnly::<u8>::new(self.bus_master + BM_STATUS)
                .write(status | BM_ERROR | BM_INTERRUPT)
        }
    }

    pub(super) fn set_prd_table(&mut self, address: u32) {
        // SAFETY: our bus-master PRD table pointer; the engine reads it only
        // when `start_dma` starts it.
        unsafe { PortWriteOnly::<u32>::new(self.bus_master + BM_PRD_TABLE).write(address) }
    }

    /// Stops the bus-master engine; memory it wrote may be read after this.
    pub(super) fn stop_dma(&mut self) {
        // SAFETY: our bus-master command register; clearing the start bit
        // stops the engine, which ends its memory accesses.
        unsafe { PortWriteOnly::<u8>::new(self.bus_master + BM_COMMAND).write(BM_WRITES_MEMORY) }
        // Reads of the buffer must not move before the stop, nor before the
        // status poll that saw the transfer end (see the module docs).
        fence(Ordering::SeqCst);
    }

    /// Starts the bus-master engine (device to memory).
    ///
    /// # Safety
    /// The PRD table pointer must name a valid table whose regions are
    /// memory the caller owns and lends to the device until [`Self::stop_dma`].
    pub(super) unsafe fn start_dma(&mut self) {
        // The PRD table was written with ordinary stores; they must reach
        // memory before the engine fetches it (see the module docs).
        fence(Ordering::SeqCst);
        // SAFETY: the caller vouches for the table and the memory it names.
        unsafe {
            PortWriteOnly::<u8>::new(self.bus_master + BM_COMMAND)
                .write(BM_WRITES_MEMORY | BM_START)
        }
    }
}
