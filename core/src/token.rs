//! The token format: a compact binary payload sealed with
//! XChaCha20-Poly1305 and encoded as base64url without padding.
//!
//! ```text
//! token   = base64url( header || nonce(24) || ciphertext || tag(16) )
//! header  = 0x01 || key_id_len(1) || key_id                (version 1: FairPlay)
//!         | 0x02 || drm(1) || key_id_len(1) || key_id      (version 2: any DRM)
//! payload = the DRM's, see docs/token-format.md
//! ```
//!
//! The header is the AEAD's associated data: the DRM a token is for is
//! bound to it, and no token opens as another DRM's. FairPlay tokens are
//! still sealed as version 1, byte for byte what earlier releases minted,
//! so that during a rolling upgrade (and after a rollback) every edge
//! redeems every other edge's FairPlay tokens; version 2 carries the other
//! DRMs (and may carry FairPlay's payload, which is read as well).
//!
//! The full specification, with test vectors, is `docs/token-format.md`.

//!
//! The keys live here too ([`SealingKey`], [`KeyRing`]): the format and the
//! keys it is sealed with belong together, and neither knows the
//! configuration's JSON. Opening moves a token through three types:
//! [`UntrustedToken`] (decoded, nothing verified), [`VerifiedToken`]
//! (authentic: sealed by a key of the ring) and [`TrustedToken`] (authentic,
//! for this environment and within its times).

use crate::ids::{
    CustomerId, KeyId, Kid, MAX_CUSTOMER_ID_LEN, MAX_KEY_ID_LEN, MAX_KID_STRING_BYTES,
};
use crate::licence::{
    Drm, Environment, FpExtension, Licence, LicenceData, OutputLevels, PlayReadyKey,
    PlayReadyLicence, Rights, TrackType, UnknownOutput, WidevineKey, WidevineLicence,
    CERT_SECURITY_LEVELS,
};
use crate::secret::{ContentKey, SealingKeyBytes};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use std::fmt;
use zeroize::Zeroizing;

/// The format version of FairPlay tokens (read and written).
pub const VERSION: u8 = 1;
/// The format version of tokens that name their DRM (read and written).
pub const VERSION_2: u8 = 2;
/// The most keys a Widevine or PlayReady token carries (`kid` and `kid.1`
/// to `kid.7`).
pub const MAX_WIDEVINE_KEYS: usize = 8;
/// The longest `contentId`, in bytes.
pub const MAX_CONTENT_ID_BYTES: usize = 64;
/// Nonce length (XChaCha20-Poly1305).
pub const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The most `fpExtension`s a token carries.
pub const MAX_EXTENSIONS: usize = 16;
/// The largest decoded `fpExtension` payload, in bytes.
pub const MAX_EXTENSION_PAYLOAD: usize = 1024;
/// The longest `cookie`, in characters (each at most 4 bytes of UTF-8).
pub const MAX_COOKIE_CHARS: usize = 32;
/// The longest FairPlay payload the minting rules let through, in bytes:
/// every field at its limit (docs/token-format.md).
const MAX_PAYLOAD_LEN: usize = 1
    + 8
    + 8
    + (1 + MAX_CUSTOMER_ID_LEN)
    + 16
    + 16
    + (2 + MAX_KID_STRING_BYTES)
    + 4
    + 4
    + (1 + 4 * MAX_COOKIE_CHARS)
    + 1
    + MAX_EXTENSIONS * (4 + 2 + MAX_EXTENSION_PAYLOAD);
/// The longest Widevine payload: every field at its limit.
const MAX_WIDEVINE_PAYLOAD_LEN: usize = 1
    + 8
    + 8
    + (1 + MAX_CUSTOMER_ID_LEN)
    + 1
    + MAX_WIDEVINE_KEYS * ((2 + MAX_KID_STRING_BYTES) + 16 + 3)
    + 4
    + 4
    + 4
    + (1 + MAX_CONTENT_ID_BYTES)
    + (1 + 4 * MAX_COOKIE_CHARS)
    + 1
    + MAX_EXTENSIONS * (4 + 2 + MAX_EXTENSION_PAYLOAD);
/// The longest PlayReady payload: every field at its limit.
const MAX_PLAYREADY_PAYLOAD_LEN: usize = 1
    + 8
    + 8
    + (1 + MAX_CUSTOMER_ID_LEN)
    + 1
    + MAX_WIDEVINE_KEYS * ((2 + MAX_KID_STRING_BYTES) + 16 + 2)
    + (1 + 8 + 1 + 4)
    + 5 * 2
    + 1
    + (1 + 4)
    + 4
    + (1 + 4 * MAX_COOKIE_CHARS)
    + 1
    + (4 + 2 + MAX_EXTENSION_PAYLOAD);
/// The longest sealed FairPlay token (version 1) before base64: header,
/// nonce, payload, tag.
const MAX_SEALED_LEN: usize = 2 + MAX_KEY_ID_LEN + NONCE_LEN + MAX_PAYLOAD_LEN + TAG_LEN;
/// The longest sealed Widevine token (version 2) before base64.
const MAX_WIDEVINE_SEALED_LEN: usize =
    3 + MAX_KEY_ID_LEN + NONCE_LEN + MAX_WIDEVINE_PAYLOAD_LEN + TAG_LEN;
/// The longest FairPlay token, in base64 characters (22,751).
pub const MAX_FAIRPLAY_TOKEN_CHARS: usize = (MAX_SEALED_LEN * 4).div_ceil(3);
/// The longest sealed PlayReady token (version 2) before base64.
const MAX_PLAYREADY_SEALED_LEN: usize =
    3 + MAX_KEY_ID_LEN + NONCE_LEN + MAX_PLAYREADY_PAYLOAD_LEN + TAG_LEN;
/// Tokens longer than this (in base64 characters) are refused unread: the
/// length of the largest token the minting rules allow, of any DRM (a
/// Widevine token of eight keys, 25,404), so every token fpgen mints is one
/// its gate reads.
pub const MAX_TOKEN_CHARS: usize = {
    let widevine = (MAX_WIDEVINE_SEALED_LEN * 4).div_ceil(3);
    let playready = (MAX_PLAYREADY_SEALED_LEN * 4).div_ceil(3);
    let mut max = MAX_FAIRPLAY_TOKEN_CHARS;
    if widevine > max {
        max = widevine;
    }
    if playready > max {
        max = playready;
    }
    max
};
/// The longest lifetime a token may have (`expires_at - issued_at`): 30
/// days, the API's limit. A longer one was not minted by fpgen's rules.
pub const MAX_LIFETIME_SECONDS: i64 = 30 * 24 * 60 * 60;
/// How far in the future `issued_at` may lie when a token is opened: the
/// clock difference tolerated between the Envoy that minted it and the one
/// that opens it (both should run NTP; a minute is generous).
pub const MAX_CLOCK_SKEW_SECONDS: i64 = 60;

/// Why a token did not open. All of these are `-4010` on the wire; the
/// variants exist for logs, stats and the `inspect` tooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenError {
    /// Not base64url, too short or too long.
    Malformed,
    /// A version this code does not read.
    UnknownVersion,
    /// The key id names no key in the ring (never issued, or removed).
    UnknownKey,
    /// The AEAD tag does not verify: tampered, or sealed under another key.
    Forged,
    /// Authentic, but the payload does not parse (a bug in the minting side).
    BadPayload,
    /// Authentic, for the other environment.
    WrongEnvironment,
    /// Authentic, and past its expiry.
    Expired,
    /// Authentic, but issued more than [`MAX_CLOCK_SKEW_SECONDS`] in the
    /// future of the opener's clock.
    IssuedInFuture,
    /// Authentic, but valid for longer than [`MAX_LIFETIME_SECONDS`].
    LifetimeTooLong,
    /// Authentic, but for another DRM than the gate's.
    WrongDrm,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed token",
            Self::UnknownVersion => "unknown token version",
            Self::UnknownKey => "token sealed with an unknown key",
            Self::Forged => "token authentication failed",
            Self::BadPayload => "token payload is malformed",
            Self::WrongEnvironment => "token belongs to the other environment",
            Self::Expired => "token has expired",
            Self::IssuedInFuture => "token is issued in the future",
            Self::LifetimeTooLong => "token lifetime is longer than 30 days",
            Self::WrongDrm => "token is for another DRM",
        })
    }
}

impl TokenError {
    /// A stat-name segment for the reason.
    pub const fn stat_name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownVersion => "unknown_version",
            Self::UnknownKey => "unknown_key",
            Self::Forged => "forged",
            Self::BadPayload => "bad_payload",
            Self::WrongEnvironment => "wrong_environment",
            Self::Expired => "expired",
            Self::IssuedInFuture => "issued_in_future",
            Self::LifetimeTooLong => "lifetime_too_long",
            Self::WrongDrm => "wrong_drm",
        }
    }
}

impl std::error::Error for TokenError {}

/// Why a token could not be minted: the licence data does not fit the
/// format (the request validation keeps every API request within it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeError(&'static str);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "licence data does not fit the token format: {}", self.0)
    }
}

impl std::error::Error for EncodeError {}

/// A sealing key and its id.
#[derive(Debug, Clone)]
pub struct SealingKey {
    pub id: KeyId,
    pub key: SealingKeyBytes,
}

/// The sealing keys: one mints, all verify.
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: Vec<SealingKey>,
    active: usize,
}

impl KeyRing {
    /// A ring whose active key is `active` (an id among `keys`); `None`
    /// when no key has that id.
    pub fn new(keys: Vec<SealingKey>, active: &KeyId) -> Option<Self> {
        let active = keys.iter().position(|k| &k.id == active)?;
        Some(Self { keys, active })
    }

    /// The key that seals new tokens.
    pub fn active(&self) -> Option<&SealingKey> {
        self.keys.get(self.active)
    }

    /// The key a token names (its header's key id, as bytes).
    pub fn get(&self, id: &[u8]) -> Option<&SealingKey> {
        self.keys.iter().find(|k| k.id.as_str().as_bytes() == id)
    }
}

/// Seals `data` under `key` with `nonce` (which must be fresh and random for
/// every token) and returns the base64url token. The plaintext is built in
/// one buffer of the exact sealed size (so no reallocation leaves a copy
/// behind), encrypted in place, and zeroized when the buffer is dropped, on
/// every path.
pub fn seal(
    data: &LicenceData,
    key: &SealingKey,
    nonce: &[u8; NONCE_LEN],
) -> Result<String, EncodeError> {
    let mut out = Zeroizing::new(Vec::with_capacity(sealed_len(data, key)));
    out.push(VERSION);
    push_short(&mut out, key.id.as_str().as_bytes(), "sealing key id")?;
    let header_len = out.len();
    out.extend_from_slice(nonce);
    encode_payload(data, &mut out)?;
    encrypt(out, header_len, key)
}

/// Seals a licence of any DRM ([`seal`]'s rules): FairPlay's as version 1
/// (as [`seal`]), every other DRM's as version 2, its DRM in the header.
pub fn seal_licence(
    licence: &Licence,
    key: &SealingKey,
    nonce: &[u8; NONCE_LEN],
) -> Result<String, EncodeError> {
    let capacity = match licence {
        Licence::FairPlay(data) => return seal(data, key, nonce),
        Licence::Widevine(data) => widevine_sealed_len(data, key),
        Licence::PlayReady(data) => playready_sealed_len(data, key),
    };
    let mut out = Zeroizing::new(Vec::with_capacity(capacity));
    out.push(VERSION_2);
    out.push(licence.drm().tag());
    push_short(&mut out, key.id.as_str().as_bytes(), "sealing key id")?;
    let header_len = out.len();
    out.extend_from_slice(nonce);
    match licence {
        Licence::FairPlay(data) => encode_payload(data, &mut out)?,
        Licence::Widevine(data) => encode_widevine(data, &mut out)?,
        Licence::PlayReady(data) => encode_playready(data, &mut out)?,
    }
    encrypt(out, header_len, key)
}

/// Encrypts `out` (header of `header_len` bytes, nonce, payload) in place,
/// appends the tag and encodes it.
fn encrypt(
    mut out: Zeroizing<Vec<u8>>,
    header_len: usize,
    key: &SealingKey,
) -> Result<String, EncodeError> {
    let body_start = header_len + NONCE_LEN;
    let nonce = out
        .get(header_len..body_start)
        .and_then(|n| <[u8; NONCE_LEN]>::try_from(n).ok())
        .ok_or(EncodeError("header"))?;

    let cipher = XChaCha20Poly1305::new(key.key.expose().into());
    let (head, body) = out
        .split_at_mut_checked(body_start)
        .ok_or(EncodeError("header"))?;
    let aad = head.get(..header_len).ok_or(EncodeError("header"))?;
    let tag = cipher
        .encrypt_inout_detached(&XNonce::from(nonce), aad, body.into())
        .map_err(|_| EncodeError("payload too long"))?;
    out.extend_from_slice(&tag);
    Ok(URL_SAFE_NO_PAD.encode(out.as_slice()))
}

/// The length of a sealed token before base64: header, nonce, payload, tag.
fn sealed_len(d: &LicenceData, key: &SealingKey) -> usize {
    let kid = match &d.kid {
        None => 1,
        Some(Kid::Bytes(b)) => 1 + b.len(),
        Some(Kid::Name(n)) => 2 + n.len(),
    };
    let cookie = d.cookie.as_deref().map_or(0, str::len);
    let extensions: usize = d.extensions.iter().map(|e| 6 + e.payload.len()).sum();
    let payload = 1 + 8 + 8 + 1 + d.customer_id.as_str().len() + 16 + 16 + kid + 4 + 4;
    2 + key.id.as_str().len() + NONCE_LEN + payload + 1 + cookie + 1 + extensions + TAG_LEN
}

/// [`sealed_len`] of a Widevine token (version 2).
fn widevine_sealed_len(d: &WidevineLicence, key: &SealingKey) -> usize {
    let keys: usize = d.keys.iter().map(|k| kid_len(&k.kid) + 16 + 3).sum();
    let extensions: usize = d.extensions.iter().map(|e| 6 + e.payload.len()).sum();
    let payload = 1
        + 8
        + 8
        + 1
        + d.customer_id.as_str().len()
        + 1
        + keys
        + 12
        + 1
        + d.content_id.as_deref().map_or(0, str::len)
        + 1
        + d.cookie.as_deref().map_or(0, str::len)
        + 1
        + extensions;
    3 + key.id.as_str().len() + NONCE_LEN + payload + TAG_LEN
}

/// [`sealed_len`] of a PlayReady token (version 2).
fn playready_sealed_len(d: &PlayReadyLicence, key: &SealingKey) -> usize {
    let keys: usize = d.keys.iter().map(|k| kid_len(&k.kid) + 16 + 2).sum();
    let extension = d.extension.as_ref().map_or(0, |e| 6 + e.payload.len());
    let payload = 1
        + 8
        + 8
        + 1
        + d.customer_id.as_str().len()
        + 1
        + keys
        + 14
        + 10
        + 1
        + 5
        + 4
        + 1
        + d.cookie.as_deref().map_or(0, str::len)
        + 1
        + extension;
    3 + key.id.as_str().len() + NONCE_LEN + payload + TAG_LEN
}

/// The encoded length of a kid (its type byte included).
fn kid_len(kid: &Kid) -> usize {
    match kid {
        Kid::Bytes(b) => 1 + b.len(),
        Kid::Name(n) => 2 + n.len(),
    }
}

/// Opens and verifies a token: decodes it, finds its key in `ring`, checks the
/// tag, the environment, and its times against `now` (Unix seconds): not
/// expired, not issued more than [`MAX_CLOCK_SKEW_SECONDS`] ahead, and no
/// lifetime over [`MAX_LIFETIME_SECONDS`].
pub fn open(
    token: &str,
    ring: &KeyRing,
    environment: Environment,
    now: i64,
) -> Result<TrustedToken, TokenError> {
    UntrustedToken::parse(token)?
        .verify(ring)?
        .trust(environment, now)
}

/// A token as it arrived: decoded from base64url, its header read, nothing
/// verified. Its key id only chooses which key to try.
pub struct UntrustedToken {
    raw: Zeroizing<Vec<u8>>,
    /// Where the key id starts.
    id_start: usize,
    header_len: usize,
    /// The format version and the DRM its header names.
    version: u8,
    drm: Drm,
}

impl UntrustedToken {
    /// Decodes a token and reads its header (version and key id).
    pub fn parse(token: &str) -> Result<Self, TokenError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::Malformed);
        }
        let raw = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(token.as_bytes())
                .map_err(|_| TokenError::Malformed)?,
        );
        let (&version, rest) = raw.split_first().ok_or(TokenError::Malformed)?;
        let (drm, id_start) = match version {
            VERSION => (Drm::FairPlay, 2),
            VERSION_2 => {
                let &tag = rest.first().ok_or(TokenError::Malformed)?;
                (Drm::from_tag(tag).ok_or(TokenError::Malformed)?, 3)
            }
            _ => return Err(TokenError::UnknownVersion),
        };
        let &id_len = raw.get(id_start - 1).ok_or(TokenError::Malformed)?;
        let header_len = id_start + usize::from(id_len);
        if raw.len() < header_len + NONCE_LEN + TAG_LEN {
            return Err(TokenError::Malformed);
        }
        Ok(Self {
            raw,
            id_start,
            header_len,
            version,
            drm,
        })
    }

    /// The DRM the header names. Untrusted, as the key id is, until
    /// [`verify`](Self::verify): the header is authenticated with the
    /// payload.
    pub fn untrusted_drm(&self) -> Drm {
        self.drm
    }

    /// The key id the token names. Untrusted: anyone can write any id here;
    /// only [`verify`](Self::verify) tells whether the key sealed it.
    pub fn untrusted_key_id(&self) -> &[u8] {
        self.raw
            .get(self.id_start..self.header_len)
            .unwrap_or_default()
    }

    /// Checks the tag with the key the token names and decodes the payload.
    pub fn verify(mut self, ring: &KeyRing) -> Result<VerifiedToken, TokenError> {
        let key = ring
            .get(self.untrusted_key_id())
            .ok_or(TokenError::UnknownKey)?;
        let key_id = key.id.clone();
        let (header, rest) = self
            .raw
            .split_at_mut_checked(self.header_len)
            .ok_or(TokenError::Malformed)?;
        let (nonce, rest) = rest
            .split_at_mut_checked(NONCE_LEN)
            .ok_or(TokenError::Malformed)?;
        let body_len = rest
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(TokenError::Malformed)?;
        let (body, tag) = rest
            .split_at_mut_checked(body_len)
            .ok_or(TokenError::Malformed)?;
        let nonce = XNonce::try_from(&*nonce).map_err(|_| TokenError::Malformed)?;
        let tag = Tag::try_from(&*tag).map_err(|_| TokenError::Malformed)?;
        XChaCha20Poly1305::new(key.key.expose().into())
            .decrypt_inout_detached(&nonce, header, body.into(), &tag)
            .map_err(|_| TokenError::Forged)?;
        let data = match (self.version, self.drm) {
            (VERSION, _) | (_, Drm::FairPlay) => decode_payload(body).map(Licence::FairPlay),
            (_, Drm::Widevine) => decode_widevine(body).map(Licence::Widevine),
            (_, Drm::PlayReady) => decode_playready(body).map(Licence::PlayReady),
        };
        let data = data.ok_or(TokenError::BadPayload)?;
        Ok(VerifiedToken { key_id, data })
    }
}

/// An authentic token: sealed by a key of the ring. Its environment and
/// times are not checked yet: tooling may show it (marked as such), the
/// gate may not honour it before [`trust`](Self::trust).
#[derive(Debug)]
pub struct VerifiedToken {
    key_id: KeyId,
    data: Licence,
}

impl VerifiedToken {
    /// Whether the token is for `environment` and valid at `now`: not
    /// expired, not issued more than [`MAX_CLOCK_SKEW_SECONDS`] ahead, no
    /// lifetime over [`MAX_LIFETIME_SECONDS`].
    pub fn check(&self, environment: Environment, now: i64) -> Result<(), TokenError> {
        let d = &self.data;
        let (issued_at, expires_at) = (d.issued_at(), d.expires_at());
        if d.environment() != environment {
            return Err(TokenError::WrongEnvironment);
        }
        if now >= expires_at {
            return Err(TokenError::Expired);
        }
        if issued_at > now.saturating_add(MAX_CLOCK_SKEW_SECONDS) {
            return Err(TokenError::IssuedInFuture);
        }
        if expires_at.saturating_sub(issued_at) > MAX_LIFETIME_SECONDS {
            return Err(TokenError::LifetimeTooLong);
        }
        Ok(())
    }

    /// The token, trusted once [`check`](Self::check) passes.
    pub fn trust(self, environment: Environment, now: i64) -> Result<TrustedToken, TokenError> {
        self.check(environment, now)?;
        Ok(TrustedToken {
            key_id: self.key_id,
            data: self.data,
        })
    }

    /// The id of the key that sealed it (verified).
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The licence data: authentic, but possibly expired or for the other
    /// environment.
    pub fn licence(&self) -> &Licence {
        &self.data
    }
}

/// A token fpgen honours: authentic, for this environment, within its times.
#[derive(Debug)]
pub struct TrustedToken {
    key_id: KeyId,
    data: Licence,
}

impl TrustedToken {
    /// The id of the key that sealed it.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    pub fn licence(&self) -> &Licence {
        &self.data
    }

    pub fn into_licence(self) -> Licence {
        self.data
    }

    /// The FairPlay licence data; `None` for a token of another DRM.
    pub fn into_fairplay(self) -> Option<LicenceData> {
        match self.data {
            Licence::FairPlay(data) => Some(data),
            Licence::Widevine(_) | Licence::PlayReady(_) => None,
        }
    }

    /// The key id and the licence data, without copying either.
    pub fn into_parts(self) -> (KeyId, Licence) {
        (self.key_id, self.data)
    }
}

// ---- payload ---------------------------------------------------------------

const KID_NONE: u8 = 0;
const KID_BYTES: u8 = 1;
const KID_NAME: u8 = 2;

fn push_short(out: &mut Vec<u8>, bytes: &[u8], what: &'static str) -> Result<(), EncodeError> {
    let len = u8::try_from(bytes.len()).map_err(|_| EncodeError(what))?;
    out.push(len);
    out.extend_from_slice(bytes);
    Ok(())
}

/// The fields every DRM's payload begins with.
fn encode_head(
    environment: Environment,
    issued_at: i64,
    expires_at: i64,
    customer_id: &CustomerId,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    out.push(match environment {
        Environment::Test => 0,
        Environment::Production => 1,
    });
    out.extend_from_slice(&issued_at.to_be_bytes());
    out.extend_from_slice(&expires_at.to_be_bytes());
    push_short(out, customer_id.as_str().as_bytes(), "customer id")
}

fn encode_kid(kid: Option<&Kid>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match kid {
        None => out.push(KID_NONE),
        Some(Kid::Bytes(b)) => {
            out.push(KID_BYTES);
            out.extend_from_slice(b);
        }
        Some(Kid::Name(n)) => {
            out.push(KID_NAME);
            push_short(out, n.as_bytes(), "kid")?;
        }
    }
    Ok(())
}

/// The cookie and the extensions, with which every DRM's payload ends.
fn encode_tail(
    cookie: Option<&str>,
    extensions: &[FpExtension],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    push_short(out, cookie.unwrap_or("").as_bytes(), "cookie")?;
    if extensions.len() > MAX_EXTENSIONS {
        return Err(EncodeError("too many extensions"));
    }
    out.push(extensions.len() as u8);
    for ext in extensions {
        out.extend_from_slice(&ext.kind);
        let len = u16::try_from(ext.payload.len()).map_err(|_| EncodeError("extension payload"))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&ext.payload);
    }
    Ok(())
}

fn encode_payload(d: &LicenceData, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    encode_head(
        d.environment,
        d.issued_at,
        d.expires_at,
        &d.customer_id,
        out,
    )?;
    out.extend_from_slice(d.content_key.expose());
    out.extend_from_slice(&d.iv);
    encode_kid(d.kid.as_ref(), out)?;
    out.extend_from_slice(&d.rental_duration.to_be_bytes());
    out.extend_from_slice(&d.general_flags.to_be_bytes());
    encode_tail(d.cookie.as_deref(), &d.extensions, out)
}

/// The key count (1 to [`MAX_WIDEVINE_KEYS`]) and each key: its kid and
/// content key (`key` names them), then what `settings` writes of it.
fn encode_keys<K>(
    keys: &[K],
    key: impl Fn(&K) -> (&Kid, &ContentKey),
    out: &mut Vec<u8>,
    settings: impl Fn(&K, &mut Vec<u8>),
) -> Result<(), EncodeError> {
    if keys.is_empty() || keys.len() > MAX_WIDEVINE_KEYS {
        return Err(EncodeError("a token holds 1 to 8 keys"));
    }
    out.push(keys.len() as u8);
    for k in keys {
        let (kid, content_key) = key(k);
        encode_kid(Some(kid), out)?;
        out.extend_from_slice(content_key.expose());
        settings(k, out);
    }
    Ok(())
}

/// The track type byte of a Widevine key: its number, or 0xFF for none.
const NO_TRACK_TYPE: u8 = 0xFF;

fn encode_widevine(d: &WidevineLicence, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    encode_head(
        d.environment,
        d.issued_at,
        d.expires_at,
        &d.customer_id,
        out,
    )?;
    encode_keys(
        &d.keys,
        |k| (&k.kid, &k.content_key),
        out,
        |k, out| {
            out.push(k.security_level);
            out.push(k.hdcp_output_control);
            out.push(k.track_type.map_or(NO_TRACK_TYPE, TrackType::number));
        },
    )?;
    out.extend_from_slice(&d.license_duration.to_be_bytes());
    out.extend_from_slice(&d.playback_duration.to_be_bytes());
    out.extend_from_slice(&d.general_flags.to_be_bytes());
    let content_id = d.content_id.as_deref().unwrap_or("");
    if content_id.len() > MAX_CONTENT_ID_BYTES {
        return Err(EncodeError("contentId"));
    }
    push_short(out, content_id.as_bytes(), "contentId")?;
    encode_tail(d.cookie.as_deref(), &d.extensions, out)
}

/// A rental's tag in a PlayReady payload (`BuyToOwn` is 0).
const RIGHTS_RENTAL: u8 = 1;

fn encode_playready(d: &PlayReadyLicence, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    encode_head(
        d.environment,
        d.issued_at,
        d.expires_at,
        &d.customer_id,
        out,
    )?;
    encode_keys(
        &d.keys,
        |k| (&k.kid, &k.content_key),
        out,
        |k, out| {
            out.extend_from_slice(&k.min_cert_security_level.unwrap_or(0).to_be_bytes());
        },
    )?;
    let (tag, end, play) = match d.rights {
        Rights::BuyToOwn => (0, 0, None),
        Rights::Rental {
            period_end,
            play_duration,
        } => (RIGHTS_RENTAL, period_end, play_duration),
    };
    out.push(tag);
    out.extend_from_slice(&end.to_be_bytes());
    out.push(u8::from(play.is_some()));
    out.extend_from_slice(&play.unwrap_or(0).to_be_bytes());
    for (_, level) in d.output_levels.named() {
        out.extend_from_slice(&level.to_be_bytes());
    }
    out.push(d.unknown_output.map_or(0, |b| match b {
        UnknownOutput::Allow => 1,
        UnknownOutput::Disallow => 2,
        UnknownOutput::SdOnly => 3,
    }));
    out.push(u8::from(d.output_control_flags.is_some()));
    out.extend_from_slice(&d.output_control_flags.unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&d.general_flags.to_be_bytes());
    encode_tail(d.cookie.as_deref(), d.extension.as_slice(), out)
}

fn decode_playready(body: &[u8]) -> Option<PlayReadyLicence> {
    let mut r = Reader(body);
    let (environment, issued_at, expires_at, customer_id) = r.head()?;
    let keys = r.playready_keys()?;
    let rights = r.rights()?;
    let output_levels = r.output_levels()?;
    let unknown_output = match r.u8()? {
        0 => None,
        n => Some(*UnknownOutput::ALL.get(usize::from(n) - 1)?),
    };
    let output_control_flags = match (r.u8()?, r.be_u32()?) {
        (0, 0) => None,
        (1, flags) => Some(flags),
        _ => return None,
    };
    let general_flags = r.be_u32()?;
    let cookie = r.cookie()?;
    let mut extensions = r.extensions()?;
    if extensions.len() > 1 {
        return None;
    }
    let licence = PlayReadyLicence {
        environment,
        customer_id,
        issued_at,
        expires_at,
        keys,
        rights,
        output_levels,
        unknown_output,
        output_control_flags,
        general_flags,
        extension: extensions.pop(),
        cookie,
    };
    r.0.is_empty().then_some(licence)
}

/// The PlayReady payload's own fields, as `encode_playready` writes them.
impl Reader<'_> {
    fn playready_keys(&mut self) -> Option<Vec<PlayReadyKey>> {
        let count = self.key_count()?;
        let mut keys = Vec::with_capacity(count);
        for _ in 0..count {
            keys.push(PlayReadyKey {
                kid: self.kid()??,
                content_key: ContentKey::new(self.array()?),
                min_cert_security_level: match u16::from_be_bytes(self.array()?) {
                    0 => None,
                    level => Some(Some(level).filter(|l| CERT_SECURITY_LEVELS.contains(l))?),
                },
            });
        }
        Some(keys)
    }

    fn rights(&mut self) -> Option<Rights> {
        let tag = self.u8()?;
        let period_end = self.be_i64()?;
        let play_duration = match (self.u8()?, self.be_u32()?) {
            (0, 0) => None,
            (1, seconds) => Some(seconds),
            _ => return None,
        };
        match tag {
            0 if period_end == 0 && play_duration.is_none() => Some(Rights::BuyToOwn),
            RIGHTS_RENTAL => Some(Rights::Rental {
                period_end,
                play_duration,
            }),
            _ => None,
        }
    }

    fn output_levels(&mut self) -> Option<OutputLevels> {
        let mut level = || self.array().map(u16::from_be_bytes).filter(|l| *l <= 999);
        Some(OutputLevels {
            analog_video: level()?,
            compressed_digital_audio: level()?,
            compressed_digital_video: level()?,
            uncompressed_digital_audio: level()?,
            uncompressed_digital_video: level()?,
        })
    }
}

/// A cursor over the payload; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }
    fn short_str(&mut self) -> Option<&'a str> {
        let len = usize::from(self.u8()?);
        std::str::from_utf8(self.take(len)?).ok()
    }
    fn be_u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }
    fn be_i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_be_bytes)
    }
    /// The fields every version-2 payload begins with, as `encode_head`
    /// writes them: environment, issue and expiry times, customer.
    fn head(&mut self) -> Option<(Environment, i64, i64, CustomerId)> {
        let environment = self.environment()?;
        let issued_at = self.be_i64()?;
        let expires_at = self.be_i64()?;
        let customer_id = CustomerId::parse(self.short_str()?).ok()?;
        Some((environment, issued_at, expires_at, customer_id))
    }
    /// A key count, 1 to [`MAX_WIDEVINE_KEYS`].
    fn key_count(&mut self) -> Option<usize> {
        Some(usize::from(self.u8()?)).filter(|n| (1..=MAX_WIDEVINE_KEYS).contains(n))
    }
    fn environment(&mut self) -> Option<Environment> {
        match self.u8()? {
            0 => Some(Environment::Test),
            1 => Some(Environment::Production),
            _ => None,
        }
    }
    fn kid(&mut self) -> Option<Option<Kid>> {
        match self.u8()? {
            KID_NONE => Some(None),
            KID_BYTES => Some(Some(Kid::Bytes(self.array()?))),
            KID_NAME => Some(Some(Kid::name(self.short_str()?).ok()?)),
            _ => None,
        }
    }
    fn cookie(&mut self) -> Option<Option<String>> {
        let cookie = self.short_str()?;
        Some((!cookie.is_empty()).then(|| cookie.to_owned()))
    }
    /// A `contentId` as the minting rules allow it (printable ASCII, at
    /// most [`MAX_CONTENT_ID_BYTES`]); `None` (a bad payload) otherwise.
    fn content_id(&mut self) -> Option<Option<String>> {
        let id = self.cookie()?;
        let valid = |id: &String| {
            id.len() <= MAX_CONTENT_ID_BYTES && id.bytes().all(|b| (b' '..=b'~').contains(&b))
        };
        match id {
            Some(id) if !valid(&id) => None,
            id => Some(id),
        }
    }
    fn extensions(&mut self) -> Option<Vec<FpExtension>> {
        let count = usize::from(self.u8()?);
        if count > MAX_EXTENSIONS {
            return None;
        }
        let mut extensions = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = self.array()?;
            let len = usize::from(u16::from_be_bytes(self.array()?));
            extensions.push(FpExtension {
                kind,
                payload: self.take(len)?.to_vec(),
            });
        }
        Some(extensions)
    }
}

fn decode_widevine(body: &[u8]) -> Option<WidevineLicence> {
    let mut r = Reader(body);
    let (environment, issued_at, expires_at, customer_id) = r.head()?;
    let count = r.key_count()?;
    let mut keys = Vec::with_capacity(count);
    for _ in 0..count {
        keys.push(WidevineKey {
            kid: r.kid()??,
            content_key: ContentKey::new(r.array()?),
            security_level: r.u8().filter(|l| (1..=5).contains(l))?,
            hdcp_output_control: r.u8().filter(|h| *h <= 5)?,
            track_type: match r.u8()? {
                NO_TRACK_TYPE => None,
                n => Some(TrackType::from_number(n)?),
            },
        });
    }
    let licence = WidevineLicence {
        environment,
        issued_at,
        expires_at,
        customer_id,
        keys,
        license_duration: r.be_u32()?,
        playback_duration: r.be_u32()?,
        general_flags: r.be_u32()?,
        content_id: r.content_id()?,
        cookie: r.cookie()?,
        extensions: r.extensions()?,
    };
    r.0.is_empty().then_some(licence)
}

fn decode_payload(body: &[u8]) -> Option<LicenceData> {
    let mut r = Reader(body);
    // A struct expression evaluates its fields in the order written: this
    // is the order `encode_payload` writes them in.
    let licence = LicenceData {
        environment: r.environment()?,
        issued_at: r.be_i64()?,
        expires_at: r.be_i64()?,
        customer_id: CustomerId::parse(r.short_str()?).ok()?,
        content_key: ContentKey::new(r.array()?),
        iv: r.array()?,
        kid: r.kid()?,
        rental_duration: r.be_u32()?,
        general_flags: r.be_u32()?,
        cookie: r.cookie()?,
        extensions: r.extensions()?,
    };
    r.0.is_empty().then_some(licence)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(ids: &[&str], active: &str) -> KeyRing {
        let keys = ids
            .iter()
            .enumerate()
            .map(|(i, id)| SealingKey {
                id: KeyId::parse(id).unwrap(),
                key: SealingKeyBytes::new([i as u8 + 1; 32]),
            })
            .collect();
        KeyRing::new(keys, &KeyId::parse(active).unwrap()).unwrap()
    }

    /// Opens and returns the licence data.
    fn open(
        token: &str,
        ring: &KeyRing,
        environment: Environment,
        now: i64,
    ) -> Result<LicenceData, TokenError> {
        super::open(token, ring, environment, now).map(|t| t.into_fairplay().unwrap())
    }

    use crate::licence::tests::sample;

    /// The largest licence data the minting rules allow: every field at its
    /// limit, in its widest encoding.
    fn largest() -> LicenceData {
        let mut d = sample();
        d.customer_id = CustomerId::parse(&"c".repeat(MAX_CUSTOMER_ID_LEN)).unwrap();
        d.kid = Some(Kid::Name(format!("\u{20AC}{}", "\u{1F600}".repeat(63))));
        d.cookie = Some("\u{1F600}".repeat(MAX_COOKIE_CHARS));
        d.extensions = (0..MAX_EXTENSIONS)
            .map(|_| FpExtension {
                kind: *b"abcd",
                payload: vec![0xA5; MAX_EXTENSION_PAYLOAD],
            })
            .collect();
        d
    }

    #[test]
    fn the_largest_token_that_can_be_minted_is_read() {
        let key = SealingKey {
            id: KeyId::parse(&"k".repeat(MAX_KEY_ID_LEN)).unwrap(),
            key: SealingKeyBytes::new([7; 32]),
        };
        let d = largest();
        assert_eq!(sealed_len(&d, &key), MAX_SEALED_LEN);
        let token = seal(&d, &key, &[1; 24]).unwrap();
        assert_eq!(token.len(), MAX_FAIRPLAY_TOKEN_CHARS);
        assert_eq!(MAX_FAIRPLAY_TOKEN_CHARS, 22_751);
        let ring = KeyRing::new(vec![key.clone()], &key.id).unwrap();
        assert_eq!(
            open(&token, &ring, Environment::Test, 1_700_000_000).unwrap(),
            d
        );
        // one character more than the longest token of any DRM is refused unread
        let longer = format!("{token}{}", "A".repeat(MAX_TOKEN_CHARS - token.len() + 1));
        assert_eq!(
            UntrustedToken::parse(&longer).err(),
            Some(TokenError::Malformed)
        );
    }

    #[test]
    fn round_trip() {
        let ring = ring(&["a", "b"], "b");
        let token = seal(&sample(), ring.active().unwrap(), &[9; 24]).unwrap();
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(
            open(&token, &ring, Environment::Test, 1_700_000_000).unwrap(),
            sample()
        );
        let untrusted = UntrustedToken::parse(&token).unwrap();
        assert_eq!(untrusted.untrusted_key_id(), b"b");
        let verified = untrusted.verify(&ring).unwrap();
        assert_eq!(verified.key_id().as_str(), "b");
        assert_eq!(
            verified.check(Environment::Production, 1_700_000_000),
            Err(TokenError::WrongEnvironment)
        );
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let ring = ring(&["a"], "a");
        let token = seal(&sample(), ring.active().unwrap(), &[3; 24]).unwrap();
        let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for bit in 0..raw.len() * 8 {
            let mut bad = raw.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let bad = URL_SAFE_NO_PAD.encode(&bad);
            assert!(
                open(&bad, &ring, Environment::Test, 1_700_000_000).is_err(),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn checks_expiry_environment_and_key() {
        let old = ring(&["old", "new"], "old");
        let token = seal(&sample(), old.active().unwrap(), &[1; 24]).unwrap();
        assert_eq!(
            open(&token, &old, Environment::Test, 1_700_000_060),
            Err(TokenError::Expired)
        );
        assert_eq!(
            open(&token, &old, Environment::Production, 1_700_000_000),
            Err(TokenError::WrongEnvironment)
        );
        let removed = ring(&["new"], "new");
        assert_eq!(
            open(&token, &removed, Environment::Test, 1_700_000_000),
            Err(TokenError::UnknownKey)
        );
        assert_eq!(
            open("", &old, Environment::Test, 0),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            open("!!!", &old, Environment::Test, 0),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            open("AwE", &old, Environment::Test, 0),
            Err(TokenError::UnknownVersion)
        );
        // version 2 naming no DRM fpgen knows
        assert_eq!(
            open("Av8B", &old, Environment::Test, 0),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn minimal_licence_round_trips() {
        let ring = ring(&["k"], "k");
        let mut d = sample();
        d.kid = Some(Kid::Bytes([0xab; 16]));
        d.cookie = None;
        d.extensions.clear();
        let now = d.issued_at;
        let token = seal(&d, ring.active().unwrap(), &[0; 24]).unwrap();
        assert_eq!(open(&token, &ring, Environment::Test, now).unwrap(), d);
        d.kid = None;
        let token = seal(&d, ring.active().unwrap(), &[0; 24]).unwrap();
        assert_eq!(open(&token, &ring, Environment::Test, now).unwrap(), d);
    }

    #[test]
    fn times_outside_the_rules_are_refused() {
        let ring = ring(&["k"], "k");
        let key = ring.active().unwrap();
        let d = sample(); // issued 1_700_000_000, expires 60 s later
        let token = seal(&d, key, &[4; 24]).unwrap();
        let open_at = |now| open(&token, &ring, Environment::Test, now);
        // a minute of clock skew is tolerated, more is not
        assert!(open_at(d.issued_at - MAX_CLOCK_SKEW_SECONDS).is_ok());
        assert_eq!(
            open_at(d.issued_at - MAX_CLOCK_SKEW_SECONDS - 1),
            Err(TokenError::IssuedInFuture)
        );
        // exactly 30 days is the API's longest lifetime; a second more is not
        let mut long = sample();
        long.expires_at = long.issued_at + MAX_LIFETIME_SECONDS;
        let t = seal(&long, key, &[5; 24]).unwrap();
        assert!(open(&t, &ring, Environment::Test, long.issued_at).is_ok());
        long.expires_at += 1;
        let t = seal(&long, key, &[6; 24]).unwrap();
        assert_eq!(
            open(&t, &ring, Environment::Test, long.issued_at),
            Err(TokenError::LifetimeTooLong)
        );
    }

    #[test]
    fn the_buffer_is_sized_to_the_sealed_token() {
        let ring = ring(&["a-longer-key-id"], "a-longer-key-id");
        let key = ring.active().unwrap();
        let mut d = sample();
        for (kid, cookie, extensions) in [
            (None, None, 0),
            (Some(Kid::Bytes([1; 16])), Some("c".repeat(32)), 1),
            (Some(Kid::Name("é".repeat(64))), Some("x".into()), 16),
        ] {
            d.kid = kid;
            d.cookie = cookie;
            d.extensions = vec![
                FpExtension {
                    kind: *b"wudo",
                    payload: vec![9; 1024],
                };
                extensions
            ];
            let token = seal(&d, key, &[1; 24]).unwrap();
            let sealed = URL_SAFE_NO_PAD.decode(&token).unwrap();
            assert_eq!(sealed.len(), sealed_len(&d, key));
        }
    }

    #[test]
    fn same_data_new_nonce_new_token() {
        let ring = ring(&["k"], "k");
        let a = seal(&sample(), ring.active().unwrap(), &[1; 24]).unwrap();
        let b = seal(&sample(), ring.active().unwrap(), &[2; 24]).unwrap();
        assert_ne!(a, b);
    }

    fn widevine_sample() -> WidevineLicence {
        WidevineLicence {
            environment: Environment::Test,
            customer_id: CustomerId::parse("100001").unwrap(),
            issued_at: 1_700_000_000,
            expires_at: 1_700_000_060,
            keys: vec![WidevineKey {
                kid: Kid::Bytes([0x11; 16]),
                content_key: ContentKey::new([0x22; 16]),
                security_level: 5,
                hdcp_output_control: 4,
                track_type: Some(TrackType::Uhd2),
            }],
            license_duration: 86_400,
            playback_duration: 7_200,
            general_flags: 1,
            content_id: Some("movie-1".into()),
            extensions: vec![],
            cookie: None,
        }
    }

    /// The largest Widevine licence: eight keys with the longest names,
    /// every other field at its limit.
    fn widevine_largest() -> WidevineLicence {
        let mut d = widevine_sample();
        d.customer_id = CustomerId::parse(&"c".repeat(MAX_CUSTOMER_ID_LEN)).unwrap();
        d.keys = (0..MAX_WIDEVINE_KEYS)
            .map(|i| WidevineKey {
                // 3 + 63 × 4 = 255 bytes, each name its own
                kid: Kid::Name(format!(
                    "{}{}",
                    char::from_u32(0x20AC + i as u32).unwrap(),
                    "\u{1F600}".repeat(63)
                )),
                content_key: ContentKey::new([i as u8; 16]),
                security_level: 1,
                hdcp_output_control: 0,
                track_type: None,
            })
            .collect();
        d.content_id = Some("i".repeat(MAX_CONTENT_ID_BYTES));
        d.cookie = Some("\u{1F600}".repeat(MAX_COOKIE_CHARS));
        d.extensions = (0..MAX_EXTENSIONS)
            .map(|_| FpExtension {
                kind: *b"abcd",
                payload: vec![0x5A; MAX_EXTENSION_PAYLOAD],
            })
            .collect();
        d
    }

    #[test]
    fn widevine_round_trips_as_version_2_and_names_its_drm() {
        let ring = ring(&["k"], "k");
        for d in [widevine_sample(), widevine_largest()] {
            let licence = Licence::Widevine(d);
            let token = seal_licence(&licence, ring.active().unwrap(), &[1; 24]).unwrap();
            let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
            assert_eq!(&raw[..5], &[VERSION_2, 1, 1, b'k', 1]);
            let untrusted = UntrustedToken::parse(&token).unwrap();
            assert_eq!(untrusted.untrusted_drm(), Drm::Widevine);
            assert_eq!(untrusted.untrusted_key_id(), b"k");
            let opened = super::open(&token, &ring, Environment::Test, 1_700_000_000).unwrap();
            assert_eq!(opened.into_licence(), licence);
        }
    }

    #[test]
    fn the_largest_widevine_token_is_the_longest_token_read() {
        let key = SealingKey {
            id: KeyId::parse(&"k".repeat(MAX_KEY_ID_LEN)).unwrap(),
            key: SealingKeyBytes::new([7; 32]),
        };
        let d = widevine_largest();
        assert_eq!(widevine_sealed_len(&d, &key), MAX_WIDEVINE_SEALED_LEN);
        let token = seal_licence(&Licence::Widevine(d), &key, &[1; 24]).unwrap();
        assert_eq!(token.len(), MAX_TOKEN_CHARS);
        assert_eq!(MAX_TOKEN_CHARS, 25_404);
        let sealed = URL_SAFE_NO_PAD.decode(&token).unwrap();
        assert_eq!(sealed.len(), MAX_WIDEVINE_SEALED_LEN);
    }

    /// The DRM byte is authenticated: a Widevine token relabelled as
    /// FairPlay (or the reverse) does not open.
    #[test]
    fn the_drm_in_the_header_is_bound_to_the_token() {
        let ring = ring(&["k"], "k");
        let token = seal_licence(
            &Licence::Widevine(widevine_sample()),
            ring.active().unwrap(),
            &[1; 24],
        )
        .unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        raw[1] = Drm::FairPlay.tag();
        let relabelled = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(
            super::open(&relabelled, &ring, Environment::Test, 1_700_000_000).err(),
            Some(TokenError::Forged)
        );
    }

    /// A `contentId` the minting rules would refuse is a bad payload when
    /// read, even sealed with the right key.
    #[test]
    fn a_content_id_outside_the_rules_is_a_bad_payload() {
        let ring = ring(&["k"], "k");
        let mut d = widevine_sample();
        d.content_id = Some("line\nbreak".into());
        let token = seal_licence(&Licence::Widevine(d), ring.active().unwrap(), &[1; 24]).unwrap();
        assert_eq!(
            super::open(&token, &ring, Environment::Test, 1_700_000_000).err(),
            Some(TokenError::BadPayload)
        );
    }

    #[test]
    fn widevine_payloads_outside_the_rules_are_refused_unsealed() {
        let ring = ring(&["k"], "k");
        let key = ring.active().unwrap();
        let mut d = widevine_sample();
        d.keys.clear();
        assert!(seal_licence(&Licence::Widevine(d.clone()), key, &[1; 24]).is_err());
        d.keys = vec![widevine_sample().keys[0].clone(); MAX_WIDEVINE_KEYS + 1];
        assert!(seal_licence(&Licence::Widevine(d), key, &[1; 24]).is_err());
    }
}
