//! The kernel's screen font on the host: expected text is rendered with
//! the same crate, weight and size as `kernel/src/console/screen/glyph.rs`
//! draws with, so it can be found pixel by pixel in a screendump.

use noto_sans_mono_bitmap::{FontWeight, RasterHeight, get_raster, get_raster_width};

const WEIGHT: FontWeight = FontWeight::Regular;
const SIZE: RasterHeight = RasterHeight::Size16;

/// Pixels per character cell, across and down (as in the kernel).
pub const CELL_WIDTH: usize = get_raster_width(WEIGHT, SIZE);
pub const CELL_HEIGHT: usize = SIZE.val();

/// The glyph intensities (0 = background .. 255 = ink) of a line of text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mask {
    pub width: usize,
    pub height: usize,
    /// `width * height` intensities, row-major.
    pub alpha: Vec<u8>,
}

impl Mask {
    pub fn at(&self, x: usize, y: usize) -> u8 {
        self.alpha[y * self.width + x]
    }
}

/// Renders `text` on one line, character cells side by side, as the
/// kernel does. Characters the font lacks are drawn as `�` (like the
/// kernel's screen, which stores only printable ASCII).
pub fn render(text: &str) -> Mask {
    let characters: Vec<char> = text
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '\u{fffd}'
            }
        })
        .collect();
    let width = characters.len() * CELL_WIDTH;
    let mut alpha = vec![0; width * CELL_HEIGHT];
    for (index, &character) in characters.iter().enumerate() {
        let Some(raster) = get_raster(character, WEIGHT, SIZE) else {
            continue;
        };
        for (y, row) in raster.rows().enumerate() {
            let start = y * width + index * CELL_WIDTH;
            alpha[start..start + CELL_WIDTH].copy_from_slice(row);
        }
    }
    Mask {
        width,
        height: CELL_HEIGHT,
        alpha,
    }
}
