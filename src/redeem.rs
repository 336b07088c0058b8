//! The redemption gate: at the licence path, verify the `ExpressPlayToken`
//! before the request reaches the licence server, and hand the token's
//! licence data upstream in request headers.

use crate::config::{Config, Redemption};
use crate::error::{ApiError, ErrorCode};
use crate::licence::{rfc3339, LicenceData};
use crate::render::{self, Response};
use crate::token::{self, TokenError};
use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

/// The query parameter that carries the token.
pub const TOKEN_PARAM: &str = "ExpressPlayToken";

/// Characters percent-encoded in free-text header values (cookie, kid
/// names): controls, `%` itself, and (by `utf8_percent_encode`) non-ASCII.
const HEADER_TEXT: &AsciiSet = &CONTROLS.add(b'%');

/// A verified redemption: what to change on the request before it goes on.
#[derive(Debug)]
pub struct Redeemed {
    /// Headers to add (names include the configured prefix); a name may repeat.
    pub headers: Vec<(String, String)>,
    /// The new `:path`, when the token parameter is to be removed.
    pub new_path: Option<String>,
    /// For the access log: who minted the token, its kid, cookie and expiry.
    pub customer_id: String,
    pub kid: Option<String>,
    pub cookie: Option<String>,
    pub expires_at: i64,
}

/// Whether the gate applies to this request path (query ignored).
pub fn applies(gate: &Redemption, path: &str) -> bool {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    path.starts_with(&gate.path_prefix)
}

/// Whether a request header must be removed before anything else: every
/// header with the gate's prefix, so clients cannot inject licence data.
pub fn is_reserved_header(gate: &Redemption, name: &str) -> bool {
    name.get(..gate.header_prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(&gate.header_prefix))
}

/// Checks the token in `path` and builds the upstream headers, or the -4010
/// response.
pub fn redeem(
    config: &Config,
    gate: &Redemption,
    path: &str,
    now: i64,
) -> Result<Redeemed, (Response, TokenError)> {
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let reject = |reason: TokenError| {
        let err = ApiError::new(ErrorCode::InvalidToken, reason.to_string());
        (render::error(&err, gate.error_format), reason)
    };
    let mut tokens =
        form_urlencoded::parse(query.as_bytes()).filter(|(name, _)| name == TOKEN_PARAM);
    let token = match (tokens.next(), tokens.next()) {
        (Some((_, token)), None) => token,
        _ => return Err(reject(TokenError::Malformed)),
    };
    let data =
        token::open(&token, &config.sealing_keys, config.environment, now).map_err(reject)?;
    let key_id = token::key_id(&token).unwrap_or_default();
    let new_path = gate.strip_token.then(|| without_token(path));
    Ok(Redeemed {
        headers: licence_headers(&gate.header_prefix, &data, &key_id),
        new_path,
        kid: data.kid.as_ref().map(ToString::to_string),
        cookie: data.cookie.clone(),
        expires_at: data.expires_at,
        customer_id: data.customer_id,
    })
}

/// The licence data as `prefix`-named headers.
fn licence_headers(prefix: &str, d: &LicenceData, key_id: &str) -> Vec<(String, String)> {
    let name = |suffix: &str| format!("{prefix}{suffix}");
    let mut h = vec![
        (name("content-key"), hex::encode(d.content_key.expose())),
        (name("iv"), hex::encode(d.iv)),
        (name("rental-duration"), d.rental_duration.to_string()),
        (name("general-flags"), format!("{:08x}", d.general_flags)),
        (name("customer"), d.customer_id.clone()),
        (name("environment"), d.environment.as_str().to_owned()),
        (name("issued"), rfc3339(d.issued_at)),
        (name("expires"), rfc3339(d.expires_at)),
        (name("key-id"), key_id.to_owned()),
    ];
    if let Some(kid) = &d.kid {
        h.push((
            name("kid"),
            utf8_percent_encode(&kid.to_string(), HEADER_TEXT).to_string(),
        ));
    }
    if let Some(cookie) = &d.cookie {
        h.push((
            name("cookie"),
            utf8_percent_encode(cookie, HEADER_TEXT).to_string(),
        ));
    }
    for ext in &d.extensions {
        let payload = base64::engine::general_purpose::STANDARD.encode(&ext.payload);
        h.push((
            name("fp-extension"),
            format!("{},{payload}", ext.kind_str()),
        ));
    }
    h
}

/// `path` with every `ExpressPlayToken` query parameter removed; the other
/// parameters are kept byte for byte.
fn without_token(path: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
            !form_urlencoded::parse(name.as_bytes()).any(|(n, _)| n == TOKEN_PARAM)
                && !pair.is_empty()
        })
        .collect();
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::licence::{Environment, FpExtension, Kid};
    use crate::secret::ContentKey;

    const CONFIG: &str = r#"{
      "environment": "test",
      "sealing_keys": [{"id": "old", "key": "0101010101010101010101010101010101010101010101010101010101010101"},
                       {"id": "new", "key": "0202020202020202020202020202020202020202020202020202020202020202"}],
      "active_sealing_key": "new",
      "customers": [],
      "redemption": {"strip_token": true}
    }"#;

    fn data() -> LicenceData {
        LicenceData {
            environment: Environment::Test,
            customer_id: "100001".into(),
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
        let r = redeem(&config, &gate, &path, 1_800_000_000).unwrap();
        let get = |n: &str| {
            r.headers
                .iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("x-fpgen-content-key"), ["ab".repeat(16)]);
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
        let cases = [
            (String::from("/hms/fp/rights/"), TokenError::Malformed),
            (
                format!("/hms/fp/rights/?ExpressPlayToken={token}&ExpressPlayToken={token}"),
                TokenError::Malformed,
            ),
            (
                format!("/hms/fp/rights/?ExpressPlayToken={token}x"),
                TokenError::Malformed,
            ),
        ];
        for (path, reason) in cases {
            let (response, got) = redeem(&config, &gate, &path, 1_800_000_000).unwrap_err();
            assert_eq!((response.status, got), (403, reason), "{path}");
            assert!(response.body.contains("-4010"));
        }
        let path = format!("/hms/fp/rights/?ExpressPlayToken={token}");
        let (_, reason) = redeem(&config, &gate, &path, 1_800_000_600).unwrap_err();
        assert_eq!(reason, TokenError::Expired);
    }

    #[test]
    fn reserved_headers_and_paths() {
        let (_, gate, _) = setup();
        assert!(is_reserved_header(&gate, "x-fpgen-content-key"));
        assert!(is_reserved_header(&gate, "X-FPGEN-Customer"));
        assert!(!is_reserved_header(&gate, "x-fpge"));
        assert!(!is_reserved_header(&gate, "content-type"));
        assert!(applies(&gate, "/hms/fp/rights/?ExpressPlayToken=x"));
        assert!(applies(&gate, "/hms/fp/rights/extra"));
        assert!(!applies(&gate, "/hms/fp/rights"));
        assert!(!applies(&gate, "/hms/fp/token"));
    }

    #[test]
    fn token_removal_keeps_other_parameters() {
        assert_eq!(without_token("/r/?ExpressPlayToken=abc"), "/r/");
        assert_eq!(
            without_token("/r/?x=1&ExpressPlayToken=abc&y=a+b"),
            "/r/?x=1&y=a+b"
        );
        assert_eq!(without_token("/r/"), "/r/");
    }
}
