//! The screen console: everything the kernel prints also appears on the
//! framebuffer the bootloader hands over, in a colour per log level. The
//! framebuffer is only ever written: reading it is very slow on real
//! hardware, so the text and what the screen shows are kept in RAM.
//!
//! - `framebuffer`: the framebuffer memory, its layout and pixel formats
//! - `colour`: inks, the blend of a glyph's intensity, per-ink pixel ramps
//! - `glyph`: the font (`noto-sans-mono-bitmap`) and drawing the changed
//!   pixel rows of a text row, each as one run of writes
//! - `grid`: the text and a shadow of the screen in RAM; scrolling is a
//!   ring index (half a screen at a time), a redraw draws only what changed
//! - `terminal`: a grid drawn on a framebuffer
//! - `live`: the kernel's one screen behind its lock, and the panic path

mod colour;
mod framebuffer;
mod glyph;
mod grid;
#[allow(unsafe_code)]
mod live;
mod terminal;
#[cfg(test)]
mod tests;

pub use colour::Ink;
pub use live::{init, print, print_emergency};
