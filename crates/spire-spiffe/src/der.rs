//! A minimal DER reader and writer: just enough for SubjectPublicKeyInfo and for locating the
//! public key inside an X.509 certificate. Never panics; all lengths are bounds-checked.

pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_BIT_STRING: u8 = 0x03;
pub(crate) const TAG_NULL: u8 = 0x05;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;
pub(crate) const TAG_CONTEXT_0: u8 = 0xa0;

/// Why DER input could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DerError {
    /// The input ended inside a tag, length or value.
    #[error("der input is truncated")]
    Truncated,
    /// Indefinite length (BER only) or a length longer than 4 bytes.
    #[error("der length form is not supported (indefinite or longer than 4 bytes)")]
    UnsupportedLength,
    /// A long-form length that could have been shorter.
    #[error("der length is not minimally encoded")]
    NonMinimalLength,
    /// A multi-byte (high tag number) tag.
    #[error("der tag uses the high tag number form, which is not supported here")]
    HighTagNumber,
    /// Found a different tag than the structure requires.
    #[error("expected der tag 0x{expected:02x}, found 0x{found:02x}")]
    UnexpectedTag {
        /// The tag the structure requires.
        expected: u8,
        /// The tag present in the input.
        found: u8,
    },
    /// Bytes remain after the structure ended.
    #[error("der structure has trailing data")]
    TrailingData,
    /// An INTEGER that is empty or negative where a positive number is required.
    #[error("der integer is empty or negative (expected a positive integer)")]
    BadInteger,
    /// A BIT STRING with unused bits, where whole bytes are required.
    #[error("der bit string has unused bits (expected whole bytes)")]
    BitStringUnusedBits,
    /// A NULL with content.
    #[error("der null has content")]
    BadNull,
}

/// A cursor over DER-encoded bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    data: &'a [u8],
}

/// One element: its content and its whole encoding (header and content).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tlv<'a> {
    pub content: &'a [u8],
    pub raw: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn peek_tag(&self) -> Option<u8> {
        self.data.first().copied()
    }

    /// Reads the next element, whatever its tag.
    pub fn read_any(&mut self) -> Result<Tlv<'a>, DerError> {
        let data = self.data;
        let (&tag, rest) = data.split_first().ok_or(DerError::Truncated)?;
        if tag & 0x1f == 0x1f {
            return Err(DerError::HighTagNumber);
        }
        let (&first, mut rest) = rest.split_first().ok_or(DerError::Truncated)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return Err(DerError::UnsupportedLength);
            }
            if rest.len() < n {
                return Err(DerError::Truncated);
            }
            let (len_bytes, after) = rest.split_at(n);
            rest = after;
            if len_bytes[0] == 0 {
                return Err(DerError::NonMinimalLength);
            }
            let len = len_bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            if len < 0x80 {
                return Err(DerError::NonMinimalLength);
            }
            len
        };
        if rest.len() < len {
            return Err(DerError::Truncated);
        }
        let header_len = data.len() - rest.len();
        let content = &rest[..len];
        let raw = &data[..header_len + len];
        self.data = &rest[len..];
        Ok(Tlv { content, raw })
    }

    /// Reads the next element, which must have tag `tag`.
    pub fn read(&mut self, tag: u8) -> Result<Tlv<'a>, DerError> {
        match self.peek_tag() {
            None => Err(DerError::Truncated),
            Some(found) if found != tag => Err(DerError::UnexpectedTag {
                expected: tag,
                found,
            }),
            Some(_) => self.read_any(),
        }
    }

    /// Reads a SEQUENCE and returns a reader over its content.
    pub fn read_sequence(&mut self) -> Result<Reader<'a>, DerError> {
        Ok(Reader::new(self.read(TAG_SEQUENCE)?.content))
    }

    /// Reads a BIT STRING with no unused bits and returns its bytes.
    pub fn read_bit_string_bytes(&mut self) -> Result<&'a [u8], DerError> {
        let content = self.read(TAG_BIT_STRING)?.content;
        let (&unused, bytes) = content.split_first().ok_or(DerError::Truncated)?;
        if unused != 0 {
            return Err(DerError::BitStringUnusedBits);
        }
        Ok(bytes)
    }

    /// Reads a positive INTEGER and returns its magnitude without leading zero bytes.
    pub fn read_positive_integer(&mut self) -> Result<&'a [u8], DerError> {
        let content = self.read(TAG_INTEGER)?.content;
        match content.first() {
            None => Err(DerError::BadInteger),
            Some(b) if b & 0x80 != 0 => Err(DerError::BadInteger),
            Some(_) => {
                let start = content
                    .iter()
                    .position(|b| *b != 0)
                    .unwrap_or(content.len());
                let magnitude = &content[start..];
                if magnitude.is_empty() {
                    return Err(DerError::BadInteger);
                }
                Ok(magnitude)
            }
        }
    }

    /// Fails if any bytes remain.
    pub fn finish(&self) -> Result<(), DerError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(DerError::TrailingData)
        }
    }
}

/// Encodes one element.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        // Fits in 7 bits.
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        let significant = &bytes[skip..];
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// Encodes a SEQUENCE of already-encoded elements.
pub(crate) fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    tlv(TAG_SEQUENCE, &parts.concat())
}

/// Encodes a BIT STRING holding whole bytes.
pub(crate) fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(bytes.len() + 1);
    content.push(0);
    content.extend_from_slice(bytes);
    tlv(TAG_BIT_STRING, &content)
}

/// Encodes a non-negative INTEGER from a big-endian magnitude (leading zeros are dropped and a
/// zero byte is prepended when the high bit is set, as DER requires).
pub(crate) fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let start = magnitude
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(magnitude.len());
    let m = &magnitude[start..];
    let mut content = Vec::with_capacity(m.len() + 1);
    match m.first() {
        None => content.push(0),
        Some(b) if b & 0x80 != 0 => {
            content.push(0);
            content.extend_from_slice(m);
        }
        Some(_) => content.extend_from_slice(m),
    }
    tlv(TAG_INTEGER, &content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_forms_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 65_535, 65_536] {
            let content = vec![7u8; len];
            let enc = tlv(TAG_SEQUENCE, &content);
            let mut r = Reader::new(&enc);
            let t = r.read(TAG_SEQUENCE).unwrap();
            assert_eq!(t.content.len(), len);
            assert_eq!(t.raw, &enc[..]);
            r.finish().unwrap();
        }
        assert_eq!(tlv(TAG_NULL, &[]), [0x05, 0x00]);
        assert_eq!(&tlv(TAG_SEQUENCE, &[0; 200])[..3], &[0x30, 0x81, 200]);
        assert_eq!(
            &tlv(TAG_SEQUENCE, &[0; 300])[..4],
            &[0x30, 0x82, 0x01, 0x2c]
        );
    }

    #[test]
    fn rejects_bad_lengths() {
        let cases: &[(&[u8], DerError)] = &[
            (&[], DerError::Truncated),
            (&[0x30], DerError::Truncated),
            (&[0x30, 0x05, 0x00], DerError::Truncated),
            (&[0x30, 0x80], DerError::UnsupportedLength),
            (&[0x30, 0x85, 1, 1, 1, 1, 1], DerError::UnsupportedLength),
            (
                &[0x30, 0x81, 0x05, 0, 0, 0, 0, 0],
                DerError::NonMinimalLength,
            ),
            (&[0x30, 0x82, 0x00, 0x80], DerError::NonMinimalLength),
            (&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], DerError::Truncated),
            (&[0x1f, 0x00], DerError::HighTagNumber),
        ];
        for (input, want) in cases {
            assert_eq!(
                Reader::new(input).read_any().unwrap_err(),
                *want,
                "{input:?}"
            );
        }
        let mut r = Reader::new(&[0x02, 0x01, 0x01]);
        assert_eq!(
            r.read(TAG_SEQUENCE).unwrap_err(),
            DerError::UnexpectedTag {
                expected: 0x30,
                found: 0x02
            }
        );
    }

    #[test]
    fn integers() {
        assert_eq!(unsigned_integer(&[]), [0x02, 0x01, 0x00]);
        assert_eq!(unsigned_integer(&[0, 0]), [0x02, 0x01, 0x00]);
        assert_eq!(unsigned_integer(&[0x01, 0x00, 0x01]), [0x02, 0x03, 1, 0, 1]);
        assert_eq!(unsigned_integer(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(unsigned_integer(&[0, 0, 0x7f]), [0x02, 0x01, 0x7f]);
        let enc = unsigned_integer(&[0xff, 0x01]);
        assert_eq!(
            Reader::new(&enc).read_positive_integer().unwrap(),
            &[0xff, 0x01]
        );
        // Negative and zero are rejected.
        assert_eq!(
            Reader::new(&[0x02, 0x01, 0x80])
                .read_positive_integer()
                .unwrap_err(),
            DerError::BadInteger
        );
        assert_eq!(
            Reader::new(&[0x02, 0x01, 0x00])
                .read_positive_integer()
                .unwrap_err(),
            DerError::BadInteger
        );
        assert_eq!(
            Reader::new(&[0x02, 0x00])
                .read_positive_integer()
                .unwrap_err(),
            DerError::BadInteger
        );
    }

    #[test]
    fn bit_strings() {
        let enc = bit_string(&[1, 2, 3]);
        assert_eq!(enc, [0x03, 0x04, 0x00, 1, 2, 3]);
        assert_eq!(
            Reader::new(&enc).read_bit_string_bytes().unwrap(),
            &[1, 2, 3]
        );
        assert_eq!(
            Reader::new(&[0x03, 0x02, 0x01, 0x00])
                .read_bit_string_bytes()
                .unwrap_err(),
            DerError::BitStringUnusedBits
        );
        assert_eq!(
            Reader::new(&[0x03, 0x00])
                .read_bit_string_bytes()
                .unwrap_err(),
            DerError::Truncated
        );
    }
}
