//! Envoy's logs at debug level hold no secret of a token request.

#[allow(unused_imports, reason = "the shared imports, for every topic")]
use super::support::*;

#[test]
fn at_debug_level_post_token_requests_leave_no_secret_in_envoys_logs() {
    let envoy = Envoy::start(this_module!(), &config_with(|_| {}));
    // As an operator chasing a problem would: debug switched on at run
    // time. (Started at debug, or given a new listener at debug, Envoy also
    // logs every filter's configuration, keys included: docs/security.md.)
    let r = request(
        envoy.admin_port,
        "POST",
        "/logging?level=debug",
        &[],
        Some(b""),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let marker_path = "fpgen-debug-path-marker-7f3a";
    let marker_body = "fpgen-debug-body-marker-91c4";
    for extra in ["", "&kid=^film&cookie=c1&expirationTime=%2B600"] {
        let body = format!(
            "customerAuthenticator={DEMO_AUTHENTICATOR}&contentKey={DEBUG_CK}&iv={IV}&marker={marker_body}{extra}"
        );
        let r = post_form(envoy.port, "/hms/fp/token", body.as_bytes());
        assert_eq!(r.status, 200, "{r:?}");
    }
    // a refused one too: errors must not echo the secret either
    let r = post_form(
        envoy.port,
        "/hms/fp/token",
        format!("customerAuthenticator={DEMO_AUTHENTICATOR}&contentKey={DEBUG_CK}&iv=00")
            .as_bytes(),
    );
    assert_eq!(r.status, 400);
    // the positive control: at debug, Envoy does log request paths
    assert_eq!(
        envoy.get(&format!("/passthrough?{marker_path}")).status,
        200
    );
    std::thread::sleep(Duration::from_millis(300));
    let log = envoy.envoy_log() + &envoy.access_log();
    assert!(
        log.contains(marker_path),
        "the debug log shows no paths at all"
    );
    assert!(log.contains("[debug]"), "not a debug log");
    for secret in [DEBUG_CK, "0123456789abcdef0123456789abcdef", marker_body] {
        assert!(!log.contains(secret), "{secret} is in Envoy's debug log");
    }
}

// ---- players' licence requests -------------------------------------------
