//! Incremental UTF-8 validation for text messages that arrive in pieces.
//!
//! Built on `std::str::from_utf8`, whose error tells apart "invalid" (`error_len` is `Some`) from
//! "valid so far but cut short" (`error_len` is `None`). The validator keeps the (at most 3)
//! bytes of a cut sequence and completes them with the next piece, so an invalid sequence is
//! reported as soon as its first wrong byte arrives, however the message is split.

/// The bytes fed so far are not UTF-8 (or, at [`Utf8Validator::finish`], end in a cut sequence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid UTF-8")]
pub(crate) struct InvalidUtf8;

/// Validates a stream of bytes as UTF-8, piece by piece.
#[derive(Debug, Default, Clone)]
pub(crate) struct Utf8Validator {
    /// Start of a multi-byte sequence cut at the end of the previous piece.
    pending: [u8; 4],
    /// How many bytes of `pending` are in use (0..=3).
    pending_len: usize,
}

impl Utf8Validator {
    /// Validates the next piece of the stream.
    ///
    /// # Errors
    /// [`InvalidUtf8`] as soon as the bytes so far cannot be the start of valid UTF-8.
    pub(crate) fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            let have = self.pending_len;
            let need = sequence_len(self.pending[0]).saturating_sub(have);
            let take = need.min(input.len());
            let mut seq = self.pending;
            let (head, rest) = input.split_at(take);
            seq[have..have + take].copy_from_slice(head);
            match std::str::from_utf8(&seq[..have + take]) {
                Ok(_) => {
                    self.pending_len = 0;
                    input = rest;
                }
                Err(e) if e.error_len().is_none() => {
                    // Still cut short: the whole piece went into `seq`.
                    self.pending = seq;
                    self.pending_len = have + take;
                    return Ok(());
                }
                Err(_) => return Err(InvalidUtf8),
            }
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                // A valid prefix of a sequence (1 to 3 bytes) ends the piece.
                let tail = input.get(e.valid_up_to()..).unwrap_or_default();
                let slot = self.pending.get_mut(..tail.len()).ok_or(InvalidUtf8)?;
                slot.copy_from_slice(tail);
                self.pending_len = tail.len();
                Ok(())
            }
        }
    }

    /// Ends the stream and resets the validator for the next one.
    ///
    /// # Errors
    /// [`InvalidUtf8`] when the stream ended inside a multi-byte sequence.
    pub(crate) fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let cut = self.pending_len > 0;
        self.pending_len = 0;
        if cut { Err(InvalidUtf8) } else { Ok(()) }
    }
}

/// Length of the sequence a (valid) lead byte starts.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_split(bytes: &[u8], splits: &[usize]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::default();
        let mut start = 0;
        for &s in splits {
            v.feed(&bytes[start..s])?;
            start = s;
        }
        v.feed(&bytes[start..])?;
        v.finish()
    }

    #[test]
    fn valid_text_split_at_every_position() {
        let text = "aé€𝄞z".as_bytes();
        for i in 0..=text.len() {
            for j in i..=text.len() {
                assert_eq!(feed_split(text, &[i, j]), Ok(()), "split at {i},{j}");
            }
        }
    }

    #[test]
    fn byte_by_byte_valid() {
        let text = "κόσμε 𝄞 €".as_bytes();
        let mut v = Utf8Validator::default();
        for b in text {
            v.feed(std::slice::from_ref(b)).unwrap();
        }
        v.finish().unwrap();
    }

    #[test]
    fn invalid_sequences_fail_on_first_bad_byte() {
        // F4 90 is already past U+10FFFF: rejected with only two bytes seen.
        let mut v = Utf8Validator::default();
        v.feed(&[b'a', 0xF4]).unwrap();
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));

        // Surrogate (ED A0 ..) rejected at the second byte.
        let mut v = Utf8Validator::default();
        v.feed(&[0xED]).unwrap();
        assert_eq!(v.feed(&[0xA0, 0x80]), Err(InvalidUtf8));

        // Overlong encoding.
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(&[0xC0, 0x80]), Err(InvalidUtf8));

        // Lead byte followed by ASCII.
        let mut v = Utf8Validator::default();
        v.feed(&[0xE2, 0x82]).unwrap();
        assert_eq!(v.feed(b"a"), Err(InvalidUtf8));
    }

    #[test]
    fn cut_sequence_at_end_is_invalid() {
        let mut v = Utf8Validator::default();
        v.feed(&[b'a', 0xE2, 0x82]).unwrap();
        assert_eq!(v.finish(), Err(InvalidUtf8));
        // finish resets.
        v.feed(b"ok").unwrap();
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn pending_completed_by_piece_that_continues() {
        let mut v = Utf8Validator::default();
        v.feed(&[0xF0, 0x9D]).unwrap();
        v.feed(&[0x84]).unwrap();
        v.feed(&[0x9E, b'x', 0xC3]).unwrap();
        v.feed(&[0xA9]).unwrap();
        v.finish().unwrap();
    }
}
