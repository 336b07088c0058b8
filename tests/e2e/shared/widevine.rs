//! Widevine through a real Envoy: `/hms/wv/token` minted as the hosted
//! service's clients ask for it, and redeemed at `/hms/wv/rights/` by the
//! gate, as players post their licence challenge there.

use crate::common::{
    self, get, now, post_form, request, shared, Envoy, HttpResponse, Options, RecordingUpstream,
    CK, DEMO_AUTHENTICATOR,
};
use fpgen::licence::{Environment, Licence, TrackType, WidevineLicence};
use fpgen_fixtures::{EK_CONTENT_KEY as STORED_KEY, STORED_KID};
use serde_json::Value;

const PATH: &str = "/hms/wv/token";
const KID: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
/// A Widevine licence challenge as players send it: a binary protobuf
/// `SignedMessage` (the bytes only need to arrive unchanged).
const CHALLENGE: &[u8] = b"\x08\x01\x12\x80\x02binary challenge\x00\xff\xfe";

/// The usual request: the demo authenticator, a kid and its content key,
/// the two required Widevine settings, then `extra`.
fn query(extra: &str) -> String {
    format!(
        "customerAuthenticator={DEMO_AUTHENTICATOR}&kid={KID}&contentKey={CK}\
         &securityLevel=1&hdcpOutputControl=0{extra}"
    )
}

/// Asserts a 200 Widevine licence URL and opens its token.
#[track_caller]
fn open_url(r: &HttpResponse) -> (String, WidevineLicence) {
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/uri-list"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let url = r.text().strip_suffix("\r\n").expect("CRLF").to_owned();
    let token = common::token_of_url(&url);
    let config = fpgen_fixtures::config();
    let opened = fpgen::token::open(&token, config.sealing_keys(), Environment::Test, now())
        .expect("token opens");
    match opened.into_licence() {
        Licence::Widevine(licence) => (url, licence),
        other => panic!("a token of another DRM: {other:?}"),
    }
}

#[track_caller]
fn get_ok(extra: &str) -> (String, WidevineLicence) {
    open_url(&get(shared(this_module!()).port, &format!("{PATH}?{}", query(extra))))
}

/// Asserts the error `code` with `status`, as HTML and as JSON.
#[track_caller]
fn check_error(query: &str, code: i32, status: u16) {
    let port = shared(this_module!()).port;
    let r = get(port, &format!("{PATH}?{query}"));
    assert_eq!(r.status, status, "{query}: {r:?}");
    assert!(r.text().contains(&format!("<title>Error {code}</title>")), "{query}: {r:?}");
    let r = get(port, &format!("{PATH}?{query}&errorFormat=json"));
    assert_eq!(r.status, status, "{query}");
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["code"], code, "{query}: {v}");
}

#[test]
fn get_mints_a_widevine_licence_url_at_the_widevine_licence_path() {
    let (url, licence) = get_ok("&trackType=1&licenseDuration=86400&playbackDuration=3600\
         &contentId=movie-42&cookie=corr-1&generalFlags=00000001&expirationTime=%2B600");
    assert!(
        url.starts_with("http://127.0.0.1:10000/hms/wv/rights/?ExpressPlayToken="),
        "{url}"
    );
    assert_eq!(licence.customer_id.as_str(), "100001");
    assert_eq!(licence.keys.len(), 1);
    let key = &licence.keys[0];
    assert_eq!(key.kid.to_string(), KID);
    assert_eq!(hex::encode(key.content_key.expose()), CK);
    assert_eq!((key.security_level, key.hdcp_output_control), (1, 0));
    assert_eq!(key.track_type, Some(TrackType::Hd));
    assert_eq!(
        (licence.license_duration, licence.playback_duration),
        (86_400, 3_600)
    );
    assert_eq!(licence.content_id.as_deref(), Some("movie-42"));
    assert_eq!(licence.cookie.as_deref(), Some("corr-1"));
    assert_eq!(licence.general_flags, 1);
    assert!((licence.expires_at - (now() + 600)).abs() <= 5);
}

/// Backends that POST the form (the hosted service's own examples), with
/// `useHttps=true`, and the key from the demo key store by its kid.
#[test]
fn a_form_post_with_a_stored_kid_mints() {
    let body = format!(
        "customerAuthenticator={}&kid={STORED_KID}&securityLevel=5&hdcpOutputControl=4&useHttps=true",
        DEMO_AUTHENTICATOR.replace(',', "%2C")
    );
    let r = post_form(shared(this_module!()).port, PATH, body.as_bytes());
    let (url, licence) = open_url(&r);
    assert!(url.starts_with("https://127.0.0.1:10000/hms/wv/rights/?"), "{url}");
    assert_eq!(hex::encode(licence.keys[0].content_key.expose()), STORED_KEY);
    assert_eq!(licence.keys[0].security_level, 5);
}

/// The HbbTV reference application asks for a video key and an audio key
/// in one token with indexed parameters.
#[test]
fn indexed_keys_of_the_hbbtv_script_make_one_token() {
    let audio_kid = "fedcba9876543210fedcba9876543210";
    let (_, licence) = get_ok(&format!(
        "&trackType=1&kid.1={audio_kid}&contentKey.1={}&trackType.1=2&hdcpOutputControl.1=1\
         &kid.2={STORED_KID}",
        "ff".repeat(16)
    ));
    let keys: Vec<_> = licence
        .keys
        .iter()
        .map(|k| {
            (
                k.kid.to_string(),
                hex::encode(k.content_key.expose()),
                k.security_level,
                k.hdcp_output_control,
                k.track_type,
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            (KID.to_owned(), CK.to_owned(), 1, 0, Some(TrackType::Hd)),
            (audio_kid.to_owned(), "ff".repeat(16), 1, 1, Some(TrackType::Audio)),
            (STORED_KID.to_owned(), STORED_KEY.to_owned(), 1, 0, None),
        ]
    );
}

#[test]
fn each_widevine_rule_answers_its_documented_code() {
    let auth = format!("customerAuthenticator={DEMO_AUTHENTICATOR}");
    let cases: [(String, i32, u16); 14] = [
        (format!("{auth}&contentKey={CK}&securityLevel=1&hdcpOutputControl=0"), -4018, 400),
        (format!("{auth}&kid={KID}&contentKey={CK}&hdcpOutputControl=0"), -7003, 400),
        (query("").replace("securityLevel=1", "securityLevel=6"), -7004, 400),
        (query("").replace("securityLevel=1", "securityLevel=high"), -7004, 400),
        (format!("{auth}&kid={KID}&contentKey={CK}&securityLevel=1"), -7006, 400),
        (query("").replace("hdcpOutputControl=0", "hdcpOutputControl=6"), -9422, 400),
        (query("&licenseDuration=-1"), -7007, 400),
        (query("&playbackDuration=1.5"), -7007, 400),
        (query("&wvExtension=wudo"), -7009, 400),
        (query("&wvExtension=abc,AAAA"), -2036, 400),
        (query("&trackType=5"), -9423, 400),
        (query("&contentId=%0A"), -9424, 400),
        (query("&kid.9=00"), -9425, 400),
        (query("&contentKey=00"), -6005, 400),
    ];
    // the last: contentKey given twice is refused as FairPlay's is
    let (last, rest) = cases.split_last().unwrap();
    for (q, code, status) in rest {
        check_error(q, *code, *status);
    }
    let r = get(shared(this_module!()).port, &format!("{PATH}?{}", last.0));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.text().contains("contentKey is given more than once"), "{r:?}");
}

/// A customer whose configuration does not enable Widevine gets -7011,
/// and can still mint FairPlay as before.
#[test]
fn a_customer_without_widevine_gets_7011() {
    let mut c = fpgen_fixtures::demo_json();
    c["customers"][0]
        .as_object_mut()
        .unwrap()
        .remove("widevine_enabled");
    let envoy = Envoy::start(this_module!(), &c.to_string());
    let r = envoy.get(&format!("{PATH}?{}&errorFormat=json", query("")));
    assert_eq!(r.status, 403, "{r:?}");
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["code"], -7011, "{v}");
    assert!(!common::mint(&envoy, "").is_empty());
}

/// Mints a Widevine token through `envoy`.
fn mint(envoy: &Envoy, extra: &str) -> String {
    let r = envoy.get(&format!("{PATH}?{}", query(extra)));
    assert_eq!(r.status, 200, "{r:?}");
    common::token_of_url(&r.text())
}

/// The player's licence request as Shaka Player, dash.js and ExoPlayer
/// send it (the licence URL as it is, the binary challenge), as Kodi sends
/// it (no content type) and as a Roku channel does (its own parameter after
/// the token).
#[test]
fn the_gate_hands_the_challenge_and_the_licence_data_to_the_licence_server() {
    let upstream = RecordingUpstream::start();
    let envoy = Envoy::start_with(
        fpgen_fixtures::DEMO_CONFIG,
        &Options::upstream(this_module!(), upstream.port),
    );
    let token = mint(
        &envoy,
        "&trackType=1&kid.1=fedcba9876543210fedcba9876543210&contentKey.1=ffffffffffffffffffffffffffffffff\
         &trackType.1=2&licenseDuration=600&contentId=film%2042&wvExtension=wudo,AQID&cookie=c1",
    );
    let shapes: [(&str, &[(&str, &str)]); 3] = [
        ("", &[("Content-Type", "application/octet-stream")]),
        ("", &[]),
        ("&id=roku-7", &[("Content-Type", "application/octet-stream"), ("x-fpgen-key", "kid=00;content-key=00")]),
    ];
    for (i, (extra, headers)) in shapes.into_iter().enumerate() {
        let path = format!("/hms/wv/rights/?ExpressPlayToken={token}{extra}");
        let r = request(envoy.port, "POST", &path, headers, Some(CHALLENGE));
        assert_eq!((r.status, r.text().as_str()), (200, "licence ok\n"), "{r:?}");
        let got = upstream.requests();
        let req = &got[i];
        assert_eq!(req.body, CHALLENGE, "the challenge reaches the licence server unchanged");
        let kept = if extra.is_empty() { "/hms/wv/rights/" } else { "/hms/wv/rights/?id=roku-7" };
        assert_eq!(req.path, kept, "the token is removed, the rest kept");
        assert_eq!(req.header_all("x-fpgen-drm"), ["widevine"]);
        assert_eq!(
            req.header_all("x-fpgen-key"),
            [
                format!("kid={KID};content-key={CK};security-level=1;hdcp-output-control=0;track-type=HD"),
                format!(
                    "kid=fedcba9876543210fedcba9876543210;content-key={};security-level=1;\
                     hdcp-output-control=0;track-type=AUDIO",
                    "ff".repeat(16)
                ),
            ],
            "exactly the token's keys: the client's x-fpgen-key is gone"
        );
        assert_eq!(req.header_all("x-fpgen-kid"), [KID]);
        assert_eq!(req.header_all("x-fpgen-license-duration"), ["600"]);
        assert_eq!(req.header_all("x-fpgen-playback-duration"), ["0"]);
        assert_eq!(req.header_all("x-fpgen-content-id"), ["film 42"]);
        assert_eq!(req.header_all("x-fpgen-wv-extension"), ["wudo,AQID"]);
        assert_eq!(req.header_all("x-fpgen-cookie"), ["c1"]);
        assert_eq!(req.header_all("x-fpgen-customer"), ["100001"]);
        assert!(req.header_all("x-fpgen-content-key").is_empty());
        assert!(req.header_all("x-fpgen-iv").is_empty());
    }
}

/// No token opens at another DRM's gate: a FairPlay token at the Widevine
/// licence path, a Widevine token at FairPlay's; neither reaches the
/// licence server.
#[test]
fn a_token_redeems_only_at_its_own_drms_gate() {
    let upstream = RecordingUpstream::start();
    let mut c = fpgen_fixtures::demo_json();
    c["redemption"]["error_format"] = "json".into();
    let envoy = Envoy::start_with(&c.to_string(), &Options::upstream(this_module!(), upstream.port));
    let fairplay = common::mint(&envoy, "");
    let widevine = mint(&envoy, "");
    for (path, token) in [("/hms/wv/rights/", &fairplay), ("/hms/fp/rights/", &widevine)] {
        let r = request(
            envoy.port,
            "POST",
            &format!("{path}?ExpressPlayToken={token}"),
            &[],
            Some(CHALLENGE),
        );
        assert_eq!(r.status, 403, "{path}: {r:?}");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["code"], -4010, "{v}");
        assert!(v["message"].as_str().unwrap().contains("another DRM"), "{v}");
    }
    assert!(upstream.requests().is_empty(), "the licence server saw a request");
    // and each at its own
    for (path, token) in [("/hms/fp/rights/", &fairplay), ("/hms/wv/rights/", &widevine)] {
        let r = request(envoy.port, "POST", &format!("{path}?ExpressPlayToken={token}"), &[], Some(CHALLENGE));
        assert_eq!(r.status, 200, "{path}: {r:?}");
    }
    assert_eq!(
        envoy.stat("wasmcustom.fpgen.redemptions_rejected.wrong_drm"),
        Some(2)
    );
}

/// The demo as the README shows it: a Widevine licence URL from the demo
/// Envoy redeems at its stand-in.
#[test]
fn the_demo_licence_url_redeems_at_the_demo_stand_in() {
    let envoy = shared(this_module!());
    let token = mint(envoy, "");
    let r = request(
        envoy.port,
        "POST",
        &format!("/hms/wv/rights/?ExpressPlayToken={token}"),
        &[],
        Some(CHALLENGE),
    );
    assert_eq!((r.status, r.text().as_str()), (200, common::RIGHTS_BODY), "{r:?}");
}

/// `fpgen serve` answers Widevine's endpoint as Envoy does: the same
/// answers to the same token-API cases, tokens of the same form.
#[test]
fn fpgen_serve_answers_widevine_as_envoy_does() {
    let envoy = shared(this_module!());
    let serve = common::Serve::start(common::DEMO_CONFIG);
    let auth = format!("customerAuthenticator={DEMO_AUTHENTICATOR}");
    let cases = [
        query(""),
        query("&kid.1=fedcba9876543210fedcba9876543210&contentKey.1=ffffffffffffffffffffffffffffffff"),
        format!("{auth}&kid={STORED_KID}&securityLevel=3&hdcpOutputControl=2"),
        format!("{auth}&kid={KID}&contentKey={CK}&securityLevel=1"),
        query("&securityLevel=0"),
        query("&licenseDuration=x"),
        format!("{auth}&contentKey={CK}"),
    ];
    for q in cases {
        let path = format!("{PATH}?{q}&errorFormat=json");
        let (a, b) = (get(envoy.port, &path), get(serve.port, &path));
        assert_eq!(a.status, b.status, "{q}: {a:?} {b:?}");
        if a.status == 200 {
            let (_, from_envoy) = open_url(&a);
            let (_, from_serve) = open_url(&b);
            assert_eq!(from_envoy.keys, from_serve.keys, "{q}");
        } else {
            assert_eq!(a.body, b.body, "{q}");
        }
    }
    let r = post_form(serve.port, PATH, query("").as_bytes());
    open_url(&r);
}
