//! Finding the controller and owning its primary channel: the PCI side
//! (class, BARs, I/O decoding and bus mastering), the claim that makes one
//! [`PrimaryChannel`] the only user of the channel's ports, and the
//! software reset that brings the drives back to a known state.

use core::sync::atomic::{AtomicBool, Ordering};

use super::error::IdeError;
use super::protocol::{Drive, RESET_TIMEOUT_MS};
use super::registers::{
    BSY, COMPAT_COMMAND_BLOCK, COMPAT_CONTROL_BLOCK, REG_STATUS, Registers, SRST,
};
use crate::arch::x86_64::tsc::delay_micros;
use crate::drivers::pci::{self, Bar, Command, PciFunction};

const IDE_CLASS: u8 = 0x01;
const IDE_SUBCLASS: u8 = 0x01;
/// Programming interface bit 0: the primary channel runs in native PCI mode
/// (ports from BAR0/BAR1) rather than at the ISA compatibility ports.
const PROG_IF_PRIMARY_NATIVE: u8 = 0x01;
const BUS_MASTER_BAR: u8 = 4;

/// The first IDE controller the PCI scan finds.
pub fn find_controller() -> Result<PciFunction, IdeError> {
    pci::find(IDE_CLASS, IDE_SUBCLASS).ok_or(IdeError::NoController)
}

/// Set while a [`PrimaryChannel`] exists: its ports belong to it alone.
static CLAIMED: AtomicBool = AtomicBool::new(false);

/// Exclusive use of the primary channel of an IDE controller.
pub struct PrimaryChannel {
    pub(super) registers: Registers,
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
        // SAFETY: the bases come from the controller's BARs or from the
        // compatibility addresses its programming interface names, and
        // CLAIMED (just set) makes this channel their only user.
        let registers = unsafe { Registers::new(command_block, control_block, bus_master) };
        let mut channel = Self { registers };
        // SAFETY: the ranges this turns on are the controller's I/O BARs
        // (checked above), which cannot overlap RAM; memory decoding and bus
        // mastering stay as they are.
        unsafe { function.enable(Command::IO_SPACE) };
        channel.registers.stop_dma();
        channel.registers.clear_bus_master_status();
        // SAFETY: the engine is stopped (just above) and is started again
        // only by `Registers::start_dma`, under that function's contract.
        unsafe { function.enable(Command::BUS_MASTER) };
        channel.reset()?;
        Ok(channel)
    }

    /// Software-resets both drives of the channel and waits for them.
    pub fn reset(&mut self) -> Result<(), IdeError> {
        self.registers.stop_dma();
        self.registers.clear_bus_master_status();
        self.registers.write_device_control(SRST);
        delay_micros(5);
        self.registers.write_device_control(0);
        delay_micros(2_000);
        let status = self.registers.alternate_status();
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
        self.registers.read_register(REG_STATUS);
        Ok(())
    }

    /// Resets the channel after a command failed, so the next one finds the
    /// drive idle; the original error is what the caller gets.
    pub(super) fn recover_after<T>(&mut self, result: &Result<T, IdeError>) {
        if let Err(error) = result
            && error.left_channel_busy()
        {
            let _ = self.reset();
        }
    }
}

impl Drop for PrimaryChannel {
    fn drop(&mut self) {
        self.registers.stop_dma();
        CLAIMED.store(false, Ordering::Release);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::ide::protocol::{AtaCommand, SECTOR_SIZE};
    use crate::drivers::ide::test_support::{
        DmaPages, POISON, assert_boot_signature, check, claim, controller,
    };
    use crate::kprintln;

    /// Error register bits a read past the end of the disk may set.
    const ABRT: u8 = 0x04;
    const IDNF: u8 = 0x10;

    #[test_case]
    fn controller_is_found_by_pci_scan_and_identifies_the_boot_disk() {
        let function = controller();
        kprintln!("# {function}");
        assert_eq!((function.class, function.subclass), (0x01, 0x01));
        match function.bar(BUS_MASTER_BAR) {
            Ok(Some(Bar::Io { port })) => kprintln!("# bus-master registers at port {port:#x}"),
            other => panic!("BAR4 should be the bus-master I/O range, is {other:?}"),
        }
        let mut channel = check(
            PrimaryChannel::claim(function),
            "claiming the primary channel",
        );
        let command = function.command();
        assert!(
            command.contains(Command::IO_SPACE | Command::BUS_MASTER),
            "command register {:#06x} lacks I/O decoding or bus mastering",
            command.0
        );
        assert_eq!(
            PrimaryChannel::claim(function).err(),
            Some(IdeError::AlreadyClaimed)
        );
        let info = check(
            channel.identify(Drive::Master),
            "IDENTIFY DEVICE on the primary master",
        );
        kprintln!("# primary master: {info}");
        assert!(info.lba28_sectors > 0, "the boot disk reports no sectors");
        assert!(
            info.lba && info.dma,
            "the boot disk must do LBA and DMA: {info}"
        );
        assert!(
            !info.model().is_empty(),
            "the boot disk has no model string"
        );
        // QEMU's `-drive format=raw,file=...` attaches only the primary master.
        assert_eq!(
            channel.identify(Drive::Slave),
            Err(IdeError::NoDrive {
                drive: Drive::Slave
            })
        );
        check(
            channel.identify(Drive::Master),
            "IDENTIFY DEVICE after probing the absent slave",
        );
    }

    /// Reads past the end of the disk fail with the drive's error decoded, and
    /// the next read works again (the driver reset the channel).
    #[test_case]
    fn device_errors_are_reported_and_the_channel_recovers() {
        let mut channel = claim();
        let mut pages = DmaPages::below_4gib();
        let info = check(channel.identify(Drive::Master), "IDENTIFY DEVICE");
        let past_end = info.lba28_sectors;
        let mut sector = [0u8; SECTOR_SIZE];

        let pio = channel.read_pio(Drive::Master, past_end, &mut sector);
        match pio {
            Err(IdeError::Device {
                command: AtaCommand::ReadSectors,
                error,
                ..
            }) if error & (ABRT | IDNF) != 0 => {
                kprintln!("# PIO past the end: {}", pio.unwrap_err());
            }
            other => {
                panic!(
                    "PIO read of sector {past_end} past the end: expected ABRT/IDNF, got {other:?}"
                )
            }
        }
        let dma = channel.read_dma(Drive::Master, past_end, 1, &mut pages.data, &mut pages.prd);
        match dma {
            Err(IdeError::Device {
                command: AtaCommand::ReadDma,
                error,
                ..
            }) if error & (ABRT | IDNF) != 0 => {
                kprintln!("# DMA past the end: {}", dma.unwrap_err());
            }
            other => {
                panic!(
                    "DMA read of sector {past_end} past the end: expected ABRT/IDNF, got {other:?}"
                )
            }
        }

        check(
            channel.read_pio(Drive::Master, 0, &mut sector),
            "PIO read after the errors",
        );
        assert_boot_signature(&sector, "PIO after errors");
        pages.data.as_mut_slice().fill(POISON);
        let read = channel.read_dma(Drive::Master, 0, 1, &mut pages.data, &mut pages.prd);
        check(read, "DMA read after the errors");
        assert_boot_signature(&pages.data.as_slice()[..SECTOR_SIZE], "DMA after errors");
    }
}
