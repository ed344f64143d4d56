//! Running a parsed command. One file per group: memory reports, blocks
//! handed out and taken back by hand, the CPUs, the benchmark, power.

mod bench;
mod blocks;
mod cpus;
mod memory;
#[allow(unsafe_code)]
mod power;

use super::parse::{COMMANDS, Command, spec};
use crate::kprintln;

pub use blocks::Ledger;

/// What the shell keeps between commands.
pub struct Session {
    /// Blocks `alloc` handed out: only these may be freed by hand.
    pub ledger: Ledger,
}

impl Session {
    pub const fn new() -> Self {
        Self {
            ledger: Ledger::new(),
        }
    }
}

pub fn execute(command: Command<'_>, session: &mut Session) {
    match command {
        Command::Help(None) => help(),
        Command::Help(Some(name)) => match spec(name) {
            Some(spec) => kprintln!("{}\n  {}", spec.usage, spec.help),
            None => kprintln!("help: no command `{name}`: `help` lists the commands"),
        },
        Command::Mem => memory::zones(),
        Command::Buddyinfo => memory::buddyinfo(),
        Command::Map => memory::maps(),
        Command::Heap => memory::heap(),
        Command::Cpus => cpus::list(),
        Command::Alloc { order, zone } => blocks::alloc(&mut session.ledger, order, zone),
        Command::Free { addr, order } => blocks::free(&mut session.ledger, addr, order),
        Command::Bench => bench::run(),
        Command::Reboot => power::reboot(),
        Command::Halt => power::halt(),
    }
}

fn help() {
    kprintln!("commands:");
    for spec in COMMANDS {
        kprintln!("  {:<32} {}", spec.usage, spec.help);
    }
    kprintln!(
        "numbers are decimal or 0x-prefixed hexadecimal; line editing: backspace, Ctrl-U, Ctrl-C"
    );
}
