//! Glyphs from `noto-sans-mono-bitmap` (the font the bootloader draws its
//! own log with), drawn one character cell at a time.
//!
//! The font and size are part of a contract with the host: `boot-image`
//! renders expected text with the same crate and settings to find it in
//! QEMU's screendumps (`boot-image/src/screen/font.rs`).

use noto_sans_mono_bitmap::{FontWeight, RasterHeight, get_raster, get_raster_width};

use core::ops::Range;

use super::colour::Ramps;
use super::framebuffer::Framebuffer;
use super::grid::Cell;

const WEIGHT: FontWeight = FontWeight::Regular;
const SIZE: RasterHeight = RasterHeight::Size16;

/// Pixels per character cell, across.
pub const CELL_WIDTH: usize = get_raster_width(WEIGHT, SIZE);
/// Pixels per character cell, down (lines touch: the raster includes the
/// font's ascender and descender).
pub const CELL_HEIGHT: usize = SIZE.val();

/// Drawn for characters the font lacks.
const REPLACEMENT: char = '\u{fffd}';

/// The intensities of `character`'s glyph, row-major, `CELL_WIDTH` across.
fn intensities(character: char) -> &'static [u8] {
    get_raster(character, WEIGHT, SIZE)
        .or_else(|| get_raster(REPLACEMENT, WEIGHT, SIZE))
        .or_else(|| get_raster(' ', WEIGHT, SIZE))
        .map_or(&[], |raster| raster.pixels())
}

/// Glyph row `y` of `cell`: `CELL_WIDTH` intensities.
fn glyph_row(cell: Cell, y: usize) -> &'static [u8] {
    intensities(cell.character())
        .get(y * CELL_WIDTH..(y + 1) * CELL_WIDTH)
        .unwrap_or(&[0; CELL_WIDTH])
}

/// Whether pixel row `y` of a cell that shows `shown` changes when it is
/// drawn with `cell` (rows that are blank in both, or the same glyph row in
/// the same ink, do not).
fn row_changes(shown: Cell, cell: Cell, y: usize) -> bool {
    if shown == cell {
        return false;
    }
    let (was, will) = (glyph_row(shown, y), glyph_row(cell, y));
    was != will || (shown.ink() != cell.ink() && will.iter().any(|&alpha| alpha > 0))
}

/// Draws the cells `changed` of text row `row` (whose cells are `text`)
/// over what the row shows (`shown`, if known), pixel row by pixel row:
/// each pixel row is written as one run from the first to the last cell
/// whose pixels change in it, background included, rendered first into
/// `line` (RAM). Pixel rows that change nowhere (often the empty rows
/// above and below the glyphs) are not written at all. Long runs and few
/// writes suit write-combining framebuffer memory; nothing is read back.
pub fn draw_row(
    framebuffer: &mut Framebuffer<'_>,
    row: usize,
    changed: Range<usize>,
    (text, shown): (&[Cell], Option<&[Cell]>),
    ramps: &Ramps,
    line: &mut [u8],
) {
    let bytes_per_pixel = framebuffer.layout().bytes_per_pixel;
    let cell_bytes = CELL_WIDTH * bytes_per_pixel;
    let changed = changed.start..changed.end.min(text.len()).min(line.len() / cell_bytes);
    for y in 0..CELL_HEIGHT {
        let changes = |col: &usize| match shown {
            Some(shown) => row_changes(shown[*col], text[*col], y),
            None => true,
        };
        let Some(first) = changed.clone().find(changes) else {
            continue;
        };
        let last = changed.clone().rev().find(changes).unwrap_or(first);
        let run = &mut line[..(last + 1 - first) * cell_bytes];
        for (pixels, &cell) in run.chunks_exact_mut(cell_bytes).zip(&text[first..=last]) {
            let ramp = ramps.of(cell.ink());
            for (target, &alpha) in pixels
                .chunks_exact_mut(bytes_per_pixel)
                .zip(glyph_row(cell, y))
            {
                target.copy_from_slice(&ramp[alpha as usize][..bytes_per_pixel]);
            }
        }
        framebuffer.write_run(first * CELL_WIDTH, row * CELL_HEIGHT + y, run);
    }
}
