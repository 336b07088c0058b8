//! Identifiers, each with one `parse`: customer ids, sealing-key ids and
//! content key ids (kids). The configuration, the token format, the CLI and
//! the stats all take these types, so a value one of them accepts is a
//! value every other accepts. Also the hex rule the API's messages share.

use std::borrow::Borrow;
use std::fmt;

/// An identifier that breaks its rule; its `Display` states the rule (never
/// the value, so it is safe to print next to a field name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdError {
    /// The rule, e.g. `1 to 64 characters of [A-Za-z0-9_-]`.
    pub rule: &'static str,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {}", self.rule)
    }
}

impl std::error::Error for IdError {}

/// Whether `text` is 1 to `max` bytes, each ASCII alphanumeric or in `extra`.
fn is_identifier(text: &str, max: usize, extra: &[u8]) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

/// Declares a `String` newtype with one `parse`, `as_str`, `Display`,
/// `Debug` and `Borrow<str>` (so maps keyed by it are read with `&str`).
macro_rules! identifier {
    ($(#[doc = $doc:literal])* $name:ident, max = $max:expr, extra = $extra:literal, rule = $rule:literal) => {
        $(#[doc = $doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The one place this identifier's rule is written.
            pub fn parse(text: &str) -> Result<Self, IdError> {
                if is_identifier(text, $max, $extra) {
                    Ok(Self(text.to_owned()))
                } else {
                    Err(IdError { rule: $rule })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

/// The longest customer id, in bytes (ASCII).
pub const MAX_CUSTOMER_ID_LEN: usize = 64;
/// The longest sealing key id, in bytes (ASCII).
pub const MAX_KEY_ID_LEN: usize = 32;

identifier! {
    /// A customer id: 1 to 64 characters of `[A-Za-z0-9_-]`. No `.`: the id
    /// is a segment of stat names (`fpgen.customer.<id>.tokens_minted`),
    /// and Envoy's tag rules split on dots.
    CustomerId, max = MAX_CUSTOMER_ID_LEN, extra = b"_-", rule = "1 to 64 characters of [A-Za-z0-9_-]"
}

identifier! {
    /// A sealing key's id: 1 to 32 characters of `[A-Za-z0-9._-]`. It is
    /// written in every token's header (one length byte, then the id).
    KeyId, max = MAX_KEY_ID_LEN, extra = b"._-", rule = "1 to 32 characters of [A-Za-z0-9._-]"
}

/// The longest `^` kid, in characters after the `^` (the reference's rule).
pub const MAX_KID_STRING_CHARS: usize = 64;
/// The longest `^` kid in bytes of UTF-8 after the `^`: a token holds the
/// name behind a one-byte length, so 64 characters of 4 bytes each (256)
/// cannot be sealed. fpgen's own rule beside the reference's.
pub const MAX_KID_STRING_BYTES: usize = 255;

/// What is wrong with a hex parameter, for messages that are true of the
/// input: its length, or the first character that is not a hex digit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HexProblem {
    /// The value has this many characters, not the expected number.
    Length(usize),
    /// The character at this 1-based position is not a hex digit.
    NotHex(usize),
}

/// `bytes` in lower-case hex. (`hex::encode` builds its string one `char`
/// at a time, several times slower on the request path.)
pub fn hex_lower(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    // encode_to_slice only fails for an output that is not twice the input
    if hex::encode_to_slice(bytes, &mut out).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

impl HexProblem {
    /// Checks that `text` is `digits` hex digits; `None` when it is.
    pub fn of(text: &str, digits: &[usize]) -> Option<Self> {
        // the usual case, in one pass over the bytes: ASCII hex digits only
        // (so bytes are characters), of an accepted length
        if digits.contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let chars = text.chars().count();
        if !digits.contains(&chars) {
            return Some(Self::Length(chars));
        }
        text.chars()
            .position(|c| !c.is_ascii_hexdigit())
            .map(|i| Self::NotHex(i + 1))
    }
}

impl fmt::Display for HexProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length(n) => write!(f, "got {n} characters"),
            Self::NotHex(i) => write!(f, "character {i} is not a hex digit"),
        }
    }
}

/// Why a `kid` is not valid (each is its own API code; see `request`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KidError {
    /// A hex kid that is not 32 hex digits.
    Hex(HexProblem),
    /// A `^` name longer than [`MAX_KID_STRING_CHARS`] (its length).
    TooLong(usize),
    /// A `^` name within [`MAX_KID_STRING_CHARS`] but longer than
    /// [`MAX_KID_STRING_BYTES`] in UTF-8 (its length in bytes).
    TooManyBytes(usize),
    /// A `^` with no name after it.
    Empty,
    /// A name with a control character.
    Control,
}

impl fmt::Display for KidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hex(problem) => problem.fmt(f),
            Self::TooLong(chars) => write!(f, "{chars} characters"),
            Self::TooManyBytes(bytes) => write!(f, "{bytes} bytes"),
            Self::Empty => f.write_str("empty name after ^"),
            Self::Control => f.write_str("control character in name"),
        }
    }
}

/// A content key id: 16 bytes, or a `^`-prefixed name of 1 to 64 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kid {
    Bytes([u8; 16]),
    Name(String),
}

impl Kid {
    /// Parses the `kid` parameter: 32 hex digits, or `^` and a name (see
    /// [`Kid::name`]).
    pub fn parse(text: &str) -> Result<Self, KidError> {
        if let Some(name) = text.strip_prefix('^') {
            return Self::name(name);
        }
        if let Some(problem) = HexProblem::of(text, &[32]) {
            return Err(KidError::Hex(problem));
        }
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| KidError::Hex(HexProblem::NotHex(1)))?;
        Ok(Self::Bytes(bytes))
    }

    /// A named kid (the text after `^`): 1 to 64 characters and at most
    /// 255 bytes of UTF-8, no control characters.
    pub fn name(name: &str) -> Result<Self, KidError> {
        let chars = name.chars().count();
        if chars > MAX_KID_STRING_CHARS {
            return Err(KidError::TooLong(chars));
        }
        if name.len() > MAX_KID_STRING_BYTES {
            return Err(KidError::TooManyBytes(name.len()));
        }
        if chars == 0 {
            return Err(KidError::Empty);
        }
        if name.chars().any(char::is_control) {
            return Err(KidError::Control);
        }
        Ok(Self::Name(name.to_owned()))
    }
}

impl fmt::Display for Kid {
    /// The parameter form: lower-case hex, or `^name`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bytes(b) => f.write_str(&hex_lower(b)),
            Self::Name(n) => write!(f, "^{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_ids_refuse_dots_key_ids_allow_them() {
        assert_eq!(
            CustomerId::parse("acme_eu-1").unwrap().as_str(),
            "acme_eu-1"
        );
        for bad in ["acme.eu", "", "a b", "é", &"a".repeat(65)] {
            let e = CustomerId::parse(bad).unwrap_err();
            assert_eq!(
                e.to_string(),
                "expected 1 to 64 characters of [A-Za-z0-9_-]"
            );
        }
        assert!(CustomerId::parse(&"a".repeat(64)).is_ok());
        assert!(KeyId::parse("demo-2026.11_a").is_ok());
        assert!(KeyId::parse(&"k".repeat(33)).is_err());
        assert!(KeyId::parse("k/1").is_err());
    }

    #[test]
    fn kid_forms() {
        assert_eq!(
            Kid::parse("00112233445566778899AABBCCDDEEFF")
                .unwrap()
                .to_string(),
            "00112233445566778899aabbccddeeff"
        );
        assert_eq!(Kid::parse("^movie-1").unwrap(), Kid::Name("movie-1".into()));
        assert!(Kid::parse(&format!("^{}", "é".repeat(64))).is_ok());
        // 64 characters, but the token's one-byte length holds 255 bytes
        let emoji = "\u{1F600}".repeat(64);
        assert_eq!(
            Kid::parse(&format!("^{emoji}")).unwrap_err(),
            KidError::TooManyBytes(256)
        );
        let widest = format!("^\u{20AC}{}", "\u{1F600}".repeat(63));
        assert_eq!(widest.len() - 1, MAX_KID_STRING_BYTES);
        assert!(Kid::parse(&widest).is_ok());
        let err = |t: &str| Kid::parse(t).unwrap_err();
        assert_eq!(err(&format!("^{}", "a".repeat(65))), KidError::TooLong(65));
        assert_eq!(err("^"), KidError::Empty);
        assert_eq!(err("^a\u{0}b"), KidError::Control);
        assert_eq!(err("0011"), KidError::Hex(HexProblem::Length(4)));
        assert_eq!(
            err("zz112233445566778899aabbccddeeff"),
            KidError::Hex(HexProblem::NotHex(1))
        );
        assert_eq!(err(""), KidError::Hex(HexProblem::Length(0)));
    }
}
