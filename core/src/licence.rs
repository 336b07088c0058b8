//! What a token carries: everything a licence server needs to answer a
//! FairPlay licence request without calling anyone.

use crate::ids::{CustomerId, Kid};
use crate::secret::ContentKey;

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
    pub customer_id: CustomerId,
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
            "customer_id": self.customer_id.as_str(),
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
pub(crate) mod tests {
    use super::*;
    use crate::ids::Kid;

    /// Licence data with every optional field set, for the unit tests here
    /// and in `token`.
    pub(crate) fn sample() -> LicenceData {
        LicenceData {
            environment: Environment::Test,
            customer_id: CustomerId::parse("100001").unwrap(),
            issued_at: 1_700_000_000,
            expires_at: 1_700_000_060,
            content_key: ContentKey::new(*b"0123456789abcdef"),
            iv: [7; 16],
            kid: Some(Kid::Name("movie".into())),
            rental_duration: 3600,
            general_flags: 1,
            extensions: vec![FpExtension {
                kind: *b"wudo",
                payload: vec![0, 0, 0, 0],
            }],
            cookie: Some("session-42".into()),
        }
    }

    #[test]
    fn json_hides_the_content_key_unless_asked() {
        let mut d = sample();
        d.content_key = ContentKey::new([0xab; 16]);
        d.expires_at = 1_800_000_000;
        let hidden = d.to_json(false);
        assert!(hidden.get("content_key").is_none());
        assert!(!hidden.to_string().contains("abab"));
        assert_eq!(hidden["expires_at_utc"], "2027-01-15T08:00:00Z");
        assert_eq!(hidden["kid"], "^movie");
        assert_eq!(hidden["cookie"], "session-42");
        assert_eq!(hidden["fp_extensions"][0]["payload"], "AAAAAA==");
        assert_eq!(d.to_json(true)["content_key"], "ab".repeat(16));
    }
}
