//! A terminal: a text grid drawn on a framebuffer. Text goes into the grid
//! first; [`Terminal::flush`] then draws the cells that changed. Used for
//! the real screen (`live`) and, over RAM, by the tests.

use core::fmt;

use super::colour::{Ink, Ramps};
use super::framebuffer::Framebuffer;
use super::glyph::{self, CELL_HEIGHT, CELL_WIDTH};
use super::grid::Grid;

pub struct Terminal<'a, const COLS: usize, const ROWS: usize> {
    framebuffer: Framebuffer<'a>,
    /// Borrowed: the kernel's grid is too large for a stack and lives in a
    /// zero-initialised static of its own (`.bss`).
    grid: &'a mut Grid<COLS, ROWS>,
    ramps: Ramps,
    /// One pixel row of a text row, rendered in RAM before it is written.
    line: &'a mut [u8],
}

impl<'a, const COLS: usize, const ROWS: usize> Terminal<'a, COLS, ROWS> {
    /// Draws on `framebuffer` with `grid` for text and `line` to render
    /// pixel rows in: clears the framebuffer (whatever the firmware or
    /// bootloader left there), sizes the grid to whole cells (no wider than
    /// `line` holds), and computes the colour ramps for its pixel format.
    pub fn new(
        mut framebuffer: Framebuffer<'a>,
        grid: &'a mut Grid<COLS, ROWS>,
        line: &'a mut [u8],
    ) -> Self {
        let layout = *framebuffer.layout();
        framebuffer.clear();
        let cols =
            (layout.width / CELL_WIDTH).min(line.len() / (CELL_WIDTH * layout.bytes_per_pixel));
        grid.resize(cols, layout.height / CELL_HEIGHT);
        let mut ramps = Ramps::empty();
        ramps.fill(layout.format);
        Self {
            framebuffer,
            grid,
            ramps,
            line,
        }
    }

    /// Columns and rows of text.
    pub fn size(&self) -> (usize, usize) {
        self.grid.size()
    }

    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the tests read and reset the screen")
    )]
    pub fn grid(&self) -> &Grid<COLS, ROWS> {
        self.grid
    }

    /// Text written with `fmt::Write` goes out in `ink`.
    pub fn inked(&mut self, ink: Ink) -> Inked<'_, 'a, COLS, ROWS> {
        Inked {
            terminal: self,
            ink,
        }
    }

    /// Writes `text` into the grid (not yet on the screen).
    pub fn write(&mut self, text: &str, ink: Ink) {
        self.grid.write(text, ink);
    }

    /// Blanks the text (the next flush blanks the screen).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the tests read and reset the screen")
    )]
    pub fn clear(&mut self) {
        self.grid.clear();
    }

    /// After a writer was stopped halfway: valid state, full redraw next.
    pub fn repair(&mut self) {
        self.grid.repair();
    }

    /// Draws what changed since the last flush; returns how many cells.
    pub fn flush(&mut self) -> usize {
        let (framebuffer, ramps, line) = (&mut self.framebuffer, &self.ramps, &mut *self.line);
        self.grid.redraw(|row, changed, text, shown| {
            glyph::draw_row(framebuffer, row, changed, (text, shown), ramps, line);
        })
    }
}

/// A terminal with an ink, for `write!`.
pub struct Inked<'t, 'a, const COLS: usize, const ROWS: usize> {
    terminal: &'t mut Terminal<'a, COLS, ROWS>,
    ink: Ink,
}

impl<const COLS: usize, const ROWS: usize> fmt::Write for Inked<'_, '_, COLS, ROWS> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.terminal.write(text, self.ink);
        Ok(())
    }
}
