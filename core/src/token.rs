//! The token format, version 1: a compact binary payload sealed with
//! XChaCha20-Poly1305 and encoded as base64url without padding.
//!
//! ```text
//! token   = base64url( header || nonce(24) || ciphertext || tag(16) )
//! header  = version(1) = 0x01 || key_id_len(1) || key_id        (the AEAD's associated data)
//! payload = see docs/token-format.md
//! ```
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
use crate::licence::{Environment, FpExtension, LicenceData};
use crate::secret::{ContentKey, SealingKeyBytes};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use std::fmt;
use zeroize::Zeroizing;

/// The format version this code writes and reads.
pub const VERSION: u8 = 1;
/// Nonce length (XChaCha20-Poly1305).
pub const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The most `fpExtension`s a token carries.
pub const MAX_EXTENSIONS: usize = 16;
/// The largest decoded `fpExtension` payload, in bytes.
pub const MAX_EXTENSION_PAYLOAD: usize = 1024;
/// The longest `cookie`, in characters (each at most 4 bytes of UTF-8).
pub const MAX_COOKIE_CHARS: usize = 32;
/// The longest payload the minting rules let through, in bytes: every
/// field at its limit (docs/token-format.md).
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
/// The longest sealed token before base64: header, nonce, payload, tag.
const MAX_SEALED_LEN: usize = 2 + MAX_KEY_ID_LEN + NONCE_LEN + MAX_PAYLOAD_LEN + TAG_LEN;
/// Tokens longer than this (in base64 characters) are refused unread: the
/// length of the largest token the minting rules allow (22,751), so every
/// token fpgen mints is one its gate reads.
pub const MAX_TOKEN_CHARS: usize = (MAX_SEALED_LEN * 4).div_ceil(3);
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
    let body_start = out.len();
    encode_payload(data, &mut out)?;

    let cipher = XChaCha20Poly1305::new(key.key.expose().into());
    let (head, body) = out
        .split_at_mut_checked(body_start)
        .ok_or(EncodeError("header"))?;
    let aad = head.get(..header_len).ok_or(EncodeError("header"))?;
    let tag = cipher
        .encrypt_inout_detached(&XNonce::from(*nonce), aad, body.into())
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
    header_len: usize,
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
        if version != VERSION {
            return Err(TokenError::UnknownVersion);
        }
        let &id_len = rest.first().ok_or(TokenError::Malformed)?;
        let header_len = 2 + usize::from(id_len);
        if raw.len() < header_len + NONCE_LEN + TAG_LEN {
            return Err(TokenError::Malformed);
        }
        Ok(Self { raw, header_len })
    }

    /// The key id the token names. Untrusted: anyone can write any id here;
    /// only [`verify`](Self::verify) tells whether the key sealed it.
    pub fn untrusted_key_id(&self) -> &[u8] {
        self.raw.get(2..self.header_len).unwrap_or_default()
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
        let data = decode_payload(body).ok_or(TokenError::BadPayload)?;
        Ok(VerifiedToken { key_id, data })
    }
}

/// An authentic token: sealed by a key of the ring. Its environment and
/// times are not checked yet: tooling may show it (marked as such), the
/// gate may not honour it before [`trust`](Self::trust).
#[derive(Debug)]
pub struct VerifiedToken {
    key_id: KeyId,
    data: LicenceData,
}

impl VerifiedToken {
    /// Whether the token is for `environment` and valid at `now`: not
    /// expired, not issued more than [`MAX_CLOCK_SKEW_SECONDS`] ahead, no
    /// lifetime over [`MAX_LIFETIME_SECONDS`].
    pub fn check(&self, environment: Environment, now: i64) -> Result<(), TokenError> {
        let d = &self.data;
        if d.environment != environment {
            return Err(TokenError::WrongEnvironment);
        }
        if now >= d.expires_at {
            return Err(TokenError::Expired);
        }
        if d.issued_at > now.saturating_add(MAX_CLOCK_SKEW_SECONDS) {
            return Err(TokenError::IssuedInFuture);
        }
        if d.expires_at.saturating_sub(d.issued_at) > MAX_LIFETIME_SECONDS {
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
    pub fn data(&self) -> &LicenceData {
        &self.data
    }
}

/// A token fpgen honours: authentic, for this environment, within its times.
#[derive(Debug)]
pub struct TrustedToken {
    key_id: KeyId,
    data: LicenceData,
}

impl TrustedToken {
    /// The id of the key that sealed it.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    pub fn data(&self) -> &LicenceData {
        &self.data
    }

    pub fn into_data(self) -> LicenceData {
        self.data
    }

    /// The key id and the licence data, without copying either.
    pub fn into_parts(self) -> (KeyId, LicenceData) {
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

fn encode_payload(d: &LicenceData, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.push(match d.environment {
        Environment::Test => 0,
        Environment::Production => 1,
    });
    out.extend_from_slice(&d.issued_at.to_be_bytes());
    out.extend_from_slice(&d.expires_at.to_be_bytes());
    push_short(out, d.customer_id.as_str().as_bytes(), "customer id")?;
    out.extend_from_slice(d.content_key.expose());
    out.extend_from_slice(&d.iv);
    match &d.kid {
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
    out.extend_from_slice(&d.rental_duration.to_be_bytes());
    out.extend_from_slice(&d.general_flags.to_be_bytes());
    push_short(out, d.cookie.as_deref().unwrap_or("").as_bytes(), "cookie")?;
    if d.extensions.len() > MAX_EXTENSIONS {
        return Err(EncodeError("too many fpExtensions"));
    }
    out.push(d.extensions.len() as u8);
    for ext in &d.extensions {
        out.extend_from_slice(&ext.kind);
        let len =
            u16::try_from(ext.payload.len()).map_err(|_| EncodeError("fpExtension payload"))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&ext.payload);
    }
    Ok(())
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
        super::open(token, ring, environment, now).map(TrustedToken::into_data)
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
        assert_eq!(token.len(), MAX_TOKEN_CHARS);
        assert_eq!(MAX_TOKEN_CHARS, 22_751);
        let ring = KeyRing::new(vec![key.clone()], &key.id).unwrap();
        assert_eq!(
            open(&token, &ring, Environment::Test, 1_700_000_000).unwrap(),
            d
        );
        // one character more is refused unread
        let longer = format!("{token}A");
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
            open("AgE", &old, Environment::Test, 0),
            Err(TokenError::UnknownVersion)
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
}
