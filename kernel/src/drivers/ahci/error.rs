//! What can go wrong talking to an AHCI controller.

use core::fmt;

use crate::drivers::pci::{Bar, BarError, PciAddress};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AhciError {
    /// No PCI function with class 01/06, programming interface 01.
    NoController,
    /// BAR5 (ABAR) is not a memory BAR below 4 GiB.
    BadAbar {
        address: PciAddress,
        found: Result<Option<Bar>, BarError>,
    },
    /// Someone else holds the HBA.
    AlreadyClaimed,
    /// No implemented port has a device attached.
    NoDisk,
    /// The frame allocator had no DMA32 memory for the port's structures.
    NoMemory,
    /// The port's engines did not stop or start in time.
    EngineStuck { port: u8, what: &'static str },
    /// The command did not complete in time.
    Timeout { port: u8 },
    /// The device reported an error: task-file status and error bytes.
    Device { port: u8, status: u8, error: u8 },
    /// A buffer does not fit what the command needs.
    BadBuffer { what: &'static str, len: usize },
    /// A DMA address the HBA cannot take (above 4 GiB for a 32-bit HBA, or misaligned).
    BadAddress { what: &'static str, address: u64 },
}

impl fmt::Display for AhciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoController => f.write_str("no AHCI controller (PCI class 01/06/01) found"),
            Self::BadAbar { address, found } => {
                write!(
                    f,
                    "{address}: BAR5 is not the HBA's memory range: {found:?}"
                )
            }
            Self::AlreadyClaimed => f.write_str("the AHCI controller is already claimed"),
            Self::NoDisk => f.write_str("no implemented AHCI port has a device attached"),
            Self::NoMemory => {
                f.write_str("no memory below 4 GiB for the port's command structures")
            }
            Self::EngineStuck { port, what } => {
                write!(f, "port {port}: {what} did not happen in time")
            }
            Self::Timeout { port } => {
                write!(f, "port {port}: the command did not complete in time")
            }
            Self::Device {
                port,
                status,
                error,
            } => write!(
                f,
                "port {port}: the device failed the command (status {status:#04x}, error {error:#04x})"
            ),
            Self::BadBuffer { what, len } => {
                write!(f, "{what} of {len} bytes does not fit the command")
            }
            Self::BadAddress { what, address } => {
                write!(
                    f,
                    "{what} at physical {address:#x} is out of the HBA's reach or misaligned"
                )
            }
        }
    }
}
