//! Cutting usable ranges at zone boundaries before the allocator sees them.
//!
//! The allocator carves a range's metadata (about 1.2 % of it) from the
//! range's own first pages. A range that starts below 16 MiB and runs far
//! beyond would put the metadata of gigabytes into the small DMA zone: UEFI
//! with 3.5 GiB hands over one range from 9 MiB to 2.9 GiB, and its 35 MiB
//! of metadata left 6.5 of the 13.6 MiB of DMA memory. Cut at 16 MiB and
//! 4 GiB, each piece pays for its own pages in its own zone.

use framekeep::{DMA_END, DMA32_END};

use super::map::PhysRange;

/// Where zones end: a range crossing one of these is cut there.
const BOUNDARIES: [u64; 2] = [DMA_END, DMA32_END];

/// The pieces of `range` that lie within one zone each, lowest first.
pub fn cut_at_zones(range: PhysRange) -> impl Iterator<Item = PhysRange> {
    let mut rest = range;
    core::iter::from_fn(move || {
        if rest.start >= rest.end {
            return None;
        }
        let end = BOUNDARIES
            .into_iter()
            .find(|&boundary| rest.start < boundary && boundary < rest.end)
            .unwrap_or(rest.end);
        let piece = PhysRange {
            start: rest.start,
            end,
        };
        rest.start = end;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn pieces<const N: usize>(start: u64, end: u64) -> [(u64, u64); N] {
        let mut out = [(0, 0); N];
        let mut count = 0;
        for piece in cut_at_zones(PhysRange { start, end }) {
            assert!(count < N, "more than {N} pieces of {start:#x}..{end:#x}");
            out[count] = (piece.start, piece.end);
            count += 1;
        }
        assert_eq!(count, N, "pieces of {start:#x}..{end:#x}");
        out
    }

    #[test_case]
    fn ranges_are_cut_where_zones_end() {
        // OVMF with 3.5 GiB: one range from 9 MiB to 2.9 GiB.
        assert_eq!(
            pieces(9 * MIB, 0xbdfd_8000),
            [(9 * MIB, 16 * MIB), (16 * MIB, 0xbdfd_8000)]
        );
        // Across both boundaries.
        assert_eq!(
            pieces(MIB, 5 * GIB),
            [(MIB, 16 * MIB), (16 * MIB, 4 * GIB), (4 * GIB, 5 * GIB)]
        );
        // Within one zone, or touching a boundary: unchanged.
        assert_eq!(pieces(MIB, 16 * MIB), [(MIB, 16 * MIB)]);
        assert_eq!(pieces(16 * MIB, 4 * GIB), [(16 * MIB, 4 * GIB)]);
        assert_eq!(pieces(4 * GIB, 8 * GIB), [(4 * GIB, 8 * GIB)]);
        assert_eq!(pieces::<0>(3 * MIB, 3 * MIB), []);
    }
}
