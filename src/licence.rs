//! What a token carries: everything a licence server needs to answer a
//! FairPlay licence request without calling anyone.

use crate::error::{ApiError, ErrorCode};
use crate::secret::ContentKey;
use std::fmt;

/// The longest `^` kid, in characters after the `^`.
pub const MAX_KID_STRING_CHARS: usize = 64;

/// A content key id: 16 bytes, or a `^`-prefixed name of 1 to 64 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kid {
    Bytes([u8; 16]),
    Name(String),
}

impl Kid {
    /// Parses the `kid` parameter: 32 hex digits, or `^` and 1 to 64
    /// characters (no control characters).
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        if let Some(name) = text.strip_prefix('^') {
            let chars = name.chars().count();
            if chars > MAX_KID_STRING_CHARS {
                return Err(ApiError::new(
                    ErrorCode::KidStringTooLong,
                    format!("{chars} characters"),
                ));
            }
            if chars == 0 {
                return Err(ApiError::new(ErrorCode::InvalidKid, "empty name after ^"));
            }
            if name.chars().any(char::is_control) {
                return Err(ApiError::new(
                    ErrorCode::InvalidKid,
                    "control character in name",
                ));
            }
            return Ok(Self::Name(name.to_owned()));
        }
        let mut bytes = [0u8; 16];
        match hex::decode_to_slice(text, &mut bytes) {
            Ok(()) => Ok(Self::Bytes(bytes)),
            Err(_) => Err(ApiError::new(
                ErrorCode::KidHexFormat,
                format!("got {} characters", text.chars().count()),
            )),
        }
    }
}

impl fmt::Display for Kid {
    /// The parameter form: lower-case hex, or `^name`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bytes(b) => f.write_str(&hex::encode(b)),
            Self::Name(n) => write!(f, "^{n}"),
        }
    }
}

/// The environment a token or an authenticator belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Test,
    Production,
}

impl Environment {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::Production => "production",
        }
    }
}

/// One `fpExtension`: a 4-character type and its decoded payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FpExtension {
    pub kind: [u8; 4],
    pub payload: Vec<u8>,
}

impl FpExtension {
    /// The type as text (it is 4 ASCII characters by construction).
    pub fn kind_str(&self) -> &str {
        std::str::from_utf8(&self.kind).unwrap_or("????")
    }
}

/// The licence data sealed in a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LicenceData {
    pub environment: Environment,
    pub customer_id: String,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds; the token is invalid from this second on.
    pub expires_at: i64,
    pub content_key: ContentKey,
    pub iv: [u8; 16],
    pub kid: Option<Kid>,
    pub rental_duration: u32,
    pub general_flags: u32,
    pub extensions: Vec<FpExtension>,
    pub cookie: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let code = |t: &str| Kid::parse(t).unwrap_err().code;
        assert_eq!(
            code(&format!("^{}", "a".repeat(65))),
            ErrorCode::KidStringTooLong
        );
        assert_eq!(code("^"), ErrorCode::InvalidKid);
        assert_eq!(code("^a\u{0}b"), ErrorCode::InvalidKid);
        assert_eq!(code("0011"), ErrorCode::KidHexFormat);
        assert_eq!(
            code("zz112233445566778899aabbccddeeff"),
            ErrorCode::KidHexFormat
        );
        assert_eq!(code(""), ErrorCode::KidHexFormat);
    }
}
