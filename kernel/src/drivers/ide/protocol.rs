//! The ATA protocol over the command block: selecting a drive, issuing
//! LBA28 commands, IDENTIFY DEVICE and PIO reads through the data register,
//! and the bounded waits on the status register that every command needs.

use core::fmt;
use core::hint::spin_loop;

use super::channel::PrimaryChannel;
use super::error::IdeError;
use super::registers::{
    BSY, DEVICE_LBA, DF, DRDY, DRQ, ERR, REG_COMMAND, REG_DEVICE, REG_ERROR, REG_FEATURES,
    REG_LBA_HIGH, REG_LBA_LOW, REG_LBA_MID, REG_SECTOR_COUNT, REG_STATUS,
};
use crate::arch::x86_64::tsc::Deadline;

/// Bytes per sector (LBA28 ATA disks).
pub const SECTOR_SIZE: usize = 512;
/// Most sectors one LBA28 command moves (a sector count of 0 means 256).
pub const MAX_SECTORS: usize = 256;

const LBA28_LIMIT: u64 = 1 << 28;

/// A drive must drop BSY within this after reset (ATA allows 31 s for a
/// spinning-up disk; we only ever reset drives that already run).
pub(super) const RESET_TIMEOUT_MS: u64 = 5_000;
/// For BSY to clear before a command may be written.
const READY_TIMEOUT_MS: u64 = 1_000;
/// For one PIO data block, or a whole DMA transfer.
pub(super) const DATA_TIMEOUT_MS: u64 = 5_000;

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

impl PrimaryChannel {
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

    fn identify_inner(&mut self, drive: Drive) -> Result<DriveInfo, IdeError> {
        self.select(drive, 0)?;
        self.registers.write_register(REG_SECTOR_COUNT, 0);
        self.registers.write_register(REG_LBA_LOW, 0);
        self.registers.write_register(REG_LBA_MID, 0);
        self.registers.write_register(REG_LBA_HIGH, 0);
        self.registers
            .write_register(REG_COMMAND, AtaCommand::IdentifyDevice as u8);
        self.delay_400ns();
        if self.registers.alternate_status() == 0 {
            return Err(IdeError::NoDrive { drive });
        }
        self.wait_while(BSY, DATA_TIMEOUT_MS, "IDENTIFY DEVICE to finish")?;
        // Packet devices abort IDENTIFY DEVICE and leave their signature.
        let signature = u16::from(self.registers.read_register(REG_LBA_HIGH)) << 8
            | u16::from(self.registers.read_register(REG_LBA_MID));
        if signature != 0 {
            self.registers.read_register(REG_STATUS);
            return Err(IdeError::NotAta { drive, signature });
        }
        self.wait_for_data(AtaCommand::IdentifyDevice)?;
        let mut words = [0u16; 256];
        for word in &mut words {
            *word = self.registers.read_data_word();
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
                *pair = self.registers.read_data_word().to_le_bytes();
            }
        }
        self.delay_400ns();
        self.finish(command)
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
        self.registers
            .write_register(REG_DEVICE, DEVICE_LBA | drive.select_bit() | (head & 0x0f));
        self.delay_400ns();
        let status = self.wait_while(BSY, READY_TIMEOUT_MS, "the selected drive to be not busy")?;
        if status == 0 || status == 0xff {
            return Err(IdeError::NoDrive { drive });
        }
        Ok(status)
    }

    /// Selects the drive, programs an LBA28 request and writes the command.
    pub(super) fn issue(
        &mut self,
        command: AtaCommand,
        drive: Drive,
        lba: u32,
        sectors: usize,
    ) -> Result<(), IdeError> {
        self.select(drive, (lba >> 24) as u8)?;
        self.wait_until_ready()?;
        self.registers.write_register(REG_FEATURES, 0);
        // 256 sectors is written as 0.
        self.registers
            .write_register(REG_SECTOR_COUNT, sectors as u8);
        self.registers.write_register(REG_LBA_LOW, lba as u8);
        self.registers.write_register(REG_LBA_MID, (lba >> 8) as u8);
        self.registers
            .write_register(REG_LBA_HIGH, (lba >> 16) as u8);
        self.registers.write_register(REG_COMMAND, command as u8);
        Ok(())
    }

    fn wait_until_ready(&self) -> Result<u8, IdeError> {
        let deadline = Deadline::after_millis(READY_TIMEOUT_MS);
        loop {
            let status = self.registers.alternate_status();
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
    pub(super) fn wait_while(
        &self,
        bits: u8,
        millis: u64,
        waiting_for: &'static str,
    ) -> Result<u8, IdeError> {
        let deadline = Deadline::after_millis(millis);
        loop {
            let status = self.registers.alternate_status();
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
            let status = self.registers.alternate_status();
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
    pub(super) fn finish(&self, command: AtaCommand) -> Result<(), IdeError> {
        self.wait_while(BSY, READY_TIMEOUT_MS, "the drive to finish the command")?;
        let status = self.registers.read_register(REG_STATUS);
        self.check_status(command, status)?;
        if status & DRQ != 0 {
            return Err(IdeError::Incomplete { command, status });
        }
        Ok(())
    }

    fn check_status(&self, command: AtaCommand, status: u8) -> Result<(), IdeError> {
        if status & ERR != 0 {
            let error = self.registers.read_register(REG_ERROR);
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

    /// The ATA 400 ns settle time after selecting a drive or sending a
    /// command: four alternate-status reads, each at least 100 ns on ISA timing.
    pub(super) fn delay_400ns(&self) {
        for _ in 0..4 {
            self.registers.alternate_status();
        }
    }

    pub(super) fn timeout(&self, waiting_for: &'static str) -> IdeError {
        IdeError::Timeout {
            waiting_for,
            status: self.registers.alternate_status(),
            bus_master_status: self.registers.bus_master_status(),
        }
    }
}

/// Refuses requests no LBA28 command can carry, before the hardware is touched.
pub(super) fn check_request(lba: u32, sectors: usize) -> Result<(), IdeError> {
    if !(1..=MAX_SECTORS).contains(&sectors) {
        return Err(IdeError::BadSectorCount { sectors });
    }
    if u64::from(lba) + sectors as u64 > LBA28_LIMIT {
        return Err(IdeError::BeyondLba28 { lba, sectors });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::ide::test_support::{
        DMA_SECTORS, DmaPages, PAGE_SIZE, assert_boot_signature, check, claim,
    };

    #[test_case]
    fn pio_read_of_sector_0_has_the_boot_signature() {
        let mut channel = claim();
        let mut sector = [0u8; SECTOR_SIZE];
        check(
            channel.read_pio(Drive::Master, 0, &mut sector),
            "PIO read of sector 0",
        );
        assert_boot_signature(&sector, "PIO");
    }

    /// Requests the driver must refuse before touching the hardware.
    #[test_case]
    fn bad_requests_are_refused() {
        let mut channel = claim();
        let mut pages = DmaPages::below_4gib();
        let mut odd = [0u8; 100];
        assert_eq!(
            channel.read_pio(Drive::Master, 0, &mut odd),
            Err(IdeError::NotWholeSectors { len: 100 })
        );
        let mut empty = [0u8; 0];
        assert_eq!(
            channel.read_pio(Drive::Master, 0, &mut empty),
            Err(IdeError::BadSectorCount { sectors: 0 })
        );
        let mut sector = [0u8; SECTOR_SIZE];
        let last = (LBA28_LIMIT - 1) as u32;
        assert_eq!(
            channel.read_pio(Drive::Master, last + 1, &mut sector),
            Err(IdeError::BeyondLba28 {
                lba: last + 1,
                sectors: 1
            })
        );
        let (data, prd) = (&mut pages.data, &mut pages.prd);
        assert_eq!(
            channel.read_dma(Drive::Master, 0, 0, data, prd),
            Err(IdeError::BadSectorCount { sectors: 0 })
        );
        assert_eq!(
            channel.read_dma(Drive::Master, 0, 257, data, prd),
            Err(IdeError::BadSectorCount { sectors: 257 })
        );
        assert_eq!(
            channel.read_dma(Drive::Master, 0, DMA_SECTORS + 1, data, prd),
            Err(IdeError::BufferTooSmall {
                needed: PAGE_SIZE + SECTOR_SIZE,
                len: PAGE_SIZE
            })
        );
        // Nothing above left a command half-done.
        check(
            channel.read_pio(Drive::Master, 0, &mut sector),
            "PIO read after refused requests",
        );
        assert_boot_signature(&sector, "PIO");
    }
}
