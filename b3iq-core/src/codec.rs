//! The canonical binary encoding used for every signed object.
//!
//! The format is deliberately small and fully specified in `docs/formats.md`:
//!
//! * integers: fixed width, little-endian (`u8`, `u16`, `u32`, `u64`, `u128`);
//! * `bool`: one byte, `0x00` or `0x01` (anything else is an error);
//! * fixed byte arrays (`[u8; N]`, keys, digests, ids): the raw bytes;
//! * strings: `u32` little-endian byte length, then UTF-8 bytes; every string field has a
//!   documented maximum length, checked on decode;
//! * lists: `u32` little-endian element count, then the elements; bounded like strings;
//! * `Option<T>`: `0x00` for none, `0x01` then `T` for some;
//! * enums: one tag byte, then the variant's fields in order.
//!
//! Because every value has exactly one encoding and the decoder refuses anything else (unknown
//! tags, oversize lengths, bad UTF-8, trailing bytes), `decode(encode(x)) == x` and
//! `encode(decode(b)) == b` for every accepted `b`.

use crate::error::{CoreError, Result};

/// Hard ceiling on any length or count field, whatever the per-field maximum says.
pub const MAX_ANY_LEN: u32 = 1 << 20;

/// Appends canonical encodings to a byte buffer.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// A new empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new writer with room for `cap` bytes.
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            buf: Vec::with_capacity(cap),
        }
    }

    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// The bytes written so far, borrowed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    /// `u16`, little-endian.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// `u32`, little-endian.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// `u64`, little-endian.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// `u128`, little-endian.
    pub fn u128(&mut self, v: u128) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// `bool` as `0x00` / `0x01`.
    pub fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }
    /// Raw bytes with no length prefix (fixed-size fields).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
    /// A length or count prefix (`u32` little-endian).
    pub fn len(&mut self, n: usize) {
        // Values that do not fit are refused later by `Signed::sign`'s round-trip check.
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    /// Length-prefixed bytes.
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.len(bytes.len());
        self.raw(bytes);
    }
    /// Length-prefixed UTF-8 string.
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    /// `Option<T>`.
    pub fn option<T>(&mut self, v: Option<&T>, f: impl FnOnce(&mut Self, &T)) {
        match v {
            None => self.u8(0),
            Some(x) => {
                self.u8(1);
                f(self, x);
            }
        }
    }
    /// Count-prefixed list.
    pub fn list<T>(&mut self, items: &[T], mut f: impl FnMut(&mut Self, &T)) {
        self.len(items.len());
        for it in items {
            f(self, it);
        }
    }
    /// Any [`Canonical`] value.
    pub fn put<T: Canonical>(&mut self, v: &T) {
        v.encode_to(self);
    }
}

/// Reads canonical encodings from a byte slice, refusing anything non-canonical.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// Fails with [`CoreError::TrailingBytes`] unless everything was read.
    pub fn finish(&self, what: &'static str) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(CoreError::TrailingBytes { what, count }),
        }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(CoreError::Truncated {
                field,
                needed: n,
                remaining: self.remaining(),
            });
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A fixed-size array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N]> {
        let s = self.take(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8> {
        Ok(self.array::<1>(field)?[0])
    }
    /// `u16`, little-endian.
    pub fn u16(&mut self, field: &'static str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    /// `u32`, little-endian.
    pub fn u32(&mut self, field: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    /// `u64`, little-endian.
    pub fn u64(&mut self, field: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    /// `u128`, little-endian.
    pub fn u128(&mut self, field: &'static str) -> Result<u128> {
        Ok(u128::from_le_bytes(self.array(field)?))
    }
    /// `bool`: exactly `0x00` or `0x01`.
    pub fn bool(&mut self, field: &'static str) -> Result<bool> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(CoreError::InvalidTag { field, tag }),
        }
    }
    /// A length or count prefix, checked against `max` before anything is allocated.
    pub fn len(&mut self, max: u32, field: &'static str) -> Result<usize> {
        let n = self.u32(field)?;
        let max = max.min(MAX_ANY_LEN);
        if n > max {
            return Err(CoreError::LengthTooLarge {
                field,
                len: u64::from(n),
                max: u64::from(max),
            });
        }
        Ok(n as usize)
    }
    /// Length-prefixed bytes of at most `max` bytes.
    pub fn bytes(&mut self, max: u32, field: &'static str) -> Result<&'a [u8]> {
        let n = self.len(max, field)?;
        self.take(n, field)
    }
    /// Length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str(&mut self, max: u32, field: &'static str) -> Result<String> {
        let b = self.bytes(max, field)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| CoreError::InvalidUtf8 { field })
    }
    /// `Option<T>`: tag `0x00` or `0x01`.
    pub fn option<T>(
        &mut self,
        field: &'static str,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<Option<T>> {
        match self.u8(field)? {
            0 => Ok(None),
            1 => f(self).map(Some),
            tag => Err(CoreError::InvalidTag { field, tag }),
        }
    }
    /// Count-prefixed list of at most `max` elements.
    pub fn list<T>(
        &mut self,
        max: u32,
        field: &'static str,
        mut f: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        let n = self.len(max, field)?;
        // Each element takes at least one byte, so a count larger than the input is refused
        // before allocating.
        if n > self.remaining() {
            return Err(CoreError::Truncated {
                field,
                needed: n,
                remaining: self.remaining(),
            });
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(f(self)?);
        }
        Ok(out)
    }
    /// Any [`Canonical`] value.
    pub fn get<T: Canonical>(&mut self) -> Result<T> {
        T::decode_from(self)
    }
}

/// A value with exactly one canonical byte encoding.
pub trait Canonical: Sized {
    /// Short human name used in error messages (`"receipt"`, `"job"`, ...).
    const NAME: &'static str;

    /// Appends the canonical encoding.
    fn encode_to(&self, w: &mut Writer);

    /// Reads one value, refusing non-canonical input. Does not check for trailing bytes.
    fn decode_from(r: &mut Reader<'_>) -> Result<Self>;

    /// The canonical bytes of this value.
    fn to_canonical_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(128);
        self.encode_to(&mut w);
        w.into_bytes()
    }

    /// Decodes exactly one value from `bytes` (trailing bytes are an error).
    fn from_canonical_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let v = Self::decode_from(&mut r)?;
        r.finish(Self::NAME)?;
        Ok(v)
    }
}

/// Checks that a string is a bounded identifier: 1..=`max` bytes of `[A-Za-z0-9._:/+-]`, not
/// starting with `.` or `/` and without `..` or `//`. Used for model ids, profile ids, backends.
pub fn check_identifier(field: &'static str, s: &str, max: usize) -> Result<()> {
    if s.is_empty() {
        return Err(CoreError::field(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(CoreError::LengthTooLarge {
            field,
            len: s.len() as u64,
            max: max as u64,
        });
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/' | '+')))
    {
        return Err(CoreError::field(
            field,
            format!("character {c:?} is not allowed (use letters, digits and . _ - : / +)"),
        ));
    }
    if s.starts_with('.') || s.starts_with('/') || s.contains("..") || s.contains("//") {
        return Err(CoreError::field(
            field,
            "must not start with `.` or `/` or contain `..` or `//`",
        ));
    }
    Ok(())
}

/// Checks that a free-text string is at most `max` bytes and has no control characters.
pub fn check_text(field: &'static str, s: &str, max: usize) -> Result<()> {
    if s.len() > max {
        return Err(CoreError::LengthTooLarge {
            field,
            len: s.len() as u64,
            max: max as u64,
        });
    }
    if s.chars().any(char::is_control) {
        return Err(CoreError::field(field, "control characters are not allowed"));
    }
    Ok(())
}

/// Reads a bounded identifier (see [`check_identifier`]).
pub fn read_identifier(r: &mut Reader<'_>, max: u32, field: &'static str) -> Result<String> {
    let s = r.str(max, field)?;
    check_identifier(field, &s, max as usize)?;
    Ok(s)
}

/// Reads bounded free text (see [`check_text`]).
pub fn read_text(r: &mut Reader<'_>, max: u32, field: &'static str) -> Result<String> {
    let s = r.str(max, field)?;
    check_text(field, &s, max as usize)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_little_endian() {
        let mut w = Writer::new();
        w.u16(0x0102);
        w.u32(0x0304_0506);
        w.u64(7);
        w.bool(true);
        let b = w.into_bytes();
        assert_eq!(&b[..2], &[0x02, 0x01]);
        let mut r = Reader::new(&b);
        assert_eq!(r.u16("a").unwrap(), 0x0102);
        assert_eq!(r.u32("b").unwrap(), 0x0304_0506);
        assert_eq!(r.u64("c").unwrap(), 7);
        assert!(r.bool("d").unwrap());
        r.finish("test").unwrap();
    }

    #[test]
    fn bad_bool_and_option_tags_are_refused() {
        assert!(matches!(
            Reader::new(&[2]).bool("flag"),
            Err(CoreError::InvalidTag { tag: 2, .. })
        ));
        assert!(matches!(
            Reader::new(&[7]).option("opt", |r| r.u8("x")),
            Err(CoreError::InvalidTag { tag: 7, .. })
        ));
    }

    #[test]
    fn oversize_lengths_are_refused_before_allocation() {
        let mut w = Writer::new();
        w.u32(1000);
        let b = w.into_bytes();
        assert!(matches!(
            Reader::new(&b).str(10, "name"),
            Err(CoreError::LengthTooLarge { len: 1000, max: 10, .. })
        ));
        let mut w = Writer::new();
        w.u32(u32::MAX);
        let b = w.into_bytes();
        assert!(matches!(
            Reader::new(&b).list(u32::MAX, "items", |r| r.u8("x")),
            Err(CoreError::LengthTooLarge { .. })
        ));
    }

    #[test]
    fn invalid_utf8_and_trailing_bytes_are_refused() {
        let b = [2, 0, 0, 0, 0xff, 0xfe];
        assert!(matches!(
            Reader::new(&b).str(10, "s"),
            Err(CoreError::InvalidUtf8 { .. })
        ));
        let mut r = Reader::new(&[1, 2]);
        r.u8("x").unwrap();
        assert!(matches!(
            r.finish("thing"),
            Err(CoreError::TrailingBytes { count: 1, .. })
        ));
    }

    #[test]
    fn identifiers_refuse_traversal_and_odd_characters() {
        check_identifier("id", "smollm2-135m-instruct:q4_1", 64).unwrap();
        check_identifier("id", "llama.cpp", 64).unwrap();
        for bad in ["", "../etc", "a/../b", "/abs", "a b", "a\0b", ".hidden", "a//b", "é"] {
            assert!(check_identifier("id", bad, 64).is_err(), "{bad:?} accepted");
        }
        assert!(check_identifier("id", &"a".repeat(65), 64).is_err());
    }
}
