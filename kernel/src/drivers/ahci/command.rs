//! The memory structures of one AHCI command, written as little-endian
//! bytes into memory the HBA will fetch by physical address: the command
//! list's first entry (the command header), and the command table it points
//! to (the command FIS, then the PRD table). Pure, so it is tested anywhere.

use super::error::AhciError;

/// Command list: 32 entries of 32 bytes, 1 KiB aligned.
pub const COMMAND_LIST_BYTES: usize = 1024;
/// The received-FIS area: 256 bytes, 256-byte aligned.
pub const RECEIVED_FIS_BYTES: usize = 256;
/// The command table with one PRD entry: 0x80 bytes of header, 16 per PRD.
pub const COMMAND_TABLE_BYTES: usize = 0x80 + 16;
const PRDT_OFFSET: usize = 0x80;
/// Host-to-device register FIS: type, and the 'command' bit in byte 1.
const FIS_H2D: u8 = 0x27;
const FIS_COMMAND: u8 = 0x80;
/// FIS length in dwords, as the command header's CFL field wants it.
const FIS_H2D_DWORDS: u32 = 5;
/// ATA READ DMA EXT: LBA48, up to 65536 sectors.
pub const READ_DMA_EXT: u8 = 0x25;
/// Device register: LBA addressing.
const DEVICE_LBA: u8 = 0x40;
pub const SECTOR_SIZE: usize = 512;
/// One PRD entry moves at most 4 MiB, and an even byte count.
const PRD_MAX_BYTES: usize = 4 << 20;

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// A 32-bit DMA address, or why the HBA cannot take it.
pub fn dma_address(what: &'static str, address: u64, align: u64) -> Result<u32, AhciError> {
    match u32::try_from(address) {
        Ok(low) if address.is_multiple_of(align) => Ok(low),
        _ => Err(AhciError::BadAddress { what, address }),
    }
}

/// Writes command header 0 of `list`: a host-to-device FIS, reading (the
/// HBA writes memory), one PRD entry, the table at `table`.
pub fn write_header(list: &mut [u8], table: u32) {
    let header = &mut list[..32];
    header.fill(0);
    // CFL in bits 0..5, W (bit 6) clear: device to memory; PRDTL in 16..32.
    put_u32(header, 0, FIS_H2D_DWORDS | 1 << 16);
    // Dword 1 (bytes transferred) is the HBA's to write.
    put_u32(header, 8, table);
}

/// Writes a READ DMA EXT of `sectors` sectors from `lba` into the command
/// table, with one PRD entry for the buffer at `buffer`.
pub fn write_read_table(
    table: &mut [u8],
    lba: u64,
    sectors: u16,
    buffer: u32,
) -> Result<(), AhciError> {
    let bytes = usize::from(sectors) * SECTOR_SIZE;
    if sectors == 0 || bytes > PRD_MAX_BYTES {
        return Err(AhciError::BadBuffer {
            what: "a read",
            len: bytes,
        });
    }
    if table.len() < COMMAND_TABLE_BYTES {
        return Err(AhciError::BadBuffer {
            what: "the command table",
            len: table.len(),
        });
    }
    let table = &mut table[..COMMAND_TABLE_BYTES];
    table.fill(0);
    let lba = lba.to_le_bytes();
    let fis = &mut table[..20];
    fis[0] = FIS_H2D;
    fis[1] = FIS_COMMAND;
    fis[2] = READ_DMA_EXT;
    fis[4..7].copy_from_slice(&lba[0..3]);
    fis[7] = DEVICE_LBA;
    fis[8..11].copy_from_slice(&lba[3..6]);
    fis[12..14].copy_from_slice(&sectors.to_le_bytes());
    // PRD entry: data base address (low, high), reserved, byte count - 1.
    put_u32(table, PRDT_OFFSET, buffer);
    put_u32(table, PRDT_OFFSET + 12, (bytes - 1) as u32);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    #[test_case]
    fn a_read_command_is_laid_out_as_the_ahci_spec_says() {
        let mut list = [0xffu8; COMMAND_LIST_BYTES];
        write_header(&mut list, 0x12_3480);
        assert_eq!(u32_at(&list, 0), 5 | 1 << 16, "CFL 5, read, one PRD");
        assert_eq!(u32_at(&list, 4), 0, "bytes transferred starts at 0");
        assert_eq!(u32_at(&list, 8), 0x12_3480);
        assert_eq!(u32_at(&list, 12), 0, "table below 4 GiB");
        assert_eq!(list[32], 0xff, "only entry 0 is written");

        let mut table = [0xffu8; COMMAND_TABLE_BYTES];
        write_read_table(&mut table, 0x0102_0304_0506, 8, 0xabc000).unwrap();
        assert_eq!(&table[..4], &[0x27, 0x80, 0x25, 0]);
        assert_eq!(&table[4..8], &[0x06, 0x05, 0x04, 0x40], "LBA 0..24, device");
        assert_eq!(&table[8..12], &[0x03, 0x02, 0x01, 0], "LBA 24..48");
        assert_eq!(&table[12..14], &[8, 0], "sector count");
        assert_eq!(u32_at(&table, 0x80), 0xabc000);
        assert_eq!(u32_at(&table, 0x8c), 8 * 512 - 1);

        assert!(write_read_table(&mut table, 0, 0, 0).is_err());
        assert!(write_read_table(&mut table[..0x80], 0, 1, 0).is_err());
        assert_eq!(dma_address("x", 0x1000, 1024), Ok(0x1000));
        assert!(dma_address("x", 1 << 32, 1024).is_err());
        assert!(dma_address("x", 0x1100, 1024).is_err());
    }
}
