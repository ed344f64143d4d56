//! A QEMU whose serial port is a pair of pipes: we type into its stdin and
//! read what the kernel prints, prompt included (which ends without a
//! newline, so reading is by bytes, not lines).

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A running guest; killed when dropped.
pub struct Guest {
    child: Child,
    stdin: ChildStdin,
    bytes: mpsc::Receiver<Vec<u8>>,
    /// Everything received, as text (lossy, CR removed).
    transcript: String,
    /// Where in `transcript` the next [`Guest::expect`] starts looking.
    mark: usize,
}

impl Guest {
    pub fn start(mut command: Command) -> Result<Self, String> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command
            .spawn()
            .map_err(|error| format!("starting QEMU: {error}"))?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let (send, bytes) = mpsc::channel();
        thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(count @ 1..) = stdout.read(&mut buffer) {
                if send.send(buffer[..count].to_vec()).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            bytes,
            transcript: String::new(),
            mark: 0,
        })
    }

    /// Waits until `needle` appears after the mark; returns the text from
    /// the mark to the end of `needle` and moves the mark past it.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = self.transcript[self.mark..].find(needle) {
                let end = self.mark + at + needle.len();
                let text = self.transcript[self.mark..end].to_string();
                self.mark = end;
                return Ok(text);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.bytes.recv_timeout(left) {
                Ok(chunk) => self
                    .transcript
                    .push_str(&String::from_utf8_lossy(&chunk).replace('\r', "")),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "no `{}` within {} s",
                        needle.escape_debug(),
                        timeout.as_secs()
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!(
                        "QEMU ended before `{}` appeared",
                        needle.escape_debug()
                    ));
                }
            }
        }
    }

    /// Types bytes on the serial line.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stdin
            .write_all(bytes)
            .and_then(|()| self.stdin.flush())
            .map_err(|error| format!("typing on serial: {error}"))
    }

    /// Waits for QEMU to exit; its status code, or `None` on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The last `lines` lines received, for failure reports.
    pub fn tail(&mut self, lines: usize) -> String {
        while let Ok(chunk) = self.bytes.try_recv() {
            self.transcript
                .push_str(&String::from_utf8_lossy(&chunk).replace('\r', ""));
        }
        let all: Vec<&str> = self.transcript.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
