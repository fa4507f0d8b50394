//! Big-endian reading and writing, and the spec's rules for strings.

use super::consts::MAX_STRING_LEN;
use super::error::Malformation;

/// A cursor over a message payload whose reads fail, instead of panicking, past the end.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// The bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// The next `len` bytes.
    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], Malformation> {
        if len > self.bytes.len() {
            return Err(Malformation::Truncated {
                needed: len,
                available: self.bytes.len(),
            });
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    /// Every byte not read yet.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Malformation> {
        Ok(u16::from_be_bytes(array(self.take(2)?)))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Malformation> {
        Ok(u32::from_be_bytes(array(self.take(4)?)))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Malformation> {
        Ok(u64::from_be_bytes(array(self.take(8)?)))
    }

    /// A string whose byte length was sent just before it as a 32-bit field.
    pub(crate) fn string_u32(&mut self) -> Result<&'a str, Malformation> {
        let declared = self.u32()?;
        let len = usize::try_from(declared).unwrap_or(usize::MAX);
        if len > self.bytes.len() {
            return Err(Malformation::LengthOverrun {
                declared,
                available: self.bytes.len(),
            });
        }
        string(self.take(len)?)
    }

    /// Fails if any byte is left: the message was longer than its fields.
    pub(crate) fn finish(self) -> Result<(), Malformation> {
        match self.bytes.len() {
            0 => Ok(()),
            extra => Err(Malformation::TrailingBytes { extra }),
        }
    }
}

/// The first `N` bytes of `bytes`, which the caller has checked holds at least `N`.
pub(crate) fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

/// Checks a string as the spec defines one: UTF-8, no `NUL`, at most 4096 bytes.
pub(crate) fn string(bytes: &[u8]) -> Result<&str, Malformation> {
    if bytes.len() > MAX_STRING_LEN {
        return Err(Malformation::StringTooLong {
            length: bytes.len(),
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| Malformation::NotUtf8)?;
    if text.contains('\0') {
        return Err(Malformation::ContainsNul);
    }
    Ok(text)
}

/// The longest prefix of `text` that ends on a character boundary and holds at most `max` bytes.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

pub(crate) fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

pub(crate) fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

pub(crate) fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// The length of a byte string as a 32-bit wire field, saturating (callers bound their strings).
pub(crate) fn len_u32(bytes: &[u8]) -> u32 {
    u32::try_from(bytes.len()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_errors() {
        let mut reader = Reader::new(&[0, 1, 2]);
        assert_eq!(reader.u16(), Ok(1));
        assert_eq!(
            reader.u32(),
            Err(Malformation::Truncated {
                needed: 4,
                available: 1
            })
        );
        assert_eq!(
            reader.finish(),
            Err(Malformation::TrailingBytes { extra: 1 })
        );
    }

    #[test]
    fn strings_follow_the_spec() {
        assert_eq!(string(b"disk"), Ok("disk"));
        assert_eq!(string(&[0xff]), Err(Malformation::NotUtf8));
        assert_eq!(string(b"a\0b"), Err(Malformation::ContainsNul));
        assert_eq!(
            string(&[b'a'; 4097]),
            Err(Malformation::StringTooLong { length: 4097 })
        );
        assert!(string(&[b'a'; 4096]).is_ok());
    }

    #[test]
    fn a_declared_length_past_the_end_is_an_overrun() {
        let mut reader = Reader::new(&[0, 0, 0, 9, b'x']);
        assert_eq!(
            reader.string_u32(),
            Err(Malformation::LengthOverrun {
                declared: 9,
                available: 1
            })
        );
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
