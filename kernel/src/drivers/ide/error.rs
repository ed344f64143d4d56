//! Everything the driver reports, with the hardware's own words decoded:
//! status and error register bits are named in the messages.

use core::fmt;

use super::protocol::{AtaCommand, Drive, MAX_SECTORS, SECTOR_SIZE};
use super::registers::{BSY, DF, DRDY, DRQ, ERR};
use crate::drivers::pci::{self, Bar, PciAddress};

/// Which piece of lent DMA memory an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaRegion {
    Buffer,
    PrdTable,
}

impl fmt::Display for DmaRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Buffer => "DMA buffer",
            Self::PrdTable => "PRD table",
        })
    }
}

/// Everything that can go wrong, with what the hardware said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdeError {
    /// The PCI scan found no class 01/01 function.
    NoController,
    /// [`PrimaryChannel::claim`](super::channel::PrimaryChannel::claim) was given a function that is not one.
    NotIde {
        address: PciAddress,
        class: u8,
        subclass: u8,
    },
    /// Another [`PrimaryChannel`](super::channel::PrimaryChannel) is alive.
    AlreadyClaimed,
    /// A BAR the driver needs could not be read.
    BadBar { index: u8, error: pci::BarError },
    /// A BAR the driver needs is missing or not an I/O BAR.
    NotIoBar { index: u8, found: Option<Bar> },
    /// Nothing answers as this drive.
    NoDrive { drive: Drive },
    /// The drive is not an ATA disk (e.g. ATAPI); `signature` is LBA mid/high.
    NotAta { drive: Drive, signature: u16 },
    /// A bounded wait ran out.
    Timeout {
        waiting_for: &'static str,
        status: u8,
        bus_master_status: u8,
    },
    /// The drive ended the command with ERR.
    Device {
        command: AtaCommand,
        status: u8,
        error: u8,
    },
    /// The drive reported a device fault.
    DeviceFault { command: AtaCommand, status: u8 },
    /// The drive went idle while still asking for data (DRQ).
    Incomplete { command: AtaCommand, status: u8 },
    /// The bus-master engine reported a PCI error (e.g. master abort).
    BusMaster { status: u8 },
    /// The engine stopped without the drive signalling the end: the PRD
    /// table described less memory than the transfer needed.
    PrdTableShort { bus_master_status: u8 },
    /// Sector counts are 1..=256.
    BadSectorCount { sectors: usize },
    /// A PIO buffer must hold whole sectors.
    NotWholeSectors { len: usize },
    /// The request reaches past what LBA28 can address.
    BeyondLba28 { lba: u32, sectors: usize },
    /// The lent buffer is smaller than the transfer.
    BufferTooSmall { needed: usize, len: usize },
    /// The device can only reach the first 4 GiB.
    Above4GiB {
        region: DmaRegion,
        address: u64,
        len: u64,
    },
    /// The device address is not aligned as the bus master requires.
    Misaligned {
        region: DmaRegion,
        address: u64,
        align: u64,
    },
    /// The lent PRD table has too few entries for the buffer's 64 KiB pieces.
    PrdTableTooSmall { needed: usize, capacity: usize },
    /// The PRD table itself crosses a 64 KiB boundary.
    PrdTableCrosses64KiB { address: u64, len: u64 },
}

impl fmt::Display for IdeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoController => f.write_str("no IDE controller (PCI class 01/01) found"),
            Self::NotIde {
                address,
                class,
                subclass,
            } => {
                write!(
                    f,
                    "PCI function {address} is class {class:02x}/{subclass:02x}, not an IDE controller"
                )
            }
            Self::AlreadyClaimed => f.write_str("the primary IDE channel is already claimed"),
            Self::BadBar { index, error } => write!(f, "IDE controller BAR{index}: {error}"),
            Self::NotIoBar { index, found: None } => {
                write!(f, "IDE controller BAR{index} is not assigned")
            }
            Self::NotIoBar {
                index,
                found: Some(bar),
            } => {
                write!(
                    f,
                    "IDE controller BAR{index} should be an I/O range but is {bar:x?}"
                )
            }
            Self::NoDrive { drive } => write!(f, "no drive answers as primary {drive:?}"),
            Self::NotAta { drive, signature } => {
                write!(
                    f,
                    "primary {drive:?} is not an ATA disk (signature {signature:#06x}; 0xeb14 is ATAPI)"
                )
            }
            Self::Timeout {
                waiting_for,
                status,
                bus_master_status,
            } => write!(
                f,
                "timed out waiting for {waiting_for} (status {}, bus-master status {bus_master_status:#04x})",
                Status(status)
            ),
            Self::Device {
                command,
                status,
                error,
            } => {
                write!(
                    f,
                    "{command} failed: status {}, error {}",
                    Status(status),
                    ErrorBits(error)
                )
            }
            Self::DeviceFault { command, status } => {
                write!(f, "{command}: device fault (status {})", Status(status))
            }
            Self::Incomplete { command, status } => {
                write!(
                    f,
                    "{command}: the drive still requests data after the transfer (status {})",
                    Status(status)
                )
            }
            Self::BusMaster { status } => {
                write!(
                    f,
                    "bus-master DMA error (status {status:#04x}): the PCI transfer to memory failed"
                )
            }
            Self::PrdTableShort { bus_master_status } => write!(
                f,
                "bus-master engine stopped before the drive finished (status {bus_master_status:#04x}): \
                 the PRD table describes less memory than the transfer"
            ),
            Self::BadSectorCount { sectors } => {
                write!(
                    f,
                    "{sectors} sectors requested; one command moves 1..={MAX_SECTORS}"
                )
            }
            Self::NotWholeSectors { len } => {
                write!(
                    f,
                    "buffer of {len} bytes is not a whole number of {SECTOR_SIZE}-byte sectors"
                )
            }
            Self::BeyondLba28 { lba, sectors } => {
                write!(
                    f,
                    "sectors {lba}..{} lie beyond LBA28's 2^28 sectors",
                    u64::from(lba) + sectors as u64
                )
            }
            Self::BufferTooSmall { needed, len } => {
                write!(
                    f,
                    "DMA buffer holds {len} bytes but the transfer needs {needed}"
                )
            }
            Self::Above4GiB {
                region,
                address,
                len,
            } => write!(
                f,
                "{region} at device address {address:#x}..{:#x} is not below 4 GiB; \
                 the bus master takes 32-bit addresses",
                address.saturating_add(len)
            ),
            Self::Misaligned {
                region,
                address,
                align,
            } => {
                write!(
                    f,
                    "{region} at device address {address:#x} is not {align}-byte aligned"
                )
            }
            Self::PrdTableTooSmall { needed, capacity } => {
                write!(
                    f,
                    "PRD table holds {capacity} entries but the buffer needs {needed}"
                )
            }
            Self::PrdTableCrosses64KiB { address, len } => {
                write!(
                    f,
                    "PRD table at {address:#x} (+{len} bytes) crosses a 64 KiB boundary"
                )
            }
        }
    }
}

impl IdeError {
    /// Whether the error came from the hardware mid-command, so the channel
    /// may be left busy (request validation errors never touch it).
    pub(super) fn left_channel_busy(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. }
                | Self::Device { .. }
                | Self::DeviceFault { .. }
                | Self::Incomplete { .. }
                | Self::BusMaster { .. }
                | Self::PrdTableShort { .. }
                | Self::NotAta { .. }
        )
    }
}

/// A status register value, with its bits named.
struct Status(u8);

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#04x}", self.0)?;
        for (bit, name) in [
            (BSY, "BSY"),
            (DRDY, "DRDY"),
            (DF, "DF"),
            (DRQ, "DRQ"),
            (ERR, "ERR"),
        ] {
            if self.0 & bit != 0 {
                write!(f, " {name}")?;
            }
        }
        Ok(())
    }
}

/// An error register value, with its bits named.
struct ErrorBits(u8);

impl fmt::Display for ErrorBits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#04x}", self.0)?;
        for (bit, name) in [
            (0x80, "ICRC/BBK (interface CRC or bad block)"),
            (0x40, "UNC (uncorrectable data)"),
            (0x10, "IDNF (sector not found)"),
            (0x04, "ABRT (command aborted)"),
            (0x02, "NM/TK0NF"),
            (0x01, "AMNF (address mark not found)"),
        ] {
            if self.0 & bit != 0 {
                write!(f, " {name}")?;
            }
        }
        Ok(())
    }
}
