//! The token endpoint as a pure function: request in, response out. The host
//! shell (`filter`) supplies the clock and the randomness through [`Host`].

use crate::config::Config;
use crate::error::{ApiError, ErrorCode};
use crate::params::{error_format_of, Param, Params};
use crate::render::{self, ErrorFormat, Response};
use crate::request;
use crate::token::{self, NONCE_LEN};

/// The path the filter answers (with or without a trailing `/`).
pub const TOKEN_PATH: &str = "/hms/fp/token";

/// What the filter needs from its host.
pub trait Host {
    /// Unix time in seconds.
    fn now(&self) -> i64;
    /// Fills `buf` with cryptographically secure random bytes; `false` when
    /// the host cannot.
    fn fill_random(&self, buf: &mut [u8]) -> bool;
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

/// What happened, for logs and stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Minted {
        customer_id: String,
        expires_at: i64,
    },
    Rejected(ErrorCode),
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
    let params = Params::parse(query.as_bytes(), body);
    let format = match params.get(Param::ErrorFormat).map(ErrorFormat::parse) {
        None => ErrorFormat::Html,
        Some(Some(f)) => f,
        Some(None) => {
            let shown: String = params
                .get(Param::ErrorFormat)
                .unwrap_or("")
                .chars()
                .take(32)
                .collect();
            return fail(
                ApiError::new(ErrorCode::InvalidErrorFormat, shown),
                ErrorFormat::Html,
            );
        }
    };
    match mint(config, &params, host) {
        Ok((url, outcome)) => (render::success(url), outcome),
        Err(e) => fail(e, format),
    }
}

fn fail(err: ApiError, format: ErrorFormat) -> (Response, Outcome) {
    let code = err.code;
    (render::error(&err, format), Outcome::Rejected(code))
}

fn mint(
    config: &Config,
    params: &Params<'_>,
    host: &dyn Host,
) -> Result<(String, Outcome), ApiError> {
    if let Some(param) = params.repeated {
        return Err(ApiError::new(
            param.invalid_code(),
            format!("{} is given more than once", param.name()),
        ));
    }
    let customer = request::authenticate(config, params)?;
    let valid = request::validate(params, customer, host.now())?;
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
    let mut url = String::with_capacity(128 + token.len());
    config.redeem_url.write_prefix(&mut url, valid.use_https);
    url.push_str(&token);
    let outcome = Outcome::Minted {
        customer_id: customer.id.clone(),
        expires_at: valid.licence.expires_at,
    };
    Ok((url, outcome))
}
