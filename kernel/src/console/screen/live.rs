//! The screen the kernel prints on: one [`Terminal`] over the bootloader's
//! framebuffer, in a static behind a spin lock taken with interrupts masked
//! (like the serial port). Its grid is a static of its own, all zero, so it
//! sits in `.bss`; nothing is allocated, ever.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use bootloader_api::info::FrameBuffer;
use spin::{Mutex, MutexGuard};

use super::colour::Ink;
use super::framebuffer::{Framebuffer, Layout};
use super::glyph::{CELL_HEIGHT, CELL_WIDTH};
use super::grid::Grid;
use super::terminal::Terminal;
use crate::arch::x86_64::cpu;

/// The grid holds a 4K screen (3840 x 2160) of text; a larger framebuffer
/// is drawn on in its top-left 4K part.
pub const MAX_COLS: usize = 3840 / CELL_WIDTH;
pub const MAX_ROWS: usize = 2160 / CELL_HEIGHT;

pub type Screen = Terminal<'static, MAX_COLS, MAX_ROWS>;

/// What the terminal borrows for good: the text, and a pixel row of it.
struct Storage {
    grid: Grid<MAX_COLS, MAX_ROWS>,
    line: [u8; MAX_COLS * CELL_WIDTH * 4],
}

/// Handed to the terminal once; all zero, so in `.bss`.
static STORAGE: Mutex<Storage> = Mutex::new(Storage {
    grid: Grid::new(),
    line: [0; MAX_COLS * CELL_WIDTH * 4],
});
static SCREEN: Mutex<Option<Screen>> = Mutex::new(None);
/// Set once a framebuffer is attached: until then (or without one) printing
/// costs one load, not a lock.
static PRESENT: AtomicBool = AtomicBool::new(false);
/// Set while the emergency path draws: a fault inside the drawing code
/// must not make the report it causes draw (and fault) again.
static IN_EMERGENCY: AtomicBool = AtomicBool::new(false);
/// Tries for the lock on the emergency path before it is taken over. Every
/// other CPU has been stopped by then (a stopped holder never lets go), so
/// this only waits out a holder that is about to finish.
const EMERGENCY_TRIES: u32 = 1_000_000;

/// Takes the bootloader's framebuffer, if any, and prints on it from now
/// on. A framebuffer we cannot draw in is reported (on serial, since the
/// screen is then skipped).
pub fn init(framebuffer: Option<FrameBuffer>) {
    let Some(framebuffer) = framebuffer else {
        log::warn!("the bootloader found no framebuffer: output goes to serial only");
        return;
    };
    let info = framebuffer.info();
    let layout = match Layout::from_info(&info) {
        Ok(layout) => layout,
        Err(why) => {
            log::warn!("screen skipped, output goes to serial only: {why} ({info:?})");
            return;
        }
    };
    let Some(framebuffer) = Framebuffer::new(framebuffer.into_buffer(), layout) else {
        return; // from_info checked the length already
    };
    let Some(storage) = STORAGE.try_lock() else {
        return; // a second init: the first one keeps the screen
    };
    let Storage { grid, line } = MutexGuard::leak(storage);
    let screen = Terminal::new(framebuffer, grid, line);
    let (cols, rows) = screen.size();
    cpu::without_interrupts(|| *SCREEN.lock() = Some(screen));
    PRESENT.store(true, Ordering::SeqCst);
    log::info!(
        target: "console::screen",
        "{}x{} {:?}, {} bytes per pixel, {cols}x{rows} characters",
        layout.width,
        layout.height,
        layout.format,
        layout.bytes_per_pixel
    );
}

/// Prints on the screen in `ink` (nothing without a screen).
pub fn print(ink: Ink, args: fmt::Arguments<'_>) {
    if !PRESENT.load(Ordering::Relaxed) {
        return;
    }
    cpu::without_interrupts(|| {
        if let Some(screen) = SCREEN.lock().as_mut() {
            let _ = screen.inked(ink).write_fmt(args);
            screen.flush();
        }
    });
}

/// Prints from a panic or fatal exception, which may have interrupted the
/// lock holder (on this CPU, or on one since stopped): waits a bounded
/// time, then takes the screen over and repairs what the holder left half
/// done.
pub fn print_emergency(ink: Ink, args: fmt::Arguments<'_>) {
    if !PRESENT.load(Ordering::Relaxed) || IN_EMERGENCY.swap(true, Ordering::SeqCst) {
        return;
    }
    cpu::without_interrupts(|| {
        let mut guard = match (0..EMERGENCY_TRIES).find_map(|_| {
            core::hint::spin_loop();
            SCREEN.try_lock()
        }) {
            Some(screen) => screen,
            None => {
                // The holder is stopped for good: a context on this CPU that
                // the panic or fault interrupted and that never resumes, or
                // another CPU, halted by the stop NMI before any report.
                // SAFETY: so nobody else is inside the critical section;
                // `repair` makes its half-done state valid.
                unsafe { SCREEN.force_unlock() };
                let mut guard = SCREEN.lock();
                if let Some(screen) = guard.as_mut() {
                    screen.repair();
                }
                guard
            }
        };
        if let Some(screen) = guard.as_mut() {
            let _ = screen.inked(ink).write_fmt(args);
            screen.flush();
        }
    });
    IN_EMERGENCY.store(false, Ordering::SeqCst);
}

/// Runs `f` on the live screen, if there is one (tests measure with it).
#[cfg(test)]
pub fn with<R>(f: impl FnOnce(&mut Screen) -> R) -> Option<R> {
    if !PRESENT.load(Ordering::Relaxed) {
        return None;
    }
    cpu::without_interrupts(|| SCREEN.lock().as_mut().map(f))
}
