//! What a host does with a request, in order, decided once for every host
//! (the proxy-wasm filter, `fpgen serve`, the native module): where a
//! request goes ([`route`]), which headers a client may not send
//! ([`is_reserved`]), how a token request starts ([`token_request`]) and
//! when its body is too large ([`body_so_far`], [`token_body`]), what the
//! gate answers ([`gate`]), and every header of a reply
//! ([`Response::headers_to_send`](crate::render::Response::headers_to_send)).
//! A host only carries these decisions to and from its own API.

use crate::config::{Config, Redemption};
use crate::error::ErrorCode;
use crate::licence::Drm;
use crate::redeem::{self, Redeemed, Refusal};
use crate::service::{self, Admission, Answer, Host, Outcome, Step};
use crate::stats::Counter;

/// Where a request goes, from its `:path`.
#[derive(Debug)]
pub enum Route<'c> {
    /// A DRM's token endpoint: answered here, so nothing of it goes
    /// upstream (and nothing needs scrubbing).
    Token(Drm),
    /// Upstream, after every reserved header is removed ([`is_reserved`];
    /// none when the gate is off); through the gate first when the path is
    /// a licence path of the gate's (with its DRM).
    Upstream { gate: Option<(&'c Redemption, Drm)> },
    /// The host has no configuration (refused, or not arrived yet): without
    /// one neither the gate's path nor the reserved headers are known, so no
    /// request may pass. Answered with [`unconfigured`] (-9500), whatever
    /// the path.
    Unconfigured,
}

/// Where a request with `path` goes (a request without one goes upstream,
/// scrubbed, past the gate); every request when there is no configuration
/// is [`Route::Unconfigured`].
pub fn route<'c>(config: Option<&'c Config>, path: Option<&str>) -> Route<'c> {
    if config.is_none() {
        return Route::Unconfigured;
    }
    let Some(path) = path else {
        return Route::Upstream { gate: None };
    };
    if let Some(drm) = service::token_endpoint(path) {
        return Route::Token(drm);
    }
    Route::Upstream {
        gate: config
            .and_then(|c| c.redemption.as_ref())
            .and_then(|g| Some((g, redeem::drm_of(g, path)?))),
    }
}

/// Whether a header (or trailer) `name` must be removed from a request
/// that goes upstream: licence data is the gate's to send, never a
/// client's. Always `false` when the gate is off.
pub fn is_reserved(config: Option<&Config>, name: &str) -> bool {
    config
        .and_then(|c| c.redemption.as_ref())
        .is_some_and(|g| redeem::is_reserved_header(&g.header_prefix, name))
}

/// How a token request goes on once its headers are read.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "made and matched once per token request, on the stack; boxing the step would cost an allocation each"
)]
pub enum TokenStart {
    /// Answered, or waiting for its budgets.
    Step(Step),
    /// A POST: collect its body (each piece to [`body_so_far`]), then
    /// [`token_body`].
    AwaitBody,
}

/// The answer to every token request while a host has no configuration
/// (it was refused, or has not arrived): an internal error (-9500).
pub fn unconfigured(query: &str) -> Answer {
    service::refuse(ErrorCode::Internal, query)
}

/// A token request's start from its method and headers ([`service::admit`]):
/// refused, answered from its query, or waiting for its body. A POST whose
/// headers end the request (`ends_with_headers`: Envoy's end of stream) has
/// an empty body, and is answered with it.
pub fn token_request<S: AsRef<str>>(
    config: &Config,
    drm: Drm,
    query: &str,
    method: &str,
    header: impl Fn(&str) -> Option<S>,
    ends_with_headers: bool,
    host: &dyn Host,
) -> TokenStart {
    match service::admit(method, header, config.max_body_bytes) {
        Admission::Refuse(code) => TokenStart::Step(Step::Answer(refuse_for(drm, code, query))),
        Admission::Query => TokenStart::Step(service::begin_for(config, drm, query, b"", host)),
        Admission::Body if ends_with_headers => {
            TokenStart::Step(token_body(config, drm, query, b"", host))
        }
        Admission::Body => TokenStart::AwaitBody,
    }
}

/// The body collected so far is `size` bytes: the refusal (413) as soon
/// as that is past the cap, before the rest arrives.
pub fn body_so_far(config: &Config, drm: Drm, query: &str, size: usize) -> Option<Answer> {
    (size > config.max_body_bytes).then(|| refuse_for(drm, ErrorCode::BodyTooLarge, query))
}

/// A token request to `drm`'s endpoint refused before its parameters are
/// read.
fn refuse_for(drm: Drm, code: ErrorCode, query: &str) -> Answer {
    let Answer { response, outcome } = service::refuse(code, query);
    Answer {
        response,
        outcome: outcome.of_drm(drm),
    }
}

/// How much of a body a host reads to decide: one byte past the cap, so
/// that a body past it is seen to be.
pub fn body_read_limit(config: &Config) -> usize {
    config.max_body_bytes.saturating_add(1)
}

/// The token request with its whole body (at most [`body_read_limit`]
/// bytes of it): refused when past the cap, else its steps.
pub fn token_body(config: &Config, drm: Drm, query: &str, body: &[u8], host: &dyn Host) -> Step {
    match body_so_far(config, drm, query, body.len()) {
        Some(refused) => Step::Answer(refused),
        None => service::begin_for(config, drm, query, body, host),
    }
}

/// What the gate decided for a request at its path.
#[derive(Debug)]
pub enum Gate {
    /// Upstream, with the licence data added.
    Pass(Redeemed),
    /// Answered here, with why.
    Refuse { refusal: Refusal, answer: Answer },
}

impl Gate {
    /// The counter the decision adds one to (with the customer when known).
    pub fn counter(&self) -> Counter {
        match self {
            Self::Pass(_) => Counter::RedemptionsAccepted,
            Self::Refuse { refusal, .. } => Counter::RedemptionsRejected(*refusal),
        }
    }

    /// What the access log records of it.
    pub fn outcome(&self) -> &Outcome {
        match self {
            Self::Pass(redeemed) => &redeemed.outcome,
            Self::Refuse { answer, .. } => &answer.outcome,
        }
    }
}

/// The gate's check of the token in `path` (or, at PlayReady's licence
/// path, in the challenge), on `drm`'s licence path, at `now` (Unix
/// seconds).
pub fn gate(
    config: &Config,
    gate: &Redemption,
    (drm, challenge): (Drm, Option<&[u8]>),
    path: &str,
    now: i64,
) -> Gate {
    match redeem::redeem_challenge(config, gate, drm, path, challenge, now) {
        Ok(redeemed) => Gate::Pass(redeemed),
        Err(refusal) => Gate::Refuse {
            refusal,
            answer: Answer {
                response: refusal.response(gate.error_format),
                outcome: Outcome::refused(refusal.code()).of_drm(drm),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo configuration with a body cap of 10 bytes.
    fn config() -> Config {
        let demo = include_str!("../../tests/fixtures/demo-config.json");
        let small = demo.replace("\"max_body_bytes\": 8192", "\"max_body_bytes\": 10");
        Config::from_json(small.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn routes_are_decided_from_the_path() {
        let c = config();
        assert!(matches!(
            route(Some(&c), Some("/hms/fp/token?x")),
            Route::Token(Drm::FairPlay)
        ));
        assert!(matches!(
            route(Some(&c), Some("/hms/wv/token/")),
            Route::Token(Drm::Widevine)
        ));
        assert!(matches!(
            route(Some(&c), Some("/hms/wv/rights/?ExpressPlayToken=x")),
            Route::Upstream {
                gate: Some((_, Drm::Widevine))
            }
        ));
        // No configuration: nothing passes, whatever the path (before, a
        // licence request went upstream unchecked and unscrubbed)
        for path in [
            Some("/hms/fp/token/"),
            Some("/hms/fp/rights/?ExpressPlayToken=x"),
            Some("/other"),
            None,
        ] {
            assert!(matches!(route(None, path), Route::Unconfigured), "{path:?}");
        }
        assert_eq!(unconfigured("").response.status, 500);
        assert!(matches!(
            route(Some(&c), Some("/hms/fp/rights/?ExpressPlayToken=x")),
            Route::Upstream {
                gate: Some((_, Drm::FairPlay))
            }
        ));
        for other in [Some("/other"), None] {
            assert!(matches!(
                route(Some(&c), other),
                Route::Upstream { gate: None }
            ));
        }
        assert!(is_reserved(Some(&c), "X_FPGEN_Content-Key"));
        assert!(!is_reserved(Some(&c), "x-request-id"));
        assert!(!is_reserved(None, "x-fpgen-content-key"));
    }

    #[test]
    fn a_post_waits_for_its_body_unless_its_headers_end_the_request() {
        let c = config();
        let host = crate::service::SystemHost;
        let header = |_: &str| None::<&str>;
        let start =
            |method, ends| token_request(&c, Drm::FairPlay, "", method, header, ends, &host);
        assert!(matches!(start("POST", false), TokenStart::AwaitBody));
        for (method, ends) in [("POST", true), ("GET", false), ("GET", true)] {
            let TokenStart::Step(Step::Answer(a)) = start(method, ends) else {
                panic!("{method} (ends with its headers: {ends}) is answered at once")
            };
            assert_eq!(a.outcome.error, Some(ErrorCode::AuthenticatorMissing));
        }
    }

    #[test]
    fn bodies_past_the_cap_are_refused_with_413() {
        let c = config();
        assert_eq!(body_read_limit(&c), 11);
        assert!(body_so_far(&c, Drm::FairPlay, "", 10).is_none());
        let refused = body_so_far(&c, Drm::FairPlay, "errorFormat=json", 11).map(|a| a.response);
        assert_eq!(refused.as_ref().map(|r| r.status), Some(413));
        assert!(refused.is_some_and(|r| r.body.contains("-9413")));
        let host = crate::service::SystemHost;
        let Step::Answer(a) = token_body(&c, Drm::FairPlay, "", &[b'a'; 11], &host) else {
            panic!("a refused body needs no budget")
        };
        assert_eq!(a.outcome.error, Some(ErrorCode::BodyTooLarge));
    }
}
