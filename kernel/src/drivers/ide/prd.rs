//! The physical region descriptor (PRD) table the bus-master engine reads:
//! 8-byte entries of address, byte count and an end-of-table flag, each
//! describing a piece of the buffer that does not cross a 64 KiB boundary.

use super::error::{DmaRegion, IdeError};

/// Bytes per physical region descriptor.
pub const PRD_ENTRY_SIZE: usize = 8;

const FOUR_GIB: u64 = 1 << 32;
/// Neither a region nor the PRD table may cross a 64 KiB boundary.
const BOUNDARY_64K: u64 = 0x1_0000;
/// Flag in the last PRD entry's top halfword.
pub(super) const PRD_END_OF_TABLE: u16 = 0x8000;

/// Writes into `table` (which the device sees at `table_address`) the
/// descriptors for `len` bytes at device address `data`: one per piece
/// that does not cross a 64 KiB boundary, the last one flagged. Returns how
/// many it wrote. Checks everything the bus master requires first.
pub(super) fn build_prd_table(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::text::FixedText;
    use crate::drivers::ide::test_support::prd_entry;

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
}
