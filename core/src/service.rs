//! The token endpoint as a pure function: request in, response out. The host
//! shell (`filter`, or `fpgen serve`) supplies the clock, the randomness,
//! the client address and the token budgets through [`Host`], and asks
//! [`admit`] what to do with a request before it reads a body.

use crate::config::{ClientAddressPolicy, Config, Customer, FailureMode, FleetBudget};
use crate::error::{ApiError, ErrorCode, ErrorFormat};
use crate::fleet;
use crate::ids::CustomerId;
use crate::licence::Drm;
use crate::params::{error_format_of, Param, Params};
use crate::render::{self, Response};
use crate::request;
use crate::token::{self, NONCE_LEN};
use std::net::{IpAddr, SocketAddr};

/// FairPlay's token path (with or without a trailing `/`); each DRM's is
/// [`Drm::token_path`].
pub const TOKEN_PATH: &str = "/hms/fp/token";

/// A host call that failed: the host could not do what was asked. Always
/// an internal error (-9500) for the request, never a refusal of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostFailure(pub &'static str);

/// The answer to one budget question ([`Question`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// One token taken (local) or counted (fleet).
    Taken,
    /// The customer's `token_budget` is spent (-2019).
    Spent,
    /// The customer's `fleet_budget` has no token left this period (-2019).
    FleetSpent,
    /// The fleet budget could not be asked; the configuration's
    /// `failure_mode` decides (-9503, or minted uncounted).
    FleetUnavailable(fleet::Failure),
}

impl Budget {
    /// The budget a rate-limit service's answer (for one token) gives.
    pub fn of_fleet(answer: Result<fleet::Verdict, fleet::Failure>) -> Self {
        match answer {
            Ok(fleet::Verdict::Ok { .. }) => Self::Taken,
            Ok(fleet::Verdict::OverLimit { .. }) => Self::FleetSpent,
            Err(failure) => Self::FleetUnavailable(failure),
        }
    }
}

/// A budget a sealed token waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Question {
    /// One token of the customer's `token_budget` of this many, from the
    /// host ([`Host::take_from_budget`]).
    Local(u64),
    /// One token of the customer's fleet budget, from the rate-limit
    /// service (with leases, maybe from the host's lease of it).
    Fleet(FleetBudget),
}

/// What the filter needs from its host.
pub trait Host {
    /// Unix time in seconds.
    fn now(&self) -> i64;
    /// Fills `buf` with cryptographically secure random bytes.
    fn fill_random(&self, buf: &mut [u8]) -> Result<(), HostFailure>;
    /// A fresh random nonce for one token. By default it comes from this
    /// thread's [`nonces`] pool, which `fill_random` refills
    /// [`nonces::PER_FILL`] nonces at a time: one system call (or, in
    /// Wasm, one host call) per that many tokens instead of one each.
    fn nonce(&self) -> Result<[u8; NONCE_LEN], HostFailure> {
        nonces::next(|buf| self.fill_random(buf))
    }
    /// The client's address, as the configuration's `client_address` policy
    /// determines it; `None` when unknown.
    fn client_address(&self) -> Option<IpAddr>;
    /// Takes one token from `customer`'s budget of `budget`: exact across
    /// everything that serves this configuration in one process (every
    /// worker of an Envoy, every thread of `fpgen serve`). Asked by
    /// [`handle`] only for a token already sealed ([`Step::Budget`]).
    fn take_from_budget(&self, customer: &CustomerId, budget: u64) -> Result<Budget, HostFailure>;
    /// Gives back the token just taken from `customer`'s budget (the fleet
    /// budget refused the token it was taken for).
    fn give_back_to_budget(&self, customer: &CustomerId);
}

/// Token nonces drawn from a per-thread pool of random bytes.
///
/// A nonce is not secret (every token carries its own in the clear), so a
/// pool of nonces not yet used is not key material; what matters is that
/// no nonce is ever handed out twice under one key. Each one is taken
/// from the pool exactly once and its bytes are zeroed as it leaves, and a
/// pool is one thread's (a Wasm VM has one thread; Envoy never forks a
/// running process). A refill that fails leaves the pool empty: the
/// request gets the host's failure and the next one tries again.
pub mod nonces {
    use super::HostFailure;
    use crate::token::NONCE_LEN;
    use std::cell::RefCell;

    /// How many nonces one `fill_random` call provides (768 bytes).
    pub const PER_FILL: usize = 32;

    struct Pool {
        bytes: [u8; PER_FILL * NONCE_LEN],
        /// How many of the pool's nonces were handed out.
        used: usize,
    }

    thread_local! {
        static POOL: RefCell<Pool> = const {
            RefCell::new(Pool { bytes: [0; PER_FILL * NONCE_LEN], used: PER_FILL })
        };
    }

    /// The next unused nonce of this thread's pool, refilled with `fill`
    /// when every nonce in it was used.
    pub fn next(
        fill: impl FnOnce(&mut [u8]) -> Result<(), HostFailure>,
    ) -> Result<[u8; NONCE_LEN], HostFailure> {
        POOL.with(|pool| {
            let mut pool = pool
                .try_borrow_mut()
                .map_err(|_| HostFailure("the nonce pool is in use"))?;
            if pool.used >= PER_FILL {
                fill(&mut pool.bytes)?;
                pool.used = 0;
            }
            let start = pool.used * NONCE_LEN;
            let taken = pool
                .bytes
                .get_mut(start..start + NONCE_LEN)
                .ok_or(HostFailure("the nonce pool is out of range"))?;
            let mut nonce = [0u8; NONCE_LEN];
            nonce.copy_from_slice(taken);
            taken.fill(0);
            pool.used += 1;
            Ok(nonce)
        })
    }
}

/// The host of native programs (the `fpgen` command, `fpgen serve`,
/// tests): the system clock and the operating system's random source.
#[cfg(not(target_arch = "wasm32"))]
pub struct SystemHost;

#[cfg(not(target_arch = "wasm32"))]
impl Host for SystemHost {
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    fn fill_random(&self, buf: &mut [u8]) -> Result<(), HostFailure> {
        getrandom::fill(buf).map_err(|_| HostFailure("no randomness from the operating system"))
    }

    /// Offline minting has no network peer: customers with
    /// `allowed_networks` are refused (-2003).
    fn client_address(&self) -> Option<IpAddr> {
        None
    }

    /// Budgets count what a serving host mints; offline minting is not
    /// counted (`fpgen mint` uses [`mint_url`], which never asks).
    fn take_from_budget(&self, _: &CustomerId, _: u64) -> Result<Budget, HostFailure> {
        Ok(Budget::Taken)
    }

    fn give_back_to_budget(&self, _: &CustomerId) {}
}

/// What to do with a request to the token path, decided from its method
/// and headers before any body is read. The filter and `fpgen serve` both
/// ask this one function, so they admit and refuse the same requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Answer from the query string alone (GET; a body is ignored).
    Query,
    /// Read the form body (at most `max_body_bytes`; more is 413), then
    /// answer. A POST without a body is answered with an empty one.
    Body,
    /// Refuse with this code, in the format the query asks for.
    Refuse(ErrorCode),
}

/// The admission rule: GET answers from the query; a POST must announce a
/// form body (`application/x-www-form-urlencoded`, or no content type) and
/// declare no more than `max_body_bytes`, whether or not a body follows;
/// every other method is 405. `header` reads a request header by its
/// lower-case name; only a POST's `content-type` and `content-length` are
/// read (a host call each in the filter).
pub fn admit<S: AsRef<str>>(
    method: &str,
    header: impl Fn(&str) -> Option<S>,
    max_body_bytes: usize,
) -> Admission {
    match method {
        "GET" => return Admission::Query,
        "POST" => {}
        _ => return Admission::Refuse(ErrorCode::MethodNotAllowed),
    }
    let content_type = header("content-type");
    if !is_form_content_type(content_type.as_ref().map(AsRef::as_ref)) {
        return Admission::Refuse(ErrorCode::UnsupportedMediaType);
    }
    let declared = header("content-length").and_then(|v| v.as_ref().trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > max_body_bytes) {
        Admission::Refuse(ErrorCode::BodyTooLarge)
    } else {
        Admission::Body
    }
}

/// A request header as the filter reads it from Envoy, for hosts that see
/// each value on its own (`fpgen serve`): every value of the name joined
/// with `,` (Envoy joins repeated headers so), and bytes that are not UTF-8
/// replaced with U+FFFD (so `Content-Type: \xff` is a content type, not an
/// absent one). `None` when there is no value.
pub fn joined_header<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<String> {
    let mut values = values.into_iter();
    let mut joined = String::from_utf8_lossy(values.next()?).into_owned();
    for value in values {
        joined.push(',');
        joined.push_str(&String::from_utf8_lossy(value));
    }
    Some(joined)
}

/// Whether a request path (with its query) is a token endpoint.
pub fn is_token_path(path: &str) -> bool {
    token_endpoint(path).is_some()
}

/// The DRM whose token endpoint a request path (with its query) is.
pub fn token_endpoint(path: &str) -> Option<Drm> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let path = path.strip_suffix('/').unwrap_or(path);
    Drm::ALL.into_iter().find(|d| d.token_path() == path)
}

pub use crate::outcome::Outcome;
pub use crate::params::query_of;

/// Is `content_type` one whose body fpgen reads as parameters?
pub fn is_form_content_type(content_type: Option<&str>) -> bool {
    content_type.is_none_or(|ct| {
        let essence = ct.split(';').next().unwrap_or("").trim();
        essence.is_empty() || essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")
    })
}

/// A response and what it was, for the host to send and record.
#[derive(Debug)]
pub struct Answer {
    pub response: Response,
    pub outcome: Outcome,
}

/// The answer to a request refused before its parameters are read
/// (method, body size, media type; or no configuration), in the format the
/// query asks for.
pub fn refuse(code: ErrorCode, query: &str) -> Answer {
    let format = error_format_of(query.as_bytes()).unwrap_or_default();
    Answer {
        response: render::error(&code.into(), format),
        outcome: Outcome::refused(code),
    }
}

/// One token request, minted or refused, before rendering (for tools such
/// as `fpgen mint` that print errors their own way): its record, and the
/// licence URL or why there is none.
pub struct Minting {
    /// What happened, for stats and the access log: its error when refused,
    /// else the customer, kid and expiry of the token.
    pub outcome: Outcome,
    /// The licence URL (`…?ExpressPlayToken=<token>`), or the error.
    pub result: Result<String, ApiError>,
    /// The DRM of the endpoint: PlayReady's answers its URL and token
    /// apart, as JSON.
    pub drm: Drm,
    /// Where the token starts in the licence URL.
    token_at: usize,
    /// The format errors are rendered in.
    pub format: ErrorFormat,
}

/// The licence URL is a bearer token: `Debug` says only that there is one.
impl std::fmt::Debug for Minting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let result: Result<&str, &ApiError> = match &self.result {
            Ok(_) => Ok("<redacted licence URL>"),
            Err(e) => Err(e),
        };
        f.debug_struct("Minting")
            .field("outcome", &self.outcome)
            .field("result", &result)
            .field("format", &self.format)
            .finish()
    }
}

impl Minting {
    /// The licence URL without the token (its `?ExpressPlayToken=` too) and
    /// the token, as PlayReady's answer gives them; `None` when refused.
    pub fn url_and_token(&self) -> Option<(&str, &str)> {
        let url = self.result.as_ref().ok()?;
        let cut = self.token_at.checked_sub("?ExpressPlayToken=".len())?;
        Some((url.get(..cut)?, url.get(self.token_at..)?))
    }

    /// The response, and the access-log and stats record.
    pub fn into_answer(self) -> Answer {
        let response = match (self.drm, &self.result) {
            (Drm::PlayReady, Ok(_)) => match self.url_and_token() {
                Some((url, token)) => render::playready_success(url, token),
                None => render::error(&ErrorCode::Internal.into(), self.format),
            },
            _ => match self.result {
                Ok(url) => render::success(url),
                Err(error) => render::error(&error, self.format),
            },
        };
        Answer {
            response,
            outcome: self.outcome,
        }
    }

    /// The same request refused with `error` (its token withheld: the
    /// record keeps the customer and the cookie only).
    fn refuse(self, error: ApiError) -> Self {
        Self {
            outcome: Outcome {
                error: Some(error.code),
                kid: None,
                expires_at: None,
                ..self.outcome
            },
            result: Err(error),
            format: self.format,
            ..self
        }
    }
}

/// Answers one GET or POST to the token endpoint. `body` is the complete
/// form-urlencoded body (empty for GET). For hosts that answer every budget
/// question at once (tests, benches, fuzzers): [`handle_with_fleet`]
/// without a rate-limit service, so a fleet budget fails the request
/// (-9500). The filter and `fpgen serve` drive the [`Step`]s themselves.
pub fn handle(config: &Config, query: &str, body: &[u8], host: &dyn Host) -> Answer {
    handle_for(config, Drm::FairPlay, query, body, host)
}

/// [`handle`] at `drm`'s token endpoint.
pub fn handle_for(config: &Config, drm: Drm, query: &str, body: &[u8], host: &dyn Host) -> Answer {
    let no_service = |_: &CustomerId, _| Err(HostFailure("this host cannot ask fleet budgets"));
    answer_with_fleet(begin_for(config, drm, query, body, host), host, &no_service)
}

/// [`handle`], with a fleet budget asked of `fleet`: the steps of
/// [`begin`], the local budget taken from `host`
/// ([`Host::take_from_budget`]) and the fleet budget from `fleet`.
pub fn handle_with_fleet(
    config: &Config,
    query: &str,
    body: &[u8],
    host: &dyn Host,
    fleet: &dyn Fn(&CustomerId, FleetBudget) -> Result<Budget, HostFailure>,
) -> Answer {
    answer_with_fleet(begin(config, query, body, host), host, fleet)
}

/// `step` driven to its answer: its local budget from `host`, its fleet
/// budget from `fleet`.
fn answer_with_fleet(
    mut step: Step,
    host: &dyn Host,
    fleet: &dyn Fn(&CustomerId, FleetBudget) -> Result<Budget, HostFailure>,
) -> Answer {
    loop {
        match step.settle_locally(host) {
            Settled::Answer(answer) => return answer,
            Settled::Fleet(pending, budget) => {
                let answer = fleet(pending.customer(), budget);
                step = pending.continue_with(answer, host);
            }
        }
    }
}

/// A token request after everything fpgen decides on its own: either its
/// answer, or a sealed token that waits for its customer's budgets. The
/// host carries each [`Question`] to whatever keeps that budget (shared
/// data across an Envoy's workers, a process-wide count in `fpgen serve`,
/// the rate-limit service for a fleet budget) and hands the answer to
/// [`PendingBudget::continue_with`].
#[derive(Debug)]
pub enum Step {
    /// Refused, or minted and answered.
    Answer(Answer),
    /// Minted and sealed, to be answered once the budgets say.
    Budget(PendingBudget),
}

impl Step {
    /// The step with its local budget asked of `host`
    /// ([`Host::take_from_budget`]), which every host keeps in its own
    /// process: the answer, or the token waiting for its fleet budget, which
    /// is the host's to ask (its lease of it, or the rate-limit service).
    pub fn settle_locally(self, host: &dyn Host) -> Settled {
        let pending = match self {
            Step::Answer(answer) => return Settled::Answer(answer),
            Step::Budget(pending) => pending,
        };
        match pending.question() {
            Question::Fleet(budget) => Settled::Fleet(pending, budget),
            Question::Local(budget) => {
                let taken = host.take_from_budget(pending.customer(), budget);
                // Once: after the local budget, a step asks the fleet or is answered.
                pending.continue_with(taken, host).settle_locally(host)
            }
        }
    }
}

/// A [`Step`] after its local budget ([`Step::settle_locally`]).
#[derive(Debug)]
pub enum Settled {
    /// Refused, or minted and answered.
    Answer(Answer),
    /// Minted, sealed and counted by the local budget (when it has one),
    /// waiting for one token of this fleet budget: the host asks it and hands
    /// the answer to [`PendingBudget::continue_with`].
    Fleet(PendingBudget, FleetBudget),
}

/// A minted token held back until its customer's budgets give one token:
/// the local `token_budget` first (when there is one), then the fleet
/// budget. Everything that can fail has run (validation, randomness,
/// sealing): a token taken for it is never wasted, and a refused request
/// never takes one (a local token taken before the fleet refuses is given
/// back).
#[derive(Debug)]
pub struct PendingBudget {
    customer: CustomerId,
    /// The customer's `token_budget`, when it has one (asked first).
    local: Option<u64>,
    fleet: Option<(FleetBudget, FailureMode)>,
    /// The budget asked now.
    question: Question,
    minting: Minting,
}

impl PendingBudget {
    /// Whose budget.
    pub fn customer(&self) -> &CustomerId {
        &self.customer
    }

    /// The budget to ask now.
    pub fn question(&self) -> Question {
        self.question
    }

    /// Whether a local token was taken for this request: the fleet is
    /// asked only after the local budget gave one.
    fn holds_local_token(&self) -> bool {
        self.local.is_some() && matches!(self.question, Question::Fleet(_))
    }

    /// The answer to [`PendingBudget::question`]: the next question, or
    /// the answer to the request (the token when every budget gave one,
    /// -2019 when one is spent, -9503 when the fleet budget cannot be asked
    /// and the failure mode is closed, -9500 when the host failed).
    pub fn continue_with(mut self, answer: Result<Budget, HostFailure>, host: &dyn Host) -> Step {
        let open = self
            .fleet
            .is_some_and(|(_, mode)| mode == FailureMode::Open);
        let refusal = match answer {
            Ok(Budget::Taken) => None,
            Ok(Budget::FleetUnavailable(_)) if open => None,
            Ok(refused) => Some(self.refusal(refused)),
            Err(failure) => Some(internal(failure)),
        };
        match (refusal, self.question, self.fleet) {
            (None, Question::Local(_), Some((fleet, _))) => {
                self.question = Question::Fleet(fleet);
                Step::Budget(self)
            }
            (None, _, _) => Step::Answer(self.minting.into_answer()),
            (Some(error), _, _) => {
                if self.holds_local_token() {
                    host.give_back_to_budget(&self.customer);
                }
                Step::Answer(self.minting.refuse(error).into_answer())
            }
        }
    }

    /// The request went away before its budgets answered (the client
    /// left): a local token taken for it is given back.
    pub fn abandon(self, host: &dyn Host) {
        if let Some(customer) = self.abandoned() {
            host.give_back_to_budget(&customer);
        }
    }

    /// The request went away before its budgets answered: the customer
    /// whose local token it took, to be given back (`None` when it took
    /// none), for a host that keeps its budgets apart from its
    /// [`Host`] ([`PendingBudget::abandon`] gives it back itself).
    pub fn abandoned(self) -> Option<CustomerId> {
        self.holds_local_token().then_some(self.customer)
    }

    fn refusal(&self, refused: Budget) -> ApiError {
        match refused {
            Budget::Spent => ApiError::new(
                ErrorCode::InsufficientTokens,
                format!("the budget of {} tokens is spent", self.local.unwrap_or(0)),
            ),
            Budget::FleetSpent => {
                let (tokens, per) = self
                    .fleet
                    .map_or((0, "period"), |(b, _)| (b.tokens, b.per.as_str()));
                ApiError::new(
                    ErrorCode::InsufficientTokens,
                    format!("the fleet budget of {tokens} tokens per {per} is spent"),
                )
            }
            Budget::FleetUnavailable(failure) => {
                ApiError::new(ErrorCode::BudgetUnavailable, failure.message())
            }
            Budget::Taken => ApiError::from(ErrorCode::Internal),
        }
    }
}

/// The first step of a token request: every check and the sealing; the
/// budgets, when the customer has any, are the host's to ask (see [`Step`]).
pub fn begin(config: &Config, query: &str, body: &[u8], host: &dyn Host) -> Step {
    begin_for(config, Drm::FairPlay, query, body, host)
}

/// [`begin`] at `drm`'s token endpoint.
pub fn begin_for(config: &Config, drm: Drm, query: &str, body: &[u8], host: &dyn Host) -> Step {
    let (minting, customer) = prepare(config, drm, query, body, host);
    let Some(customer) = customer.filter(|_| minting.result.is_ok()) else {
        return Step::Answer(minting.into_answer());
    };
    let fleet = customer.fleet_budget.zip(
        config
            .rate_limit_service
            .as_ref()
            .map(|service| service.failure_mode),
    );
    let question = match (customer.token_budget, fleet) {
        (Some(budget), _) => Question::Local(budget),
        (None, Some((budget, _))) => Question::Fleet(budget),
        (None, None) => return Step::Answer(minting.into_answer()),
    };
    Step::Budget(PendingBudget {
        customer: customer.id.clone(),
        local: customer.token_budget,
        fleet,
        question,
        minting,
    })
}

/// A token request minted without asking any budget, before rendering: for
/// `fpgen mint`, whose tokens no budget counts (budgets count what a
/// serving host mints).
pub fn mint_url(config: &Config, query: &str, body: &[u8], host: &dyn Host) -> Minting {
    mint_url_for(config, Drm::FairPlay, query, body, host)
}

/// [`mint_url`] for `drm`.
pub fn mint_url_for(
    config: &Config,
    drm: Drm,
    query: &str,
    body: &[u8],
    host: &dyn Host,
) -> Minting {
    prepare(config, drm, query, body, host).0
}

/// Parses, checks and seals; the customer, when a token was minted for one.
fn prepare<'c>(
    config: &'c Config,
    drm: Drm,
    query: &str,
    body: &[u8],
    host: &dyn Host,
) -> (Minting, Option<&'c Customer>) {
    let params = Params::parse(query.as_bytes(), body);
    let cookie = params
        .get(Param::Cookie)
        .filter(|_| params.malformed(drm) != Some(Param::Cookie))
        .and_then(|c| request::parse_cookie(c).ok());
    let (format, result) = match params.get(Param::ErrorFormat) {
        None => (ErrorFormat::default(), mint(config, drm, &params, host)),
        Some(text) => match ErrorFormat::parse(text) {
            Some(format) => (format, mint(config, drm, &params, host)),
            None => {
                let shown: String = text.chars().take(32).collect();
                let error = ApiError::new(ErrorCode::InvalidErrorFormat, shown);
                (ErrorFormat::Html, Err((error, None)))
            }
        },
    };
    let (minting, customer) = match result {
        Ok((url, outcome, customer)) => {
            let outcome = Outcome { cookie, ..outcome };
            let minting = Minting {
                outcome,
                // the URL ends `ExpressPlayToken=<token>`, and a token
                // (base64url) holds no `=`
                token_at: url.rfind('=').map_or(0, |i| i + 1),
                result: Ok(url),
                drm,
                format,
            };
            (minting, Some(customer))
        }
        Err((error, customer_id)) => {
            let outcome = Outcome {
                error: Some(error.code),
                customer_id,
                cookie,
                drm: Some(drm),
                ..Outcome::default()
            };
            let minting = Minting {
                outcome,
                result: Err(error),
                drm,
                token_at: 0,
                format,
            };
            (minting, None)
        }
    };
    (minting, customer)
}

/// A token request refused: the error, and the customer when
/// authentication got that far.
type Refusal = (ApiError, Option<CustomerId>);

/// A minted token: the licence URL, its record (without the cookie), and
/// the customer.
type Minted<'c> = (String, Outcome, &'c Customer);

/// Checks the request's form, then authenticates and mints for the customer.
fn mint<'c>(
    config: &'c Config,
    drm: Drm,
    params: &Params<'_>,
    host: &dyn Host,
) -> Result<Minted<'c>, Refusal> {
    if let Some(param) = params.repeated(drm) {
        let detail = format!("{} is given more than once", param.name());
        return Err((ApiError::new(param.invalid_code_for(drm), detail), None));
    }
    if let Some(param) = params.malformed(drm) {
        let detail = format!("{} holds a malformed percent escape", param.name());
        return Err((ApiError::new(param.invalid_code_for(drm), detail), None));
    }
    let customer = request::authenticate(config, params).map_err(|e| (e, None))?;
    match mint_for(config, drm, customer, params, host) {
        Ok((url, outcome)) => Ok((url, outcome, customer)),
        Err(error) => Err((error, Some(customer.id.clone()))),
    }
}

/// Applies the account's controls, validates and seals: the licence URL
/// and the token's record. The budget is not taken here: [`begin`] hands
/// it to the host only after everything that can fail (randomness,
/// sealing) has succeeded, so no refused or failed request spends a token.
fn mint_for(
    config: &Config,
    drm: Drm,
    customer: &Customer,
    params: &Params<'_>,
    host: &dyn Host,
) -> Result<(String, Outcome), ApiError> {
    check_account(customer, drm, host)?;
    let key = config.sealing_keys.active().ok_or(ErrorCode::Internal)?;
    let (token, licence, use_https) = match drm {
        // FairPlay's own path, as before: its data sealed without a copy
        Drm::FairPlay => {
            let valid = request::validate(params, customer, host.now())?;
            let nonce = host.nonce().map_err(internal)?;
            let token = token::seal(&valid.licence, key, &nonce)
                .map_err(|_| ApiError::from(ErrorCode::Internal))?;
            (
                token,
                crate::licence::Licence::FairPlay(valid.licence),
                valid.use_https,
            )
        }
        _ => {
            let (licence, use_https) = request::validate_for(drm, params, customer, host.now())?;
            let nonce = host.nonce().map_err(internal)?;
            let token = token::seal_licence(&licence, key, &nonce)
                .map_err(|_| ApiError::from(ErrorCode::Internal))?;
            (token, licence, use_https)
        }
    };
    let prefix = config.redeem_url(drm).prefix(use_https);
    // + 2: render::success appends the CRLF without reallocating
    let mut url = String::with_capacity(prefix.len() + token.len() + 2);
    url.push_str(prefix);
    url.push_str(&token);
    // the cookie is recorded by `prepare`, for refusals too
    let outcome = Outcome {
        cookie: None,
        ..Outcome::of_licence(licence)
    };
    Ok((url, outcome))
}

/// A host failure as the request's error: -9500 with what failed.
fn internal(failure: HostFailure) -> ApiError {
    ApiError::new(ErrorCode::Internal, failure.0)
}

/// The account's own controls, checked right after authentication.
fn check_account(customer: &Customer, drm: Drm, host: &dyn Host) -> Result<(), ApiError> {
    if !customer.enabled {
        return Err(ErrorCode::AccountDisabled.into());
    }
    match drm {
        Drm::FairPlay if !customer.fairplay_authorized => {
            return Err(ErrorCode::FairPlayNotAuthorized.into());
        }
        Drm::FairPlay if !customer.fairplay_enabled => {
            return Err(ErrorCode::FairPlayDisabled.into());
        }
        Drm::Widevine if !customer.widevine_enabled => {
            return Err(ApiError::new(
                ErrorCode::WidevineDisabled,
                "the customer's configuration does not enable Widevine (widevine_enabled)",
            ));
        }
        Drm::PlayReady if !customer.playready_enabled => {
            return Err(ApiError::new(
                ErrorCode::PlayReadyDisabled,
                "the customer's configuration does not enable PlayReady (playready_enabled)",
            ));
        }
        _ => {}
    }
    // The gate refuses a token issued before tokens_not_before (revoked):
    // one minted now would be refused, so none is minted or charged.
    if let Some(since) = customer.tokens_not_before.filter(|t| host.now() < *t) {
        let detail = format!(
            "the customer's tokens are revoked until {} (tokens_not_before)",
            crate::licence::rfc3339(since)
        );
        return Err(ApiError::new(ErrorCode::AccountDisabled, detail));
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

#[cfg(test)]
mod tests {
    use super::{nonces, HostFailure};
    use std::cell::Cell;

    /// One fill serves `PER_FILL` tokens, each its own part of the bytes
    /// drawn; the next token refills.
    #[test]
    fn a_fill_serves_its_nonces_once_each() {
        let fills = Cell::new(0u8);
        let fill = |buf: &mut [u8]| {
            fills.set(fills.get() + 1);
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (i / 24) as u8 ^ (fills.get() << 6);
            }
            Ok(())
        };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..=nonces::PER_FILL {
            assert!(seen.insert(nonces::next(fill).unwrap()));
        }
        assert_eq!(fills.get(), 2);
        assert_eq!(seen.len(), nonces::PER_FILL + 1);
    }

    /// A failed refill is the request's failure; the pool stays empty, so
    /// the next request asks again rather than reusing old bytes.
    #[test]
    fn a_failed_fill_fails_the_request_and_the_next_one_asks_again() {
        let failed = nonces::next(|_| Err(HostFailure("no randomness")));
        assert_eq!(failed, Err(HostFailure("no randomness")));
        let asked = Cell::new(false);
        let nonce = nonces::next(|buf| {
            asked.set(true);
            buf.fill(7);
            Ok(())
        });
        assert!(asked.get());
        assert_eq!(nonce, Ok([7; 24]));
    }
}
