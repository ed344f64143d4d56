//! Where keys come from: the serial port and the PS/2 keyboard, both
//! polled (no IRQ reaches the kernel: the legacy PIC is masked and no
//! IOAPIC route is set up).

use super::keys::{self, Key, SerialKeys};
use crate::console::serial;
use crate::drivers::ps2::{self, Keyboard};

pub struct Inputs {
    serial: SerialKeys,
    keyboard: Option<Keyboard>,
}

impl Inputs {
    /// Probes the keyboard and says what the shell listens to.
    pub fn open() -> Self {
        let keyboard = match Keyboard::probe() {
            Ok(keyboard) => {
                log::info!(
                    "PS/2 keyboard: scancode set {} (polled)",
                    if keyboard.translated { 1 } else { 2 }
                );
                Some(keyboard)
            }
            Err(why) => {
                let why = match why {
                    ps2::Absent::NoController => "no PS/2 controller",
                    ps2::Absent::NoAnswer => "the PS/2 controller does not answer",
                };
                log::warn!(
                    "{why}: no keyboard on screen (USB keyboards need firmware legacy \
                     emulation); the shell listens on serial only"
                );
                None
            }
        };
        Self {
            serial: SerialKeys::new(),
            keyboard,
        }
    }

    /// Waits for the next key from either source. Spins: with no interrupt
    /// to wake it, `hlt` would sleep for good.
    pub fn next(&mut self) -> Key {
        loop {
            while let Some(byte) = serial::read_byte() {
                if let Some(key) = self.serial.feed(byte) {
                    return key;
                }
            }
            if let Some(keyboard) = self.keyboard.as_mut()
                && let Some(key) = keyboard.poll().and_then(keys::from_keyboard)
            {
                return key;
            }
            core::hint::spin_loop();
        }
    }
}
