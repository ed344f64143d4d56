//! The HBA: finding it on PCI, and every access to its memory-mapped
//! registers (ABAR, BAR5). The accesses are volatile, through the
//! bootloader's linear map of physical memory.
//!
//! Two writes make the HBA use memory by itself: a port's command-list and
//! FIS base registers while its engines run, and the command-issue
//! register. Both are `unsafe` here, with the contract the caller keeps.

use core::sync::atomic::{AtomicBool, Ordering, fence};

use framekeep::PhysAddr;

use super::error::AhciError;
use crate::drivers::pci::{self, Bar, Command, MemoryWidth, PciFunction};
use crate::mem::frames::phys_to_virt;

const CLASS_STORAGE: u8 = 0x01;
const SUBCLASS_SATA: u8 = 0x06;
const PROG_IF_AHCI: u8 = 0x01;
const ABAR: u8 = 5;

// Global registers.
const GHC: usize = 0x04;
const PORTS_IMPLEMENTED: usize = 0x0c;
/// GHC bit 31: AHCI mode (as opposed to legacy IDE emulation).
const GHC_AHCI_ENABLE: u32 = 1 << 31;

// Port registers, as offsets from the port's base.
pub const PX_CLB: usize = 0x00;
pub const PX_CLBU: usize = 0x04;
pub const PX_FB: usize = 0x08;
pub const PX_FBU: usize = 0x0c;
pub const PX_IS: usize = 0x10;
pub const PX_IE: usize = 0x14;
pub const PX_CMD: usize = 0x18;
pub const PX_TFD: usize = 0x20;
pub const PX_SSTS: usize = 0x28;
pub const PX_SERR: usize = 0x30;
pub const PX_CI: usize = 0x38;

/// The first AHCI controller the PCI scan finds.
pub fn find_controller() -> Result<PciFunction, AhciError> {
    pci::scan()
        .find(|function| {
            (function.class, function.subclass, function.prog_if)
                == (CLASS_STORAGE, SUBCLASS_SATA, PROG_IF_AHCI)
        })
        .ok_or(AhciError::NoController)
}

/// Set while an [`Hba`] exists: its registers belong to it alone.
static CLAIMED: AtomicBool = AtomicBool::new(false);

/// Exclusive use of one HBA's registers.
pub struct Hba {
    /// Kernel virtual address of ABAR.
    base: usize,
}

impl Hba {
    /// Takes the HBA of `function`: memory decoding and bus mastering on,
    /// AHCI mode on. Fails if ABAR is not a 32-bit memory BAR, or if the
    /// HBA is already claimed.
    pub fn claim(function: PciFunction) -> Result<Self, AhciError> {
        let abar = match function.bar(ABAR) {
            Ok(Some(Bar::Memory {
                address,
                width: MemoryWidth::Bits32,
                ..
            })) => address,
            found => {
                return Err(AhciError::BadAbar {
                    address: function.address,
                    found,
                });
            }
        };
        if CLAIMED.swap(true, Ordering::Acquire) {
            return Err(AhciError::AlreadyClaimed);
        }
        let hba = Self {
            base: phys_to_virt(PhysAddr(abar)).as_u64() as usize,
        };
        // ABAR is the HBA's register range, not RAM. The firmware's own
        // commands have completed (it handed over with none outstanding).
        // SAFETY: bus mastering lets the HBA run only commands that were
        // issued; `Port::take_over` stops the ports' engines before any
        // memory of ours is handed to them.
        unsafe { function.enable(Command(Command::BUS_MASTER.0 | MEMORY_SPACE)) };
        hba.write(GHC, hba.read(GHC) | GHC_AHCI_ENABLE);
        Ok(hba)
    }

    /// Bit i set: port i exists.
    pub fn ports_implemented(&self) -> u32 {
        self.read(PORTS_IMPLEMENTED)
    }

    fn read(&self, offset: usize) -> u32 {
        // SAFETY: `base` maps the HBA's 4 KiB+ register range (ABAR) through
        // the linear map; `offset` is a register offset within it, aligned.
        unsafe { core::ptr::read_volatile((self.base + offset) as *const u32) }
    }

    fn write(&self, offset: usize, value: u32) {
        // SAFETY: as in `read`; this HBA is claimed by us alone.
        unsafe { core::ptr::write_volatile((self.base + offset) as *mut u32, value) }
    }

    fn port_offset(port: u8, register: usize) -> usize {
        0x100 + usize::from(port) * 0x80 + register
    }

    /// Reads a register of `port` (offsets `PX_*`).
    pub fn port_read(&self, port: u8, register: usize) -> u32 {
        self.read(Self::port_offset(port, register))
    }

    /// Writes a register of `port` that does not hand memory to the HBA.
    pub fn port_write(&self, port: u8, register: usize, value: u32) {
        debug_assert!(
            !matches!(register, PX_CLB | PX_CLBU | PX_FB | PX_FBU | PX_CI),
            "use the unsafe setters for memory the HBA uses"
        );
        self.write(Self::port_offset(port, register), value);
    }

    /// Points `port` at a command list and a received-FIS area.
    ///
    /// # Safety
    /// The port's engines are stopped, and the two areas (1 KiB and 256
    /// bytes, below 4 GiB) belong to the caller until the engines are
    /// stopped again.
    pub unsafe fn set_port_memory(&self, port: u8, command_list: u32, received_fis: u32) {
        self.write(Self::port_offset(port, PX_CLB), command_list);
        self.write(Self::port_offset(port, PX_CLBU), 0);
        self.write(Self::port_offset(port, PX_FB), received_fis);
        self.write(Self::port_offset(port, PX_FBU), 0);
    }

    /// Issues the command in `slot` of `port`'s command list.
    ///
    /// # Safety
    /// The command header, its table and every buffer its PRD entries name
    /// belong to the caller until the command completes or the port's
    /// engines are stopped.
    pub unsafe fn issue(&self, port: u8, slot: u8) {
        // The header and table were written with ordinary stores: they
        // must be in memory before the HBA is told to fetch them.
        fence(Ordering::SeqCst);
        self.write(Self::port_offset(port, PX_CI), 1 << slot);
    }

    /// Whether `slot` of `port` is still outstanding.
    pub fn issued(&self, port: u8, slot: u8) -> bool {
        let pending = self.read(Self::port_offset(port, PX_CI)) & 1 << slot != 0;
        // The caller reads the buffer next: not before the HBA said it is done.
        fence(Ordering::SeqCst);
        pending
    }
}

/// Command register bit 1: respond to accesses in the memory BARs.
const MEMORY_SPACE: u16 = 1 << 1;

impl Drop for Hba {
    fn drop(&mut self) {
        CLAIMED.store(false, Ordering::Release);
    }
}
