//! A QMP client (QEMU's JSON machine protocol) over a Unix socket: the
//! greeting, `qmp_capabilities`, then commands; asynchronous events that
//! arrive in between are skipped. The screen checks take screendumps
//! through it, the console checks type on the guest's PS/2 keyboard
//! (`send-key`); QEMU takes one client per socket, so a boot has one.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

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

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// How long one reply may take (a screendump of a large screen included).
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

impl Qmp {
    /// Connects to the socket QEMU serves (`-qmp unix:PATH,server=on,wait=off`),
    /// retrying until `deadline` while QEMU starts, and enters command mode.
    pub fn connect(path: &Path, deadline: Instant) -> Result<Self, String> {
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(error) if Instant::now() >= deadline => {
                    return Err(format!("connecting to QMP at {}: {error}", path.display()));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|error| format!("QMP socket: {error}"))?;
        let writer = stream
            .try_clone()
            .map_err(|error| format!("QMP socket: {error}"))?;
        let mut qmp = Self {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("QMP greeting expected, got {greeting}"));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Runs `command`; returns its `return` value or its error.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, String> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|error| format!("QMP {command}: {error}"))?;
        loop {
            let message = self.read_message()?;
            if let Some(result) = message.get("return") {
                return Ok(result.clone());
            }
            if let Some(error) = message.get("error") {
                return Err(format!("QMP {command} failed: {error}"));
            }
            // An event ({"event": ...}): not our reply.
        }
    }

    /// Writes the guest's screen to `file` as a PPM.
    pub fn screendump(&mut self, file: &Path) -> Result<(), String> {
        let filename = file
            .to_str()
            .ok_or_else(|| format!("{} is not UTF-8", file.display()))?;
        self.execute("screendump", Some(json!({ "filename": filename })))
            .map(|_| ())
    }

    /// Presses the keys together and releases them (`["ctrl", "u"]` is
    /// Ctrl-U).
    pub fn chord(&mut self, qcodes: &[&str]) -> Result<(), String> {
        let keys: Vec<Value> = qcodes
            .iter()
            .map(|code| json!({ "type": "qcode", "data": code }))
            .collect();
        self.execute("send-key", Some(json!({ "keys": keys })))
            .map(|_| ())
    }

    /// Types text key by key (`\n` is Enter).
    pub fn type_text(&mut self, text: &str) -> Result<(), String> {
        for c in text.chars() {
            let code = qcode(c).ok_or_else(|| format!("no key for {c:?}"))?;
            self.chord(&[&code])?;
        }
        Ok(())
    }

    fn read_message(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("QMP: QEMU closed the connection".into()),
            Ok(_) => serde_json::from_str(&line)
                .map_err(|error| format!("QMP: bad message {line:?}: {error}")),
            Err(error) => Err(format!("QMP: {error}")),
        }
    }
}
