//! The console shell `make run` ends in: a prompt on serial and on the
//! screen, keys from the serial port and the PS/2 keyboard, a line editor,
//! and commands that look at and exercise the memory system.
//!
//! Everything is printed through `kprint!`, so it reaches every console.
//! The editing and parsing are pure and tested in-kernel; the commands
//! are tested from the host (boot-image's console checks).

mod commands;
mod input;
mod keys;
mod line;
mod parse;

use crate::{kprint, kprintln};
use commands::Session;
use input::Inputs;
use line::{Edit, LineEditor};

/// Printed before each line; the host tests wait for it.
pub const PROMPT: &str = "kernel> ";

/// Runs the shell on the boot CPU, for good.
pub fn run() -> ! {
    let mut inputs = Inputs::open();
    let mut editor = LineEditor::new();
    let mut session = Session::new();
    kprintln!("console ready: `help` lists the commands");
    kprint!("{PROMPT}");
    loop {
        match editor.key(inputs.next()) {
            Edit::Echo(c) => kprint!("{c}"),
            Edit::Erase(count) => {
                for _ in 0..count {
                    // Back, blank, back: what terminals understand.
                    kprint!("\u{8} \u{8}");
                }
            }
            Edit::Full | Edit::Nothing => {}
            Edit::Cancelled => {
                kprintln!("^C");
                kprint!("{PROMPT}");
            }
            Edit::Submit => {
                kprintln!();
                match parse::parse(editor.line()) {
                    Ok(Some(command)) => commands::execute(command, &mut session),
                    Ok(None) => {}
                    Err(error) => kprintln!("{error}"),
                }
                editor.clear();
                kprint!("{PROMPT}");
            }
        }
    }
}
