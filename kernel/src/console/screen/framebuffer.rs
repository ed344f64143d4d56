//! The framebuffer the bootloader hands over (VESA under BIOS, GOP under
//! UEFI) and its pixel formats.
//!
//! Framebuffer memory is uncached or write-combining on real hardware:
//! writes are cheap, reads very slow. This type therefore only writes, and
//! in whole runs of pixels (one glyph row at a time), which write-combining
//! merges into bus bursts.

use bootloader_api::info::{FrameBufferInfo, PixelFormat};

use super::colour::Rgb;

/// One pixel as it is stored: the first `bytes_per_pixel` bytes count.
pub type Pixel = [u8; 4];

/// The pixel formats we draw in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Red, green, blue bytes in that order (then padding).
    Rgb,
    /// Blue, green, red bytes in that order (then padding).
    Bgr,
    /// One byte of grey.
    Grey,
}

impl Format {
    /// `colour` as this format's bytes.
    pub fn pack(self, colour: Rgb) -> Pixel {
        match self {
            Format::Rgb => [colour.r, colour.g, colour.b, 0],
            Format::Bgr => [colour.b, colour.g, colour.r, 0],
            Format::Grey => [super::colour::grey(colour), 0, 0, 0],
        }
    }
}

/// Size and layout of a framebuffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Visible pixels per line.
    pub width: usize,
    /// Visible lines.
    pub height: usize,
    /// Pixels from the start of one line to the start of the next.
    pub stride: usize,
    pub bytes_per_pixel: usize,
    pub format: Format,
}

/// Why a framebuffer is not drawn on.
#[derive(Clone, Copy, Debug)]
pub enum Unsupported {
    /// A format given by bit positions (or one newer than this kernel).
    Format(PixelFormat),
    /// A pixel size this format cannot have (RGB in 2 bytes, or over 4).
    PixelSize(PixelFormat, usize),
    /// The buffer is shorter than its geometry says.
    TooShort { needed: usize, byte_len: usize },
}

impl core::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Format(format) => write!(f, "pixel format {format:?} is not drawn"),
            Self::PixelSize(format, bytes) => {
                write!(f, "{format:?} in {bytes} bytes per pixel is not drawn")
            }
            Self::TooShort { needed, byte_len } => {
                write!(
                    f,
                    "the buffer has {byte_len} bytes, its geometry needs {needed}"
                )
            }
        }
    }
}

impl Layout {
    /// The layout of the bootloader's framebuffer, if we can draw in it.
    pub fn from_info(info: &FrameBufferInfo) -> Result<Self, Unsupported> {
        let (format, min_bytes) = match info.pixel_format {
            PixelFormat::Rgb => (Format::Rgb, 3),
            PixelFormat::Bgr => (Format::Bgr, 3),
            PixelFormat::U8 => (Format::Grey, 1),
            other => return Err(Unsupported::Format(other)),
        };
        if info.bytes_per_pixel < min_bytes || info.bytes_per_pixel > 4 {
            return Err(Unsupported::PixelSize(
                info.pixel_format,
                info.bytes_per_pixel,
            ));
        }
        let layout = Self {
            width: info.width,
            height: info.height,
            stride: info.stride.max(info.width),
            bytes_per_pixel: info.bytes_per_pixel,
            format,
        };
        match layout.byte_len() {
            needed if needed > info.byte_len => Err(Unsupported::TooShort {
                needed,
                byte_len: info.byte_len,
            }),
            _ => Ok(layout),
        }
    }

    /// Bytes up to the end of the last visible pixel.
    pub fn byte_len(&self) -> usize {
        match self.height {
            0 => 0,
            height => ((height - 1) * self.stride + self.width) * self.bytes_per_pixel,
        }
    }
}

/// A write-only view of framebuffer memory (or of RAM standing in for it).
pub struct Framebuffer<'a> {
    bytes: &'a mut [u8],
    layout: Layout,
}

impl<'a> Framebuffer<'a> {
    /// `None` if `bytes` is shorter than `layout` needs.
    pub fn new(bytes: &'a mut [u8], layout: Layout) -> Option<Self> {
        (bytes.len() >= layout.byte_len()).then_some(Self { bytes, layout })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Writes `pixels` (already packed, `bytes_per_pixel` each) from pixel
    /// (`x`, `y`) rightwards. Anything past the line's end is dropped.
    pub fn write_run(&mut self, x: usize, y: usize, pixels: &[u8]) {
        let layout = &self.layout;
        if y >= layout.height || x >= layout.width {
            return;
        }
        let room = (layout.width - x) * layout.bytes_per_pixel;
        let len = pixels.len().min(room);
        let start = (y * layout.stride + x) * layout.bytes_per_pixel;
        if let Some(target) = self.bytes.get_mut(start..start + len) {
            target.copy_from_slice(&pixels[..len]);
        }
    }

    /// Sets every byte to zero, which is black in every format we draw.
    pub fn clear(&mut self) {
        let len = self.layout.byte_len();
        self.bytes[..len].fill(0);
    }
}
