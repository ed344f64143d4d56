//! A QMP connection to the guest's QEMU: just enough of the protocol
//! (greeting, capabilities, one command at a time, asynchronous events
//! skipped; no JSON library needed for fixed requests), and typing on the
//! guest's PS/2 keyboard with `send-key`. QEMU takes one client per QMP
//! socket, so every use of QMP in a check goes through this one.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// QEMU's key name (qcode) for a character we type.
pub fn qcode(c: char) -> Option<String> {
    match c {
        'a'..='z' | '0'..='9' => Some(c.to_string()),
        ' ' => Some("spc".into()),
        '\n' => Some("ret".into()),
        '-' => Some("minus".into()),
        _ => None,
    }
}

impl Qmp {
    /// Connects to QEMU's QMP socket (it appears shortly after QEMU starts).
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Self, String> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(stream) => break stream,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(error) => return Err(format!("QMP socket {}: {error}", socket.display())),
            }
        };
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|error| format!("QMP: {error}"))?;
        let writer = stream
            .try_clone()
            .map_err(|error| format!("QMP: {error}"))?;
        let mut qmp = Self {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.line()?;
        if !greeting.contains("\"QMP\"") {
            return Err(format!("QMP: unexpected greeting {greeting}"));
        }
        qmp.execute(r#"{"execute":"qmp_capabilities"}"#)?;
        Ok(qmp)
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("QMP: QEMU closed the socket".into()),
            Ok(_) => Ok(line),
            Err(error) => Err(format!("QMP: {error}")),
        }
    }

    /// Sends one command (a JSON object) and waits for its answer,
    /// skipping events.
    pub fn execute(&mut self, request: &str) -> Result<(), String> {
        writeln!(self.writer, "{request}").map_err(|error| format!("QMP: {error}"))?;
        loop {
            let answer = self.line()?;
            if answer.starts_with(r#"{"return""#) {
                return Ok(());
            }
            if answer.starts_with(r#"{"error""#) {
                return Err(format!("QMP refused {request}: {}", answer.trim()));
            }
        }
    }

    /// Presses the keys together and releases them (`["ctrl", "u"]` is
    /// Ctrl-U).
    pub fn chord(&mut self, qcodes: &[&str]) -> Result<(), String> {
        let keys: Vec<String> = qcodes
            .iter()
            .map(|code| format!(r#"{{"type":"qcode","data":"{code}"}}"#))
            .collect();
        self.execute(&format!(
            r#"{{"execute":"send-key","arguments":{{"keys":[{}]}}}}"#,
            keys.join(",")
        ))
    }

    /// Types text key by key (`\n` is Enter).
    pub fn type_text(&mut self, text: &str) -> Result<(), String> {
        for c in text.chars() {
            let code = qcode(c).ok_or_else(|| format!("no key for {c:?}"))?;
            self.chord(&[&code])?;
        }
        Ok(())
    }
}
