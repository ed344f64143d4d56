//! The IDE driver against QEMU's PIIX3 and the boot disk (primary master).
//!
//! The DMA memory comes from the kernel's DMA32 path (`mem::dma::DmaBuffer`).

use super::*;
use crate::console::text::FixedText;
use crate::kprintln;
use crate::mem::dma::DmaBuffer;

const PAGE_SIZE: usize = 4096;
/// The DMA tests move one page: 8 sectors.
const DMA_SECTORS: usize = PAGE_SIZE / SECTOR_SIZE;
/// Byte the DMA buffer is filled with before a read, so a transfer that
/// never happened cannot pass for one.
const POISON: u8 = 0xa5;
const ABRT: u8 = 0x04;
const IDNF: u8 = 0x10;

/// A data page and a PRD-table page below 4 GiB, from the DMA32 path.
struct DmaPages {
    data: DmaBuffer,
    prd: DmaBuffer,
}

impl DmaPages {
    fn below_4gib() -> Self {
        let page = || DmaBuffer::new(PAGE_SIZE).expect("a DMA32 page");
        Self {
            data: page(),
            prd: page(),
        }
    }
}

// ---- helpers ---------------------------------------------------------------

fn check<T>(result: Result<T, IdeError>, what: &str) -> T {
    result.unwrap_or_else(|error| panic!("{what}: {error}"))
}

fn claim() -> PrimaryChannel {
    let function = check(find_controller(), "PCI scan");
    check(
        PrimaryChannel::claim(function),
        "claiming the primary channel",
    )
}

fn assert_boot_signature(sector: &[u8], how: &str) {
    assert_eq!(
        sector[510..512],
        [0x55, 0xaa],
        "sector 0 read by {how} has no boot signature: {:02x?}",
        &sector[..16]
    );
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// (address, byte count, flags) of PRD entry `index`.
fn prd_entry(table: &[u8], index: usize) -> (u32, u16, u16) {
    let entry = &table[index * PRD_ENTRY_SIZE..][..PRD_ENTRY_SIZE];
    (
        u32::from_le_bytes(entry[0..4].try_into().unwrap()),
        u16::from_le_bytes(entry[4..6].try_into().unwrap()),
        u16::from_le_bytes(entry[6..8].try_into().unwrap()),
    )
}

// ---- tests -------------------------------------------------------------------

#[test_case]
fn controller_is_found_by_pci_scan_and_identifies_the_boot_disk() {
    let function = check(find_controller(), "PCI scan");
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

#[test_case]
fn dma_read_into_memory_below_4gib_matches_pio() {
    let mut pages = DmaPages::below_4gib();
    let mut channel = claim();
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

/// Reads past the end of the disk fail with the drive's error decoded, and
/// the next read works again (the driver reset the channel).
#[test_case]
fn device_errors_are_reported_and_the_channel_recovers() {
    let mut pages = DmaPages::below_4gib();
    let mut channel = claim();
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
            panic!("PIO read of sector {past_end} past the end: expected ABRT/IDNF, got {other:?}")
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
            panic!("DMA read of sector {past_end} past the end: expected ABRT/IDNF, got {other:?}")
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

/// Requests the driver must refuse before touching the hardware.
#[test_case]
fn bad_requests_are_refused() {
    let mut pages = DmaPages::below_4gib();
    let mut channel = claim();
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

#[test_case]
fn prd_tables_split_at_64k_and_refuse_what_the_bus_master_cannot_reach() {
    let mut table = [0u8; 4 * PRD_ENTRY_SIZE];

    assert_eq!(build_prd_table(0x12_3000, 4096, &mut table, 0x8000), Ok(1));
    assert_eq!(prd_entry(&table, 0), (0x12_3000, 4096, PRD_END_OF_TABLE));

    // 128 KiB from 0x1f000: 4 KiB up to the boundary, a full 64 KiB piece
    // (count 0), then the remaining 60 KiB.
    assert_eq!(
        build_prd_table(0x1_f000, 0x2_0000, &mut table, 0x8000),
        Ok(3)
    );
    assert_eq!(prd_entry(&table, 0), (0x1_f000, 0x1000, 0));
    assert_eq!(prd_entry(&table, 1), (0x2_0000, 0, 0));
    assert_eq!(prd_entry(&table, 2), (0x3_0000, 0xf000, PRD_END_OF_TABLE));

    assert_eq!(
        build_prd_table(0x1_0000, 0x1_0000, &mut table, 0x8000),
        Ok(1)
    );
    assert_eq!(prd_entry(&table, 0), (0x1_0000, 0, PRD_END_OF_TABLE));

    // Right up to 4 GiB is fine; one byte further is not.
    assert_eq!(
        build_prd_table(0xffff_f000, 0x1000, &mut table, 0x8000),
        Ok(1)
    );
    assert_eq!(
        build_prd_table(0xffff_f000, 0x2000, &mut table, 0x8000),
        Err(IdeError::Above4GiB {
            region: DmaRegion::Buffer,
            address: 0xffff_f000,
            len: 0x2000
        })
    );
    assert_eq!(
        build_prd_table(FOUR_GIB, 512, &mut table, 0x8000),
        Err(IdeError::Above4GiB {
            region: DmaRegion::Buffer,
            address: FOUR_GIB,
            len: 512
        })
    );
    assert_eq!(
        build_prd_table(0x1001, 512, &mut table, 0x8000),
        Err(IdeError::Misaligned {
            region: DmaRegion::Buffer,
            address: 0x1001,
            align: 2
        })
    );
    assert_eq!(
        build_prd_table(0x1_f000, 0x2_0000, &mut table[..2 * PRD_ENTRY_SIZE], 0x8000),
        Err(IdeError::PrdTableTooSmall {
            needed: 3,
            capacity: 2
        })
    );
    assert_eq!(
        build_prd_table(0x1000, 512, &mut table, FOUR_GIB + 0x8000),
        Err(IdeError::Above4GiB {
            region: DmaRegion::PrdTable,
            address: FOUR_GIB + 0x8000,
            len: 8
        })
    );
    assert_eq!(
        build_prd_table(0x1000, 512, &mut table, 0x8002),
        Err(IdeError::Misaligned {
            region: DmaRegion::PrdTable,
            address: 0x8002,
            align: 4
        })
    );
    assert_eq!(
        build_prd_table(0x1_f000, 0x2_0000, &mut table, 0xfff8),
        Err(IdeError::PrdTableCrosses64KiB {
            address: 0xfff8,
            len: 24
        })
    );
    // Error messages name the problem.
    let error = IdeError::Above4GiB {
        region: DmaRegion::Buffer,
        address: FOUR_GIB,
        len: 512,
    };
    let text = FixedText::<256>::format(format_args!("{error}"));
    assert!(
        text.contains("not below 4 GiB"),
        "unclear message: {}",
        &*text
    );
}
