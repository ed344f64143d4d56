//! The screen console on RAM standing in for a framebuffer: cells, wrap,
//! scroll and the redraw of changed cells only, each pixel format's bytes,
//! refused formats; and on the live screen, what a line and a scroll cost.

use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use bootloader_api::info::{FrameBufferInfo, PixelFormat};
use noto_sans_mono_bitmap::{FontWeight, RasterHeight, get_raster};

use super::colour::{Ink, Ramps, blend, grey};
use super::framebuffer::{Format, Framebuffer, Layout};
use super::glyph::{self, CELL_HEIGHT, CELL_WIDTH};
use super::grid::{Cell, Grid};
use super::live;
use super::terminal::Terminal;
use crate::arch::x86_64::tsc;
use crate::kprintln;

/// The characters on screen row `row` of `grid`, blanks as spaces.
fn row_text<const C: usize, const R: usize>(grid: &Grid<C, R>, row: usize) -> Vec<u8> {
    let (cols, _) = grid.size();
    (0..cols)
        .map(|col| grid.cell(col, row).character() as u8)
        .collect()
}

#[test_case]
fn cells_keep_ascii_and_replace_the_rest() {
    assert_eq!(Cell::new('A', Ink::Warn).character(), 'A');
    assert_eq!(Cell::new('A', Ink::Warn).ink(), Ink::Warn);
    assert_eq!(Cell::new(' ', Ink::Error), Cell::BLANK);
    assert_eq!(Cell::new('é', Ink::Info).character(), '\u{fffd}');
}

#[test_case]
fn text_wraps_at_the_edge_and_tabs_expand() {
    let mut grid = Grid::<8, 3>::new();
    grid.resize(6, 3);
    grid.write("abcdefgh\nx\t", Ink::Plain);
    assert_eq!(row_text(&grid, 0), b"abcdef");
    assert_eq!(row_text(&grid, 1), b"gh    ");
    assert_eq!(row_text(&grid, 2), b"x     ");
    assert_eq!(grid.cursor(), (6, 2), "the tab ran to the edge");
    // The next character wraps, at the bottom: `abcdef` scrolls away.
    grid.write("y", Ink::Plain);
    assert_eq!(row_text(&grid, 0), b"gh    ");
    assert_eq!(row_text(&grid, 2), b"y     ");
}

#[test_case]
fn backspace_erases_as_the_console_does() {
    let mut grid = Grid::<8, 2>::new();
    grid.resize(8, 2);
    // The shell erases a typed character with "\x08 \x08".
    grid.write("> hx\x08 \x08elp", Ink::Plain);
    assert_eq!(row_text(&grid, 0), b"> help  ");
    // At the left edge it stays put.
    grid.write("\n\x08\x08a", Ink::Plain);
    assert_eq!(row_text(&grid, 1), b"a       ");
}

/// Redraws `grid`; returns the cells that changed and, per row drawn, its
/// number, the changed columns and whether what it showed was known.
fn redraw<const C: usize, const R: usize>(
    grid: &mut Grid<C, R>,
) -> (usize, Vec<(usize, Range<usize>, bool)>) {
    let mut rows = Vec::new();
    let changed = grid.redraw(|row, columns, _, shown| rows.push((row, columns, shown.is_some())));
    (changed, rows)
}

#[test_case]
fn scrolling_drops_the_top_line_and_redraws_only_changes() {
    let mut grid = Grid::<6, 3>::new();
    grid.resize(6, 3);
    grid.write("one\ntwo\nthree", Ink::Info);
    assert_eq!(redraw(&mut grid).0, 11, "every character once");
    assert_eq!(redraw(&mut grid), (0, vec![]), "nothing changed");
    grid.write("!", Ink::Info);
    assert_eq!(redraw(&mut grid), (1, vec![(2, 5..6, true)]));
    grid.write("\nfour", Ink::Info);
    assert_eq!(row_text(&grid, 0), b"two   ");
    assert_eq!(row_text(&grid, 2), b"four  ");
    // Row by row: "one"->"two" 3, "two"->"three!" 5 (the `t` stays),
    // "three!"->"four" 6 (two of them now blank).
    let rows = vec![(0, 0..3, true), (1, 1..6, true), (2, 0..6, true)];
    assert_eq!(redraw(&mut grid), (3 + 5 + 6, rows));
    assert_eq!(grid.cursor(), (4, 2));
}

#[test_case]
fn clear_blanks_the_screen_on_the_next_redraw() {
    let mut grid = Grid::<4, 2>::new();
    grid.resize(4, 2);
    grid.write("ab", Ink::Plain);
    redraw(&mut grid);
    grid.clear();
    assert_eq!(redraw(&mut grid), (2, vec![(0, 0..2, true)]));
    assert_eq!(grid.cell(0, 0), Cell::BLANK);
    grid.write("abcdefghij", Ink::Plain);
    assert_eq!(grid.cursor(), (2, 1));
    assert_eq!(row_text(&grid, 0), b"efgh");
}

#[test_case]
fn at_the_bottom_the_text_jumps_up_half_a_screen() {
    let mut grid = Grid::<2, 4>::new();
    grid.resize(2, 4);
    grid.write("a\nb\nc\nd", Ink::Plain);
    redraw(&mut grid);
    grid.write("\ne", Ink::Plain);
    let rows: Vec<_> = (0..4).map(|row| row_text(&grid, row)).collect();
    assert_eq!(rows, [b"c ", b"d ", b"e ", b"  "]);
    assert_eq!(grid.cursor(), (1, 2));
    // a->c, b->d, c->e, d->blank; the second column was blank and stays so.
    let rows = (0..4).map(|row| (row, 0..1, true)).collect();
    assert_eq!(redraw(&mut grid), (4, rows));
}

#[test_case]
fn after_a_repair_every_cell_is_drawn_without_trusting_the_shadow() {
    let mut grid = Grid::<3, 2>::new();
    grid.resize(3, 2);
    grid.write("ab", Ink::Plain);
    redraw(&mut grid);
    grid.repair();
    let rows = vec![(0, 0..3, false), (1, 0..3, false)];
    assert_eq!(redraw(&mut grid), (6, rows), "every cell, blanks included");
    assert_eq!(redraw(&mut grid).0, 0, "the shadow is trusted again");
}

/// A RAM framebuffer of `cols` x `rows` cells in `format`, filled with
/// 0xaa so untouched bytes show.
fn ram(cols: usize, rows: usize, format: Format, bytes_per_pixel: usize) -> (Vec<u8>, Layout) {
    let layout = Layout {
        width: cols * CELL_WIDTH,
        height: rows * CELL_HEIGHT,
        // Padding at each line's end, as real framebuffers have.
        stride: cols * CELL_WIDTH + 3,
        bytes_per_pixel,
        format,
    };
    (
        vec![0xaa; layout.stride * layout.height * bytes_per_pixel],
        layout,
    )
}

/// Intensity of the glyph of `character` at (`x`, `y`), from the font.
fn intensity(character: char, x: usize, y: usize) -> u8 {
    get_raster(character, FontWeight::Regular, RasterHeight::Size16)
        .and_then(|raster| raster.pixel(x, y))
        .expect("a glyph pixel")
}

/// The brightest pixel of `character`'s glyph (hinting leaves some glyphs
/// without a pixel at full intensity) and one where it is empty.
fn brightest_and_empty(character: char) -> ((usize, usize), (usize, usize)) {
    let pixels = || (0..CELL_HEIGHT).flat_map(|y| (0..CELL_WIDTH).map(move |x| (x, y)));
    let brightest = pixels()
        .max_by_key(|&(x, y)| intensity(character, x, y))
        .expect("a pixel");
    let empty = pixels()
        .find(|&(x, y)| intensity(character, x, y) == 0)
        .expect("an empty pixel");
    (brightest, empty)
}

/// Draws `H` in warning ink at cell (1, 0) on a 2 x 1 RAM screen; returns
/// the bytes and the layout.
fn draw_h(format: Format, bytes_per_pixel: usize) -> (Vec<u8>, Layout) {
    let (mut bytes, layout) = ram(2, 1, format, bytes_per_pixel);
    {
        let (mut grid, mut line) = (Grid::<2, 1>::new(), vec![0; 2 * CELL_WIDTH * 4]);
        let framebuffer = Framebuffer::new(&mut bytes, layout).expect("fits");
        let mut terminal = Terminal::new(framebuffer, &mut grid, &mut line);
        terminal.write(" H", Ink::Warn);
        terminal.flush();
    }
    (bytes, layout)
}

fn pixel_at<'a>(bytes: &'a [u8], layout: &Layout, x: usize, y: usize) -> &'a [u8] {
    let at = (y * layout.stride + x) * layout.bytes_per_pixel;
    &bytes[at..at + layout.bytes_per_pixel]
}

#[test_case]
fn pixel_formats_put_each_channel_where_it_belongs() {
    let ((fx, fy), (ex, ey)) = brightest_and_empty('H');
    let alpha = intensity('H', fx, fy);
    assert!(alpha > 128, "H has a bright pixel");
    let warn = Ink::Warn.colour();
    let (r, g, b) = (
        blend(warn.r, 0, alpha),
        blend(warn.g, 0, alpha),
        blend(warn.b, 0, alpha),
    );
    let (fx, ex) = (fx + CELL_WIDTH, ex + CELL_WIDTH);
    for (format, bytes_per_pixel, full) in [
        (Format::Rgb, 4, [r, g, b, 0].as_slice()),
        (Format::Rgb, 3, [r, g, b].as_slice()),
        (Format::Bgr, 4, [b, g, r, 0].as_slice()),
        (Format::Grey, 1, [blend(grey(warn), 0, alpha)].as_slice()),
    ] {
        let (bytes, layout) = draw_h(format, bytes_per_pixel);
        let pixel = |x, y| pixel_at(&bytes, &layout, x, y);
        assert_eq!(pixel(fx, fy), full, "{format:?} {bytes_per_pixel}: ink");
        assert!(
            pixel(ex, ey).iter().all(|&byte| byte == 0),
            "{format:?}: background"
        );
        assert!(
            pixel(0, 0).iter().all(|&byte| byte == 0),
            "{format:?}: blank cell"
        );
        // Nothing past the last pixel is written.
        assert_eq!(bytes[layout.byte_len()], 0xaa, "{format:?}: past the end");
    }
    assert_ne!(r, b, "the test needs red and blue to differ");
}

#[test_case]
fn a_redraw_writes_only_the_pixel_rows_that_change() {
    let (mut bytes, layout) = ram(3, 1, Format::Rgb, 4);
    let mut ramps = Ramps::empty();
    ramps.fill(Format::Rgb);
    let mut line = vec![0; 3 * CELL_WIDTH * 4];
    let mut draw = |bytes: &mut [u8], text: &[Cell], shown: Option<&[Cell]>| {
        let mut framebuffer = Framebuffer::new(bytes, layout).expect("fits");
        glyph::draw_row(&mut framebuffer, 0, 0..3, (text, shown), &ramps, &mut line);
    };
    let warn = [
        Cell::new('o', Ink::Warn),
        Cell::BLANK,
        Cell::new('-', Ink::Warn),
    ];
    let info = [
        Cell::new('o', Ink::Info),
        Cell::BLANK,
        Cell::new('-', Ink::Warn),
    ];
    draw(&mut bytes, &warn, None);
    // Paint over the glyphs: what the redraw writes loses the paint.
    bytes[..layout.byte_len()].fill(0xaa);
    draw(&mut bytes, &info, Some(&warn));
    for y in 0..CELL_HEIGHT {
        let inked = (0..CELL_WIDTH).any(|x| intensity('o', x, y) > 0);
        let painted = |x| pixel_at(&bytes, &layout, x, y) == [0xaa; 4];
        assert_eq!(
            painted(0),
            !inked,
            "row {y}: rewritten exactly when it has ink"
        );
        // The run ends at the last cell that changes: the `-` keeps its paint.
        assert!(
            painted(2 * CELL_WIDTH),
            "row {y}: the unchanged `-` is not written"
        );
    }
    bytes[..layout.byte_len()].fill(0xaa);
    draw(&mut bytes, &info, Some(&info));
    assert!(
        bytes[..layout.byte_len()].iter().all(|&byte| byte == 0xaa),
        "nothing changed"
    );
}

#[test_case]
fn partial_intensities_blend_into_the_background() {
    let (bytes, layout) = draw_h(Format::Rgb, 4);
    let warn = Ink::Warn.colour();
    let mut partial = 0;
    for y in 0..CELL_HEIGHT {
        for x in 0..CELL_WIDTH {
            let alpha = intensity('H', x, y) as u32;
            let expected = [warn.r, warn.g, warn.b].map(|c| ((c as u32 * alpha + 127) / 255) as u8);
            assert_eq!(pixel_at(&bytes, &layout, CELL_WIDTH + x, y)[..3], expected);
            partial += usize::from(alpha > 0 && alpha < 255);
        }
    }
    assert!(partial > 0, "the font is anti-aliased");
}

#[test_case]
fn formats_we_cannot_draw_in_are_refused() {
    let info = |pixel_format, bytes_per_pixel, byte_len| FrameBufferInfo {
        byte_len,
        width: 640,
        height: 480,
        pixel_format,
        bytes_per_pixel,
        stride: 640,
    };
    let full = 640 * 480 * 4;
    assert!(Layout::from_info(&info(PixelFormat::Bgr, 4, full)).is_ok());
    assert!(Layout::from_info(&info(PixelFormat::U8, 1, full)).is_ok());
    let unknown = PixelFormat::Unknown {
        red_position: 11,
        green_position: 5,
        blue_position: 0,
    };
    assert!(Layout::from_info(&info(unknown, 2, full)).is_err());
    assert!(Layout::from_info(&info(PixelFormat::Rgb, 2, full)).is_err());
    assert!(Layout::from_info(&info(PixelFormat::Rgb, 4, full - 1)).is_err());
}

#[test_case]
fn a_scrolled_screen_matches_one_drawn_afresh() {
    const COLS: usize = 10;
    const ROWS: usize = 3;
    let lines = [
        "first line",
        "second",
        "\tthird",
        "fourth: wraps around",
        "last",
    ];
    let (mut scrolled, layout) = ram(COLS, ROWS, Format::Bgr, 4);
    let (mut fresh, _) = ram(COLS, ROWS, Format::Bgr, 4);
    let mut cells = Vec::new();
    {
        let (mut grid, mut line) = (Grid::<COLS, ROWS>::new(), vec![0; COLS * CELL_WIDTH * 4]);
        let framebuffer = Framebuffer::new(&mut scrolled, layout).expect("fits");
        let mut terminal = Terminal::new(framebuffer, &mut grid, &mut line);
        for (ink, line) in Ink::ALL.iter().cycle().zip(lines) {
            terminal.write(line, *ink);
            terminal.write("\n", *ink);
            terminal.flush();
        }
        for row in 0..ROWS {
            cells.extend((0..COLS).map(|col| terminal.grid().cell(col, row)));
        }
    }
    assert_eq!(cells[COLS].character(), 'l', "`last` is on the middle row");
    // The same text, cell by cell, on a screen that never scrolled.
    {
        let (mut grid, mut line) = (Grid::<COLS, ROWS>::new(), vec![0; COLS * CELL_WIDTH * 4]);
        let framebuffer = Framebuffer::new(&mut fresh, layout).expect("fits");
        let mut terminal = Terminal::new(framebuffer, &mut grid, &mut line);
        for cell in cells {
            let mut utf8 = [0; 4];
            terminal.write(cell.character().encode_utf8(&mut utf8), cell.ink());
        }
        terminal.flush();
    }
    assert!(
        scrolled == fresh,
        "incremental redraw differs from a fresh one"
    );
}

/// A log line of the usual length.
const LINE: &str = "[    1.234567] INFO  mem::frames: 130 MiB usable in 3 zones, 4 sections";

#[test_case]
fn measure_a_log_line_and_a_scroll_on_the_screen() {
    let Some(cost) = live::with(|screen| {
        let (cols, rows) = screen.size();
        let step = screen.grid().scroll_step();
        screen.clear();
        screen.flush();
        // Writes `text` turned left by `turn` characters (so that lines
        // differ in most cells, as real log lines do) and a newline, and
        // draws it: returns the TSC cycles and the cells drawn.
        let line = |screen: &mut live::Screen, text: &str, turn: usize| {
            let turn = turn % text.len().max(1);
            let start = tsc::now();
            screen.write(&text[turn..], Ink::Info);
            screen.write(&text[..turn], Ink::Info);
            screen.write("\n", Ink::Info);
            let drawn = screen.flush();
            (tsc::now() - start, drawn)
        };
        // From the top: a line draws its own characters only.
        let (quiet, drawn) = line(screen, LINE, 0);
        let ink = LINE.bytes().filter(|&byte| byte != b' ').count();
        assert_eq!(drawn, ink.min(cols), "a line draws its non-blank cells");
        let mut turn = 0;
        while screen.grid().cursor().1 + 1 < rows {
            turn += 7;
            line(screen, LINE, turn);
        }
        // At the bottom: the next line scrolls a screen of log lines.
        let scroll = line(screen, LINE, turn + 7);
        // The worst case: every cell changes (full-width lines, each unlike
        // the one it replaces), drawn in one go. From the top of a cleared
        // grid, `rows` full lines fill the screen exactly, without a scroll.
        screen.clear();
        let mut wide = [0u8; super::live::MAX_COLS];
        for index in 0..rows {
            wide[..cols].fill(b'A' + (index % 26) as u8);
            screen.write(core::str::from_utf8(&wide[..cols]).unwrap_or(""), Ink::Info);
        }
        let start = tsc::now();
        let full_drawn = screen.flush();
        let full = (tsc::now() - start, full_drawn);
        (cols, rows, step, quiet, scroll, full)
    }) else {
        crate::ktest::skip("no screen")
    };
    let (cols, rows, step, quiet, (scroll, scroll_drawn), (full, full_drawn)) = cost;
    assert!(scroll_drawn > cols, "a scroll redraws most of the screen");
    // A few cells may by chance show the same character already.
    assert!(full_drawn >= cols * rows * 9 / 10, "every cell changed");
    let us = tsc::ticks_to_micros;
    let average = (scroll + (step as u64 - 1) * quiet) / step as u64;
    kprintln!(
        "# screen {cols}x{rows}: a {}-character log line costs {quiet} TSC cycles ({} us); \
         the line that scrolls a screen of them up by {step} rows {scroll} ({} us, \
         {scroll_drawn} cells), {average} ({} us) per line on average; \
         redrawing every cell {full} ({} us, {full_drawn} cells)",
        LINE.len(),
        us(quiet),
        us(scroll),
        us(average),
        us(full)
    );
}
