//! Running one QEMU (or any command) with its serial stream captured:
//! lines are echoed as they arrive, fed to the KTAP parser, and the process
//! is killed when the deadline passes.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::ktap::{Exit, Parser, Report};

/// How a captured run ended.
#[derive(Debug)]
pub struct Capture {
    pub report: Report,
    pub exit: Exit,
    /// What the process wrote to stderr (QEMU's own complaints).
    pub stderr: String,
}

/// Runs `command` until it exits or `timeout` passes. Each stdout line goes
/// to `echo` (after escape sequences are removed) and to the parser.
/// `stop_when` may end the run early once the report satisfies it (used to
/// wait for a line and then kill a kernel that idles forever).
pub fn run(
    mut command: Command,
    timeout: Duration,
    echo: &mut dyn Write,
    stop_when: Option<&dyn Fn(&Report) -> bool>,
) -> std::io::Result<Capture> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn()?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");

    let (lines, receive) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut buffer = Vec::new();
        // Split on '\n' ourselves: serial output is not guaranteed UTF-8.
        while let Ok(n) = stdout.read_until(b'\n', &mut buffer) {
            if n == 0 {
                break;
            }
            if lines
                .send(String::from_utf8_lossy(&buffer).into_owned())
                .is_err()
            {
                break;
            }
            buffer.clear();
        }
    });
    let stderr_reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let deadline = Instant::now() + timeout;
    let mut parser = Parser::new();
    let mut killed_at = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match receive.recv_timeout(left) {
            Ok(line) => {
                let _ = writeln!(echo, "{}", crate::ktap::clean(&line));
                parser.feed(&line);
                if stop_when.is_some_and(|stop| stop(parser.report())) {
                    killed_at = Some(None);
                    break;
                }
            }
            // The process closed stdout: it has exited or is about to.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                killed_at = Some(Some(timeout.as_secs()));
                break;
            }
        }
    }
    let _ = echo.flush();
    // stdout closed: give the process until the deadline to exit.
    while killed_at.is_none() && child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            killed_at = Some(Some(timeout.as_secs()));
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    if killed_at.is_some() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    // A killed process's children may still hold the pipes; never wait on them.
    let stderr = if killed_at.is_some() {
        String::new()
    } else {
        let _ = reader.join();
        stderr_reader.join().unwrap_or_default()
    };
    let exit = match killed_at {
        Some(Some(seconds)) => Exit::TimedOut(seconds),
        // Stopped on purpose: report it as the success the caller waited for.
        Some(None) => Exit::Status(crate::ktap::EXIT_SUCCESS),
        None => exit_of(status),
    };
    Ok(Capture {
        report: parser.into_report(),
        exit,
        stderr,
    })
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Status(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => Exit::Status(-1),
    }
}
