//! Finding rendered text in a screendump, pixel-exactly and whatever its
//! colour.
//!
//! At each position, the background is read where the text's mask is
//! empty and the ink is solved for at its brightest pixel; then every pixel
//! under the mask must be exactly the kernel's blend of that ink over that
//! background at the mask's intensity. One pixel off anywhere and the text
//! is not there. The blend is the kernel's
//! (`kernel/src/console/screen/colour.rs`, `blend`): change both together.

use super::font::Mask;
use super::ppm::Image;

/// One channel of `fg` over `bg` at intensity `alpha`, rounded to nearest
/// (the kernel's formula).
pub fn blend(fg: u8, bg: u8, alpha: u8) -> u8 {
    let alpha = u32::from(alpha);
    ((u32::from(fg) * alpha + u32::from(bg) * (255 - alpha) + 127) / 255) as u8
}

/// Where the mask's pixels are, precomputed once per search.
struct Anchors {
    /// A pixel with intensity 0: the background.
    empty: (usize, usize),
    /// The brightest pixel: where the ink is solved for.
    brightest: (usize, usize),
    alpha: u8,
}

impl Anchors {
    fn of(mask: &Mask) -> Option<Self> {
        let positions = || (0..mask.height).flat_map(|y| (0..mask.width).map(move |x| (x, y)));
        let empty = positions().find(|&(x, y)| mask.at(x, y) == 0)?;
        let brightest = positions().max_by_key(|&(x, y)| mask.at(x, y))?;
        let alpha = mask.at(brightest.0, brightest.1);
        // Text always has near-full-intensity pixels; a faint anchor would
        // leave the ink too loosely determined.
        (alpha >= 128).then_some(Self {
            empty,
            brightest,
            alpha,
        })
    }
}

/// The ink values (one channel) that blend over `bg` at `alpha` to
/// `seen`, as a bit set over a window of 16 values starting at the returned
/// base: the blend rounds, so a few inks may give the same pixel (at most
/// 2 for an `alpha` of 128 or more, which the window holds with room for
/// the guess's error).
fn inks_for(seen: u8, bg: u8, alpha: u8) -> (i32, u16) {
    let (seen, bg, alpha) = (i32::from(seen), i32::from(bg), i32::from(alpha));
    let guess = (seen * 255 - bg * (255 - alpha)) / alpha;
    let base = guess - 8;
    let mut set = 0u16;
    for bit in 0..16 {
        let ink = base + bit;
        if (0..=255).contains(&ink) && i32::from(blend(ink as u8, bg as u8, alpha as u8)) == seen {
            set |= 1 << bit;
        }
    }
    (base, set)
}

/// Whether `mask` is drawn at (`x`, `y`) of `image` in some ink over some
/// uniform background, with the ink visibly different from it.
fn matches_at(image: &Image, mask: &Mask, anchors: &Anchors, x: usize, y: usize) -> bool {
    let bg = image.pixel(x + anchors.empty.0, y + anchors.empty.1);
    let bright = image.pixel(x + anchors.brightest.0, y + anchors.brightest.1);
    if bright == bg {
        return false; // nothing drawn here (or ink the colour of the background)
    }
    let mut inks = [(0, 0u16); 3];
    for channel in 0..3 {
        inks[channel] = inks_for(bright[channel], bg[channel], anchors.alpha);
        if inks[channel].1 == 0 {
            return false;
        }
    }
    for my in 0..mask.height {
        for mx in 0..mask.width {
            let alpha = mask.at(mx, my);
            let seen = image.pixel(x + mx, y + my);
            for channel in 0..3 {
                let (base, set) = &mut inks[channel];
                if alpha == 0 {
                    if seen[channel] != bg[channel] {
                        return false;
                    }
                    continue;
                }
                for bit in 0..16 {
                    let ink = *base + bit;
                    if *set & (1 << bit) != 0
                        && blend(ink as u8, bg[channel], alpha) != seen[channel]
                    {
                        *set &= !(1 << bit);
                    }
                }
                if *set == 0 {
                    return false;
                }
            }
        }
    }
    true
}

/// The top-left corner of the first place (row by row) where `mask` is
/// drawn in `image`, or `None`. A mask without ink is never found.
pub fn find(image: &Image, mask: &Mask) -> Option<(usize, usize)> {
    let anchors = Anchors::of(mask)?;
    if mask.width > image.width || mask.height > image.height {
        return None;
    }
    (0..=image.height - mask.height)
        .flat_map(|y| (0..=image.width - mask.width).map(move |x| (x, y)))
        .find(|&(x, y)| matches_at(image, mask, &anchors, x, y))
}
