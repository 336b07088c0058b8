//! The token endpoint as a pure function: request in, response out. The host
//! shell (`filter`) supplies the clock and the randomness through [`Host`].

use crate::config::{ClientAddressPolicy, Config, Customer};
use crate::error::{ApiError, ErrorCode};
use crate::params::{error_format_of, Param, Params};
use crate::render::{self, ErrorFormat, Response};
use crate::request;
use crate::token::{self, NONCE_LEN};
use std::net::{IpAddr, SocketAddr};

/// The path the filter answers (with or without a trailing `/`).
pub const TOKEN_PATH: &str = "/hms/fp/token";

/// What the filter needs from its host.
pub trait Host {
    /// Unix time in seconds.
    fn now(&self) -> i64;
    /// Fills `buf` with cryptographically secure random bytes; `false` when
    /// the host cannot.
    fn fill_random(&self, buf: &mut [u8]) -> bool;
    /// The client's address, as the configuration's `client_address` policy
    /// determines it; `None` when unknown.
    fn client_address(&self) -> Option<IpAddr>;
    /// Takes one token from `customer`'s budget of `budget`, shared by every
    /// worker of this Envoy; `false` when the budget is spent.
    fn take_from_budget(&self, customer: &str, budget: u64) -> bool;
}

/// The host of native programs (the `fpgen` command, tests): the system
/// clock and the operating system's random source.
#[cfg(not(target_arch = "wasm32"))]
pub struct SystemHost;

#[cfg(not(target_arch = "wasm32"))]
impl Host for SystemHost {
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    fn fill_random(&self, buf: &mut [u8]) -> bool {
        getrandom::fill(buf).is_ok()
    }

    /// Offline minting has no network peer: customers with
    /// `allowed_networks` are refused (-2003).
    fn client_address(&self) -> Option<IpAddr> {
        None
    }

    /// Budgets count what one Envoy mints; offline minting is not counted.
    fn take_from_budget(&self, _customer: &str, _budget: u64) -> bool {
        true
    }
}

/// Whether a request path (with its query) is the token endpoint.
pub fn is_token_path(path: &str) -> bool {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    path == TOKEN_PATH || path.strip_suffix('/') == Some(TOKEN_PATH)
}

/// The query string of a request path (empty when there is none).
pub fn query_of(path: &str) -> &str {
    path.split_once('?').map_or("", |(_, q)| q)
}

/// What happened to one request, for stats and the access log. Holds only
/// validated, printable values (never key material).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// `None` when a token was minted.
    pub error: Option<ErrorCode>,
    /// The authenticated customer, when authentication got that far.
    pub customer_id: Option<String>,
    /// The kid of the minted token (`^name` or hex).
    pub kid: Option<String>,
    /// The request's cookie, when it is valid.
    pub cookie: Option<String>,
    /// Expiry of the minted token, Unix seconds.
    pub expires_at: Option<i64>,
}

impl Outcome {
    pub fn minted(&self) -> bool {
        self.error.is_none()
    }

    /// The numeric code for logs: 0 for a minted token.
    pub fn code(&self) -> i32 {
        self.error.map_or(0, ErrorCode::code)
    }

    /// The outcome as one logfmt line for the access log:
    /// `code=0 customer=100001 kid=^film cookie=corr-1 expires=2026-12-23T05:29:31Z`.
    /// Fields that are unknown are left out; kid and cookie are
    /// percent-encoded where they hold spaces, `"`, `=`, `%` or non-ASCII, so
    /// the line splits on spaces.
    pub fn log_fields(&self) -> String {
        use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
        const FIELD: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'=').add(b'%');
        let mut out = format!("code={}", self.code());
        if let Some(id) = &self.customer_id {
            out.push_str(" customer=");
            out.push_str(id);
        }
        if let Some(kid) = &self.kid {
            out.push_str(" kid=");
            out.extend(utf8_percent_encode(kid, FIELD));
        }
        if let Some(cookie) = &self.cookie {
            out.push_str(" cookie=");
            out.extend(utf8_percent_encode(cookie, FIELD));
        }
        if let Some(expires) = self.expires_at {
            out.push_str(" expires=");
            out.push_str(&crate::licence::rfc3339(expires));
        }
        out
    }
}

/// Is `content_type` one whose body fpgen reads as parameters?
pub fn is_form_content_type(content_type: Option<&str>) -> bool {
    content_type.is_none_or(|ct| {
        let essence = ct.split(';').next().unwrap_or("").trim();
        essence.is_empty() || essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")
    })
}

/// The response to a request the filter refuses before reading parameters
/// (method, body size, media type), in the format the query asks for.
pub fn reject(code: ErrorCode, query: &str) -> Response {
    render::error(
        &code.into(),
        error_format_of(query.as_bytes()).unwrap_or_default(),
    )
}

/// Answers one GET or POST to the token endpoint. `body` is the complete
/// form-urlencoded body (empty for GET).
pub fn handle(config: &Config, query: &str, body: &[u8], host: &dyn Host) -> (Response, Outcome) {
    let (result, format, outcome) = mint_url(config, query, body, host);
    let response = match result {
        Ok(url) => render::success(url),
        Err(err) => render::error(&err, format),
    };
    (response, outcome)
}

/// [`handle`] before rendering: the licence URL or the error, the error
/// format the request asked for, and the outcome (for tools such as
/// `fpgen mint` that print errors their own way).
pub fn mint_url(
    config: &Config,
    query: &str,
    body: &[u8],
    host: &dyn Host,
) -> (Result<String, ApiError>, ErrorFormat, Outcome) {
    let params = Params::parse(query.as_bytes(), body);
    let mut outcome = Outcome {
        cookie: params
            .get(Param::Cookie)
            .filter(|_| params.malformed != Some(Param::Cookie))
            .and_then(|c| request::parse_cookie(c).ok()),
        ..Outcome::default()
    };
    let (format, result) = match params.get(Param::ErrorFormat).map(ErrorFormat::parse) {
        Some(None) => {
            let shown: String = params
                .get(Param::ErrorFormat)
                .unwrap_or("")
                .chars()
                .take(32)
                .collect();
            (
                ErrorFormat::Html,
                Err(ApiError::new(ErrorCode::InvalidErrorFormat, shown)),
            )
        }
        format => (
            format.flatten().unwrap_or_default(),
            mint(config, &params, host, &mut outcome),
        ),
    };
    if let Err(err) = &result {
        outcome.error = Some(err.code);
    }
    (result, format, outcome)
}

/// Authenticates, applies the account's controls, validates, spends one
/// token of the budget, and seals. Fills `outcome` as it learns things.
fn mint(
    config: &Config,
    params: &Params<'_>,
    host: &dyn Host,
    outcome: &mut Outcome,
) -> Result<String, ApiError> {
    if let Some(param) = params.repeated {
        return Err(ApiError::new(
            param.invalid_code(),
            format!("{} is given more than once", param.name()),
        ));
    }
    if let Some(param) = params.malformed {
        return Err(ApiError::new(
            param.invalid_code(),
            format!("{} holds a malformed percent escape", param.name()),
        ));
    }
    let customer = request::authenticate(config, params)?;
    outcome.customer_id = Some(customer.id.clone());
    check_account(customer, host)?;
    let valid = request::validate(params, customer, host.now())?;
    outcome.kid = valid.licence.kid.as_ref().map(ToString::to_string);
    if let Some(budget) = customer.token_budget {
        if !host.take_from_budget(&customer.id, budget) {
            return Err(ApiError::new(
                ErrorCode::InsufficientTokens,
                format!("the budget of {budget} tokens is spent"),
            ));
        }
    }
    let key = config.sealing_keys.active().ok_or(ErrorCode::Internal)?;
    let mut nonce = [0u8; NONCE_LEN];
    if !host.fill_random(&mut nonce) {
        return Err(ApiError::new(
            ErrorCode::Internal,
            "no randomness available",
        ));
    }
    let token = token::seal(&valid.licence, key, &nonce)
        .map_err(|_| ApiError::from(ErrorCode::Internal))?;
    let prefix = config.redeem_url.prefix(valid.use_https);
    let mut url = String::with_capacity(prefix.len() + token.len() + 2);
    url.push_str(prefix);
    url.push_str(&token);
    outcome.expires_at = Some(valid.licence.expires_at);
    Ok(url)
}

/// The account's own controls, checked right after authentication.
fn check_account(customer: &Customer, host: &dyn Host) -> Result<(), ApiError> {
    if !customer.enabled {
        return Err(ErrorCode::AccountDisabled.into());
    }
    if !customer.fairplay_authorized {
        return Err(ErrorCode::FairPlayNotAuthorized.into());
    }
    if !customer.fairplay_enabled {
        return Err(ErrorCode::FairPlayDisabled.into());
    }
    if let Some(networks) = &customer.allowed_networks {
        let allowed = host
            .client_address()
            .is_some_and(|ip| networks.iter().any(|net| net.contains(&ip)));
        if !allowed {
            return Err(ErrorCode::InvalidIpAddress.into());
        }
    }
    Ok(())
}

/// The client address under `policy`: the connection's peer (Envoy's
/// `source.address`), or, when `x-forwarded-for` is trusted, its entry
/// `trusted_hops` places left of the last. Envoy (with `use_remote_address:
/// true`, as at any edge) appends the peer it saw as the last entry; each
/// trusted proxy in front of it appended the address it saw. `None` when
/// the address cannot be known (then allow-lists refuse the request).
pub fn client_address(
    policy: &ClientAddressPolicy,
    source: Option<&str>,
    xff: Option<&str>,
) -> Option<IpAddr> {
    if policy.use_x_forwarded_for {
        let hops = usize::try_from(policy.trusted_hops).ok()?;
        let entry = xff?.rsplit(',').nth(hops)?;
        return parse_ip(entry.trim());
    }
    parse_ip(source?)
}

/// `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]:80`.
fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
}
