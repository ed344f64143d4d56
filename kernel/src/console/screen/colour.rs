//! Colours: the ink of each kind of output, how a glyph's anti-aliased
//! intensity blends ink into the background, and the per-ink ramps of
//! ready-packed pixels the renderer copies from.
//!
//! The blend is part of a contract with the host: `boot-image`'s screen
//! finder recomputes it to recognise text pixel-exactly, so a change here
//! must be made there too (`boot-image/src/screen/find.rs`).

use super::framebuffer::{Format, Pixel};

/// An 8-bit-per-channel colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rgb {
    pub r: u8,
    pub g: u8,
    pub b: u8,
}

/// The screen's background: black, which every pixel format writes as zero
/// bytes (so clearing is a plain fill with 0).
pub const BACKGROUND: Rgb = Rgb { r: 0, g: 0, b: 0 };

/// What kind of output a character belongs to; each has its colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Ink {
    /// Text without a log level: KTAP, tables, `boot complete`.
    Plain = 0,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// How many inks there are (the ramps table has one row per ink).
pub const INKS: usize = 6;

impl Ink {
    /// Every ink, in `repr` order.
    pub const ALL: [Ink; INKS] = [
        Ink::Plain,
        Ink::Error,
        Ink::Warn,
        Ink::Info,
        Ink::Debug,
        Ink::Trace,
    ];

    /// The foreground colour: each reads well on black; errors and
    /// warnings stand out from the white info lines, plain text is a
    /// lighter grey than trace.
    pub const fn colour(self) -> Rgb {
        match self {
            Ink::Plain => Rgb {
                r: 0xd0,
                g: 0xd0,
                b: 0xd0,
            },
            Ink::Error => Rgb {
                r: 0xff,
                g: 0x50,
                b: 0x50,
            },
            Ink::Warn => Rgb {
                r: 0xff,
                g: 0xc8,
                b: 0x30,
            },
            Ink::Info => Rgb {
                r: 0xff,
                g: 0xff,
                b: 0xff,
            },
            Ink::Debug => Rgb {
                r: 0x60,
                g: 0xc0,
                b: 0xff,
            },
            Ink::Trace => Rgb {
                r: 0x90,
                g: 0x90,
                b: 0xa0,
            },
        }
    }

    /// The ink stored in a cell (an out-of-range index is plain).
    pub fn from_index(index: u8) -> Ink {
        Ink::ALL.get(index as usize).copied().unwrap_or(Ink::Plain)
    }
}

impl From<log::Level> for Ink {
    fn from(level: log::Level) -> Self {
        match level {
            log::Level::Error => Ink::Error,
            log::Level::Warn => Ink::Warn,
            log::Level::Info => Ink::Info,
            log::Level::Debug => Ink::Debug,
            log::Level::Trace => Ink::Trace,
        }
    }
}

/// One channel of `fg` over `bg` at glyph intensity `alpha` (0..=255),
/// rounded to nearest: 0 gives `bg`, 255 gives `fg` exactly.
pub const fn blend(fg: u8, bg: u8, alpha: u8) -> u8 {
    let alpha = alpha as u32;
    ((fg as u32 * alpha + bg as u32 * (255 - alpha) + 127) / 255) as u8
}

/// A colour's grey level for 8-bit grey framebuffers (ITU-R BT.601 luma in
/// integer arithmetic: the kernel has no floating point).
pub const fn grey(colour: Rgb) -> u8 {
    ((colour.r as u32 * 77 + colour.g as u32 * 150 + colour.b as u32 * 29) >> 8) as u8
}

/// For every ink, the packed pixel of each of the 256 glyph intensities:
/// rendering a glyph is then a table look-up per pixel, with no arithmetic.
pub struct Ramps([[Pixel; 256]; INKS]);

impl Ramps {
    /// All zero until [`Ramps::fill`]: fits a zero-initialised static.
    pub const fn empty() -> Self {
        Self([[[0; 4]; 256]; INKS])
    }

    /// Computes the ramps for `format`.
    pub fn fill(&mut self, format: Format) {
        for (ink, ramp) in Ink::ALL.iter().zip(self.0.iter_mut()) {
            let fg = ink.colour();
            for (alpha, pixel) in ramp.iter_mut().enumerate() {
                let alpha = alpha as u8;
                let mixed = Rgb {
                    r: blend(fg.r, BACKGROUND.r, alpha),
                    g: blend(fg.g, BACKGROUND.g, alpha),
                    b: blend(fg.b, BACKGROUND.b, alpha),
                };
                *pixel = match format {
                    // The grey is blended from the ink's grey, not taken from
                    // the blended colour, so 255 is exactly the ink's grey.
                    Format::Grey => [blend(grey(fg), grey(BACKGROUND), alpha), 0, 0, 0],
                    _ => format.pack(mixed),
                };
            }
        }
    }

    /// The ramp of `ink`.
    pub fn of(&self, ink: Ink) -> &[Pixel; 256] {
        &self.0[ink as usize]
    }
}
