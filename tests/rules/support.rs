//! What the rule tests share: the configuration they run against, a fake
//! host, and calls through `service::handle` that return what a client sees.

pub use fpgen::config::Config;
pub use fpgen::error::ErrorCode;
pub use fpgen::ids::{CustomerId, Kid};
pub use fpgen::licence::Environment;
pub use fpgen::service::{self, Answer, Host as _, Outcome};
pub use fpgen::token;
pub use fpgen_fixtures::{
    self as fixtures, Budgets, FakeHost, Random, CONTENT_KEY as CK, EK, IV, KEK_HEX as DEMO_KEK,
    NOW, STORED_KID,
};

pub const AUTH: &str = "customerAuthenticator=100001,0123456789abcdef0123456789abcdef";

/// The demo configuration with the hosted service's default licence URL, a
/// second KEK, a named kid in the key store, a second test customer without
/// a KEK and a production customer.
pub fn config_json() -> serde_json::Value {
    let mut v = fixtures::demo_json();
    let o = v.as_object_mut().unwrap();
    o.remove("redeem_url");
    o.remove("redemption");
    v["keks"]["other-kek"] = "ffffffffffffffffffffffffffffffff".into();
    v["customers"][0]["key_store"]["^movie-7"] = EK.into();
    let mut second = fixtures::customer("100002", "test");
    second["key_store"] = serde_json::json!({ STORED_KID: EK });
    let customers = v["customers"].as_array_mut().unwrap();
    customers.push(second);
    customers.push(fixtures::customer("200001", "production"));
    v
}

pub fn config() -> Config {
    Config::from_json(config_json().to_string().as_bytes()).unwrap()
}

/// The host of most tests: a client address, a fixed nonce.
pub fn host() -> FakeHost {
    FakeHost::with_client("192.0.2.10")
}

pub fn call(query: &str) -> (fpgen::render::Response, Outcome) {
    let Answer { response, outcome } = service::handle(&config(), query, b"", &host());
    (response, outcome)
}

/// Asserts that `query` fails with `code` and `status`, in both formats.
#[track_caller]
pub fn fails(query: &str, code: i32, status: u16) {
    let (r, outcome) = call(query);
    assert_eq!(
        (r.status, outcome_code(&outcome)),
        (status, Some(code)),
        "{query}: {}",
        r.body
    );
    assert_eq!(r.content_type, "text/html; charset=utf-8");
    assert!(r.body.contains(&format!("Error {code}")), "{}", r.body);
    let (r, _) = call(&format!("{query}&errorFormat=json"));
    assert_eq!(r.status, status, "{query}");
    assert_eq!(r.content_type, "application/json");
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["code"], code, "{query}: {}", r.body);
    assert!(v["message"].as_str().unwrap().len() > 5);
}

pub fn outcome_code(o: &Outcome) -> Option<i32> {
    o.error.map(|c| c.code())
}

/// Mints and opens the token with the configured key ring.
#[track_caller]
pub fn mints(query: &str) -> (String, fpgen::licence::LicenceData) {
    let (r, outcome) = call(query);
    assert_eq!(r.status, 200, "{query}: {}", r.body);
    assert!(outcome.minted());
    assert_eq!(r.content_type, "text/uri-list");
    let url = r
        .body
        .strip_suffix("\r\n")
        .expect("CRLF-terminated")
        .to_owned();
    let token = fixtures::token_of_url(&url);
    let data = token::open(&token, config().sealing_keys(), Environment::Test, NOW).unwrap();
    (url, data.into_fairplay().unwrap())
}

pub fn base() -> String {
    format!("{AUTH}&contentKey={CK}&iv={IV}")
}

/// The JSON message of a refused request.
#[track_caller]
pub fn message(query: &str) -> String {
    let (r, _) = call(&format!("{query}&errorFormat=json"));
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(r.status >= 400, "{query}: {}", r.body);
    v["message"].as_str().unwrap().to_owned()
}

pub fn account_config(edit: impl FnOnce(&mut serde_json::Value)) -> Config {
    let mut v = config_json();
    edit(&mut v["customers"][0]);
    Config::from_json(v.to_string().as_bytes()).unwrap()
}

pub fn account_call(config: &Config, client: Option<&str>) -> (u16, Outcome) {
    let host = FakeHost {
        client: client.map(|c| c.parse().unwrap()),
        budgets: Budgets::Counted,
        ..FakeHost::default()
    };
    let Answer { response, outcome } = service::handle(config, &base(), b"", &host);
    (response.status, outcome)
}

/// Every redemption refusal reason and the stat name operators' dashboards
/// count it under, written out. The match has no wildcard: a new reason
/// does not compile here until it is added, with its name.
pub fn refusal_stat_name(reason: fpgen::redeem::Refusal) -> &'static str {
    use fpgen::redeem::Refusal as R;
    use fpgen::token::TokenError as T;
    match reason {
        R::Token(T::Malformed) => "malformed",
        R::Token(T::UnknownVersion) => "unknown_version",
        R::Token(T::UnknownKey) => "unknown_key",
        R::Token(T::Forged) => "forged",
        R::Token(T::BadPayload) => "bad_payload",
        R::Token(T::WrongEnvironment) => "wrong_environment",
        R::Token(T::Expired) => "expired",
        R::Token(T::IssuedInFuture) => "issued_in_future",
        R::Token(T::LifetimeTooLong) => "lifetime_too_long",
        R::Token(T::WrongDrm) => "wrong_drm",
        R::UnsafePath => "unsafe_path",
        R::UnknownCustomer => "unknown_customer",
        R::CustomerDisabled => "customer_disabled",
        R::Revoked => "revoked",
        R::Challenge(fpgen::challenge::ChallengeError::Malformed) => "malformed_challenge",
        R::Challenge(fpgen::challenge::ChallengeError::TwoTokens) => "two_tokens",
        R::TokensDiffer => "tokens_differ",
        R::ChallengeTooLarge => "challenge_too_large",
    }
}

/// The answer of a step that must be the last.
pub fn answered(step: fpgen::service::Step) -> Answer {
    match step {
        fpgen::service::Step::Answer(answer) => answer,
        fpgen::service::Step::Budget(p) => panic!("still waiting for {:?}", p.question()),
    }
}

/// A configuration whose first customer has a fleet budget (and, with
/// `local`, a token budget too), asked of a service in `mode`.
pub fn fleet_config(mode: &str, local: Option<u64>) -> Config {
    let mut v = config_json();
    v["rate_limit_service"] = serde_json::json!({"cluster": "ratelimit", "failure_mode": mode});
    v["customers"][0]["fleet_budget"] =
        serde_json::json!({"tokens": 100, "per": "day", "lease": 10});
    if let Some(budget) = local {
        v["customers"][0]["token_budget"] = budget.into();
    }
    Config::from_json(v.to_string().as_bytes()).unwrap()
}
