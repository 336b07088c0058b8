//! What a token carries: everything a licence server needs to answer a
//! FairPlay licence request without calling anyone.

use crate::error::{ApiError, ErrorCode};
use crate::secret::ContentKey;
use std::fmt;

/// The longest `^` kid, in characters after the `^`.
pub const MAX_KID_STRING_CHARS: usize = 64;

/// What is wrong with a hex parameter, for messages that are true of the
/// input: its length, or the first character that is not a hex digit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HexProblem {
    /// The value has this many characters, not the expected number.
    Length(usize),
    /// The character at this 1-based position is not a hex digit.
    NotHex(usize),
}

impl HexProblem {
    /// Checks that `text` is `digits` hex digits; `None` when it is.
    pub fn of(text: &str, digits: &[usize]) -> Option<Self> {
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
        if let Some(problem) = HexProblem::of(text, &[32]) {
            return Err(ApiError::new(ErrorCode::KidHexFormat, problem.to_string()));
        }
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| ApiError::from(ErrorCode::KidHexFormat))?;
        Ok(Self::Bytes(bytes))
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

impl LicenceData {
    /// The licence data as JSON (the shape of the test vectors' `licence`,
    /// plus the times in RFC 3339). The content key is included only when
    /// `show_content_key` is set.
    pub fn to_json(&self, show_content_key: bool) -> serde_json::Value {
        use base64::Engine as _;
        let mut v = serde_json::json!({
            "environment": self.environment.as_str(),
            "customer_id": self.customer_id,
            "issued_at": self.issued_at,
            "issued_at_utc": rfc3339(self.issued_at),
            "expires_at": self.expires_at,
            "expires_at_utc": rfc3339(self.expires_at),
            "iv": hex::encode(self.iv),
            "kid": self.kid.as_ref().map(Kid::to_string),
            "rental_duration": self.rental_duration,
            "general_flags": self.general_flags,
            "cookie": self.cookie,
            "fp_extensions": self.extensions.iter().map(|e| serde_json::json!({
                "type": e.kind_str(),
                "payload": base64::engine::general_purpose::STANDARD.encode(&e.payload),
            })).collect::<Vec<_>>(),
        });
        if show_content_key {
            if let Some(map) = v.as_object_mut() {
                map.insert(
                    "content_key".into(),
                    hex::encode(self.content_key.expose()).into(),
                );
            }
        }
        v
    }
}

/// Unix seconds as an RFC 3339 UTC time (`2026-11-23T05:00:00Z`); empty when
/// out of range.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_hides_the_content_key_unless_asked() {
        let d = LicenceData {
            environment: Environment::Production,
            customer_id: "7".into(),
            issued_at: 0,
            expires_at: 1_800_000_000,
            content_key: ContentKey::new([0xab; 16]),
            iv: [1; 16],
            kid: Some(Kid::Name("m".into())),
            rental_duration: 5,
            general_flags: 1,
            extensions: vec![FpExtension {
                kind: *b"wudo",
                payload: vec![0, 0, 0, 0],
            }],
            cookie: None,
        };
        let hidden = d.to_json(false);
        assert!(hidden.get("content_key").is_none());
        assert!(!hidden.to_string().contains("abab"));
        assert_eq!(hidden["expires_at_utc"], "2027-01-15T08:00:00Z");
        assert_eq!(hidden["kid"], "^m");
        assert_eq!(hidden["fp_extensions"][0]["payload"], "AAAAAA==");
        assert_eq!(d.to_json(true)["content_key"], "ab".repeat(16));
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
        let message = |t: &str| Kid::parse(t).unwrap_err().message();
        assert_eq!(
            message("0011"),
            "kid must be 32 hex characters: got 4 characters"
        );
        assert_eq!(
            message("00112233445566778899aabbccddeefg"),
            "kid must be 32 hex characters: character 32 is not a hex digit"
        );
    }
}
