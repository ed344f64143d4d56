//! Hints for alignment requests: recently freed blocks smaller than a
//! pageblock (2 MiB) that start on a pageblock boundary.
//!
//! A request for one page at 2 MiB alignment can take such a block and
//! split it, instead of splitting an intact 2 MiB block down to one page:
//! fewer list operations, and the intact block stays whole for huge pages.
//! The hints are only hints: a block may have been allocated, merged or
//! removed since, so each one is checked against the metadata when used.

/// Hints kept per zone; a new one replaces the oldest.
pub(crate) const HINTS: usize = 32;

/// A ring of hints, newest taken first.
#[derive(Clone, Copy)]
pub(crate) struct PageblockHeads {
    /// Total pushes minus pops (wrapping): the next slot is `top % HINTS`.
    top: u32,
    len: u32,
    /// `(section slot << 32) | page index`.
    ent: [u64; HINTS],
}

impl PageblockHeads {
    pub(crate) const EMPTY: PageblockHeads = PageblockHeads {
        top: 0,
        len: 0,
        ent: [0; HINTS],
    };

    /// Records block `idx` of section slot `s`, forgetting the oldest hint
    /// when full.
    #[inline(always)]
    pub(crate) fn push(&mut self, s: usize, idx: u32) {
        self.ent[self.top as usize % HINTS] = ((s as u64) << 32) | idx as u64;
        self.top = self.top.wrapping_add(1);
        self.len = (self.len + 1).min(HINTS as u32);
    }

    /// The newest hint, removed.
    #[inline(always)]
    pub(crate) fn pop(&mut self) -> Option<(usize, u32)> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.top = self.top.wrapping_sub(1);
        let e = self.ent[self.top as usize % HINTS];
        Some(((e >> 32) as usize, e as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_and_oldest_forgotten() {
        let mut h = PageblockHeads::EMPTY;
        for i in 0..HINTS as u32 + 3 {
            h.push(1, i);
        }
        let got: Vec<u32> = core::iter::from_fn(|| h.pop()).map(|(_, i)| i).collect();
        assert_eq!(got.len(), HINTS);
        assert_eq!(got[0], HINTS as u32 + 2);
        assert_eq!(*got.last().unwrap(), 3);
        assert_eq!(h.pop(), None);
    }
}
