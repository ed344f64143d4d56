//! Judging what the kernel's shell answered: pure functions over text,
//! tested here on answers recorded from real boots.

/// The shell's prompt (kernel/src/shell/mod.rs).
pub const PROMPT: &str = "kernel> ";

/// Every command the shell must offer, each with a help line.
pub const COMMANDS: &[&str] = &[
    "help",
    "mem",
    "buddyinfo",
    "map",
    "cpus",
    "alloc",
    "free",
    "heap",
    "bench",
    "reboot",
    "halt",
];

/// The answer inside what arrived after typing a line: without the echoed
/// line (the first) and the next prompt (the end).
pub fn answer(received: &str) -> &str {
    let body = received.strip_suffix(PROMPT).unwrap_or(received);
    match body.split_once('\n') {
        Some((_echo, rest)) => rest,
        None => "",
    }
}

/// The answer holds `needle`.
pub fn says(answer: &str, needle: &str) -> Result<(), String> {
    match answer.contains(needle) {
        true => Ok(()),
        false => Err(format!("expected `{needle}`, got:\n{}", indent(answer))),
    }
}

/// `help` lists every command, each on its own line with a help text.
pub fn lists_every_command(answer: &str) -> Result<(), String> {
    let missing: Vec<&str> = COMMANDS
        .iter()
        .copied()
        .filter(|name| {
            !answer.lines().any(|line| {
                let mut words = line.split_whitespace();
                words.next() == Some(*name) && words.count() >= 2
            })
        })
        .collect();
    match missing.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "help does not list {}; it said:\n{}",
            missing.join(", "),
            indent(answer)
        )),
    }
}

/// The address in `allocated 4.0 KiB (order 0) at 0x... in zone Z`,
/// checked to be page-aligned and in `zones`.
pub fn allocated_block(answer: &str, zones: &[&str]) -> Result<u64, String> {
    let fail = || {
        format!(
            "no `allocated ... at 0x... in zone ...` in:\n{}",
            indent(answer)
        )
    };
    let line = answer
        .lines()
        .find(|line| line.starts_with("allocated "))
        .ok_or_else(fail)?;
    let hex = line
        .split(" at 0x")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .ok_or_else(fail)?;
    let address = u64::from_str_radix(hex, 16).map_err(|_| fail())?;
    let zone = line.rsplit(' ').next().unwrap_or("");
    if address % 4096 != 0 {
        return Err(format!("block {address:#x} is not page-aligned"));
    }
    if !zones.contains(&zone) {
        return Err(format!(
            "block {address:#x} is in zone {zone}, not {zones:?}"
        ));
    }
    Ok(address)
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("      | {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_between_the_echo_and_the_prompt() {
        assert_eq!(answer("mem\nline 1\nline 2\nkernel> "), "line 1\nline 2\n");
        assert_eq!(answer("frob\nkernel> "), "");
        // Erased characters stay in the echo line only.
        assert_eq!(
            answer("hx\u{8} \u{8}elp\ncommands:\nkernel> "),
            "commands:\n"
        );
    }

    #[test]
    fn help_must_name_every_command_with_text() {
        let mut help = String::from("commands:\n");
        for name in COMMANDS {
            help.push_str(&format!("  {name} ARGS   what it does\n"));
        }
        assert_eq!(lists_every_command(&help), Ok(()));
        let without_halt = help.replace("  halt ARGS   what it does\n", "");
        let error = lists_every_command(&without_halt).unwrap_err();
        assert!(error.contains("does not list halt"), "{error}");
        // A bare name without help text is not enough.
        let bare = help.replace("  free ARGS   what it does", "  free");
        assert!(lists_every_command(&bare).is_err());
    }

    #[test]
    fn allocated_blocks_are_read_and_checked() {
        let answer = "allocated 4.0 KiB (order 0) at 0x1aff000 in zone DMA32\n";
        assert_eq!(allocated_block(answer, &["DMA32", "DMA"]), Ok(0x1aff000));
        assert!(allocated_block(answer, &["DMA"]).is_err());
        assert!(
            allocated_block(
                "allocated 4.0 KiB (order 0) at 0x1aff010 in zone DMA32",
                &["DMA32"]
            )
            .is_err()
        );
        assert!(
            allocated_block("alloc: refused: out of memory; nothing changed", &["DMA32"]).is_err()
        );
    }

    #[test]
    fn says_quotes_what_it_got() {
        assert_eq!(says("free: refused: x", "refused"), Ok(()));
        let error = says("freed 4.0 KiB", "refused").unwrap_err();
        assert!(error.contains("| freed 4.0 KiB"), "{error}");
    }
}
