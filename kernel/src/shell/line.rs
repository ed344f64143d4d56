//! The line editor: a fixed buffer (the shell must work even when the heap
//! is what the user is poking at), and for each key what the terminal must
//! show. Pure logic; the shell does the printing.

use super::keys::Key;

/// Longest line; the commands need far less.
pub const LINE_MAX: usize = 120;

/// What a key did, for the screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Show this character.
    Echo(char),
    /// Erase this many characters left of the cursor.
    Erase(usize),
    /// The line is full: the key was dropped.
    Full,
    /// Enter: the line is ready in [`LineEditor::line`].
    Submit,
    /// Ctrl-C: the line was dropped.
    Cancelled,
    /// Nothing to show (backspace on an empty line).
    Nothing,
}

pub struct LineEditor {
    bytes: [u8; LINE_MAX],
    len: usize,
}

impl LineEditor {
    pub const fn new() -> Self {
        Self {
            bytes: [0; LINE_MAX],
            len: 0,
        }
    }

    pub fn key(&mut self, key: Key) -> Edit {
        match key {
            Key::Char(_) if self.len == LINE_MAX => Edit::Full,
            Key::Char(c) => {
                // keys.rs lets only printable ASCII through.
                self.bytes[self.len] = c as u8;
                self.len += 1;
                Edit::Echo(c)
            }
            Key::Backspace if self.len == 0 => Edit::Nothing,
            Key::Backspace => {
                self.len -= 1;
                Edit::Erase(1)
            }
            Key::KillLine if self.len == 0 => Edit::Nothing,
            Key::KillLine => Edit::Erase(core::mem::take(&mut self.len)),
            Key::Cancel => {
                self.len = 0;
                Edit::Cancelled
            }
            Key::Enter => Edit::Submit,
        }
    }

    /// The line typed so far.
    pub fn line(&self) -> &str {
        // Only printable ASCII is ever stored.
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }

    /// Starts a new line (after the submitted one was run).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn type_text(editor: &mut LineEditor, text: &str) {
        for c in text.chars() {
            assert_eq!(editor.key(Key::Char(c)), Edit::Echo(c));
        }
    }

    #[test_case]
    fn typing_and_backspace() {
        let mut editor = LineEditor::new();
        type_text(&mut editor, "memx");
        assert_eq!(editor.key(Key::Backspace), Edit::Erase(1));
        assert_eq!(editor.line(), "mem");
        assert_eq!(editor.key(Key::Enter), Edit::Submit);
        assert_eq!(editor.line(), "mem");
        editor.clear();
        assert_eq!(editor.line(), "");
        assert_eq!(editor.key(Key::Backspace), Edit::Nothing);
    }

    #[test_case]
    fn kill_line_erases_everything_typed() {
        let mut editor = LineEditor::new();
        type_text(&mut editor, "alloc 3");
        assert_eq!(editor.key(Key::KillLine), Edit::Erase(7));
        assert_eq!(editor.line(), "");
        assert_eq!(editor.key(Key::KillLine), Edit::Nothing);
        type_text(&mut editor, "help");
        assert_eq!(editor.line(), "help");
    }

    #[test_case]
    fn cancel_drops_the_line() {
        let mut editor = LineEditor::new();
        type_text(&mut editor, "reboot");
        assert_eq!(editor.key(Key::Cancel), Edit::Cancelled);
        assert_eq!(editor.line(), "");
    }

    #[test_case]
    fn a_full_line_drops_keys_but_still_edits() {
        let mut editor = LineEditor::new();
        for _ in 0..LINE_MAX {
            assert_eq!(editor.key(Key::Char('a')), Edit::Echo('a'));
        }
        assert_eq!(editor.key(Key::Char('b')), Edit::Full);
        assert_eq!(editor.line().len(), LINE_MAX);
        assert_eq!(editor.key(Key::Backspace), Edit::Erase(1));
        assert_eq!(editor.key(Key::Char('c')), Edit::Echo('c'));
        assert!(editor.line().ends_with("ac"));
    }
}
