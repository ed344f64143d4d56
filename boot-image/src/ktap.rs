//! Reading the kernel's serial stream: a tolerant KTAP version 1 parser and
//! the verdict on one boot.
//!
//! Serial output mixes firmware noise, ANSI escape sequences and log lines
//! with the KTAP lines; everything that is not KTAP is ignored, so noise can
//! never turn into a result. The verdict is decided by the parsed results
//! and QEMU's exit status together: a kernel that exits with the success
//! code but reported an incomplete plan has not passed.

use std::fmt;

/// QEMU's exit status when the kernel wrote `0x10` to the debug-exit port.
pub const EXIT_SUCCESS: i32 = 33;
/// QEMU's exit status when the kernel wrote `0x11` (test failure, panic, fault).
pub const EXIT_FAILURE: i32 = 35;

/// One `ok` / `not ok` line and the diagnostics after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestResult {
    pub number: usize,
    pub name: String,
    pub outcome: Outcome,
    pub diagnostics: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    /// `# SKIP` directive; the reason follows.
    Skipped(String),
}

/// Everything learned from one serial stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub header_seen: bool,
    pub plan: Option<usize>,
    pub results: Vec<TestResult>,
    /// The last `# start N name` without a result yet: the test that was
    /// running when the stream ended.
    pub running: Option<(usize, String)>,
    /// `KERNEL PANIC:` / `KERNEL FAULT:` lines.
    pub crash: Option<String>,
    /// The kernel's own `N passed, N failed[, N skipped]` line.
    pub kernel_summary: Option<(usize, usize, usize)>,
    pub boot_complete: bool,
    /// The count from the kernel's `N CPUs online: ...` line.
    pub cpus_online: Option<usize>,
}

/// Feeds lines one at a time, as they arrive from QEMU.
#[derive(Debug, Default)]
pub struct Parser {
    report: Report,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, raw: &str) {
        let line = clean(raw);
        let line = line.trim();
        let report = &mut self.report;
        if line.contains("KTAP version 1") {
            report.header_seen = true;
            return;
        }
        if line.contains("boot complete") {
            report.boot_complete = true;
        }
        if let Some(cpus) = parse_cpus_online(line) {
            report.cpus_online = Some(cpus);
        }
        if let Some(at) = line
            .find("KERNEL PANIC:")
            .or_else(|| line.find("KERNEL FAULT:"))
        {
            // Keep the first crash: later ones are usually consequences.
            report.crash.get_or_insert_with(|| line[at..].to_string());
            return;
        }
        if !report.header_seen {
            return;
        }
        if let Some(plan) = line
            .strip_prefix("1..")
            .and_then(|count| count.parse().ok())
        {
            report.plan = Some(plan);
        } else if let Some(result) = parse_result(line) {
            if report
                .running
                .as_ref()
                .is_some_and(|(number, _)| *number == result.number)
            {
                report.running = None;
            }
            report.results.push(result);
        } else if let Some(start) = line.strip_prefix("# start ") {
            if let Some((number, name)) = start.split_once(' ')
                && let Ok(number) = number.parse()
            {
                report.running = Some((number, name.to_string()));
            }
        } else if let Some(diagnostic) = line.strip_prefix('#') {
            if let Some(last) = report.results.last_mut() {
                last.diagnostics.push(diagnostic.trim().to_string());
            }
        } else if let Some(summary) = parse_summary(line) {
            report.kernel_summary = Some(summary);
        }
    }

    pub fn report(&self) -> &Report {
        &self.report
    }

    pub fn into_report(self) -> Report {
        self.report
    }
}

/// `4 CPUs online: APIC ids 0 1 2 3` (or `1 CPU online: ...`) -> 4.
fn parse_cpus_online(line: &str) -> Option<usize> {
    let (count, rest) = line.split_once(' ')?;
    let rest = rest
        .strip_prefix("CPUs online")
        .or_else(|| rest.strip_prefix("CPU online"))?;
    if !rest.is_empty() && !rest.starts_with(':') {
        return None;
    }
    count.parse().ok()
}

/// Judges a run on a machine with `cpus` CPUs: as [`judge`], and every CPU
/// must have been reported online before the tests.
pub fn judge_machine(report: &Report, exit: Exit, cpus: usize) -> Verdict {
    let mut verdict = judge(report, exit);
    match report.cpus_online {
        Some(online) if online == cpus => {}
        Some(online) => verdict
            .problems
            .push(format!("{online} of the machine's {cpus} CPUs came online")),
        None => verdict
            .problems
            .push("the kernel never said how many CPUs are online".into()),
    }
    verdict
}

/// Judges a run whose kernel was asked to fail on an application
/// processor mid-suite (`crash` is `KERNEL PANIC` or `KERNEL FAULT`): it
/// passes (as one test) only if the run failed the way that failure should
/// make it fail: a `<crash>: CPU n:` line naming a CPU other than 0, the
/// running test reported `not ok` naming that CPU, the rest reported not
/// run, and QEMU's failure status. A hang, a silent exit or a success is a
/// failure of the stop path.
pub fn judge_injected_crash(report: &Report, exit: Exit, crash: &str) -> Verdict {
    let mut problems = Vec::new();
    let prefix = format!("{crash}: CPU ");
    let crash_cpu = report
        .crash
        .as_deref()
        .and_then(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(cpu, _)| cpu.parse::<usize>().ok());
    match crash_cpu {
        Some(0) => problems.push(format!("the {crash} was reported on CPU 0, not on an AP")),
        Some(_) => {}
        None => problems.push(format!(
            "no `{prefix}n:` line (crash line: {:?})",
            report.crash
        )),
    }
    let failed: Vec<_> = report
        .results
        .iter()
        .filter(|result| result.outcome == Outcome::Failed)
        .collect();
    match (failed.as_slice(), crash_cpu) {
        ([test], Some(cpu)) => {
            let named = format!("CPU {cpu}:");
            if !test.diagnostics.iter().any(|line| line.contains(&named)) {
                problems.push(format!(
                    "the failed test {} does not name CPU {cpu}",
                    test.name
                ));
            }
        }
        ([_], None) => {}
        (failed, _) => problems.push(format!(
            "{} tests failed; exactly one (the running one) should",
            failed.len()
        )),
    }
    if let Some(plan) = report.plan
        && report.results.len() != plan
    {
        problems.push(format!(
            "{} of {plan} tests reported: the unrun ones must be reported too",
            report.results.len()
        ));
    }
    if exit != Exit::Status(EXIT_FAILURE) {
        problems.push(format!("QEMU ended with {exit:?}, not the failure status"));
    }
    Verdict {
        passed: usize::from(problems.is_empty()),
        failed: usize::from(!problems.is_empty()),
        skipped: 0,
        problems,
    }
}

/// Parses a whole recorded stream.
pub fn parse(stream: &str) -> Report {
    let mut parser = Parser::new();
    for line in stream.lines() {
        parser.feed(line);
    }
    parser.into_report()
}

/// Removes ANSI escape sequences, carriage returns and other control bytes.
pub fn clean(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.peek() == Some(&'\\')) {
                            if c == '\x1b' {
                                chars.next();
                            }
                            break;
                        }
                    }
                }
                // Two-byte sequences (ESC c, ESC 7, ...).
                _ => {}
            },
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn parse_result(line: &str) -> Option<TestResult> {
    let (failed, rest) = match line.strip_prefix("not ok ") {
        Some(rest) => (true, rest),
        None => (false, line.strip_prefix("ok ")?),
    };
    let (number, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let number = number.parse().ok()?;
    let (name, directive) = match rest.split_once(" # ") {
        Some((name, directive)) => (name, Some(directive)),
        None => (rest, None),
    };
    let outcome = match directive {
        Some(d) if d.len() >= 4 && d[..4].eq_ignore_ascii_case("skip") => {
            Outcome::Skipped(d[4..].trim().to_string())
        }
        _ if failed => Outcome::Failed,
        _ => Outcome::Passed,
    };
    Some(TestResult {
        number,
        name: name.trim().to_string(),
        outcome,
        diagnostics: Vec::new(),
    })
}

/// `N passed, N failed` with an optional `, N skipped`.
fn parse_summary(line: &str) -> Option<(usize, usize, usize)> {
    let mut parts = line.split(", ");
    let count = |part: Option<&str>, word: &str| -> Option<usize> {
        part?.strip_suffix(word)?.trim().parse().ok()
    };
    let passed = count(parts.next(), " passed")?;
    let failed = count(parts.next(), " failed")?;
    let skipped = match parts.next() {
        Some(part) => count(Some(part), " skipped")?,
        None => 0,
    };
    parts.next().is_none().then_some((passed, failed, skipped))
}

/// How the QEMU process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Status(i32),
    /// Killed by a signal other than ours.
    Signal(i32),
    /// Killed by the runner after this many seconds.
    TimedOut(u64),
}

/// The verdict on one boot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Why the run failed, one reason per entry; empty when it passed.
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn success(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)?;
        if self.skipped > 0 {
            write!(f, ", {} skipped", self.skipped)?;
        }
        Ok(())
    }
}

/// Judges one boot from what it printed and how QEMU ended.
pub fn judge(report: &Report, exit: Exit) -> Verdict {
    let mut verdict = Verdict::default();
    let problems = &mut verdict.problems;
    let mut seen = Vec::new();
    for result in &report.results {
        if seen.contains(&result.number) {
            problems.push(format!("test {} reported twice", result.number));
        }
        seen.push(result.number);
        match &result.outcome {
            Outcome::Passed => verdict.passed += 1,
            Outcome::Skipped(_) => verdict.skipped += 1,
            Outcome::Failed => {
                verdict.failed += 1;
                let why = result
                    .diagnostics
                    .first()
                    .map(String::as_str)
                    .unwrap_or("no diagnostics");
                problems.push(format!("not ok {} {}: {why}", result.number, result.name));
            }
        }
    }
    // Skips alone do not fail a run: tests that did not run because the
    // kernel died are failed by the crash itself.
    if let Some(crash) = &report.crash {
        problems.push(crash.clone());
    }
    if !report.header_seen {
        problems.push("no KTAP output: the test suite never started".into());
    } else {
        match report.plan {
            None => problems.push("no test plan (1..N) was printed".into()),
            Some(plan) if report.results.len() < plan => {
                let missing = plan - report.results.len();
                problems.push(format!(
                    "incomplete: the plan announced {plan} tests, {} were reported",
                    report.results.len()
                ));
                // Unreported tests count as failed so the summary never hides them.
                verdict.failed += missing;
            }
            Some(plan) if report.results.len() > plan => problems.push(format!(
                "the plan announced {plan} tests, {} were reported",
                report.results.len()
            )),
            Some(_) => {}
        }
        let expected: Vec<usize> = (1..=report.results.len()).collect();
        if seen != expected
            && problems
                .iter()
                .all(|problem| !problem.contains("reported twice"))
        {
            problems.push("results are out of order".into());
        }
    }
    if let Some((passed, failed, skipped)) = report.kernel_summary {
        let counted = report.results.len();
        if passed + failed + skipped != counted {
            problems.push(format!(
                "the kernel's summary ({passed} passed, {failed} failed) disagrees with the {counted} results"
            ));
        }
    }
    match exit {
        Exit::Status(EXIT_SUCCESS) => {}
        Exit::Status(EXIT_FAILURE) => {
            if problems.is_empty() {
                problems.push("the kernel reported failure (QEMU exit status 35)".into());
            }
        }
        Exit::Status(status) => problems.push(format!(
            "QEMU exited with status {status}, not {EXIT_SUCCESS} (a triple fault or reset ends with 0)"
        )),
        Exit::Signal(signal) => problems.push(format!("QEMU was killed by signal {signal}")),
        Exit::TimedOut(seconds) => problems.push(match &report.running {
            Some((number, name)) => {
                format!("timed out after {seconds} s while test {number} ({name}) was running")
            }
            None if report.header_seen => {
                format!("timed out after {seconds} s between tests")
            }
            None => format!("timed out after {seconds} s before the test suite started"),
        }),
    }
    // A failed run always counts at least one failure in the summary.
    if !verdict.success() && verdict.failed == 0 {
        verdict.failed = 1;
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_carriage_returns_are_removed() {
        assert_eq!(
            clean("\x1b[2J\x1b[01;01HKTAP version 1\r"),
            "KTAP version 1"
        );
        assert_eq!(clean("\x1b]0;title\x07ok 1 a"), "ok 1 a");
        assert_eq!(clean("a\tb\x00c"), "a bc");
    }

    #[test]
    fn result_lines_parse() {
        let ok = parse_result("ok 3 mem::tests::x").unwrap();
        assert_eq!(
            (ok.number, ok.name.as_str(), ok.outcome),
            (3, "mem::tests::x", Outcome::Passed)
        );
        let bad = parse_result("not ok 4 y").unwrap();
        assert_eq!(bad.outcome, Outcome::Failed);
        let skip = parse_result("not ok 5 z # SKIP not run: test 4 did not finish").unwrap();
        assert_eq!(
            skip.outcome,
            Outcome::Skipped("not run: test 4 did not finish".into())
        );
        assert_eq!(skip.name, "z");
        assert!(parse_result("okay 1 x").is_none());
        assert!(parse_result("ok x").is_none());
    }

    #[test]
    fn summary_lines_parse() {
        assert_eq!(parse_summary("12 passed, 0 failed"), Some((12, 0, 0)));
        assert_eq!(
            parse_summary("1 passed, 2 failed, 3 skipped"),
            Some((1, 2, 3))
        );
        assert_eq!(parse_summary("1 passed"), None);
        assert_eq!(parse_summary("1 passed, 2 failed, 3 skipped, 4 more"), None);
    }

    #[test]
    fn noise_before_the_header_is_ignored() {
        let report =
            parse("ok 1 fake\n1..9\nKTAP version 1\n1..1\nok 1 real\n1 passed, 0 failed\n");
        assert_eq!(report.plan, Some(1));
        assert_eq!(report.results.len(), 1);
        assert!(judge(&report, Exit::Status(EXIT_SUCCESS)).success());
    }

    #[test]
    fn success_exit_without_results_fails() {
        let verdict = judge(&parse("boot complete\n"), Exit::Status(EXIT_SUCCESS));
        assert!(!verdict.success());
        assert_eq!(verdict.failed, 1);
    }

    #[test]
    fn passing_results_with_a_wrong_exit_fail() {
        let report = parse("KTAP version 1\n1..1\nok 1 a\n1 passed, 0 failed\n");
        assert!(judge(&report, Exit::Status(EXIT_SUCCESS)).success());
        assert!(!judge(&report, Exit::Status(0)).success());
        assert!(!judge(&report, Exit::Status(EXIT_FAILURE)).success());
        assert!(!judge(&report, Exit::Signal(9)).success());
    }

    #[test]
    fn duplicate_or_disordered_results_fail() {
        let twice = parse("KTAP version 1\n1..2\nok 1 a\nok 1 a\n");
        assert!(!judge(&twice, Exit::Status(EXIT_SUCCESS)).success());
        let swapped = parse("KTAP version 1\n1..2\nok 2 b\nok 1 a\n");
        assert!(!judge(&swapped, Exit::Status(EXIT_SUCCESS)).success());
    }

    /// A run where CPU `cpu` took a fault during test 2 of 3.
    fn crashed_on(cpu: usize) -> String {
        format!(
            "2 CPUs online: APIC ids 0 1\nKTAP version 1\n1..3\nok 1 a\n# start 2 stress\n\
             KERNEL FAULT: CPU {cpu}: page fault (vector 14)\nnot ok 2 stress\n\
             # CPU {cpu}: page fault (vector 14)\nnot ok 3 c # SKIP not run: test 2 did not finish\n\
             1 passed, 1 failed, 1 skipped\n"
        )
    }

    #[test]
    fn an_injected_crash_passes_only_as_it_should_fail() {
        let failure = Exit::Status(EXIT_FAILURE);
        let on_cpu1 = parse(&crashed_on(1));
        assert!(judge_injected_crash(&on_cpu1, failure, "KERNEL FAULT").success());
        // The wrong CPU, the wrong kind, a success, a hang: all fail.
        let on_cpu0 = parse(&crashed_on(0));
        assert!(!judge_injected_crash(&on_cpu0, failure, "KERNEL FAULT").success());
        assert!(!judge_injected_crash(&on_cpu1, failure, "KERNEL PANIC").success());
        assert!(
            !judge_injected_crash(&on_cpu1, Exit::Status(EXIT_SUCCESS), "KERNEL FAULT").success()
        );
        assert!(!judge_injected_crash(&on_cpu1, Exit::TimedOut(600), "KERNEL FAULT").success());
        // A test that does not name the CPU, or unrun tests left unreported.
        let unnamed = parse(&crashed_on(1).replace("# CPU 1: page fault", "# page fault"));
        assert!(!judge_injected_crash(&unnamed, failure, "KERNEL FAULT").success());
        let cut =
            parse(&crashed_on(1).replace("not ok 3 c # SKIP not run: test 2 did not finish\n", ""));
        assert!(!judge_injected_crash(&cut, failure, "KERNEL FAULT").success());
    }

    #[test]
    fn the_cpus_online_must_match_the_machine() {
        let run =
            "4 CPUs online: APIC ids 0 1 2 3\nKTAP version 1\n1..1\nok 1 a\n1 passed, 0 failed\n";
        let report = parse(run);
        assert_eq!(report.cpus_online, Some(4));
        assert!(judge_machine(&report, Exit::Status(EXIT_SUCCESS), 4).success());
        assert!(!judge_machine(&report, Exit::Status(EXIT_SUCCESS), 2).success());
        let one = parse(&run.replace(
            "4 CPUs online: APIC ids 0 1 2 3",
            "1 CPU online: APIC ids 0",
        ));
        assert_eq!(one.cpus_online, Some(1));
        let silent = parse(&run.replace("4 CPUs online: APIC ids 0 1 2 3\n", ""));
        assert!(!judge_machine(&silent, Exit::Status(EXIT_SUCCESS), 1).success());
    }
}
