//! Account controls: disabled accounts, FairPlay options, `allowed_networks`
//! and where the client address comes from.

#[allow(unused_imports, reason = "the shared imports, for every topic")]
use super::support::*;

#[test]
fn account_controls() {
    let cases: [(&str, serde_json::Value, i32, u16); 3] = [
        ("enabled", false.into(), -2031, 403),
        ("fairplay_authorized", false.into(), -6006, 403),
        ("fairplay_enabled", false.into(), -6009, 403),
    ];
    for (field, value, code, status) in cases {
        let config = account_config(|c| c[field] = value);
        let (got_status, outcome) = account_call(&config, Some("192.0.2.1"));
        assert_eq!((got_status, outcome.code()), (status, code), "{field}");
        assert_eq!(
            outcome.customer_id.as_ref().map(CustomerId::as_str),
            Some("100001")
        );
    }
    // authentication still comes first: a disabled account with a wrong secret is -2018
    let config = account_config(|c| c["enabled"] = false.into());
    let Answer {
        response: r,
        outcome: o,
    } = service::handle(
        &config,
        "customerAuthenticator=100001,x&contentKey=00",
        b"",
        &host(),
    );
    assert_eq!((r.status, o.code(), o.customer_id), (401, -2018, None));
}

/// A customer whose tokens are revoked until a moment to come gets no
/// token (the gate would refuse it as revoked): -2031, the detail says
/// until when, and no budget is taken. Once that moment has passed, tokens
/// are minted again.
#[test]
fn no_token_is_minted_that_the_gate_would_refuse_as_revoked() {
    let revoked = account_config(|c| {
        c["tokens_not_before"] = "2999-01-01T00:00:00Z".into();
        c["token_budget"] = 5.into();
    });
    let counting = FakeHost {
        budgets: Budgets::Counted,
        ..host()
    };
    let Answer { response, outcome } = service::handle(
        &revoked,
        &format!("{}&errorFormat=json", base()),
        b"",
        &counting,
    );
    assert_eq!((response.status, outcome.code()), (403, -2031));
    assert!(
        response.body.contains("revoked until 2999-01-01T00:00:00Z"),
        "{}",
        response.body
    );
    assert_eq!(counting.taken.get(), 0, "a refused mint spends no budget");
    let past = account_config(|c| c["tokens_not_before"] = "2000-01-01T00:00:00Z".into());
    assert_eq!(account_call(&past, Some("192.0.2.1")).0, 200);
}

#[test]
fn allowed_networks() {
    let config = account_config(|c| {
        c["allowed_networks"] = serde_json::json!(["192.0.2.0/24", "2001:db8::/32"])
    });
    assert_eq!(account_call(&config, Some("192.0.2.77")).0, 200);
    assert_eq!(account_call(&config, Some("2001:db8::5")).0, 200);
    assert_eq!(account_call(&config, Some("198.51.100.1")).1.code(), -2003);
    assert_eq!(account_call(&config, Some("::1")).1.code(), -2003);
    assert_eq!(
        account_call(&config, None).1.code(),
        -2003,
        "unknown address is refused"
    );
    let open = account_config(|_| {});
    assert_eq!(account_call(&open, None).0, 200, "no list, no check");
}

#[test]
fn client_address_policy() {
    use fpgen::config::ClientAddressPolicy;
    let direct = ClientAddressPolicy::default();
    let xff = |hops| ClientAddressPolicy {
        use_x_forwarded_for: true,
        trusted_hops: hops,
    };
    let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
    // by default x-forwarded-for is ignored
    assert_eq!(
        service::client_address(&direct, Some("192.0.2.1:5555"), Some("10.0.0.1")),
        ip("192.0.2.1")
    );
    assert_eq!(
        service::client_address(&direct, Some("[2001:db8::1]:80"), None),
        ip("2001:db8::1")
    );
    assert_eq!(service::client_address(&direct, None, None), None);
    // client -> trusted proxy 198.51.100.7 -> Envoy, which appended the proxy
    let arrived = "203.0.113.5, 198.51.100.7";
    assert_eq!(
        service::client_address(&xff(1), Some("198.51.100.7:1"), Some(arrived)),
        ip("203.0.113.5")
    );
    // a client that forges entries only adds them on the left
    let forged = "10.0.0.1, 203.0.113.5, 198.51.100.7";
    assert_eq!(
        service::client_address(&xff(1), Some("198.51.100.7:1"), Some(forged)),
        ip("203.0.113.5")
    );
    assert_eq!(
        service::client_address(&xff(2), Some("198.51.100.7:1"), Some(forged)),
        ip("10.0.0.1")
    );
    // fewer entries than hops, none, or garbage: unknown
    assert_eq!(
        service::client_address(&xff(2), Some("198.51.100.7:1"), Some(arrived)),
        None
    );
    assert_eq!(
        service::client_address(&xff(1), Some("127.0.0.1:1"), None),
        None
    );
    assert_eq!(
        service::client_address(&xff(1), None, Some("garbage, 127.0.0.1")),
        None
    );
}
