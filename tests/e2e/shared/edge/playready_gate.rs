//! PlayReady's gate as an attacker tries it: the rows of the other edge
//! tests at `/playready/RightsManager.asmx` (paths, smuggled licence
//! headers in the headers and in the trailers of a held challenge, a
//! second token), and tokens of another environment, of a disabled or
//! revoked customer.

#[allow(unused_imports, reason = "the shared imports, for every topic")]
use super::support::*;
use fpgen::licence::{Licence, OutputLevels, PlayReadyKey, PlayReadyLicence, Rights};

const LICENCE_PATH: &str = "/playready/RightsManager.asmx";

/// Mints a PlayReady token through `envoy`.
fn mint_playready(envoy: &Envoy) -> String {
    let r = envoy.get(&format!(
        "/hms/pr/token?customerAuthenticator={DEMO_AUTHENTICATOR}&kid=a1b2c3d4e5f60718293a4b5c6d7e8f90\
         &contentKey={CK}&rightsType=BuyToOwn&analogVideoOPL=1&compressedDigitalAudioOPL=1\
         &compressedDigitalVideoOPL=1&uncompressedDigitalAudioOPL=1&uncompressedDigitalVideoOPL=1"
    ));
    assert_eq!(r.status, 200, "{r:?}");
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// A SOAP challenge (abridged) with `custom` in its `LA`.
fn challenge(custom: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\">\
         <soap:Body><AcquireLicense xmlns=\"http://schemas.microsoft.com/DRM/2007/03/protocols\"><challenge>\
         <Challenge xmlns=\"http://schemas.microsoft.com/DRM/2007/03/protocols/messages\"><LA><Version>1</Version>\
         {custom}</LA></Challenge></challenge></AcquireLicense></soap:Body></soap:Envelope>"
    )
    .into_bytes()
}

fn soap(envoy: &Envoy, path: &str, headers: &[(&str, &str)], body: &[u8]) -> common::HttpResponse {
    let mut all = vec![("Content-Type", "text/xml; charset=utf-8")];
    all.extend_from_slice(headers);
    request(envoy.port, "POST", path, &all, Some(body))
}

#[test]
fn paths_smuggled_headers_and_second_tokens_never_pass_the_playready_gate() {
    let (upstream, envoy) = unhardened_gate();
    let token = mint_playready(&envoy);
    let in_challenge = challenge(&format!("<CustomData>{token}</CustomData>"));
    for path in TRAVERSALS {
        let path = path.replacen("/hms/fp/rights", LICENCE_PATH, 1);
        assert_4010(&soap(&envoy, &path, &[], &in_challenge), &path);
        let with_query = format!("{path}?ExpressPlayToken={token}");
        assert_4010(&soap(&envoy, &with_query, &[], &challenge("")), &path);
    }
    for second in ["&expressplaytoken=x", ";ExpressPlayToken=x", "&ExpressPlayToken%00=x"] {
        let path = format!("{LICENCE_PATH}?ExpressPlayToken={token}{second}");
        assert_4010(&soap(&envoy, &path, &[], &in_challenge), second);
    }
    // the licence path in another letter case is still the gate's (IIS
    // matches paths in any case)
    for path in ["/PLAYREADY/RIGHTSMANAGER.ASMX", "/playready/rightsmanager.asmx?x=1"] {
        assert_4010(&soap(&envoy, path, &[], &challenge("")), path);
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
    assert_eq!(
        envoy.stat("wasmcustom.fpgen.redemptions_rejected.unsafe_path"),
        Some(2 * TRAVERSALS.len() as u64)
    );
    let r = soap(&envoy, "/PlayReady/RightsManager.asmx", &[], &in_challenge);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(upstream.requests().pop().unwrap().header_all("x-fpgen-drm"), ["playready"]);
    // a valid token with licence headers of the client's, in every spelling
    let mut smuggled = underscore_spellings();
    smuggled.extend([
        ("x-fpgen-key", "kid=00;content-key=eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"),
        ("X_FPGEN_RIGHTS_TYPE", "BuyToOwn"),
        ("x-fpgen-drm", "fairplay"),
    ]);
    let r = soap(&envoy, &format!("{LICENCE_PATH}?id=1"), &smuggled, &in_challenge);
    assert_eq!(r.status, 200, "{r:?}");
    let req = upstream.requests().pop().unwrap();
    assert_eq!(req.header_all("x-fpgen-drm"), ["playready"]);
    assert_eq!(req.header_all("x-fpgen-key").len(), 1);
    assert_eq!(req.header_all("x-fpgen-customer"), ["100001"]);
    let raw = String::from_utf8_lossy(&req.raw);
    assert!(!raw.contains(EVIL_KEY) && !raw.contains("999999"), "{raw}");
    assert!(!raw.contains("X_FPGEN") && !raw.contains("x_fpgen"), "{raw}");
    assert_eq!(req.path, "/playready/RightsManager.asmx?id=1");
    assert_eq!(req.body, in_challenge);
}

/// The gate holds a challenge until it has read it; a challenge that ends
/// with trailers (HTTP/2) has its trailers scrubbed as well, and the
/// licence data still added to the headers.
#[test]
fn a_held_challenge_ending_with_trailers_is_scrubbed_and_gated() {
    let (upstream, envoy) = unhardened_gate();
    let token = mint_playready(&envoy);
    let in_challenge = challenge(&format!("<CustomData>{token}</CustomData>"));
    let (status, body) = h2c(
        envoy.port,
        "POST",
        LICENCE_PATH,
        &[("content-type", "text/xml; charset=utf-8"), ("x-fpgen-customer", "9")],
        Some(&in_challenge),
        &[
            ("x-fpgen-content-key", EVIL_KEY),
            ("x_fpgen_customer", "9"),
            ("x-checksum", "abc"),
        ],
    );
    assert_eq!((status, body.as_slice()), (0x88, &b"licence ok\n"[..]));
    let req = upstream.requests().pop().unwrap();
    assert_eq!(req.trailers, [("x-checksum".to_owned(), "abc".to_owned())]);
    assert_eq!(req.header_all("x-fpgen-customer"), ["100001"]);
    assert_eq!(req.header_all("x-fpgen-drm"), ["playready"]);
    assert_eq!(req.body, in_challenge);
    // a forged token with trailers: refused, nothing upstream
    let before = upstream.requests().len();
    let (status, _) = h2c(
        envoy.port,
        "POST",
        LICENCE_PATH,
        &[("content-type", "text/xml; charset=utf-8")],
        Some(&challenge("<CustomData>AQAAAA</CustomData>")),
        &[("x-checksum", "abc")],
    );
    assert_ne!(status, 0x88);
    assert_eq!(upstream.requests().len(), before);
}

/// A PlayReady token sealed with the demo key for `environment`.
fn sealed(environment: Environment) -> String {
    let t = now();
    let licence = Licence::PlayReady(PlayReadyLicence {
        environment,
        customer_id: fpgen::ids::CustomerId::parse("100001").unwrap(),
        issued_at: t - 10,
        expires_at: t + 600,
        keys: vec![PlayReadyKey {
            kid: fpgen::ids::Kid::Bytes([1; 16]),
            content_key: fpgen::secret::ContentKey::new([2; 16]),
            min_cert_security_level: None,
        }],
        rights: Rights::BuyToOwn,
        output_levels: OutputLevels::default(),
        unknown_output: None,
        output_control_flags: None,
        general_flags: 0,
        extension: None,
        cookie: None,
    });
    let key = fpgen::token::SealingKey {
        id: fpgen::ids::KeyId::parse(fpgen_fixtures::SEALING_KEY_ID).unwrap(),
        key: fpgen::secret::SealingKeyBytes::from_hex(fpgen_fixtures::SEALING_KEY_HEX).unwrap(),
    };
    fpgen::token::seal_licence(&licence, &key, &[5; 24]).unwrap()
}

#[test]
fn playready_tokens_of_another_environment_or_customer_standing_are_refused() {
    let upstream = RecordingUpstream::start();
    let envoy = start(upstream.port, Options::of(this_module!()), &config_with(|_| {}));
    let custom = |token: &str| challenge(&format!("<CustomData>{token}</CustomData>"));
    assert_eq!(soap(&envoy, LICENCE_PATH, &[], &custom(&sealed(Environment::Test))).status, 200);
    assert_4010(
        &soap(&envoy, LICENCE_PATH, &[], &custom(&sealed(Environment::Production))),
        "production token",
    );
    let minted = mint_playready(&envoy);
    drop(envoy);
    let before = upstream.requests().len();
    let cases = [
        ("customer_disabled", "enabled", json!(false)),
        ("revoked", "tokens_not_before", json!(fpgen::licence::rfc3339(now() + 60))),
    ];
    for (reason, field, value) in cases {
        let config = config_with(|c| c["customers"][0][field] = value);
        let envoy = start(upstream.port, Options::of(this_module!()), &config);
        assert_4010(&soap(&envoy, LICENCE_PATH, &[], &custom(&minted)), reason);
        assert_eq!(
            envoy.stat(&format!("wasmcustom.fpgen.redemptions_rejected.{reason}")),
            Some(1),
            "{reason}"
        );
    }
    assert_eq!(upstream.requests().len(), before, "a refused token reached the licence server");
}
