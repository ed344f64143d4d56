//! The command language: the table of commands with their help, and a
//! parser from a line to a [`Command`] or an error that says what is wrong
//! in words. Pure; the commands themselves live in `commands/`.

use core::fmt;

use framekeep::Zone;

/// One command's name, arguments and help line.
pub struct Spec {
    pub name: &'static str,
    pub usage: &'static str,
    pub help: &'static str,
}

/// Every command, in the order `help` lists them.
pub const COMMANDS: &[Spec] = &[
    Spec {
        name: "help",
        usage: "help [COMMAND]",
        help: "list the commands, or explain one",
    },
    Spec {
        name: "mem",
        usage: "mem",
        help: "memory zones: managed, used and free memory, and free blocks per order",
    },
    Spec {
        name: "buddyinfo",
        usage: "buddyinfo",
        help: "free blocks per zone and order, like /proc/buddyinfo",
    },
    Spec {
        name: "map",
        usage: "map",
        help: "the firmware memory map as received, and the ranges the allocator manages",
    },
    Spec {
        name: "cpus",
        usage: "cpus",
        help: "the CPUs online, with their local APIC ids",
    },
    Spec {
        name: "alloc",
        usage: "alloc ORDER [dma|dma32|normal]",
        help: "allocate 2^ORDER pages, from the zone given or below it (default: any zone)",
    },
    Spec {
        name: "free",
        usage: "free ADDR ORDER",
        help: "give back a block from `alloc`; bad input is refused and changes nothing",
    },
    Spec {
        name: "heap",
        usage: "heap",
        help: "kernel heap: slab pages, slab descriptors, per-CPU page caches, bad frees",
    },
    Spec {
        name: "bench",
        usage: "bench",
        help: "cycles per page alloc+free and per small-object alloc+free on this CPU",
    },
    Spec {
        name: "reboot",
        usage: "reboot",
        help: "restart the machine (keyboard controller reset, else a triple fault)",
    },
    Spec {
        name: "halt",
        usage: "halt",
        help: "stop: leaves QEMU, or halts the CPUs on a real machine",
    },
];

/// The spec of a command by name.
pub fn spec(name: &str) -> Option<&'static Spec> {
    COMMANDS.iter().find(|spec| spec.name == name)
}

/// A parsed command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    Help(Option<&'a str>),
    Mem,
    Buddyinfo,
    Map,
    Cpus,
    /// `zone` is the highest zone accepted; lower zones are fallbacks.
    Alloc {
        order: u32,
        zone: Zone,
    },
    Free {
        addr: u64,
        order: u32,
    },
    Heap,
    Bench,
    Reboot,
    Halt,
}

/// Why a number did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumberError {
    NotANumber,
    TooLarge,
}

/// What is wrong with a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError<'a> {
    Unknown(&'a str),
    Missing {
        command: &'static Spec,
        what: &'static str,
    },
    Extra {
        command: &'static Spec,
        word: &'a str,
    },
    BadNumber {
        command: &'static Spec,
        what: &'static str,
        text: &'a str,
        why: NumberError,
    },
    BadZone(&'a str),
}

impl PartialEq for Spec {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for Spec {}
impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl fmt::Display for ParseError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Unknown(name) => {
                write!(f, "unknown command `{name}`: `help` lists the commands")
            }
            ParseError::Missing { command, what } => {
                write!(
                    f,
                    "{}: missing {what} (usage: {})",
                    command.name, command.usage
                )
            }
            ParseError::Extra { command, word } => write!(
                f,
                "{}: unexpected `{word}` (usage: {})",
                command.name, command.usage
            ),
            ParseError::BadNumber {
                command,
                what,
                text,
                why: NumberError::NotANumber,
            } => write!(
                f,
                "{}: {what} `{text}` is not a number (decimal, or hexadecimal with 0x)",
                command.name
            ),
            ParseError::BadNumber {
                command,
                what,
                text,
                why: NumberError::TooLarge,
            } => write!(f, "{}: {what} `{text}` is too large", command.name),
            ParseError::BadZone(text) => write!(
                f,
                "alloc: unknown zone `{text}` (expected dma, dma32 or normal)"
            ),
        }
    }
}

/// A decimal or `0x` hexadecimal number.
pub fn number(text: &str) -> Result<u64, NumberError> {
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(NumberError::NotANumber);
    }
    u64::from_str_radix(digits, radix).map_err(|_| NumberError::TooLarge)
}

fn zone(text: &str) -> Option<Zone> {
    Zone::ALL
        .into_iter()
        .find(|zone| zone.name().eq_ignore_ascii_case(text))
}

/// Parses a line; `Ok(None)` for a blank one.
pub fn parse(line: &str) -> Result<Option<Command<'_>>, ParseError<'_>> {
    let mut words = line.split_ascii_whitespace();
    let Some(name) = words.next() else {
        return Ok(None);
    };
    let command = spec(name).ok_or(ParseError::Unknown(name))?;
    let mut arguments = Arguments { command, words };
    let parsed = match name {
        "help" => Command::Help(arguments.optional()),
        "mem" => Command::Mem,
        "buddyinfo" => Command::Buddyinfo,
        "map" => Command::Map,
        "cpus" => Command::Cpus,
        "alloc" => {
            let order = arguments.order()?;
            let zone = match arguments.optional() {
                Some(text) => zone(text).ok_or(ParseError::BadZone(text))?,
                None => Zone::Normal,
            };
            Command::Alloc { order, zone }
        }
        "free" => {
            let addr = arguments.address()?;
            let order = arguments.order()?;
            Command::Free { addr, order }
        }
        "heap" => Command::Heap,
        "bench" => Command::Bench,
        "reboot" => Command::Reboot,
        "halt" => Command::Halt,
        _ => unreachable!("every name in COMMANDS is parsed above"),
    };
    arguments.end()?;
    Ok(Some(parsed))
}

/// The words after the command name.
struct Arguments<'a> {
    command: &'static Spec,
    words: core::str::SplitAsciiWhitespace<'a>,
}

impl<'a> Arguments<'a> {
    fn optional(&mut self) -> Option<&'a str> {
        self.words.next()
    }

    fn number(&mut self, what: &'static str) -> Result<(u64, &'a str), ParseError<'a>> {
        let command = self.command;
        let text = self
            .words
            .next()
            .ok_or(ParseError::Missing { command, what })?;
        let bad = |why| ParseError::BadNumber {
            command,
            what,
            text,
            why,
        };
        Ok((number(text).map_err(bad)?, text))
    }

    fn address(&mut self) -> Result<u64, ParseError<'a>> {
        Ok(self.number("ADDR")?.0)
    }

    /// An order: any u32 parses; the allocator judges the value.
    fn order(&mut self) -> Result<u32, ParseError<'a>> {
        let (value, text) = self.number("ORDER")?;
        u32::try_from(value).map_err(|_| ParseError::BadNumber {
            command: self.command,
            what: "ORDER",
            text,
            why: NumberError::TooLarge,
        })
    }

    fn end(&mut self) -> Result<(), ParseError<'a>> {
        match self.words.next() {
            Some(word) => Err(ParseError::Extra {
                command: self.command,
                word,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::text::FixedText;

    fn message(line: &str) -> FixedText<160> {
        let error = parse(line).expect_err("the line must be refused");
        FixedText::format(format_args!("{error}"))
    }

    #[test_case]
    fn commands_and_arguments_parse() {
        assert_eq!(parse("  "), Ok(None));
        assert_eq!(parse(" mem "), Ok(Some(Command::Mem)));
        assert_eq!(parse("help"), Ok(Some(Command::Help(None))));
        assert_eq!(parse("help free"), Ok(Some(Command::Help(Some("free")))));
        assert_eq!(
            parse("alloc 3"),
            Ok(Some(Command::Alloc {
                order: 3,
                zone: Zone::Normal
            }))
        );
        assert_eq!(
            parse("alloc 0x2   DMA32"),
            Ok(Some(Command::Alloc {
                order: 2,
                zone: Zone::Dma32
            }))
        );
        assert_eq!(
            parse("free 0x7fe000 0"),
            Ok(Some(Command::Free {
                addr: 0x7f_e000,
                order: 0
            }))
        );
        // The allocator, not the parser, judges an order of 40.
        assert_eq!(
            parse("alloc 40 dma"),
            Ok(Some(Command::Alloc {
                order: 40,
                zone: Zone::Dma
            }))
        );
    }

    #[test_case]
    fn every_command_in_the_table_parses() {
        for spec in COMMANDS {
            let line: FixedText<64> = match spec.name {
                "alloc" => FixedText::format(format_args!("alloc 0")),
                "free" => FixedText::format(format_args!("free 0x1000 0")),
                name => FixedText::format(format_args!("{name}")),
            };
            assert!(parse(&line).is_ok(), "`{}` does not parse", &*line);
        }
    }

    #[test_case]
    fn bad_lines_are_answered_in_words() {
        assert_eq!(
            &*message("frobnicate 1"),
            "unknown command `frobnicate`: `help` lists the commands"
        );
        assert_eq!(
            &*message("alloc x"),
            "alloc: ORDER `x` is not a number (decimal, or hexadecimal with 0x)"
        );
        assert_eq!(
            &*message("alloc"),
            "alloc: missing ORDER (usage: alloc ORDER [dma|dma32|normal])"
        );
        assert_eq!(
            &*message("alloc 1 highmem"),
            "alloc: unknown zone `highmem` (expected dma, dma32 or normal)"
        );
        assert_eq!(
            &*message("free 0x 0"),
            "free: ADDR `0x` is not a number (decimal, or hexadecimal with 0x)"
        );
        assert_eq!(
            &*message("free 0x1000"),
            "free: missing ORDER (usage: free ADDR ORDER)"
        );
        assert_eq!(
            &*message("free 99999999999999999999 0"),
            "free: ADDR `99999999999999999999` is too large"
        );
        assert_eq!(
            &*message("alloc 4294967296"),
            "alloc: ORDER `4294967296` is too large"
        );
        assert_eq!(&*message("mem now"), "mem: unexpected `now` (usage: mem)");
        assert_eq!(
            &*message("alloc 1 dma 2"),
            "alloc: unexpected `2` (usage: alloc ORDER [dma|dma32|normal])"
        );
    }

    #[test_case]
    fn numbers() {
        assert_eq!(number("0"), Ok(0));
        assert_eq!(number("0x1F"), Ok(31));
        assert_eq!(number("0X10"), Ok(16));
        assert_eq!(number("-1"), Err(NumberError::NotANumber));
        assert_eq!(number("12a"), Err(NumberError::NotANumber));
        assert_eq!(number("+5"), Err(NumberError::NotANumber));
        assert_eq!(number("0xffffffffffffffff"), Ok(u64::MAX));
        assert_eq!(number("0x1ffffffffffffffff"), Err(NumberError::TooLarge));
    }
}
