//! What the driver's tests share. They run against QEMU's PIIX3 and the
//! boot disk (primary master), with DMA memory from the kernel's DMA32 path
//! (`mem::dma::DmaBuffer`). On a machine without an IDE controller (QEMU's
//! q35 has AHCI instead) every test that needs one ends as skipped, with the
//! reason, and the suite goes on.

use super::channel::{PrimaryChannel, find_controller};
use super::error::IdeError;
use super::prd::PRD_ENTRY_SIZE;
use super::protocol::SECTOR_SIZE;
use crate::drivers::pci::PciFunction;
use crate::mem::dma::DmaBuffer;

pub const PAGE_SIZE: usize = 4096;
/// The DMA tests move one page: 8 sectors.
pub const DMA_SECTORS: usize = PAGE_SIZE / SECTOR_SIZE;
/// Byte the DMA buffer is filled with before a read, so a transfer that
/// never happened cannot pass for one.
pub const POISON: u8 = 0xa5;

/// A data page and a PRD-table page below 4 GiB, from the DMA32 path.
pub struct DmaPages {
    pub data: DmaBuffer,
    pub prd: DmaBuffer,
}

impl DmaPages {
    pub fn below_4gib() -> Self {
        let page = || DmaBuffer::new(PAGE_SIZE).expect("a DMA32 page");
        Self {
            data: page(),
            prd: page(),
        }
    }
}

/// The value, or a panic that names `what` failed and how.
pub fn check<T>(result: Result<T, IdeError>, what: &str) -> T {
    result.unwrap_or_else(|error| panic!("{what}: {error}"))
}

/// The first IDE controller the PCI scan finds; if there is none, the
/// running test ends here as skipped. Call it before taking any memory: a
/// skip abandons the test's stack, so nothing it holds is dropped.
pub fn controller() -> PciFunction {
    match find_controller() {
        Ok(function) => function,
        Err(IdeError::NoController) => crate::ktest::skip(
            "no IDE controller (PCI class 01/01) on this machine; q35 has AHCI instead",
        ),
        Err(error) => panic!("PCI scan: {error}"),
    }
}

/// The primary channel of the first controller the PCI scan finds (the test
/// is skipped when there is none, see [`controller`]).
pub fn claim() -> PrimaryChannel {
    let function = controller();
    check(
        PrimaryChannel::claim(function),
        "claiming the primary channel",
    )
}

pub fn assert_boot_signature(sector: &[u8], how: &str) {
    assert_eq!(
        sector[510..512],
        [0x55, 0xaa],
        "sector 0 read by {how} has no boot signature: {:02x?}",
        &sector[..16]
    );
}

/// (address, byte count, flags) of PRD entry `index`.
pub fn prd_entry(table: &[u8], index: usize) -> (u32, u16, u16) {
    let entry = &table[index * PRD_ENTRY_SIZE..][..PRD_ENTRY_SIZE];
    (
        u32::from_le_bytes(entry[0..4].try_into().unwrap()),
        u16::from_le_bytes(entry[4..6].try_into().unwrap()),
        u16::from_le_bytes(entry[6..8].try_into().unwrap()),
    )
}
