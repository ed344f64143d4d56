//! Formatting without a heap.

use core::fmt;

/// Text formatted into a stack buffer of `N` bytes (cut if longer): for
/// padding a whole formatted value, and for checking messages in tests.
pub struct FixedText<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> FixedText<N> {
    pub fn format(args: fmt::Arguments<'_>) -> Self {
        let mut fixed = Self {
            bytes: [0; N],
            len: 0,
        };
        // Overlong text is cut, never a failure: this is for display only.
        let _ = fmt::write(&mut fixed, args);
        fixed
    }
}

impl<const N: usize> fmt::Write for FixedText<N> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let take = text.len().min(N - self.len);
        self.bytes[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

impl<const N: usize> core::ops::Deref for FixedText<N> {
    type Target = str;

    fn deref(&self) -> &str {
        // Only whole ASCII/UTF-8 text is written; a cut could split a
        // character, so fall back to the valid prefix.
        match core::str::from_utf8(&self.bytes[..self.len]) {
            Ok(text) => text,
            // The prefix up to valid_up_to() is valid UTF-8, so this never
            // falls back to "".
            Err(error) => core::str::from_utf8(&self.bytes[..error.valid_up_to()]).unwrap_or(""),
        }
    }
}
