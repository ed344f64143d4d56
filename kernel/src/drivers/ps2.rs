//! The PS/2 keyboard behind the i8042 controller (ports 0x60 and 0x64),
//! polled: the legacy PIC is masked and no IOAPIC route exists, so nobody
//! takes IRQ 1. Scancodes are decoded by `pc-keyboard` (US layout).
//!
//! On a BIOS machine, firmware USB legacy emulation makes most USB
//! keyboards appear here too (SMM traps the two ports). A UEFI machine
//! without that emulation has no controller at all: the status port reads
//! 0xff, [`Keyboard::probe`] says so, and the console is serial-only.

use pc_keyboard::layouts::Us104Key;
use pc_keyboard::{
    DecodedKey, EventDecoder, HandleControl, KeyEvent, ScancodeSet, ScancodeSet1, ScancodeSet2,
};
use x86_64::instructions::port::Port;

use crate::arch::x86_64::tsc;

const DATA: u16 = 0x60;
const STATUS_COMMAND: u16 = 0x64;

/// Status bits.
const OUTPUT_FULL: u8 = 1 << 0;
const INPUT_FULL: u8 = 1 << 1;
/// The byte in the output buffer came from the second (mouse) port.
const FROM_AUX: u8 = 1 << 5;

/// Controller commands.
const READ_CONFIG: u8 = 0x20;
const ENABLE_FIRST_PORT: u8 = 0xae;
/// Pulses the CPU reset line (bit 0 of the output port, active low).
const PULSE_RESET: u8 = 0xfe;

/// Configuration byte: the controller translates the keyboard's set 2
/// into set 1 (the PC default; firmware may turn it off).
const TRANSLATE: u8 = 1 << 6;

/// How long the controller may take to accept a command or answer one.
/// Real controllers answer within microseconds; SMM emulation within a
/// millisecond or so.
const ANSWER_MICROS: u64 = 20_000;
/// Bytes read per poll at most, so a stuck controller cannot hold us.
const BYTES_PER_POLL: usize = 16;

/// The two scancode sets a controller can hand us.
enum Scancodes {
    Set1(ScancodeSet1),
    Set2(ScancodeSet2),
}

impl Scancodes {
    fn advance(&mut self, byte: u8) -> Option<KeyEvent> {
        // Unknown codes and protocol errors drop that byte only; the
        // decoders resynchronise on the next key.
        match self {
            Scancodes::Set1(set) => set.advance_state(byte).ok().flatten(),
            Scancodes::Set2(set) => set.advance_state(byte).ok().flatten(),
        }
    }
}

/// A keyboard found behind the controller.
pub struct Keyboard {
    scancodes: Scancodes,
    keys: EventDecoder<Us104Key>,
    /// Whether the controller translates (set 1) or passes set 2 through.
    pub translated: bool,
}

/// Why no keyboard is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Absent {
    /// The status port reads 0xff: no controller decodes these ports.
    NoController,
    /// The controller did not answer its configuration command in time.
    NoAnswer,
}

fn status() -> u8 {
    // SAFETY: reading the i8042 status port has no side effects.
    unsafe { Port::<u8>::new(STATUS_COMMAND).read() }
}

fn read_data() -> u8 {
    // SAFETY: the data port belongs to this driver; reading it takes the
    // byte the controller holds, which is what every caller wants.
    unsafe { Port::<u8>::new(DATA).read() }
}

/// Waits (bounded) until the controller accepts a command, then sends it.
fn command(byte: u8) -> Result<(), Absent> {
    if !tsc::poll_until(ANSWER_MICROS, || status() & INPUT_FULL == 0) {
        return Err(Absent::NoAnswer);
    }
    // SAFETY: a command to the i8042; callers send only configuration
    // reads, port enables and the reset pulse.
    unsafe { Port::<u8>::new(STATUS_COMMAND).write(byte) };
    Ok(())
}

/// Waits (bounded) for the controller's answer byte.
fn answer() -> Result<u8, Absent> {
    if !tsc::poll_until(ANSWER_MICROS, || status() & OUTPUT_FULL != 0) {
        return Err(Absent::NoAnswer);
    }
    Ok(read_data())
}

impl Keyboard {
    /// Finds the controller, learns which scancode set it delivers and
    /// makes sure the keyboard port is on. Changes nothing else: the
    /// firmware's configuration (IRQs, translation, the mouse) stays.
    pub fn probe() -> Result<Self, Absent> {
        if status() == 0xff {
            return Err(Absent::NoController);
        }
        // Keys typed during boot would be taken for the answer.
        for _ in 0..BYTES_PER_POLL {
            if status() & OUTPUT_FULL == 0 {
                break;
            }
            read_data();
        }
        command(READ_CONFIG)?;
        let config = answer()?;
        command(ENABLE_FIRST_PORT)?;
        let translated = config & TRANSLATE != 0;
        let scancodes = match translated {
            true => Scancodes::Set1(ScancodeSet1::new()),
            false => Scancodes::Set2(ScancodeSet2::new()),
        };
        Ok(Self {
            scancodes,
            // Ctrl-letter arrives as a control character (Ctrl-U is 0x15),
            // as it does from a serial terminal.
            keys: EventDecoder::new(Us104Key, HandleControl::MapLettersToUnicode),
            translated,
        })
    }

    /// The next decoded key press, if one is waiting; never waits.
    pub fn poll(&mut self) -> Option<DecodedKey> {
        for _ in 0..BYTES_PER_POLL {
            let state = status();
            if state & OUTPUT_FULL == 0 {
                return None;
            }
            let byte = read_data();
            if state & FROM_AUX != 0 {
                continue; // mouse data: not ours
            }
            if let Some(event) = self.scancodes.advance(byte)
                && let Some(key) = self.keys.process_keyevent(event)
            {
                return Some(key);
            }
        }
        None
    }
}

/// Asks the keyboard controller to reset the machine; returns if it did
/// not (no controller, or one without the reset line wired).
pub fn pulse_reset_line() {
    if status() == 0xff || command(PULSE_RESET).is_err() {
        return;
    }
    // The reset takes effect within microseconds; wait a little so the
    // caller's fallback does not race it.
    tsc::delay_micros(50_000);
}
