//! What a token carries: everything a licence server needs to answer a
//! licence request of its DRM without calling anyone. One [`Licence`] per
//! DRM: FairPlay's [`LicenceData`], Widevine's [`WidevineLicence`],
//! PlayReady's [`PlayReadyLicence`].

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

/// The DRM a token endpoint, a token and a gate are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Drm {
    FairPlay,
    Widevine,
    PlayReady,
}

impl Drm {
    /// Every DRM fpgen serves.
    pub const ALL: [Drm; 3] = [Drm::FairPlay, Drm::Widevine, Drm::PlayReady];

    /// `fairplay`, `widevine`, `playready`: in logs, headers and `fpgen`
    /// commands.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FairPlay => "fairplay",
            Self::Widevine => "widevine",
            Self::PlayReady => "playready",
        }
    }

    /// The DRM a name (as [`Drm::as_str`] writes it) names.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// The token endpoint's path (also answered with a trailing `/`).
    pub const fn token_path(self) -> &'static str {
        match self {
            Self::FairPlay => "/hms/fp/token",
            Self::Widevine => "/hms/wv/token",
            Self::PlayReady => "/hms/pr/token",
        }
    }

    /// The hosted service's licence path, the default of the gate's prefix
    /// and of the licence URL's path (PlayReady's is its licence server's
    /// SOAP endpoint).
    pub const fn rights_path(self) -> &'static str {
        match self {
            Self::FairPlay => "/hms/fp/rights/",
            Self::Widevine => "/hms/wv/rights/",
            Self::PlayReady => "/playready/RightsManager.asmx",
        }
    }

    /// The byte that names the DRM in a version-2 token header.
    pub(crate) const fn tag(self) -> u8 {
        match self {
            Self::FairPlay => 0,
            Self::Widevine => 1,
            Self::PlayReady => 2,
        }
    }

    pub(crate) fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.tag() == tag)
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
            "fp_extensions": extensions_json(&self.extensions),
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

/// A Widevine track type (`trackType`): which tracks a key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackType {
    Sd,
    Hd,
    Audio,
    Uhd1,
    Uhd2,
}

impl TrackType {
    /// By the API's number (0 SD, 1 HD, 2 AUDIO, 3 UHD1, 4 UHD2).
    pub const fn from_number(n: u8) -> Option<Self> {
        match n {
            0 => Some(Self::Sd),
            1 => Some(Self::Hd),
            2 => Some(Self::Audio),
            3 => Some(Self::Uhd1),
            4 => Some(Self::Uhd2),
            _ => None,
        }
    }

    /// The API's number.
    pub const fn number(self) -> u8 {
        match self {
            Self::Sd => 0,
            Self::Hd => 1,
            Self::Audio => 2,
            Self::Uhd1 => 3,
            Self::Uhd2 => 4,
        }
    }

    /// Widevine's name of it (`SD`, `HD`, `AUDIO`, `UHD1`, `UHD2`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sd => "SD",
            Self::Hd => "HD",
            Self::Audio => "AUDIO",
            Self::Uhd1 => "UHD1",
            Self::Uhd2 => "UHD2",
        }
    }
}

/// One key of a Widevine licence: its kid, the content key and its
/// output rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WidevineKey {
    pub kid: Kid,
    pub content_key: ContentKey,
    /// `securityLevel`, 1 (`SW_SECURE_CRYPTO`) to 5 (`HW_SECURE_ALL`).
    pub security_level: u8,
    /// `hdcpOutputControl`, 0 (`HDCP_NONE`) to 5 (no digital output).
    pub hdcp_output_control: u8,
    pub track_type: Option<TrackType>,
}

/// The licence data sealed in a Widevine token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WidevineLicence {
    pub environment: Environment,
    pub customer_id: CustomerId,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds; the token is invalid from this second on.
    pub expires_at: i64,
    /// Key 0 (`kid`), then the indexed keys (`kid.N`) in index order.
    pub keys: Vec<WidevineKey>,
    /// `licenseDuration` in seconds; 0: no limit.
    pub license_duration: u32,
    /// `playbackDuration` in seconds; 0: no limit.
    pub playback_duration: u32,
    pub general_flags: u32,
    /// `contentId`, as sent (visible ASCII).
    pub content_id: Option<String>,
    /// Every `wvExtension`, in order.
    pub extensions: Vec<FpExtension>,
    pub cookie: Option<String>,
}

/// PlayReady's `rightsType`, with a rental's times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rights {
    /// `BuyToOwn`: no rental times.
    BuyToOwn,
    /// `Rental`: no playback after `period_end` (Unix seconds); once
    /// playback starts, at most `play_duration` seconds of it (when set).
    Rental {
        period_end: i64,
        play_duration: Option<u32>,
    },
}

impl Rights {
    /// The API's name (`BuyToOwn`, `Rental`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BuyToOwn => "BuyToOwn",
            Self::Rental { .. } => "Rental",
        }
    }
}

/// PlayReady's `unknownOutputBehavior`: what a device does with an output
/// the licence does not name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownOutput {
    Allow,
    Disallow,
    SdOnly,
}

impl UnknownOutput {
    /// Every behaviour, in the order of their number in a token (1, 2, 3).
    pub const ALL: [UnknownOutput; 3] = [Self::Allow, Self::Disallow, Self::SdOnly];

    /// The API's name (`Allow`, `Disallow`, `SDOnly`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "Allow",
            Self::Disallow => "Disallow",
            Self::SdOnly => "SDOnly",
        }
    }

    /// The behaviour the API's name names (case-sensitive).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.as_str() == text)
    }
}

/// PlayReady's five output protection levels (`…OPL`), each 0 to 999.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OutputLevels {
    pub analog_video: u16,
    pub compressed_digital_audio: u16,
    pub compressed_digital_video: u16,
    pub uncompressed_digital_audio: u16,
    pub uncompressed_digital_video: u16,
}

impl OutputLevels {
    /// The levels in the API's order, with their header names.
    pub fn named(&self) -> [(&'static str, u16); 5] {
        [
            ("analog-video-opl", self.analog_video),
            (
                "compressed-digital-audio-opl",
                self.compressed_digital_audio,
            ),
            (
                "compressed-digital-video-opl",
                self.compressed_digital_video,
            ),
            (
                "uncompressed-digital-audio-opl",
                self.uncompressed_digital_audio,
            ),
            (
                "uncompressed-digital-video-opl",
                self.uncompressed_digital_video,
            ),
        ]
    }
}

/// The minimum certificate security levels a PlayReady key may ask for
/// (`minCertSecurityLevel`).
pub const CERT_SECURITY_LEVELS: [u16; 3] = [150, 2000, 3000];

/// One key of a PlayReady licence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlayReadyKey {
    pub kid: Kid,
    pub content_key: ContentKey,
    /// `minCertSecurityLevel` (150, 2000 or 3000), when given.
    pub min_cert_security_level: Option<u16>,
}

/// The licence data sealed in a PlayReady token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlayReadyLicence {
    pub environment: Environment,
    pub customer_id: CustomerId,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds; the token is invalid from this second on.
    pub expires_at: i64,
    /// Key 0 (`kid`), then the indexed keys (`kid.N`) in index order.
    pub keys: Vec<PlayReadyKey>,
    pub rights: Rights,
    pub output_levels: OutputLevels,
    pub unknown_output: Option<UnknownOutput>,
    /// `outputControlFlags`, when given.
    pub output_control_flags: Option<u32>,
    pub general_flags: u32,
    /// `extensionType` and `extensionPayload`, when given.
    pub extension: Option<FpExtension>,
    pub cookie: Option<String>,
}

impl PlayReadyLicence {
    /// Whether the licence is persistent (`generalFlags` `00000001`).
    pub const fn persistent(&self) -> bool {
        self.general_flags & 1 == 1
    }

    /// The licence data as JSON (the shape of the test vectors' `licence`,
    /// plus the times in RFC 3339); content keys only when
    /// `show_content_key` is set.
    pub fn to_json(&self, show_content_key: bool) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .map(|k| {
                let key = serde_json::json!({
                    "kid": k.kid.to_string(),
                    "min_cert_security_level": k.min_cert_security_level,
                });
                with_content_key(key, &k.content_key, show_content_key)
            })
            .collect();
        let (period_end, play_duration) = match self.rights {
            Rights::BuyToOwn => (None, None),
            Rights::Rental {
                period_end,
                play_duration,
            } => (Some(period_end), play_duration),
        };
        let o = &self.output_levels;
        serde_json::json!({
            "environment": self.environment.as_str(),
            "customer_id": self.customer_id.as_str(),
            "issued_at": self.issued_at,
            "issued_at_utc": rfc3339(self.issued_at),
            "expires_at": self.expires_at,
            "expires_at_utc": rfc3339(self.expires_at),
            "keys": keys,
            "rights_type": self.rights.as_str(),
            "rental_period_end": period_end,
            "rental_play_duration": play_duration,
            "output_levels": {
                "analog_video": o.analog_video,
                "compressed_digital_audio": o.compressed_digital_audio,
                "compressed_digital_video": o.compressed_digital_video,
                "uncompressed_digital_audio": o.uncompressed_digital_audio,
                "uncompressed_digital_video": o.uncompressed_digital_video,
            },
            "unknown_output_behavior": self.unknown_output.map(UnknownOutput::as_str),
            "output_control_flags": self.output_control_flags,
            "general_flags": self.general_flags,
            "extension": extensions_json(self.extension.as_slice()).get(0).cloned(),
            "cookie": self.cookie,
        })
    }
}

/// The licence data of a token, of its DRM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Licence {
    FairPlay(LicenceData),
    Widevine(WidevineLicence),
    PlayReady(PlayReadyLicence),
}

impl Licence {
    pub fn drm(&self) -> Drm {
        match self {
            Self::FairPlay(_) => Drm::FairPlay,
            Self::Widevine(_) => Drm::Widevine,
            Self::PlayReady(_) => Drm::PlayReady,
        }
    }

    pub fn environment(&self) -> Environment {
        match self {
            Self::FairPlay(d) => d.environment,
            Self::Widevine(d) => d.environment,
            Self::PlayReady(d) => d.environment,
        }
    }

    pub fn customer_id(&self) -> &CustomerId {
        match self {
            Self::FairPlay(d) => &d.customer_id,
            Self::Widevine(d) => &d.customer_id,
            Self::PlayReady(d) => &d.customer_id,
        }
    }

    pub fn issued_at(&self) -> i64 {
        match self {
            Self::FairPlay(d) => d.issued_at,
            Self::Widevine(d) => d.issued_at,
            Self::PlayReady(d) => d.issued_at,
        }
    }

    pub fn expires_at(&self) -> i64 {
        match self {
            Self::FairPlay(d) => d.expires_at,
            Self::Widevine(d) => d.expires_at,
            Self::PlayReady(d) => d.expires_at,
        }
    }

    /// The licence data as JSON, with its `drm` (see
    /// [`LicenceData::to_json`]); content keys only when
    /// `show_content_key` is set.
    pub fn to_json(&self, show_content_key: bool) -> serde_json::Value {
        let mut v = match self {
            Self::FairPlay(d) => d.to_json(show_content_key),
            Self::Widevine(d) => d.to_json(show_content_key),
            Self::PlayReady(d) => d.to_json(show_content_key),
        };
        if let Some(map) = v.as_object_mut() {
            map.insert("drm".into(), self.drm().as_str().into());
        }
        v
    }
}

impl WidevineLicence {
    /// The licence data as JSON (the shape of the test vectors' `licence`,
    /// plus the times in RFC 3339); content keys only when
    /// `show_content_key` is set.
    pub fn to_json(&self, show_content_key: bool) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .map(|k| {
                let key = serde_json::json!({
                    "kid": k.kid.to_string(),
                    "security_level": k.security_level,
                    "hdcp_output_control": k.hdcp_output_control,
                    "track_type": k.track_type.map(TrackType::as_str),
                });
                with_content_key(key, &k.content_key, show_content_key)
            })
            .collect();
        serde_json::json!({
            "environment": self.environment.as_str(),
            "customer_id": self.customer_id.as_str(),
            "issued_at": self.issued_at,
            "issued_at_utc": rfc3339(self.issued_at),
            "expires_at": self.expires_at,
            "expires_at_utc": rfc3339(self.expires_at),
            "keys": keys,
            "license_duration": self.license_duration,
            "playback_duration": self.playback_duration,
            "general_flags": self.general_flags,
            "content_id": self.content_id,
            "cookie": self.cookie,
            "wv_extensions": extensions_json(&self.extensions),
        })
    }
}

/// A key as JSON, with its `content_key` when `show` is set.
fn with_content_key(
    mut key: serde_json::Value,
    content_key: &ContentKey,
    show: bool,
) -> serde_json::Value {
    if let (true, Some(map)) = (show, key.as_object_mut()) {
        map.insert(
            "content_key".into(),
            hex::encode(content_key.expose()).into(),
        );
    }
    key
}

/// Extensions as JSON: `[{"type": …, "payload": <base64>}, …]`.
fn extensions_json(extensions: &[FpExtension]) -> serde_json::Value {
    use base64::Engine as _;
    extensions
        .iter()
        .map(|e| {
            serde_json::json!({
                "type": e.kind_str(),
                "payload": base64::engine::general_purpose::STANDARD.encode(&e.payload),
            })
        })
        .collect()
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
