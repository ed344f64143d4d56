//! What the line editor understands, and how raw input becomes it: bytes
//! from a serial terminal (which sends CR or CR LF for Enter, DEL or BS for
//! backspace, escape sequences for arrows) and keys decoded by
//! `pc-keyboard`. Pure logic, so both are tested in-kernel.

use pc_keyboard::DecodedKey;

/// An editing key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// A printable ASCII character.
    Char(char),
    Backspace,
    /// Ctrl-U: erase the whole line.
    KillLine,
    /// Ctrl-C: drop the line and start a fresh prompt.
    Cancel,
    Enter,
}

/// Maps a control or printable character; anything else is ignored (the
/// shell's commands are ASCII, and arrows or function keys have no job).
fn from_char(c: char) -> Option<Key> {
    match c {
        '\r' | '\n' => Some(Key::Enter),
        '\u{8}' | '\u{7f}' => Some(Key::Backspace),
        '\u{15}' => Some(Key::KillLine),
        '\u{3}' => Some(Key::Cancel),
        ' '..='~' => Some(Key::Char(c)),
        _ => None,
    }
}

/// A key press from the PS/2 keyboard. Delete is not Backspace there: the
/// layout maps it to 0x7f, but the cursor has nothing to its right.
pub fn from_keyboard(key: DecodedKey) -> Option<Key> {
    match key {
        DecodedKey::Unicode('\u{7f}') => None,
        DecodedKey::Unicode(c) => from_char(c),
        DecodedKey::RawKey(_) => None,
    }
}

/// Decodes a serial terminal's byte stream.
#[derive(Debug, Default)]
pub struct SerialKeys {
    escape: Escape,
    /// The previous byte was CR: an LF right after it is the same Enter.
    after_cr: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Escape {
    #[default]
    None,
    /// ESC seen.
    Started,
    /// ESC [ seen: parameters until a final byte.
    Csi,
}

impl SerialKeys {
    pub const fn new() -> Self {
        Self {
            escape: Escape::None,
            after_cr: false,
        }
    }

    /// The key a byte completes, if any.
    pub fn feed(&mut self, byte: u8) -> Option<Key> {
        let after_cr = core::mem::replace(&mut self.after_cr, byte == b'\r');
        match self.escape {
            Escape::Started => {
                self.escape = match byte {
                    b'[' => Escape::Csi,
                    _ => Escape::None, // two-byte sequence (ESC O is close enough)
                };
                return None;
            }
            Escape::Csi => {
                if (0x40..=0x7e).contains(&byte) {
                    self.escape = Escape::None;
                }
                return None;
            }
            Escape::None => {}
        }
        match byte {
            0x1b => {
                self.escape = Escape::Started;
                None
            }
            b'\n' if after_cr => None,
            _ => from_char(char::from(byte)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pc_keyboard::KeyCode;

    fn keys_of(bytes: &[u8]) -> ([Option<Key>; 16], usize) {
        let mut decoder = SerialKeys::new();
        let mut keys = [None; 16];
        let mut count = 0;
        for &byte in bytes {
            if let Some(key) = decoder.feed(byte) {
                keys[count] = Some(key);
                count += 1;
            }
        }
        (keys, count)
    }

    #[test_case]
    fn serial_enter_is_one_key_for_cr_lf_and_either_alone() {
        let (keys, count) = keys_of(b"a\r\nb\rc\n\n");
        assert_eq!(count, 7);
        assert_eq!(
            keys[..count],
            [
                Some(Key::Char('a')),
                Some(Key::Enter),
                Some(Key::Char('b')),
                Some(Key::Enter),
                Some(Key::Char('c')),
                Some(Key::Enter),
                Some(Key::Enter),
            ]
        );
    }

    #[test_case]
    fn serial_editing_bytes_and_escape_sequences() {
        // DEL and BS erase, Ctrl-U kills, Ctrl-C cancels; an arrow key
        // (ESC [ A) and ESC [ 1 ; 5 C vanish whole; other controls too.
        let (keys, count) = keys_of(b"x\x7f\x08\x15\x03\x1b[A\x1b[1;5Cy\x01");
        assert_eq!(
            keys[..count],
            [
                Some(Key::Char('x')),
                Some(Key::Backspace),
                Some(Key::Backspace),
                Some(Key::KillLine),
                Some(Key::Cancel),
                Some(Key::Char('y')),
            ]
        );
    }

    #[test_case]
    fn keyboard_keys_map_like_the_terminal() {
        assert_eq!(from_keyboard(DecodedKey::Unicode('\n')), Some(Key::Enter));
        assert_eq!(
            from_keyboard(DecodedKey::Unicode('\u{8}')),
            Some(Key::Backspace)
        );
        assert_eq!(
            from_keyboard(DecodedKey::Unicode('\u{15}')),
            Some(Key::KillLine)
        );
        assert_eq!(from_keyboard(DecodedKey::Unicode('\u{7f}')), None);
        assert_eq!(from_keyboard(DecodedKey::Unicode('é')), None);
        assert_eq!(from_keyboard(DecodedKey::RawKey(KeyCode::ArrowUp)), None);
        assert_eq!(
            from_keyboard(DecodedKey::Unicode('h')),
            Some(Key::Char('h'))
        );
    }
}
