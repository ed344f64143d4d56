//! Where keys come from: the serial port and the PS/2 keyboard, both
//! polled (no IRQ reaches the kernel: the legacy PIC is masked and no
//! IOAPIC route is set up), between ticks of the APIC timer.

use super::keys::{self, Key, SerialKeys};
use x86_64::instructions::interrupts;

use crate::arch::x86_64::apic;
use crate::console::serial;
use crate::drivers::ps2::{self, Keyboard};

pub struct Inputs {
    serial: SerialKeys,
    keyboard: Option<Keyboard>,
    /// Whether the APIC timer ticks, so a `hlt` between polls wakes again.
    ticking: bool,
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
            // 1 kHz: a UART's 16-byte FIFO holds more than 1 ms of 115200 baud.
            ticking: apic::start_tick(1000),
        }
    }

    /// Waits for the next key from either source. Neither raises an
    /// interrupt (none is routed), so the CPU polls; between polls it
    /// sleeps until the APIC timer's tick, if one runs, rather than spin.
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
            if self.ticking && interrupts::are_enabled() {
                // The next tick (at most 1 ms away) ends the sleep.
                x86_64::instructions::hlt();
            } else {
                core::hint::spin_loop();
            }
        }
    }
}
