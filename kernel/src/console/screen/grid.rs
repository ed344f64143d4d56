//! The text on the screen, kept in RAM: a grid of cells (character and
//! ink) whose rows form a ring, so scrolling moves an index instead of
//! copying text, and a shadow of what the framebuffer currently shows, so
//! a redraw touches only the cells that changed. The framebuffer is never
//! read back.
//!
//! A scroll changes most cells of the screen, so it costs a redraw of
//! nearly the whole screen whatever its step: at the bottom the text
//! therefore jumps up by half a screen ([`Grid::scroll_step`]), which pays
//! that redraw once per half a screen of lines instead of once per line.
//!
//! Both arrays are sized for the largest screen at compile time and live in
//! `.bss`: the grid works before the heap exists and never allocates, which
//! the panic path relies on.

use core::ops::Range;

use super::colour::Ink;

/// One character cell: a printable ASCII byte (0 for a blank, [`Cell::OTHER`]
/// for anything else) and its ink. A blank is the same in every ink, so it
/// is always stored as 0 and compares equal to the shadow's blanks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cell(u16);

impl Cell {
    pub const BLANK: Cell = Cell(0);
    /// Stored for characters outside printable ASCII; drawn as `�`.
    const OTHER: u8 = 0x7f;

    pub fn new(character: char, ink: Ink) -> Cell {
        let byte = match character {
            ' ' => return Cell::BLANK,
            '!'..='~' => character as u8,
            _ => Self::OTHER,
        };
        Cell(u16::from(byte) | (ink as u16) << 8)
    }

    pub fn character(self) -> char {
        match self.0 as u8 {
            0 => ' ',
            Self::OTHER => '\u{fffd}',
            byte => byte as char,
        }
    }

    pub fn ink(self) -> Ink {
        Ink::from_index((self.0 >> 8) as u8)
    }
}

/// Columns every tab stop is apart.
const TAB: usize = 8;

/// A text grid of at most `COLS` x `ROWS` cells; the size in use is set by
/// [`Grid::resize`] to what the framebuffer holds.
pub struct Grid<const COLS: usize, const ROWS: usize> {
    cols: usize,
    rows: usize,
    /// Ring index of the row shown at the top of the screen.
    top: usize,
    /// Cursor column; `cols` means "wrap before the next character".
    col: usize,
    /// Cursor row on the screen (0 = top).
    row: usize,
    /// The text, rows in ring order.
    cells: [[Cell; COLS]; ROWS],
    /// What the framebuffer shows, rows in screen order.
    shown: [[Cell; COLS]; ROWS],
    /// Screen rows written since the last redraw.
    dirty: [bool; ROWS],
    /// Whether the text scrolled since the last redraw (every row moved).
    scrolled: bool,
    /// Whether `shown` is what the screen shows; false after a writer was
    /// stopped halfway, until the next redraw has drawn every cell.
    shown_unsure: bool,
}

impl<const COLS: usize, const ROWS: usize> Grid<COLS, ROWS> {
    /// An empty grid of size 0 x 0: all zero, so a static of it is `.bss`.
    pub const fn new() -> Self {
        Self {
            cols: 0,
            rows: 0,
            top: 0,
            col: 0,
            row: 0,
            cells: [[Cell::BLANK; COLS]; ROWS],
            shown: [[Cell::BLANK; COLS]; ROWS],
            dirty: [false; ROWS],
            scrolled: false,
            shown_unsure: false,
        }
    }

    /// Empties the grid and uses `cols` x `rows` cells of it (cut to the
    /// maximum). The shadow says the screen is blank: clear it too.
    pub fn resize(&mut self, cols: usize, rows: usize) {
        // Field by field: a whole new `Grid` would be built on the stack
        // first, and the largest is bigger than a kernel stack.
        (self.cols, self.rows) = (cols.min(COLS), rows.min(ROWS));
        (self.top, self.col, self.row) = (0, 0, 0);
        for (text, shown) in self.cells.iter_mut().zip(self.shown.iter_mut()) {
            text.fill(Cell::BLANK);
            shown.fill(Cell::BLANK);
        }
        self.dirty.fill(false);
        (self.scrolled, self.shown_unsure) = (false, false);
    }

    /// Columns and rows in use.
    pub fn size(&self) -> (usize, usize) {
        (self.cols, self.rows)
    }

    /// Cursor column and screen row.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the tests read and reset the screen")
    )]
    pub fn cursor(&self) -> (usize, usize) {
        (self.col, self.row)
    }

    /// The cell shown at (`col`, screen `row`) once redrawn.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the tests read and reset the screen")
    )]
    pub fn cell(&self, col: usize, row: usize) -> Cell {
        self.cells[(self.top + row) % self.rows.max(1)][col]
    }

    /// Puts the state back in range after a writer was stopped halfway (a
    /// lock taken over on the panic path), and forces a full redraw.
    pub fn repair(&mut self) {
        self.cols = self.cols.min(COLS);
        self.rows = self.rows.min(ROWS);
        self.top %= self.rows.max(1);
        self.col = self.col.min(self.cols);
        self.row = self.row.min(self.rows.saturating_sub(1));
        // The writer may have been stopped inside a cell's drawing.
        (self.scrolled, self.shown_unsure) = (true, true);
    }

    /// Blanks the text; the next redraw clears the screen cell by cell.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the tests read and reset the screen")
    )]
    pub fn clear(&mut self) {
        for text in &mut self.cells {
            text.fill(Cell::BLANK);
        }
        (self.top, self.col, self.row) = (0, 0, 0);
        self.scrolled = true;
    }

    /// Writes `text` at the cursor in `ink`: wraps at the right edge,
    /// scrolls at the bottom, expands tabs; `\r` returns to column 0, other
    /// control characters are dropped.
    pub fn write(&mut self, text: &str, ink: Ink) {
        if self.cols == 0 || self.rows == 0 {
            return;
        }
        for character in text.chars() {
            match character {
                '\n' => self.newline(),
                '\r' => self.col = 0,
                // Backspace moves left (the console erases with "\x08 \x08").
                '\x08' => self.col = self.col.saturating_sub(1).min(self.cols - 1),
                '\t' => {
                    let stop = (self.col / TAB + 1) * TAB;
                    while self.col < stop.min(self.cols) {
                        self.put(Cell::BLANK);
                    }
                }
                character if character.is_control() => {}
                character => self.put(Cell::new(character, ink)),
            }
        }
    }

    fn put(&mut self, cell: Cell) {
        if self.col >= self.cols {
            self.newline();
        }
        let ring_row = (self.top + self.row) % self.rows;
        self.cells[ring_row][self.col] = cell;
        self.dirty[self.row] = true;
        self.col += 1;
    }

    /// Rows the text moves up when a line is added at the bottom: half a
    /// screen (see the module's documentation).
    pub fn scroll_step(&self) -> usize {
        (self.rows / 2).max(1)
    }

    fn newline(&mut self) {
        self.col = 0;
        if self.row + 1 < self.rows {
            self.row += 1;
            return;
        }
        // The top rows leave and become the new, empty bottom rows.
        let step = self.scroll_step();
        for leaving in 0..step {
            self.cells[(self.top + leaving) % self.rows].fill(Cell::BLANK);
        }
        self.top = (self.top + step) % self.rows;
        self.row = self.rows - step;
        self.scrolled = true;
    }

    /// Calls `draw(row, changed, text, shown)` for every screen row whose
    /// text differs from what the screen shows: `changed` spans the columns
    /// from the first to the last cell that differs, `shown` is what the
    /// row shows now (`None` if unknown: then every cell counts as changed).
    /// Then records the text as shown. Returns how many cells changed.
    pub fn redraw(
        &mut self,
        mut draw: impl FnMut(usize, Range<usize>, &[Cell], Option<&[Cell]>),
    ) -> usize {
        let mut changed_cells = 0;
        let unsure = self.shown_unsure;
        for row in 0..self.rows {
            if !self.scrolled && !self.dirty[row] {
                continue;
            }
            self.dirty[row] = false;
            let text = &self.cells[(self.top + row) % self.rows][..self.cols];
            let shown = &mut self.shown[row][..self.cols];
            let differs = |col: &usize| unsure || text[*col] != shown[*col];
            let Some(first) = (0..self.cols).find(differs) else {
                continue;
            };
            let last = (0..self.cols).rev().find(differs).unwrap_or(first);
            changed_cells += (first..=last).filter(differs).count();
            draw(row, first..last + 1, text, (!unsure).then_some(&*shown));
            shown.copy_from_slice(text);
        }
        (self.scrolled, self.shown_unsure) = (false, false);
        changed_cells
    }
}
