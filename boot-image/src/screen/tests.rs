//! The PPM reader and the text finder on synthetic screens: text drawn
//! with the kernel's blend is found where it was drawn, in any colour, and
//! not found after any one-pixel change.

use super::find::{blend, find};
use super::font::{self, CELL_HEIGHT, CELL_WIDTH, Mask};
use super::ppm::{self, Image};

/// Draws `mask` at (`x`, `y`) in `ink` over what is there, as the kernel
/// draws a glyph (over a uniform background).
fn draw(image: &mut Image, mask: &Mask, (x, y): (usize, usize), ink: [u8; 3]) {
    for my in 0..mask.height {
        for mx in 0..mask.width {
            let bg = image.pixel(x + mx, y + my);
            let alpha = mask.at(mx, my);
            let pixel = [0, 1, 2].map(|c| blend(ink[c], bg[c], alpha));
            image.set(x + mx, y + my, pixel);
        }
    }
}

const WHITE: [u8; 3] = [0xff, 0xff, 0xff];
const GREY: [u8; 3] = [0xd0, 0xd0, 0xd0];
const BLACK: [u8; 3] = [0, 0, 0];

#[test]
fn ppm_round_trips_and_reads_comments() {
    let mut image = Image::filled(3, 2, [1, 2, 3]);
    image.set(2, 1, [250, 0, 7]);
    assert_eq!(ppm::parse(&image.to_ppm()).unwrap(), image);
    let mut commented = b"P6\n# made by hand\n3 2\n# max\n255\n".to_vec();
    commented.extend_from_slice(&image.to_ppm()[b"P6\n3 2\n255\n".len()..]);
    assert_eq!(ppm::parse(&commented).unwrap(), image);
}

#[test]
fn ppm_refuses_what_it_cannot_read() {
    let image = Image::filled(4, 4, GREY).to_ppm();
    assert!(
        ppm::parse(&image[..image.len() - 1])
            .unwrap_err()
            .contains("needs 48")
    );
    assert!(ppm::parse(b"P3\n1 1\n255\n0 0 0\n").is_err(), "ASCII PPM");
    assert!(
        ppm::parse(b"P6\n1 1\n65535\n\0\0\0\0\0\0").is_err(),
        "16-bit PPM"
    );
    assert!(ppm::parse(b"P6\n1 x\n255\n\0\0\0").is_err(), "bad header");
}

#[test]
fn text_renders_one_cell_per_character() {
    let mask = font::render("boot complete");
    assert_eq!((mask.width, mask.height), (13 * CELL_WIDTH, CELL_HEIGHT));
    // The space between the words is empty; the letters are not.
    let inked = |x: usize| (0..CELL_HEIGHT).any(|y| mask.at(x, y) > 0);
    assert!(!(4 * CELL_WIDTH..5 * CELL_WIDTH).any(inked));
    assert!((0..CELL_WIDTH).any(inked));
}

#[test]
fn text_is_found_where_it_was_drawn_in_any_colour() {
    let mask = font::render("boot complete");
    for (ink, background) in [
        (GREY, BLACK),
        (WHITE, BLACK),
        ([0xff, 0x50, 0x50], [0, 0, 0x40]),
    ] {
        let mut image = Image::filled(200, 60, background);
        draw(&mut image, &font::render("kernel: boot"), (3, 2), WHITE);
        draw(&mut image, &mask, (37, 21), ink);
        assert_eq!(
            find(&image, &mask),
            Some((37, 21)),
            "{ink:?} on {background:?}"
        );
        assert_eq!(find(&image, &font::render("boot complate")), None);
        assert_eq!(
            find(&image, &font::render("boot")),
            Some((59, 2)),
            "the first one"
        );
    }
}

#[test]
fn a_blank_screen_holds_no_text() {
    let image = Image::filled(200, 40, BLACK);
    assert_eq!(find(&image, &font::render("boot complete")), None);
    assert_eq!(
        find(&image, &font::render("   ")),
        None,
        "no ink, never found"
    );
}

#[test]
fn any_one_pixel_change_under_the_text_hides_it() {
    let mask = font::render("boot complete");
    let at = (5, 3);
    let mut image = Image::filled(mask.width + 10, mask.height + 6, BLACK);
    draw(&mut image, &mask, at, GREY);
    assert_eq!(find(&image, &mask), Some(at));
    for y in 0..mask.height {
        for x in 0..mask.width {
            let mut changed = image.clone();
            let mut pixel = changed.pixel(at.0 + x, at.1 + y);
            pixel[1] ^= 1;
            changed.set(at.0 + x, at.1 + y, pixel);
            assert_eq!(find(&changed, &mask), None, "changed ({x}, {y})");
        }
    }
}

#[test]
fn text_cut_by_the_edge_is_not_found() {
    let mask = font::render("complete");
    let mut image = Image::filled(mask.width + 2, mask.height, BLACK);
    draw(&mut image, &mask, (0, 0), GREY);
    let cut = font::render("complete!");
    assert_eq!(find(&image, &cut), None);
    assert_eq!(find(&image, &mask), Some((0, 0)));
}
