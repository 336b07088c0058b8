//! Widevine's gate as an attacker tries it: the rows of the other edge
//! tests at `/hms/wv/rights/` (paths, smuggled licence headers, a second
//! token), and tokens of another environment, of a disabled or revoked
//! customer, or of another DRM.

#[allow(unused_imports, reason = "the shared imports, for every topic")]
use super::support::*;
use fpgen::licence::{Licence, WidevineKey, WidevineLicence};

/// Mints a Widevine token through `envoy`.
fn mint_widevine(envoy: &Envoy) -> String {
    let r = envoy.get(&format!(
        "/hms/wv/token?{}&kid=a1b2c3d4e5f60718293a4b5c6d7e8f90&securityLevel=1&hdcpOutputControl=0",
        fpgen_fixtures::query("")
            .split("&iv=")
            .next()
            .unwrap()
    ));
    assert_eq!(r.status, 200, "{r:?}");
    common::token_of_url(&r.text())
}

fn widevine(path_and_token: &str) -> String {
    path_and_token.replacen("/hms/fp/", "/hms/wv/", 1)
}

#[test]
fn paths_smuggled_headers_and_second_tokens_never_pass_the_widevine_gate() {
    let (upstream, envoy) = unhardened_gate();
    let token = mint_widevine(&envoy);
    for path in TRAVERSALS {
        let r = redeem_with(&envoy, &format!("{}?ExpressPlayToken={token}", widevine(path)), &[]);
        assert_4010(&r, path);
    }
    for second in ["&expressplaytoken=x", ";ExpressPlayToken=x", "&ExpressPlayToken%00=x"] {
        let path = format!("/hms/wv/rights/?ExpressPlayToken={token}{second}");
        assert_4010(&redeem_with(&envoy, &path, &[]), second);
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
    assert_eq!(
        envoy.stat("wasmcustom.fpgen.redemptions_rejected.unsafe_path"),
        Some(TRAVERSALS.len() as u64)
    );
    // a valid token with licence headers of the client's, in every spelling
    let mut smuggled = underscore_spellings();
    smuggled.extend([
        ("x-fpgen-key", "kid=00;content-key=eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"),
        ("X_FPGEN_KEY", "kid=00;content-key=eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"),
        ("x-fpgen-drm", "fairplay"),
    ]);
    let path = format!("/hms/wv/rights/?ExpressPlayToken={token}&id=1");
    let r = redeem_with(&envoy, &path, &smuggled);
    assert_eq!(r.status, 200, "{r:?}");
    let req = upstream.requests().pop().unwrap();
    assert_eq!(req.header_all("x-fpgen-drm"), ["widevine"]);
    assert_eq!(req.header_all("x-fpgen-key").len(), 1);
    assert_eq!(req.header_all("x-fpgen-customer"), ["100001"]);
    let raw = String::from_utf8_lossy(&req.raw);
    assert!(!raw.contains(EVIL_KEY) && !raw.contains("999999"), "{raw}");
    assert_eq!(req.path, "/hms/wv/rights/?id=1");
    assert_eq!(req.body, spc());
}

/// A Widevine token sealed with the demo key for `environment`.
fn sealed(environment: Environment) -> String {
    let t = now();
    let licence = Licence::Widevine(WidevineLicence {
        environment,
        customer_id: fpgen::ids::CustomerId::parse("100001").unwrap(),
        issued_at: t - 10,
        expires_at: t + 600,
        keys: vec![WidevineKey {
            kid: fpgen::ids::Kid::Bytes([1; 16]),
            content_key: fpgen::secret::ContentKey::new([2; 16]),
            security_level: 1,
            hdcp_output_control: 0,
            track_type: None,
        }],
        license_duration: 0,
        playback_duration: 0,
        general_flags: 0,
        content_id: None,
        extensions: vec![],
        cookie: None,
    });
    let key = fpgen::token::SealingKey {
        id: fpgen::ids::KeyId::parse(fpgen_fixtures::SEALING_KEY_ID).unwrap(),
        key: fpgen::secret::SealingKeyBytes::from_hex(fpgen_fixtures::SEALING_KEY_HEX).unwrap(),
    };
    fpgen::token::seal_licence(&licence, &key, &[5; 24]).unwrap()
}

#[test]
fn widevine_tokens_of_another_environment_or_customer_standing_are_refused() {
    let upstream = RecordingUpstream::start();
    let envoy = start(upstream.port, Options::of(this_module!()), &config_with(|_| {}));
    let path = |token: &str| format!("/hms/wv/rights/?ExpressPlayToken={token}");
    assert_eq!(redeem_with(&envoy, &path(&sealed(Environment::Test)), &[]).status, 200);
    assert_4010(
        &redeem_with(&envoy, &path(&sealed(Environment::Production)), &[]),
        "production token",
    );
    let minted = mint_widevine(&envoy);
    drop(envoy);
    let before = upstream.requests().len();
    let cases = [
        ("customer_disabled", "enabled", json!(false)),
        ("revoked", "tokens_not_before", json!(fpgen::licence::rfc3339(now() + 60))),
    ];
    for (reason, field, value) in cases {
        let config = config_with(|c| c["customers"][0][field] = value);
        let envoy = start(upstream.port, Options::of(this_module!()), &config);
        assert_4010(&redeem_with(&envoy, &path(&minted), &[]), reason);
        assert_eq!(
            envoy.stat(&format!("wasmcustom.fpgen.redemptions_rejected.{reason}")),
            Some(1),
            "{reason}"
        );
    }
    assert_eq!(upstream.requests().len(), before, "a refused token reached the licence server");
}
