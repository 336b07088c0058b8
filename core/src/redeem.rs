//! The redemption gate: at the licence path, verify the `ExpressPlayToken`
//! before the request reaches the licence server, and hand the token's
//! licence data upstream in request headers.

use crate::challenge::{self, ChallengeError};
use crate::config::{Config, Redemption};
use crate::error::{ApiError, ErrorCode, ErrorFormat};
use crate::ids::CustomerId;
use crate::ids::KeyId;
use crate::licence::{
    rfc3339, Drm, Environment, FpExtension, Licence, LicenceData, PlayReadyLicence, Rights,
    WidevineLicence,
};
use crate::outcome::Outcome;
use crate::render::{self, Response};
use crate::token::{self, TokenError};
use base64::Engine as _;
use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, CONTROLS};
use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::ops::Range;
use zeroize::{Zeroize, Zeroizing};

/// The query parameter that carries the token.
pub const TOKEN_PARAM: &str = "ExpressPlayToken";

/// Characters percent-encoded in free-text header values (cookie, kid
/// names): controls, `%` itself, and (by `utf8_percent_encode`) non-ASCII.
const HEADER_TEXT: &AsciiSet = &CONTROLS.add(b'%');

/// Why the gate refused a licence request. Every one is `-4010` on the
/// wire; the variants name the stat and the debug log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The token did not open (see [`TokenError`]); also `Malformed` when
    /// there is no `ExpressPlayToken`, or more than one parameter spelled
    /// like it.
    Token(TokenError),
    /// The path still holds a dot segment (`.`, `..`, also percent-encoded)
    /// or a `;` path parameter after Envoy's normalisation.
    UnsafePath,
    /// The token's customer is no longer in the configuration.
    UnknownCustomer,
    /// The token's customer is disabled (`enabled: false`).
    CustomerDisabled,
    /// The token was issued before the customer's `tokens_not_before`.
    Revoked,
    /// PlayReady: the licence challenge could not be read, or holds two
    /// tokens.
    Challenge(ChallengeError),
    /// PlayReady: the query's token and the challenge's differ.
    TokensDiffer,
    /// PlayReady: the licence challenge is larger than
    /// `redemption.max_challenge_bytes` (413).
    ChallengeTooLarge,
}

impl Refusal {
    /// The stat-name segment: `fpgen.redemptions_rejected.<this>`.
    pub const fn stat_name(self) -> &'static str {
        match self {
            Self::Token(e) => e.stat_name(),
            Self::UnsafePath => "unsafe_path",
            Self::UnknownCustomer => "unknown_customer",
            Self::CustomerDisabled => "customer_disabled",
            Self::Revoked => "revoked",
            Self::Challenge(ChallengeError::Malformed) => "malformed_challenge",
            Self::Challenge(ChallengeError::TwoTokens) => "two_tokens",
            Self::TokensDiffer => "tokens_differ",
            Self::ChallengeTooLarge => "challenge_too_large",
        }
    }

    /// Every reason, for documentation and tests.
    pub const ALL: [Refusal; 18] = [
        Self::Token(TokenError::Malformed),
        Self::Token(TokenError::UnknownVersion),
        Self::Token(TokenError::UnknownKey),
        Self::Token(TokenError::Forged),
        Self::Token(TokenError::BadPayload),
        Self::Token(TokenError::WrongEnvironment),
        Self::Token(TokenError::Expired),
        Self::Token(TokenError::IssuedInFuture),
        Self::Token(TokenError::LifetimeTooLong),
        Self::Token(TokenError::WrongDrm),
        Self::UnsafePath,
        Self::UnknownCustomer,
        Self::CustomerDisabled,
        Self::Revoked,
        Self::Challenge(ChallengeError::Malformed),
        Self::Challenge(ChallengeError::TwoTokens),
        Self::TokensDiffer,
        Self::ChallengeTooLarge,
    ];
}

impl Refusal {
    /// The response, in the gate's format: -4010, or -9413 (413) for a
    /// challenge over the cap.
    pub fn response(self, format: ErrorFormat) -> Response {
        let code = match self {
            Self::ChallengeTooLarge => ErrorCode::BodyTooLarge,
            _ => ErrorCode::InvalidToken,
        };
        render::error(&ApiError::new(code, self.to_string()), format)
    }

    /// The code of the response.
    pub const fn code(self) -> ErrorCode {
        match self {
            Self::ChallengeTooLarge => ErrorCode::BodyTooLarge,
            _ => ErrorCode::InvalidToken,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(e) => e.fmt(f),
            Self::UnsafePath => f.write_str(
                "unsafe path: a dot segment, a ';' parameter, a '\\', a '%25', or a byte that is not visible ASCII",
            ),
            Self::UnknownCustomer => f.write_str("the token's customer is not configured"),
            Self::CustomerDisabled => f.write_str("the token's customer is disabled"),
            Self::Revoked => f.write_str("the token is revoked"),
            Self::Challenge(e) => e.fmt(f),
            Self::TokensDiffer => f.write_str(
                "the token in the query and the one in the challenge's CustomData differ",
            ),
            Self::ChallengeTooLarge => {
                f.write_str("the licence challenge is larger than the gate reads")
            }
        }
    }
}

impl From<TokenError> for Refusal {
    fn from(e: TokenError) -> Self {
        Self::Token(e)
    }
}

/// A verified redemption: what to change on the request before it goes on.
/// Its `Debug` names the headers without their values (one is the content
/// key).
pub struct Redeemed {
    /// Headers to add (names include the configured prefix); a name may repeat.
    pub headers: LicenceHeaders,
    /// The new `:path`, when the token parameter is to be removed.
    pub new_path: Option<String>,
    /// The access-log record: whose token it is, its kid, cookie and expiry.
    pub outcome: Outcome,
}

impl std::fmt::Debug for Redeemed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redeemed")
            .field("headers", &self.headers)
            .field("values", &"<redacted>")
            .field("new_path", &self.new_path.as_ref().map(|_| "<redacted>"))
            .field("outcome", &self.outcome)
            .finish()
    }
}

/// Whether the gate applies to this request path (query ignored).
pub fn applies(gate: &Redemption, path: &str) -> bool {
    drm_of(gate, path).is_some()
}

/// The DRM whose licence path `path` is on (query ignored): the one whose
/// prefix it starts with (PlayReady's in any ASCII letter case), the
/// longest prefix when two match.
pub fn drm_of(gate: &Redemption, path: &str) -> Option<Drm> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    gate.path_prefixes()
        .filter(|&(drm, prefix)| match drm {
            // PlayReady's licence servers run on IIS, which matches paths
            // in any letter case: so does its gate
            Drm::PlayReady => path
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix)),
            Drm::FairPlay | Drm::Widevine => path.starts_with(prefix),
        })
        .max_by_key(|(_, prefix)| prefix.len())
        .map(|(drm, _)| drm)
}

/// Whether a request header (or trailer) must be removed before anything
/// else: every name that starts with the gate's prefix when letter case is
/// ignored and `_` counts as `-`. CGI, WSGI, PHP and nginx with
/// `underscores_in_headers` map `x_fpgen_content_key` and
/// `X-FPGEN-CONTENT-KEY` to the same variable as `x-fpgen-content-key`, so
/// every such spelling is licence data a client must not send.
pub fn is_reserved_header(prefix: &str, name: &str) -> bool {
    let fold = |b: u8| {
        if b == b'_' {
            b'-'
        } else {
            b.to_ascii_lowercase()
        }
    };
    name.len() >= prefix.len()
        && name
            .bytes()
            .zip(prefix.bytes())
            .all(|(n, p)| fold(n) == fold(p))
}

/// Whether a gated path (query ignored) is safe to hand to a licence
/// server. Licence paths are plain ASCII, so the rule is strict rather than
/// a list of known tricks: once percent-decoded, every byte is visible
/// ASCII (no space, control, NUL or non-ASCII byte: overlong or fullwidth
/// dots, `.. ` trimmed by some servers), there is no `;` path parameter
/// (Tomcat reads `..;/` as `../`) and no `\` (a separator to some
/// servers), no segment is made of dots only (`.`, `..`, `...`; also
/// `%2e%2e` and `..%2f`), and there is no `%25` (an escape that decodes to
/// another escape, for servers that decode twice). Envoy's
/// `normalize_path` resolves plain dot segments before the filter runs;
/// this is the second wall for configurations without it and for what it
/// leaves.
pub fn is_safe_path(path: &str) -> bool {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path
        .as_bytes()
        .windows(3)
        .any(|w| w.eq_ignore_ascii_case(b"%25"))
    {
        return false;
    }
    let decoded: Cow<'_, [u8]> = percent_decode(path.as_bytes()).into();
    decoded
        .iter()
        .all(|&b| b.is_ascii_graphic() && b != b';' && b != b'\\')
        && !decoded
            .split(|&b| b == b'/')
            .any(|segment| !segment.is_empty() && segment.iter().all(|&b| b == b'.'))
}

/// The query's parameters as the gate reads them: split on `&` and on `;`
/// (which some servers also treat as a separator), each name
/// form-decoded. This one reading decides both which token the gate checks
/// and which parameters [`without_token`] removes, so no spelling of the
/// token parameter can be read by the gate one way and by the licence
/// server another.
struct QueryPart<'a> {
    /// The part's byte range in the query, without its separator.
    range: Range<usize>,
    name: Cow<'a, str>,
    value: Cow<'a, str>,
}

fn query_parts(query: &str) -> impl Iterator<Item = QueryPart<'_>> {
    // Split with memchr: `str::split` with two separators walks the query
    // one `char` at a time, and a token is some 200 of them.
    let bytes = query.as_bytes();
    let mut ends = memchr::memchr2_iter(b'&', b';', bytes).chain([bytes.len()]);
    let mut start = 0;
    std::iter::from_fn(move || loop {
        let end = ends.next()?;
        let range = start..end;
        start = end + 1;
        let part = bytes.get(range.clone())?;
        if let Some((name, value)) = crate::params::decode_pair(part) {
            return Some(QueryPart { range, name, value });
        }
    })
}

/// A part that names the token: `ExpressPlayToken` in any letter case,
/// also with white space or control characters around it once decoded
/// (`ExpressPlayToken%20`, `%00ExpressPlayToken`), before a NUL
/// (`ExpressPlayToken%00x`), before a `[` (`ExpressPlayToken[]`,
/// `ExpressPlayToken[0]`: an array to PHP, Rack, Node's `qs` and ASP.NET's
/// binder, whose first element they read as the token), or spelled with
/// letters that Unicode case mapping turns into its own (the Kelvin sign
/// `K` for `k`, the long `ſ` for `s`, `ß` and `ẞ` for `ss`): servers that trim
/// names, stop at a NUL, parse arrays or fold Unicode case read those as
/// the token too, so the gate counts them (a second one is a repeated
/// token) and strips them.
fn is_token_part(part: &QueryPart<'_>) -> bool {
    let name = &part.name;
    let cut = name.split(['\0', '[']).next().unwrap_or("");
    names_the_token(name) || names_the_token(cut)
}

/// `name`, trimmed of white space and control characters, is the token's
/// name under ASCII or Unicode case folding.
fn names_the_token(name: &str) -> bool {
    let name = name.trim_matches(|c: char| c.is_whitespace() || c.is_control());
    if name.is_ascii() {
        return name.eq_ignore_ascii_case(TOKEN_PARAM);
    }
    name.chars()
        .flat_map(folded)
        .eq(TOKEN_PARAM.bytes().map(|b| b.to_ascii_lowercase()))
}

/// A character of a parameter name as a server that folds Unicode case
/// reads it, in lower-case ASCII: ASCII as itself, and the characters whose
/// case mapping gives letters of the token's name: the Kelvin sign K
/// (U+212A) as `k` and the long ſ (U+017F) as `s`, as Java's
/// `equalsIgnoreCase` reads them, and ß (U+00DF) and ẞ (U+1E9E) as `ss`, as
/// full case folding does. Any other character matches no letter of the
/// name (`0xFF`). Written out rather than asking the standard library's
/// case tables, which would add 28 KB to the Wasm module; a test checks
/// the list against those tables, character by character.
fn folded(c: char) -> impl Iterator<Item = u8> {
    let (first, second) = match c {
        _ if c.is_ascii() => (c.to_ascii_lowercase() as u8, None),
        '\u{212A}' => (b'k', None),
        '\u{017F}' => (b's', None),
        '\u{00DF}' | '\u{1E9E}' => (b's', Some(b's')),
        _ => (0xFF, None),
    };
    std::iter::once(first).chain(second)
}

/// The one token in `query`; `None` when there is none or more than one
/// parameter spelled like it.
pub fn token_of(query: &str) -> Option<std::borrow::Cow<'_, str>> {
    query_token(query).ok().flatten()
}

/// The query's token: `None` when there is none, an error when more than
/// one parameter is spelled like it.
fn query_token(query: &str) -> Result<Option<Cow<'_, str>>, TokenError> {
    let mut tokens = query_parts(query).filter(is_token_part);
    match (tokens.next(), tokens.next()) {
        (first, None) => Ok(first.map(|part| part.value)),
        (Some(_), Some(_)) | (None, Some(_)) => Err(TokenError::Malformed),
    }
}

/// Checks the token in `path` at the licence path of `drm` and builds the
/// upstream headers, or says why the request is refused (render it with
/// [`Refusal::response`]).
pub fn redeem(
    config: &Config,
    gate: &Redemption,
    drm: Drm,
    path: &str,
    now: i64,
) -> Result<Redeemed, Refusal> {
    redeem_challenge(config, gate, drm, path, None, now)
}

/// [`redeem`], for a request with a body: at PlayReady's licence path,
/// `challenge` is the licence challenge (at most
/// `redemption.max_challenge_bytes` of it), whose `CustomData` may carry
/// the token instead of the query (or as well, the same one).
pub fn redeem_challenge(
    config: &Config,
    gate: &Redemption,
    drm: Drm,
    path: &str,
    challenge: Option<&[u8]>,
    now: i64,
) -> Result<Redeemed, Refusal> {
    let (licence, key_id) = check(config, drm, path, challenge, now)?;
    let prefix = &gate.header_prefix;
    let headers = match &licence {
        Licence::FairPlay(d) => licence_headers(prefix, d, &key_id),
        Licence::Widevine(d) => widevine_headers(prefix, d, &key_id),
        Licence::PlayReady(d) => playready_headers(prefix, d, &key_id),
    };
    Ok(Redeemed {
        headers,
        new_path: gate.strip_token.then(|| without_token(path)),
        outcome: Outcome::of_licence(licence),
    })
}

/// Every check of the gate, in order: the path, the token parameter, the
/// token itself (for this DRM), then the customer's standing. Returns the
/// licence data and the sealing key id.
fn check(
    config: &Config,
    drm: Drm,
    path: &str,
    challenge: Option<&[u8]>,
    now: i64,
) -> Result<(Licence, KeyId), Refusal> {
    if !is_safe_path(path) {
        return Err(Refusal::UnsafePath);
    }
    let token = presented_token(crate::params::query_of(path), drm, challenge)?;
    // FairPlay's licence path reads no token longer than the longest
    // FairPlay token, as before tokens of other DRMs existed
    if drm == Drm::FairPlay && token.len() > token::MAX_FAIRPLAY_TOKEN_CHARS {
        return Err(TokenError::Malformed.into());
    }
    let verified = token::UntrustedToken::parse(&token)?.verify(&config.sealing_keys)?;
    if verified.licence().drm() != drm {
        return Err(TokenError::WrongDrm.into());
    }
    let (key_id, licence) = verified.trust(config.environment, now)?.into_parts();
    let customer = config
        .customers
        .get(licence.customer_id())
        .ok_or(Refusal::UnknownCustomer)?;
    if !customer.enabled {
        return Err(Refusal::CustomerDisabled);
    }
    if customer
        .tokens_not_before
        .is_some_and(|t| licence.issued_at() < t)
    {
        return Err(Refusal::Revoked);
    }
    Ok((licence, key_id))
}

/// The token a licence request presents: the query's one
/// `ExpressPlayToken`, or (at PlayReady's licence path, with a challenge)
/// its `CustomData`, or both when they are the same.
fn presented_token<'q>(
    query: &'q str,
    drm: Drm,
    challenge: Option<&[u8]>,
) -> Result<Cow<'q, str>, Refusal> {
    let from_query = query_token(query)?;
    let from_challenge = match (drm, challenge) {
        (Drm::PlayReady, Some(body)) if !body.is_empty() => {
            challenge::custom_data(body).map_err(Refusal::Challenge)?
        }
        _ => None,
    };
    match (from_query, from_challenge) {
        (Some(q), Some(c)) if *q != *c => Err(Refusal::TokensDiffer),
        (Some(q), _) => Ok(q),
        (None, Some(c)) => Ok(Cow::Owned(c)),
        (None, None) => Err(TokenError::Malformed.into()),
    }
}

/// A PlayReady licence as `prefix`-named headers: `drm`, `kid` (key 0's),
/// one `key` header per key (`kid=…;content-key=…` and
/// `;min-cert-security-level=…` when set), the rights and rental times,
/// the five output levels, the output behaviour and flags, the general
/// flags and persistence, the extension, and the common headers.
fn playready_headers(prefix: &str, d: &PlayReadyLicence, key_id: &KeyId) -> LicenceHeaders {
    let mut h = LicenceHeaders::new(prefix);
    drm_headers(&mut h, Drm::PlayReady, d.keys.first().map(|k| &k.kid));
    for key in &d.keys {
        h.add("key", |v| {
            key_field(v, &key.kid, &key.content_key);
            if let Some(level) = key.min_cert_security_level {
                let _ = write!(v, ";min-cert-security-level={level}");
            }
        });
    }
    h.add_str("rights-type", d.rights.as_str());
    if let Rights::Rental {
        period_end,
        play_duration,
    } = d.rights
    {
        h.add_str("rental-period-end", &rfc3339(period_end));
        if let Some(seconds) = play_duration {
            h.add_display("rental-play-duration", seconds);
        }
    }
    for (suffix, level) in d.output_levels.named() {
        h.add_display(suffix, level);
    }
    if let Some(behaviour) = d.unknown_output {
        h.add_str("unknown-output-behavior", behaviour.as_str());
    }
    if let Some(flags) = d.output_control_flags {
        h.add("output-control-flags", |v| {
            let _ = write!(v, "{flags:08x}");
        });
    }
    h.add("general-flags", |v| {
        let _ = write!(v, "{:08x}", d.general_flags);
    });
    h.add_display("persistent", d.persistent());
    let head = (&d.customer_id, d.environment, d.issued_at, d.expires_at);
    common_headers(&mut h, head, key_id);
    tail_headers(
        &mut h,
        d.cookie.as_deref(),
        ("pr-extension", d.extension.as_slice()),
    );
    h
}

/// A Widevine licence as `prefix`-named headers: `drm`, `kid` (key 0's),
/// one `key` header
/// per key (`kid=…;content-key=…;security-level=…;hdcp-output-control=…`
/// and `;track-type=…` when set), and the licence-wide values.
fn widevine_headers(prefix: &str, d: &WidevineLicence, key_id: &KeyId) -> LicenceHeaders {
    let mut h = LicenceHeaders::new(prefix);
    drm_headers(&mut h, Drm::Widevine, d.keys.first().map(|k| &k.kid));
    for key in &d.keys {
        h.add("key", |v| {
            key_field(v, &key.kid, &key.content_key);
            let _ = write!(
                v,
                ";security-level={};hdcp-output-control={}",
                key.security_level, key.hdcp_output_control,
            );
            if let Some(track) = key.track_type {
                v.push_str(";track-type=");
                v.push_str(track.as_str());
            }
        });
    }
    h.add_display("license-duration", d.license_duration);
    h.add_display("playback-duration", d.playback_duration);
    h.add("general-flags", |v| {
        let _ = write!(v, "{:08x}", d.general_flags);
    });
    let head = (&d.customer_id, d.environment, d.issued_at, d.expires_at);
    common_headers(&mut h, head, key_id);
    if let Some(content_id) = &d.content_id {
        h.add_display("content-id", utf8_percent_encode(content_id, HEADER_TEXT));
    }
    tail_headers(&mut h, d.cookie.as_deref(), ("wv-extension", &d.extensions));
    h
}

/// The `drm` header and `kid`, key 0's kid as FairPlay's header names it
/// (for logs; the keys are in the `key` headers).
fn drm_headers(h: &mut LicenceHeaders, drm: Drm, first_kid: Option<&crate::ids::Kid>) {
    h.add_str("drm", drm.as_str());
    if let Some(kid) = first_kid {
        h.add("kid", |v| kid_text(v, kid, HEADER_TEXT));
    }
}

/// A kid as a header's text: a byte kid in lower-case hex, a named one
/// `^name`, its name percent-encoded by `set`.
fn kid_text(v: &mut String, kid: &crate::ids::Kid, set: &'static AsciiSet) {
    match kid {
        crate::ids::Kid::Bytes(bytes) => hex_into(v, bytes),
        crate::ids::Kid::Name(name) => {
            v.push('^');
            v.extend(utf8_percent_encode(name, set));
        }
    }
}

/// `bytes` in lower-case hex, appended to `v` (at most 32 bytes at a time,
/// through the stack: a key or a kid).
fn hex_into(v: &mut String, bytes: &[u8]) {
    let mut hex = [0u8; 64];
    for chunk in bytes.chunks(32) {
        let Some(out) = hex.get_mut(..chunk.len() * 2) else {
            return;
        };
        if hex::encode_to_slice(chunk, out).is_ok() {
            v.push_str(std::str::from_utf8(out).unwrap_or_default());
        }
    }
    // (a content key's hex: not left on the stack)
    hex.zeroize();
}

/// A `key` header's first fields: `kid=<kid>;content-key=<32 hex>`.
fn key_field(v: &mut String, kid: &crate::ids::Kid, content_key: &crate::secret::ContentKey) {
    v.push_str("kid=");
    kid_text(v, kid, KEY_FIELD);
    v.push_str(";content-key=");
    hex_into(v, content_key.expose());
}

/// Whose token it is, its environment, times and sealing key: the headers
/// of every DRM's licence.
fn common_headers(
    h: &mut LicenceHeaders,
    (customer, environment, issued, expires): (&CustomerId, Environment, i64, i64),
    key_id: &KeyId,
) {
    h.add_str("customer", customer.as_str());
    h.add_str("environment", environment.as_str());
    h.add_str("issued", &rfc3339(issued));
    h.add_str("expires", &rfc3339(expires));
    h.add_display("key-id", key_id);
}

/// The cookie, then one `extension` header per extension, in order.
fn tail_headers(
    h: &mut LicenceHeaders,
    cookie: Option<&str>,
    (extension, extensions): (&str, &[FpExtension]),
) {
    if let Some(cookie) = cookie {
        h.add_display("cookie", utf8_percent_encode(cookie, HEADER_TEXT));
    }
    for ext in extensions {
        h.add(extension, |v| {
            v.push_str(ext.kind_str());
            v.push(',');
            base64::engine::general_purpose::STANDARD.encode_string(&ext.payload, v);
        });
    }
}

/// Characters percent-encoded in a kid inside a `key` header's field: as
/// [`HEADER_TEXT`], and the field separators `;`, `=` and `,`.
const KEY_FIELD: &AsciiSet = &HEADER_TEXT.add(b';').add(b'=').add(b',');

/// The licence data as `prefix`-named headers.
fn licence_headers(prefix: &str, d: &LicenceData, key_id: &KeyId) -> LicenceHeaders {
    let mut h = LicenceHeaders::new(prefix);
    h.add("content-key", |v| hex_into(v, d.content_key.expose()));
    h.add("iv", |v| hex_into(v, &d.iv));
    h.add_display("rental-duration", d.rental_duration);
    h.add("general-flags", |v| {
        let _ = write!(v, "{:08x}", d.general_flags);
    });
    let head = (&d.customer_id, d.environment, d.issued_at, d.expires_at);
    common_headers(&mut h, head, key_id);
    if let Some(kid) = &d.kid {
        h.add("kid", |v| kid_text(v, kid, HEADER_TEXT));
    }
    tail_headers(&mut h, d.cookie.as_deref(), ("fp-extension", &d.extensions));
    h
}

/// The licence data as request headers, in order (a name may repeat),
/// every name and value in one buffer: building them makes three
/// allocations (the buffer, the spans, the prefix) and one per date, not
/// two per header. The buffer holds content keys: it is
/// zeroized when dropped (its first capacity fits every licence of the
/// demo, so it rarely grows and leaves a copy behind), and `Debug` shows
/// the names alone.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct LicenceHeaders {
    prefix: String,
    text: Zeroizing<String>,
    /// Each header's start, the end of its name, and the end of its value,
    /// in `text`.
    spans: Vec<(usize, usize, usize)>,
}

impl LicenceHeaders {
    /// The first capacity of the buffer: a FairPlay licence with a cookie
    /// and an extension takes about 700 bytes.
    const CAPACITY: usize = 1024;

    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            text: Zeroizing::new(String::with_capacity(Self::CAPACITY)),
            spans: Vec::with_capacity(16),
        }
    }

    /// Adds the header `<prefix><suffix>`, its value written by `value`.
    fn add(&mut self, suffix: &str, value: impl FnOnce(&mut String)) {
        let start = self.text.len();
        self.text.push_str(&self.prefix);
        self.text.push_str(suffix);
        let name_end = self.text.len();
        value(&mut self.text);
        self.spans.push((start, name_end, self.text.len()));
    }

    fn add_str(&mut self, suffix: &str, value: &str) {
        self.add(suffix, |v| v.push_str(value));
    }

    fn add_display(&mut self, suffix: &str, value: impl fmt::Display) {
        self.add(suffix, |v| {
            let _ = write!(v, "{value}");
        });
    }

    /// Every header, name and value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.spans.iter().map(|&(start, name_end, end)| {
            let name = self.text.get(start..name_end).unwrap_or_default();
            (name, self.text.get(name_end..end).unwrap_or_default())
        })
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// The names alone: the values hold content keys.
impl fmt::Debug for LicenceHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(name, _)| name))
            .finish()
    }
}

/// `path` with every parameter that names the token (as [`token_of`] reads
/// them) removed, each with the separator before it (after it, for the
/// first); everything else is kept byte for byte.
pub fn without_token(path: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_owned();
    };
    let mut kept = String::with_capacity(query.len());
    let mut from = 0;
    for part in query_parts(query).filter(is_token_part) {
        // the kept text before this part, without the separator that joins it
        let before = query.get(from..part.range.start.saturating_sub(1));
        kept.push_str(before.unwrap_or(""));
        from = part.range.end;
    }
    kept.push_str(query.get(from..).unwrap_or(""));
    // a query that began with the token now begins with its separator
    let kept = kept
        .strip_prefix(['&', ';'])
        .filter(|_| !query.starts_with(['&', ';']))
        .unwrap_or(&kept);
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{kept}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{CustomerId, Kid};
    use crate::licence::{Environment, FpExtension, TrackType, WidevineKey};
    use crate::secret::ContentKey;

    const CONFIG: &str = r#"{
      "environment": "test",
      "sealing_keys": [{"id": "old", "key": "0101010101010101010101010101010101010101010101010101010101010101"},
                       {"id": "new", "key": "0202020202020202020202020202020202020202020202020202020202020202"}],
      "active_sealing_key": "new",
      "customers": [{"id": "100001", "environment": "test",
                     "authenticator_sha256": "0000000000000000000000000000000000000000000000000000000000000000"}],
      "redemption": {"strip_token": true}
    }"#;

    fn data() -> LicenceData {
        LicenceData {
            environment: Environment::Test,
            customer_id: CustomerId::parse("100001").unwrap(),
            issued_at: 1_800_000_000,
            expires_at: 1_800_000_600,
            content_key: ContentKey::new([0xab; 16]),
            iv: [0xcd; 16],
            kid: Some(Kid::Name("film é".into())),
            rental_duration: 60,
            general_flags: 1,
            extensions: vec![
                FpExtension {
                    kind: *b"wudo",
                    payload: vec![0; 4],
                },
                FpExtension {
                    kind: *b"abcd",
                    payload: vec![1, 2, 3],
                },
            ],
            cookie: Some("a%b\u{7f}c".into()),
        }
    }

    fn setup() -> (Config, Redemption, String) {
        let config = Config::from_json(CONFIG.as_bytes()).unwrap();
        let gate = config.redemption.clone().unwrap();
        let token = token::seal(&data(), config.sealing_keys.active().unwrap(), &[7; 24]).unwrap();
        (config, gate, token)
    }

    #[test]
    fn valid_token_becomes_headers() {
        let (config, gate, token) = setup();
        let path = format!("/hms/fp/rights/?a=1&ExpressPlayToken={token}&b=%2B");
        let r = redeem(&config, &gate, Drm::FairPlay, &path, 1_800_000_000).unwrap();
        let get = |n: &str| {
            r.headers
                .iter()
                .filter(|(k, _)| *k == n)
                .map(|(_, v)| v)
                .collect::<Vec<_>>()
        };
        assert_eq!(get("x-fpgen-content-key"), ["ab".repeat(16)]);
        // Debug names the headers, never a value (the content key)
        let shown = format!("{r:?}");
        assert!(shown.contains("x-fpgen-content-key") && !shown.contains(&"ab".repeat(16)));
        assert_eq!(r.headers.len(), r.headers.iter().count());
        assert_eq!(get("x-fpgen-iv"), ["cd".repeat(16)]);
        assert_eq!(get("x-fpgen-kid"), ["^film %C3%A9"]);
        assert_eq!(get("x-fpgen-cookie"), ["a%25b%7Fc"]);
        assert_eq!(get("x-fpgen-general-flags"), ["00000001"]);
        assert_eq!(get("x-fpgen-rental-duration"), ["60"]);
        assert_eq!(get("x-fpgen-fp-extension"), ["wudo,AAAAAA==", "abcd,AQID"]);
        assert_eq!(get("x-fpgen-expires"), ["2027-01-15T08:10:00Z"]);
        assert_eq!(get("x-fpgen-key-id"), ["new"]);
        assert_eq!(r.new_path.as_deref(), Some("/hms/fp/rights/?a=1&b=%2B"));
    }

    #[test]
    fn refusals_are_4010_with_403() {
        let (config, gate, token) = setup();
        let now = 1_800_000_000;
        let cases = [
            (
                String::from("/hms/fp/rights/"),
                Refusal::Token(TokenError::Malformed),
            ),
            (
                format!("/hms/fp/rights/?ExpressPlayToken={token}&ExpressPlayToken={token}"),
                Refusal::Token(TokenError::Malformed),
            ),
            (
                format!("/hms/fp/rights/?ExpressPlayToken={token}&expressplaytoken=x"),
                Refusal::Token(TokenError::Malformed),
            ),
            (
                format!("/hms/fp/rights/?a=1;EXPRESSPLAYTOKEN=x&ExpressPlayToken={token}"),
                Refusal::Token(TokenError::Malformed),
            ),
            (
                format!("/hms/fp/rights/?ExpressPlayToken={token}x"),
                Refusal::Token(TokenError::Malformed),
            ),
            (
                format!("/hms/fp/rights/../../admin?ExpressPlayToken={token}"),
                Refusal::UnsafePath,
            ),
        ];
        for (path, reason) in cases {
            let got = redeem(&config, &gate, Drm::FairPlay, &path, now).unwrap_err();
            let response = got.response(gate.error_format);
            assert_eq!((response.status, got), (403, reason), "{path}");
            assert!(response.body.contains("-4010"));
        }
        let path = format!("/hms/fp/rights/?ExpressPlayToken={token}");
        let reason = redeem(&config, &gate, Drm::FairPlay, &path, 1_800_000_600).unwrap_err();
        assert_eq!(reason, Refusal::Token(TokenError::Expired));
    }

    #[test]
    fn the_token_may_use_any_separator_and_letter_case_once() {
        let (config, gate, token) = setup();
        for path in [
            format!("/hms/fp/rights/?a=1;ExpressPlayToken={token};b=2"),
            format!("/hms/fp/rights/?expressPLAYtoken={token}&id=1"),
            format!("/hms/fp/rights/?Express%50layToken={token}"),
            format!("/hms/fp/rights/?ExpressPlayToken%20={token}&a=1"),
            format!("/hms/fp/rights/?a=1&%00ExpressPlayToken%09={token}"),
        ] {
            let r = redeem(&config, &gate, Drm::FairPlay, &path, 1_800_000_000).unwrap();
            let new_path = r.new_path.unwrap();
            assert!(
                !new_path.to_ascii_lowercase().contains("token"),
                "{new_path}"
            );
        }
    }

    /// The characters [`folded`] writes out are every one whose Unicode case
    /// mapping (upper, lower, and again, as servers that fold case read it)
    /// gives a piece of the token's name.
    #[test]
    fn the_case_mapping_of_the_name_is_complete() {
        let name = TOKEN_PARAM.to_ascii_lowercase();
        for c in (0..=0x10_FFFF_u32).filter_map(char::from_u32) {
            let mapped: String = c
                .to_uppercase()
                .flat_map(char::to_lowercase)
                .flat_map(char::to_uppercase)
                .flat_map(char::to_lowercase)
                .collect();
            let ours: Vec<u8> = folded(c).collect();
            if c.is_ascii() {
                assert_eq!(ours, mapped.as_bytes(), "{c:?}");
            } else if mapped.is_ascii() && name.contains(&mapped) {
                assert_eq!(ours, mapped.as_bytes(), "U+{:04X}", u32::from(c));
            } else {
                assert!(ours.iter().all(|b| !b.is_ascii()), "U+{:04X}", u32::from(c));
            }
        }
    }

    /// A name another server would read as the token counts as one: with
    /// the real token beside it, the token is repeated and refused.
    #[test]
    fn spellings_of_the_token_name_count_as_the_token() {
        let (config, gate, token) = setup();
        for other in [
            "ExpressPlayToken%20",
            "%20expressplaytoken",
            "ExpressPlayToken%00",
            "ExpressPlayToken[]",
            "ExpressPlayToken%5B%5D",
            "expressplaytoken[0]",
            "ExpressPlayTo%E2%84%AAen",
            "Expre%C5%BF%C5%BFPlayToken",
            "Expre%C3%9FPlayToken",
            "Expre%E1%BA%9EPlayToken",
            "%E2%80%83ExpressPlayToken",
        ] {
            let path = format!("/hms/fp/rights/?ExpressPlayToken={token}&{other}=x");
            let refused = redeem(&config, &gate, Drm::FairPlay, &path, 1_800_000_000).err();
            assert!(refused.is_some(), "{other}: accepted");
        }
        // a name that only contains it is another parameter, kept, and so
        // is one that only looks like it (Cyrillic о, fullwidth letters)
        for other in ["ExpressPlayT%D0%BEken", "%EF%BC%A5xpressPlayToken"] {
            let path = format!("/hms/fp/rights/?ExpressPlayToken={token}&{other}=1");
            let r = redeem(&config, &gate, Drm::FairPlay, &path, 1_800_000_000).unwrap();
            assert_eq!(
                r.new_path.as_deref(),
                Some(format!("/hms/fp/rights/?{other}=1").as_str())
            );
        }
        let path = format!("/hms/fp/rights/?ExpressPlayToken={token}&ExpressPlayTokenX=1");
        let r = redeem(&config, &gate, Drm::FairPlay, &path, 1_800_000_000).unwrap();
        assert_eq!(
            r.new_path.as_deref(),
            Some("/hms/fp/rights/?ExpressPlayTokenX=1")
        );
    }

    #[test]
    fn customer_standing_is_checked_at_redemption() {
        let (_, gate, token) = setup();
        let path = format!("/hms/fp/rights/?ExpressPlayToken={token}");
        let with = |customer: serde_json::Value| {
            let mut v: serde_json::Value = serde_json::from_str(CONFIG).unwrap();
            v["customers"] = serde_json::json!([customer]);
            Config::from_json(v.to_string().as_bytes()).unwrap()
        };
        let customer = |extra: serde_json::Value| {
            let mut c = serde_json::json!({"id": "100001", "environment": "test",
                "authenticator_sha256": "00".repeat(32)});
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            c
        };
        let reason =
            |config: &Config| redeem(config, &gate, Drm::FairPlay, &path, 1_800_000_000).err();
        assert_eq!(reason(&with(customer(serde_json::json!({})))), None);
        let mut other = customer(serde_json::json!({}));
        other["id"] = "100002".into();
        assert_eq!(reason(&with(other)), Some(Refusal::UnknownCustomer));
        let disabled = customer(serde_json::json!({"enabled": false}));
        assert_eq!(reason(&with(disabled)), Some(Refusal::CustomerDisabled));
        // issued at 2027-01-15T08:00:00Z
        let revoked = customer(serde_json::json!({"tokens_not_before": "2027-01-15T08:00:01Z"}));
        assert_eq!(reason(&with(revoked)), Some(Refusal::Revoked));
        let same_second =
            customer(serde_json::json!({"tokens_not_before": "2027-01-15T08:00:00Z"}));
        assert_eq!(reason(&with(same_second)), None);
    }

    #[test]
    fn reserved_headers_fold_case_and_underscores() {
        for name in [
            "x-fpgen-content-key",
            "X-FPGEN-Customer",
            "x_fpgen_content_key",
            "X_FPGEN_CONTENT_KEY",
            "x-fpgen_content_key",
            "x_fpgen-content-key",
            "x-fpgen-",
        ] {
            assert!(is_reserved_header("x-fpgen-", name), "{name}");
        }
        for name in ["x-fpge", "content-type", "x-fpgenx", "xx-fpgen-a", ""] {
            assert!(!is_reserved_header("x-fpgen-", name), "{name}");
        }
    }

    #[test]
    fn gated_paths() {
        let (_, gate, _) = setup();
        assert!(applies(&gate, "/hms/fp/rights/?ExpressPlayToken=x"));
        assert!(applies(&gate, "/hms/fp/rights/extra"));
        assert!(!applies(&gate, "/hms/fp/rights"));
        assert!(!applies(&gate, "/hms/fp/token"));
        for safe in [
            "/hms/fp/rights/",
            "/hms/fp/rights/a..b/.c/",
            "/hms/fp/rights/?x=../..;",
        ] {
            assert!(is_safe_path(safe), "{safe}");
        }
        for unsafe_path in [
            "/hms/fp/rights/../../admin/keys",
            "/hms/fp/rights/./x",
            "/hms/fp/rights/..",
            "/hms/fp/rights/..%2F..%2Fadmin",
            "/hms/fp/rights/%2e%2e/%2E%2E/admin",
            "/hms/fp/rights/.%2e/admin",
            "/hms/fp/rights/..;/..;/admin",
            "/hms/fp/rights/x;jsessionid=1",
            "/hms/fp/rights/..%5C..%5Cadmin",
            "/hms/fp/rights/%252e%252e/admin",
            "/hms/fp/rights/..%00/admin",
            "/hms/fp/rights/%c0%ae%c0%ae/admin",
            "/hms/fp/rights/..%20/admin",
            "/hms/fp/rights/%EF%BC%8E%EF%BC%8E/admin",
            "/hms/fp/rights/.../admin",
            "/hms/fp/rights/caf\u{e9}",
        ] {
            assert!(!is_safe_path(unsafe_path), "{unsafe_path}");
        }
    }

    #[test]
    fn token_removal_keeps_other_parameters_byte_for_byte() {
        for (path, want) in [
            ("/r/?ExpressPlayToken=abc", "/r/"),
            ("/r/?x=1&ExpressPlayToken=abc&y=a+b", "/r/?x=1&y=a+b"),
            ("/r/?ExpressPlayToken=abc&id=0123%2F", "/r/?id=0123%2F"),
            ("/r/?x=1;ExpressPlayToken=abc;y=2", "/r/?x=1;y=2"),
            ("/r/?x=1&&expressplaytoken=abc", "/r/?x=1&"),
            ("/r/?&ExpressPlayToken=abc&b", "/r/?&b"),
            ("/r/?a=1&b=ExpressPlayToken", "/r/?a=1&b=ExpressPlayToken"),
            ("/r/", "/r/"),
        ] {
            assert_eq!(without_token(path), want, "{path}");
        }
    }

    fn widevine() -> WidevineLicence {
        WidevineLicence {
            environment: Environment::Test,
            customer_id: CustomerId::parse("100001").unwrap(),
            issued_at: 1_800_000_000,
            expires_at: 1_800_000_600,
            keys: vec![
                WidevineKey {
                    kid: Kid::Bytes([0x11; 16]),
                    content_key: ContentKey::new([0xab; 16]),
                    security_level: 1,
                    hdcp_output_control: 2,
                    track_type: None,
                },
                WidevineKey {
                    kid: Kid::Name("audio;x=1".into()),
                    content_key: ContentKey::new([0xcd; 16]),
                    security_level: 3,
                    hdcp_output_control: 0,
                    track_type: Some(TrackType::Audio),
                },
            ],
            license_duration: 3600,
            playback_duration: 0,
            general_flags: 1,
            content_id: Some("film 42".into()),
            extensions: vec![FpExtension {
                kind: *b"wudo",
                payload: vec![1, 2, 3],
            }],
            cookie: Some("c".into()),
        }
    }

    #[test]
    fn widevine_token_becomes_its_headers_at_the_widevine_path() {
        let (config, gate, _) = setup();
        let licence = Licence::Widevine(widevine());
        let token =
            token::seal_licence(&licence, config.sealing_keys.active().unwrap(), &[8; 24]).unwrap();
        let path = format!("/hms/wv/rights/?ExpressPlayToken={token}&id=7");
        assert_eq!(drm_of(&gate, &path), Some(Drm::Widevine));
        let r = redeem(&config, &gate, Drm::Widevine, &path, 1_800_000_000).unwrap();
        let get = |n: &str| {
            r.headers
                .iter()
                .filter(|(k, _)| *k == n)
                .map(|(_, v)| v)
                .collect::<Vec<_>>()
        };
        assert_eq!(get("x-fpgen-drm"), ["widevine"]);
        assert_eq!(get("x-fpgen-kid"), ["11".repeat(16)]);
        assert_eq!(
            get("x-fpgen-key"),
            [
                format!(
                    "kid={};content-key={};security-level=1;hdcp-output-control=2",
                    "11".repeat(16),
                    "ab".repeat(16)
                ),
                format!(
                    "kid=^audio%3Bx%3D1;content-key={};security-level=3;hdcp-output-control=0;track-type=AUDIO",
                    "cd".repeat(16)
                ),
            ]
        );
        assert_eq!(get("x-fpgen-license-duration"), ["3600"]);
        assert_eq!(get("x-fpgen-playback-duration"), ["0"]);
        assert_eq!(get("x-fpgen-general-flags"), ["00000001"]);
        assert_eq!(get("x-fpgen-content-id"), ["film 42"]);
        assert_eq!(get("x-fpgen-wv-extension"), ["wudo,AQID"]);
        assert_eq!(get("x-fpgen-customer"), ["100001"]);
        assert!(get("x-fpgen-iv").is_empty());
        assert_eq!(r.new_path.as_deref(), Some("/hms/wv/rights/?id=7"));
        assert_eq!(r.outcome.kid, Some(Kid::Bytes([0x11; 16])));
    }

    /// FairPlay's licence path refuses, unread, a token longer than the
    /// longest FairPlay token, as it did before Widevine's longer ones.
    #[test]
    fn fairplays_path_reads_no_token_longer_than_fairplays_longest() {
        let (config, gate, _) = setup();
        let long = "A".repeat(token::MAX_FAIRPLAY_TOKEN_CHARS + 1);
        let at = |drm: Drm| {
            let path = format!("{}?ExpressPlayToken={long}", drm.rights_path());
            redeem(&config, &gate, drm, &path, 1_800_000_000).err()
        };
        assert_eq!(
            at(Drm::FairPlay),
            Some(Refusal::Token(TokenError::Malformed))
        );
        // read at Widevine's: version 0 is no version
        assert_eq!(
            at(Drm::Widevine),
            Some(Refusal::Token(TokenError::UnknownVersion))
        );
    }

    /// A token opens only at its own DRM's gate, each way.
    #[test]
    fn a_token_of_another_drm_is_refused() {
        let (config, gate, fairplay) = setup();
        let key = config.sealing_keys.active().unwrap();
        let widevine = token::seal_licence(&Licence::Widevine(widevine()), key, &[8; 24]).unwrap();
        let fairplay_v2 = {
            // FairPlay's payload in a version-2 header reads as FairPlay
            let t = token::seal_licence(&Licence::FairPlay(data()), key, &[8; 24]).unwrap();
            assert_eq!(t, token::seal(&data(), key, &[8; 24]).unwrap());
            t
        };
        for (token, drm, ok) in [
            (&fairplay, Drm::FairPlay, true),
            (&fairplay, Drm::Widevine, false),
            (&fairplay_v2, Drm::Widevine, false),
            (&widevine, Drm::FairPlay, false),
            (&widevine, Drm::Widevine, true),
        ] {
            let path = format!("{}?ExpressPlayToken={token}", drm.rights_path());
            let got = redeem(&config, &gate, drm, &path, 1_800_000_000).map(|_| ());
            let want = if ok {
                Ok(())
            } else {
                Err(Refusal::Token(TokenError::WrongDrm))
            };
            assert_eq!(got, want, "{drm:?}");
        }
    }
}
