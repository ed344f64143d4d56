//! The primary channel of a PIIX-style IDE controller (QEMU `pc`: PIIX3 at
//! class 01/01), read by PIO and by bus-master DMA.
//!
//! It exists to prove the DMA32 memory path with a real device: the
//! bus-master engine takes its descriptor table and buffers by 32-bit
//! physical address, so memory for it must come from below 4 GiB. LBA28
//! reads only. Interrupts stay off in this kernel, so completion is polled
//! (the bus-master interrupt bit and the drive status); every wait has a
//! deadline, and a failed command resets the channel so the next one starts
//! clean.
//!
//! DMA memory is whatever the caller lends through [`DmaMemory`]; the driver
//! does not care how it was obtained.

use core::fmt;
use core::hint::spin_loop;
use core::sync::atomic::{AtomicBool, Ordering, fence};

use x86_64::instructions::port::{PortReadOnly, PortWriteOnly};

use super::pci::{self, Bar, Command, PciAddress, PciFunction};
use crate::arch::x86_64::tsc;

/// Bytes per sector (LBA28 ATA disks).
pub const SECTOR_SIZE: usize = 512;
/// Most sectors one LBA28 command moves (a sector count of 0 means 256).
pub const MAX_SECTORS: usize = 256;
/// Bytes per physical region descriptor.
pub const PRD_ENTRY_SIZE: usize = 8;

const LBA28_LIMIT: u64 = 1 << 28;
const FOUR_GIB: u64 = 1 << 32;
/// Neither a region nor the PRD table may cross a 64 KiB boundary.
const BOUNDARY_64K: u64 = 0x1_0000;
/// Flag in the last PRD entry's top halfword.
const PRD_END_OF_TABLE: u16 = 0x8000;

const IDE_CLASS: u8 = 0x01;
const IDE_SUBCLASS: u8 = 0x01;
/// Programming interface bit 0: the primary channel runs in native PCI mode
/// (ports from BAR0/BAR1) rather than at the ISA compatibility ports.
const PROG_IF_PRIMARY_NATIVE: u8 = 0x01;
const BUS_MASTER_BAR: u8 = 4;

/// Compatibility-mode ports of the primary channel.
const COMPAT_COMMAND_BLOCK: u16 = 0x1f0;
const COMPAT_CONTROL_BLOCK: u16 = 0x3f6;

// Command block registers, as offsets.
const REG_DATA: u16 = 0;
const REG_ERROR: u16 = 1;
const REG_FEATURES: u16 = 1;
const REG_SECTOR_COUNT: u16 = 2;
const REG_LBA_LOW: u16 = 3;
const REG_LBA_MID: u16 = 4;
const REG_LBA_HIGH: u16 = 5;
const REG_DEVICE: u16 = 6;
const REG_STATUS: u16 = 7;
const REG_COMMAND: u16 = 7;

// Status register bits.
const BSY: u8 = 0x80;
const DRDY: u8 = 0x40;
const DF: u8 = 0x20;
const DRQ: u8 = 0x08;
const ERR: u8 = 0x01;

/// Device control: software reset of both drives on the channel. Written
/// without nIEN (bit 1), so the drive's interrupt reaches the bus-master
/// status register, which is what DMA completion is polled on.
const SRST: u8 = 0x04;
/// Device register: bits 7 and 5 are obsolete ones, bit 6 selects LBA.
const DEVICE_LBA: u8 = 0xe0;

// Bus-master registers of the primary channel, as offsets from BAR4.
const BM_COMMAND: u16 = 0;
const BM_STATUS: u16 = 2;
const BM_PRD_TABLE: u16 = 4;
const BM_START: u8 = 0x01;
/// Direction: the engine writes memory (a device-to-memory "read").
const BM_WRITES_MEMORY: u8 = 0x08;
const BM_ACTIVE: u8 = 0x01;
const BM_ERROR: u8 = 0x02;
const BM_INTERRUPT: u8 = 0x04;

/// A drive must drop BSY within this after reset (ATA allows 31 s for a
/// spinning-up disk; we only ever reset drives that already run).
const RESET_TIMEOUT_MS: u64 = 5_000;
/// For BSY to clear before a command may be written.
const READY_TIMEOUT_MS: u64 = 1_000;
/// For one PIO data block, or a whole DMA transfer.
const DATA_TIMEOUT_MS: u64 = 5_000;

/// ATA commands this driver issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum AtaCommand {
    ReadSectors = 0x20,
    ReadDma = 0xc8,
    IdentifyDevice = 0xec,
}

impl fmt::Display for AtaCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::ReadSectors => "READ SECTORS",
            Self::ReadDma => "READ DMA",
            Self::IdentifyDevice => "IDENTIFY DEVICE",
        };
        write!(f, "{name} ({:#04x})", *self as u8)
    }
}

/// One of the two drives on the channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drive {
    Master,
    Slave,
}

impl Drive {
    const fn select_bit(self) -> u8 {
        match self {
            Self::Master => 0,
            Self::Slave => 0x10,
        }
    }
}

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
    /// [`PrimaryChannel::claim`] was given a function that is not one.
    NotIde {
        address: PciAddress,
        class: u8,
        subclass: u8,
    },
    /// Another [`PrimaryChannel`] is alive.
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

/// What IDENTIFY DEVICE reports about a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriveInfo {
    model: [u8; 40],
    /// Sectors addressable with LBA28 commands (words 60..62).
    pub lba28_sectors: u32,
    /// Sectors addressable with LBA48 commands, if supported (words 100..104).
    pub lba48_sectors: Option<u64>,
    /// Capabilities word 49, bit 8.
    pub dma: bool,
    /// Capabilities word 49, bit 9.
    pub lba: bool,
}

impl DriveInfo {
    fn parse(words: &[u16; 256]) -> Self {
        let mut model = [0; 40];
        // ATA strings hold two characters per word, first one in the high byte.
        for (pair, word) in model.as_chunks_mut::<2>().0.iter_mut().zip(&words[27..47]) {
            *pair = word.to_be_bytes();
        }
        let lba48 = words[83] & (1 << 10) != 0;
        let lba48_sectors = words[100..104]
            .iter()
            .rev()
            .fold(0u64, |sum, &word| sum << 16 | u64::from(word));
        Self {
            model,
            lba28_sectors: u32::from(words[61]) << 16 | u32::from(words[60]),
            lba48_sectors: lba48.then_some(lba48_sectors),
            dma: words[49] & (1 << 8) != 0,
            lba: words[49] & (1 << 9) != 0,
        }
    }

    /// The model string, trimmed ("QEMU HARDDISK" under QEMU).
    pub fn model(&self) -> &str {
        let text = core::str::from_utf8(&self.model).unwrap_or("(not ASCII)");
        text.trim_matches(|c: char| c == ' ' || c == '\0')
    }
}

impl fmt::Display for DriveInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "\"{}\", {} LBA28 sectors",
            self.model(),
            self.lba28_sectors
        )?;
        if let Some(sectors) = self.lba48_sectors {
            write!(f, ", {sectors} LBA48 sectors")?;
        }
        f.write_str(if self.lba { ", LBA" } else { ", no LBA" })?;
        f.write_str(if self.dma { ", DMA" } else { ", no DMA" })
    }
}

/// The first IDE controller the PCI scan finds.
pub fn find_controller() -> Result<PciFunction, IdeError> {
    pci::find(IDE_CLASS, IDE_SUBCLASS).ok_or(IdeError::NoController)
}

/// Set while a [`PrimaryChannel`] exists: its ports belong to it alone.
static CLAIMED: AtomicBool = AtomicBool::new(false);

/// Exclusive use of the primary channel of an IDE controller.
pub struct PrimaryChannel {
    command_block: u16,
    control_block: u16,
    bus_master: u16,
}

impl PrimaryChannel {
    /// Takes the primary channel of `function`: switches on I/O decoding
    /// and bus mastering, stops any transfer firmware left running, and
    /// resets the drives (OVMF's driver, for one, leaves the channel in its
    /// own state). Fails if the channel is already claimed.
    pub fn claim(function: PciFunction) -> Result<Self, IdeError> {
        if (function.class, function.subclass) != (IDE_CLASS, IDE_SUBCLASS) {
            return Err(IdeError::NotIde {
                address: function.address,
                class: function.class,
                subclass: function.subclass,
            });
        }
        let bus_master = io_bar(&function, BUS_MASTER_BAR)?;
        let (command_block, control_block) = if function.prog_if & PROG_IF_PRIMARY_NATIVE != 0 {
            // Native mode: BAR1 is a 4-port block whose third port is device control.
            (io_bar(&function, 0)?, io_bar(&function, 1)? + 2)
        } else {
            (COMPAT_COMMAND_BLOCK, COMPAT_CONTROL_BLOCK)
        };
        if CLAIMED.swap(true, Ordering::Acquire) {
            return Err(IdeError::AlreadyClaimed);
        }
        let mut channel = Self {
            command_block,
            control_block,
            bus_master,
        };
        // SAFETY: the ranges this turns on are the controller's I/O BARs
        // (checked above), which cannot overlap RAM; memory decoding and bus
        // mastering stay as they are.
        unsafe { function.enable(Command::IO_SPACE) };
        channel.stop_dma();
        channel.clear_bus_master_status();
        // SAFETY: the engine is stopped (just above) and is started again
        // only by `start_dma`, under that function's contract.
        unsafe { function.enable(Command::BUS_MASTER) };
        channel.reset()?;
        Ok(channel)
    }

    /// Software-resets both drives of the channel and waits for them.
    pub fn reset(&mut self) -> Result<(), IdeError> {
        self.stop_dma();
        self.clear_bus_master_status();
        self.write_device_control(SRST);
        delay_micros(5);
        self.write_device_control(0);
        delay_micros(2_000);
        let status = self.alternate_status();
        if status == 0xff {
            // Pulled-up, floating bus: nothing is attached.
            return Err(IdeError::NoDrive {
                drive: Drive::Master,
            });
        }
        self.wait_while(
            BSY,
            RESET_TIMEOUT_MS,
            "the drives to finish a software reset",
        )?;
        // Acknowledges whatever the reset left pending.
        self.read_register(REG_STATUS);
        Ok(())
    }

    /// Asks `drive` who it is.
    pub fn identify(&mut self, drive: Drive) -> Result<DriveInfo, IdeError> {
        let result = self.identify_inner(drive);
        self.recover_after(&result);
        result
    }

    /// Reads `buffer.len() / 512` sectors from `lba` on by PIO.
    pub fn read_pio(&mut self, drive: Drive, lba: u32, buffer: &mut [u8]) -> Result<(), IdeError> {
        if !buffer.len().is_multiple_of(SECTOR_SIZE) {
            return Err(IdeError::NotWholeSectors { len: buffer.len() });
        }
        let sectors = buffer.len() / SECTOR_SIZE;
        check_request(lba, sectors)?;
        let result = self.read_pio_inner(drive, lba, buffer);
        self.recover_after(&result);
        result
    }

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

    fn identify_inner(&mut self, drive: Drive) -> Result<DriveInfo, IdeError> {
        self.select(drive, 0)?;
        self.write_register(REG_SECTOR_COUNT, 0);
        self.write_register(REG_LBA_LOW, 0);
        self.write_register(REG_LBA_MID, 0);
        self.write_register(REG_LBA_HIGH, 0);
        self.write_register(REG_COMMAND, AtaCommand::IdentifyDevice as u8);
        self.delay_400ns();
        if self.alternate_status() == 0 {
            return Err(IdeError::NoDrive { drive });
        }
        self.wait_while(BSY, DATA_TIMEOUT_MS, "IDENTIFY DEVICE to finish")?;
        // Packet devices abort IDENTIFY DEVICE and leave their signature.
        let signature = u16::from(self.read_register(REG_LBA_HIGH)) << 8
            | u16::from(self.read_register(REG_LBA_MID));
        if signature != 0 {
            self.read_register(REG_STATUS);
            return Err(IdeError::NotAta { drive, signature });
        }
        self.wait_for_data(AtaCommand::IdentifyDevice)?;
        let mut words = [0u16; 256];
        for word in &mut words {
            *word = self.read_data_word();
        }
        self.finish(AtaCommand::IdentifyDevice)?;
        Ok(DriveInfo::parse(&words))
    }

    fn read_pio_inner(
        &mut self,
        drive: Drive,
        lba: u32,
        buffer: &mut [u8],
    ) -> Result<(), IdeError> {
        let command = AtaCommand::ReadSectors;
        self.issue(command, drive, lba, buffer.len() / SECTOR_SIZE)?;
        for sector in buffer.as_chunks_mut::<SECTOR_SIZE>().0 {
            self.delay_400ns();
            self.wait_for_data(command)?;
            for pair in sector.as_chunks_mut::<2>().0 {
                *pair = self.read_data_word().to_le_bytes();
            }
        }
        self.delay_400ns();
        self.finish(command)
    }

    fn read_dma_inner(
        &mut self,
        drive: Drive,
        lba: u32,
        sectors: usize,
        table: u32,
    ) -> Result<(), IdeError> {
        let command = AtaCommand::ReadDma;
        self.stop_dma();
        self.set_prd_table(table);
        self.clear_bus_master_status();
        self.issue(command, drive, lba, sectors)?;
        // SAFETY: `read_dma` validated the PRD table and its buffer (below 4 GiB,
        // aligned, in the lent memory); both stay mutably borrowed until this
        // returns, and every path out of here stops the engine first.
        unsafe { self.start_dma() };
        let outcome = self.wait_for_dma();
        self.stop_dma();
        self.clear_bus_master_status();
        outcome?;
        self.finish(command)
    }

    /// Resets the channel after a command failed, so the next one finds the
    /// drive idle; the original error is what the caller gets.
    fn recover_after<T>(&mut self, result: &Result<T, IdeError>) {
        if let Err(error) = result
            && error.left_channel_busy()
        {
            let _ = self.reset();
        }
    }

    /// Selects `drive` with the LBA bits 24..28 `head` and waits until it
    /// is ready for a command.
    fn select(&mut self, drive: Drive, head: u8) -> Result<u8, IdeError> {
        // The device register may only be written while BSY and DRQ are clear.
        self.wait_while(
            BSY | DRQ,
            READY_TIMEOUT_MS,
            "the channel to be idle before selecting a drive",
        )?;
        self.write_register(REG_DEVICE, DEVICE_LBA | drive.select_bit() | (head & 0x0f));
        self.delay_400ns();
        let status = self.wait_while(BSY, READY_TIMEOUT_MS, "the selected drive to be not busy")?;
        if status == 0 || status == 0xff {
            return Err(IdeError::NoDrive { drive });
        }
        Ok(status)
    }

    /// Selects the drive, programs an LBA28 request and writes the command.
    fn issue(
        &mut self,
        command: AtaCommand,
        drive: Drive,
        lba: u32,
        sectors: usize,
    ) -> Result<(), IdeError> {
        self.select(drive, (lba >> 24) as u8)?;
        self.wait_until_ready()?;
        self.write_register(REG_FEATURES, 0);
        // 256 sectors is written as 0.
        self.write_register(REG_SECTOR_COUNT, sectors as u8);
        self.write_register(REG_LBA_LOW, lba as u8);
        self.write_register(REG_LBA_MID, (lba >> 8) as u8);
        self.write_register(REG_LBA_HIGH, (lba >> 16) as u8);
        self.write_register(REG_COMMAND, command as u8);
        Ok(())
    }

    fn wait_until_ready(&self) -> Result<u8, IdeError> {
        let deadline = Deadline::after_millis(READY_TIMEOUT_MS);
        loop {
            let status = self.alternate_status();
            if status & (BSY | DRDY) == DRDY {
                return Ok(status);
            }
            if deadline.passed() {
                return Err(self.timeout("the drive to be ready (DRDY)"));
            }
            spin_loop();
        }
    }

    /// Polls the alternate status until none of `bits` is set; returns it.
    fn wait_while(&self, bits: u8, millis: u64, waiting_for: &'static str) -> Result<u8, IdeError> {
        let deadline = Deadline::after_millis(millis);
        loop {
            let status = self.alternate_status();
            if status & bits == 0 {
                return Ok(status);
            }
            if deadline.passed() {
                return Err(self.timeout(waiting_for));
            }
            spin_loop();
        }
    }

    /// Waits until the drive offers a data block (DRQ) or reports failure.
    fn wait_for_data(&self, command: AtaCommand) -> Result<(), IdeError> {
        let deadline = Deadline::after_millis(DATA_TIMEOUT_MS);
        loop {
            let status = self.alternate_status();
            if status & BSY == 0 {
                self.check_status(command, status)?;
                if status & DRQ != 0 {
                    return Ok(());
                }
            }
            if deadline.passed() {
                return Err(self.timeout("the drive to offer a data block (DRQ)"));
            }
            spin_loop();
        }
    }

    /// Waits for the end of a command and checks it ended well; reading
    /// the status register acknowledges the drive's interrupt.
    fn finish(&self, command: AtaCommand) -> Result<(), IdeError> {
        self.wait_while(BSY, READY_TIMEOUT_MS, "the drive to finish the command")?;
        let status = self.read_register(REG_STATUS);
        self.check_status(command, status)?;
        if status & DRQ != 0 {
            return Err(IdeError::Incomplete { command, status });
        }
        Ok(())
    }

    fn check_status(&self, command: AtaCommand, status: u8) -> Result<(), IdeError> {
        if status & ERR != 0 {
            let error = self.read_register(REG_ERROR);
            return Err(IdeError::Device {
                command,
                status,
                error,
            });
        }
        if status & DF != 0 {
            return Err(IdeError::DeviceFault { command, status });
        }
        Ok(())
    }

    /// Polls the bus-master status until the transfer ends.
    fn wait_for_dma(&self) -> Result<(), IdeError> {
        let deadline = Deadline::after_millis(DATA_TIMEOUT_MS);
        loop {
            let status = self.bus_master_status();
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
                let status = self.bus_master_status();
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

    /// The ATA 400 ns settle time after selecting a drive or sending a
    /// command: four alternate-status reads, each at least 100 ns on ISA timing.
    fn delay_400ns(&self) {
        for _ in 0..4 {
            self.alternate_status();
        }
    }

    fn timeout(&self, waiting_for: &'static str) -> IdeError {
        IdeError::Timeout {
            waiting_for,
            status: self.alternate_status(),
            bus_master_status: self.bus_master_status(),
        }
    }

    // Register access. Everything below touches ports; nothing above does.
    // The ports are the channel's own (from its BARs or the compatibility
    // addresses of its programming interface), and CLAIMED makes this
    // `PrimaryChannel` their only user.
    //
    // The `x86_64` crate declares its port instructions `nomem`: the compiler
    // may move ordinary loads and stores across them. Starting and stopping
    // the DMA engine therefore sit behind full fences, so the PRD table's
    // stores land before the engine starts, and the caller's reads of the
    // buffer come after the engine stopped.

    fn read_register(&self, register: u16) -> u8 {
        // SAFETY: a command-block register of our channel (see above);
        // reading one changes no memory (reading the status register
        // acknowledges the drive's interrupt, which nobody else waits for).
        unsafe { PortReadOnly::<u8>::new(self.command_block + register).read() }
    }

    fn write_register(&mut self, register: u16, value: u8) {
        // SAFETY: a command-block register of our channel; at most this
        // starts a drive command, whose data moves only through the data
        // port or through the bus-master engine, which `start_dma` alone starts.
        unsafe { PortWriteOnly::<u8>::new(self.command_block + register).write(value) }
    }

    fn read_data_word(&mut self) -> u16 {
        // SAFETY: the data register of our channel; the word lands in a
        // register, not in memory.
        unsafe { PortReadOnly::<u16>::new(self.command_block + REG_DATA).read() }
    }

    fn alternate_status(&self) -> u8 {
        // SAFETY: the alternate status register of our channel; reading it
        // has no side effect at all (unlike the status register).
        unsafe { PortReadOnly::<u8>::new(self.control_block).read() }
    }

    fn write_device_control(&mut self, value: u8) {
        // SAFETY: device control of our channel: reset and interrupt enable
        // of its drives, nothing that touches memory.
        unsafe { PortWriteOnly::<u8>::new(self.control_block).write(value) }
    }

    fn bus_master_status(&self) -> u8 {
        // SAFETY: our channel's bus-master status register; reads are pure.
        unsafe { PortReadOnly::<u8>::new(self.bus_master + BM_STATUS).read() }
    }

    fn clear_bus_master_status(&mut self) {
        let status = self.bus_master_status();
        // SAFETY: our bus-master status register; writing 1 clears the
        // error and interrupt bits, and the capability bits are written back.
        unsafe {
            PortWriteOnly::<u8>::new(self.bus_master + BM_STATUS)
                .write(status | BM_ERROR | BM_INTERRUPT)
        }
    }

    fn set_prd_table(&mut self, address: u32) {
        // SAFETY: our bus-master PRD table pointer; the engine reads it only
        // when `start_dma` starts it.
        unsafe { PortWriteOnly::<u32>::new(self.bus_master + BM_PRD_TABLE).write(address) }
    }

    /// Stops the bus-master engine; memory it wrote is safe to read after this.
    fn stop_dma(&mut self) {
        // SAFETY: our bus-master command register; clearing the start bit
        // stops the engine, which ends its memory accesses.
        unsafe { PortWriteOnly::<u8>::new(self.bus_master + BM_COMMAND).write(BM_WRITES_MEMORY) }
        // The port write is `nomem`: without this fence the compiler could
        // move reads of the buffer before it (and before the poll that saw
        // the transfer end).
        fence(Ordering::SeqCst);
    }

    /// Starts the bus-master engine (device to memory).
    ///
    /// # Safety
    /// The PRD table pointer must name a valid table whose regions are
    /// memory the caller owns and lends to the device until [`Self::stop_dma`].
    unsafe fn start_dma(&mut self) {
        // The PRD table was written with ordinary stores, and the port write
        // below is `nomem`: this fence keeps those stores (for the compiler
        // and the CPU) before the engine can fetch the table.
        fence(Ordering::SeqCst);
        // SAFETY: the caller vouches for the table and the memory it names.
        unsafe {
            PortWriteOnly::<u8>::new(self.bus_master + BM_COMMAND)
                .write(BM_WRITES_MEMORY | BM_START)
        }
    }
}

impl Drop for PrimaryChannel {
    fn drop(&mut self) {
        self.stop_dma();
        CLAIMED.store(false, Ordering::Release);
    }
}

impl IdeError {
    /// Whether the error came from the hardware mid-command, so the channel
    /// may be left busy (request validation errors never touch it).
    fn left_channel_busy(&self) -> bool {
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

/// An I/O BAR's port base.
fn io_bar(function: &PciFunction, index: u8) -> Result<u16, IdeError> {
    match function.bar(index) {
        Err(error) => Err(IdeError::BadBar { index, error }),
        Ok(Some(Bar::Io { port })) if port <= 0xfff0 => Ok(port as u16),
        Ok(found) => Err(IdeError::NotIoBar { index, found }),
    }
}

fn check_request(lba: u32, sectors: usize) -> Result<(), IdeError> {
    if !(1..=MAX_SECTORS).contains(&sectors) {
        return Err(IdeError::BadSectorCount { sectors });
    }
    if u64::from(lba) + sectors as u64 > LBA28_LIMIT {
        return Err(IdeError::BeyondLba28 { lba, sectors });
    }
    Ok(())
}

/// Writes into `table` (which the device sees at `table_address`) the
/// descriptors for `len` bytes at device address `data`: one per piece
/// that does not cross a 64 KiB boundary, the last one flagged. Returns how
/// many it wrote. Checks everything the bus master requires first.
fn build_prd_table(
    data: u64,
    len: usize,
    table: &mut [u8],
    table_address: u64,
) -> Result<usize, IdeError> {
    let len = len as u64;
    if data.checked_add(len).is_none_or(|end| end > FOUR_GIB) {
        return Err(IdeError::Above4GiB {
            region: DmaRegion::Buffer,
            address: data,
            len,
        });
    }
    // Region base bit 0 and byte count bit 0 are reserved: whole words only.
    if data % 2 != 0 {
        return Err(IdeError::Misaligned {
            region: DmaRegion::Buffer,
            address: data,
            align: 2,
        });
    }
    if len == 0 || len % 2 != 0 {
        return Err(IdeError::NotWholeSectors { len: len as usize });
    }
    let needed = (data + len).div_ceil(BOUNDARY_64K) - data / BOUNDARY_64K;
    let needed = needed as usize;
    let capacity = table.len() / PRD_ENTRY_SIZE;
    if needed > capacity {
        return Err(IdeError::PrdTableTooSmall { needed, capacity });
    }
    let table_len = (needed * PRD_ENTRY_SIZE) as u64;
    if table_address
        .checked_add(table_len)
        .is_none_or(|end| end > FOUR_GIB)
    {
        return Err(IdeError::Above4GiB {
            region: DmaRegion::PrdTable,
            address: table_address,
            len: table_len,
        });
    }
    // The PRD table pointer register has no bits 0..2.
    if table_address % 4 != 0 {
        return Err(IdeError::Misaligned {
            region: DmaRegion::PrdTable,
            address: table_address,
            align: 4,
        });
    }
    if table_address / BOUNDARY_64K != (table_address + table_len - 1) / BOUNDARY_64K {
        return Err(IdeError::PrdTableCrosses64KiB {
            address: table_address,
            len: table_len,
        });
    }
    let mut address = data;
    let end = data + len;
    for (index, entry) in table
        .as_chunks_mut::<PRD_ENTRY_SIZE>()
        .0
        .iter_mut()
        .take(needed)
        .enumerate()
    {
        let piece = (end - address).min(BOUNDARY_64K - address % BOUNDARY_64K);
        let flags = if index + 1 == needed {
            PRD_END_OF_TABLE
        } else {
            0
        };
        entry[0..4].copy_from_slice(&(address as u32).to_le_bytes());
        // A count of 0 means 64 KiB.
        entry[4..6].copy_from_slice(&(piece as u16).to_le_bytes());
        entry[6..8].copy_from_slice(&flags.to_le_bytes());
        address += piece;
    }
    debug_assert_eq!(address, end);
    Ok(needed)
}

/// A point in TSC time.
struct Deadline(u64);

impl Deadline {
    fn after_millis(millis: u64) -> Self {
        Self(tsc::now().saturating_add(ticks_per_micro() * 1_000 * millis))
    }

    fn passed(&self) -> bool {
        tsc::now() >= self.0
    }
}

/// TSC ticks per microsecond (before calibration, the 2 GHz guess `tsc` also falls back on).
fn ticks_per_micro() -> u64 {
    match tsc::frequency() / 1_000_000 {
        0 => 2_000,
        ticks => ticks,
    }
}

fn delay_micros(micros: u64) {
    let end = tsc::now().saturating_add(ticks_per_micro() * micros);
    while tsc::now() < end {
        spin_loop();
    }
}

#[cfg(test)]
mod tests;
