//! PlayReady through a real Envoy: `/hms/pr/token` minted as the hosted
//! service's clients ask for it (its JSON answer), and redeemed at
//! `/playready/RightsManager.asmx` by the gate, with the token in the
//! SOAP challenge's `CustomData` (Bitmovin's `customData`, smart-TV APIs)
//! or in the query (dash.js, the HbbTV script).

use crate::common::{
    self, get, now, post_form, request, shared, Envoy, HttpResponse, Options, RecordingUpstream,
    CK, DEMO_AUTHENTICATOR,
};
use fpgen::licence::{Environment, Licence, PlayReadyLicence, Rights, UnknownOutput};
use fpgen_fixtures::{EK_CONTENT_KEY as STORED_KEY, STORED_KID};
use serde_json::Value;

const PATH: &str = "/hms/pr/token";
const LICENCE_PATH: &str = "/playready/RightsManager.asmx";
const KID: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
const OPLS: &str = "&analogVideoOPL=100&compressedDigitalAudioOPL=200\
                    &compressedDigitalVideoOPL=400&uncompressedDigitalAudioOPL=250\
                    &uncompressedDigitalVideoOPL=300";
const SOAP_ACTION: &str = "\"http://schemas.microsoft.com/DRM/2007/03/protocols/AcquireLicense\"";

/// The usual request: the demo authenticator, a kid and its content key,
/// `BuyToOwn`, the five OPLs, then `extra`.
fn query(extra: &str) -> String {
    format!(
        "customerAuthenticator={DEMO_AUTHENTICATOR}&kid={KID}&contentKey={CK}\
         &rightsType=BuyToOwn{OPLS}{extra}"
    )
}

/// A licence challenge as a PlayReady CDM builds it (abridged: the
/// encrypted data and signature are stand-ins), with `custom_data` in
/// its `LA` element.
fn challenge(custom_data: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><AcquireLicense xmlns="http://schemas.microsoft.com/DRM/2007/03/protocols"><challenge><Challenge xmlns="http://schemas.microsoft.com/DRM/2007/03/protocols/messages"><LA xmlns="http://schemas.microsoft.com/DRM/2007/03/protocols" Id="SignedData" xml:space="preserve"><Version>1</Version><ContentHeader><WRMHEADER xmlns="http://schemas.microsoft.com/DRM/2007/03/PlayReadyHeader" version="4.0.0.0"><DATA><PROTECTINFO><KEYLEN>16</KEYLEN><ALGID>AESCTR</ALGID></PROTECTINFO><KID>1NSyoV/1BxgpPLPUjn2PkA==</KID></DATA></WRMHEADER></ContentHeader><CLIENTINFO><CLIENTVERSION>10.0.16384.10011</CLIENTVERSION></CLIENTINFO>{custom_data}<LicenseNonce>Lg5W6uTqWTjwNJhOTvW/dA==</LicenseNonce><ClientTime>1765000000</ClientTime><EncryptedData xmlns="http://www.w3.org/2001/04/xmlenc#" Type="http://www.w3.org/2001/04/xmlenc#Element"><CipherData><CipherValue>AAECAwQFBgcICQ==</CipherValue></CipherData></EncryptedData></LA><Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignatureValue>c2lnbmF0dXJl</SignatureValue></Signature></Challenge></challenge></AcquireLicense></soap:Body></soap:Envelope>"#
    )
    .into_bytes()
}

/// The headers a PlayReady CDM sends with its challenge.
const SOAP_HEADERS: [(&str, &str); 2] = [
    ("Content-Type", "text/xml; charset=utf-8"),
    ("SOAPAction", SOAP_ACTION),
];

/// Asserts PlayReady's 200 answer and opens its token.
#[track_caller]
fn open_answer(r: &HttpResponse) -> (String, PlayReadyLicence, String) {
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v: Value = serde_json::from_slice(&r.body).expect("JSON");
    let members: Vec<&String> = v.as_object().expect("an object").keys().collect();
    assert_eq!(members, ["licenseAcquisitionUrl", "token"], "{v}");
    let url = v["licenseAcquisitionUrl"].as_str().unwrap().to_owned();
    let token = v["token"].as_str().unwrap().to_owned();
    let config = fpgen_fixtures::config();
    let opened = fpgen::token::open(&token, config.sealing_keys(), Environment::Test, now())
        .expect("token opens");
    match opened.into_licence() {
        Licence::PlayReady(licence) => (url, licence, token),
        other => panic!("a token of another DRM: {other:?}"),
    }
}

#[track_caller]
fn get_ok(extra: &str) -> (String, PlayReadyLicence, String) {
    open_answer(&get(shared(this_module!()).port, &format!("{PATH}?{}", query(extra))))
}

/// Asserts the error `code` with `status`, as HTML and as JSON, and that
/// the message holds `detail`.
#[track_caller]
fn check_error(query: &str, code: i32, status: u16, detail: &str) {
    let port = shared(this_module!()).port;
    let r = get(port, &format!("{PATH}?{query}"));
    assert_eq!(r.status, status, "{query}: {r:?}");
    assert!(r.text().contains(&format!("<title>Error {code}</title>")), "{query}: {r:?}");
    let r = get(port, &format!("{PATH}?{query}&errorFormat=json"));
    assert_eq!(r.status, status, "{query}");
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["code"], code, "{query}: {v}");
    assert!(v["message"].as_str().unwrap().contains(detail), "{query}: {v}");
}

#[test]
fn get_mints_a_playready_token_with_its_licence_acquisition_url() {
    let (url, licence, _) = get_ok("&unknownOutputBehavior=SDOnly&outputControlFlags=0000000A\
         &extensionType=abcd&extensionPayload=AQID&minCertSecurityLevel=2000&cookie=corr-1\
         &expirationTime=%2B600&prFlag=1&algId=aescbc&actionTokenType=0");
    assert_eq!(url, "http://127.0.0.1:10000/playready/RightsManager.asmx");
    assert_eq!(licence.customer_id.as_str(), "100001");
    assert_eq!(licence.keys.len(), 1);
    let key = &licence.keys[0];
    assert_eq!(key.kid.to_string(), KID);
    assert_eq!(hex::encode(key.content_key.expose()), CK);
    assert_eq!(key.min_cert_security_level, Some(2000));
    assert_eq!(licence.rights, Rights::BuyToOwn);
    let o = licence.output_levels;
    assert_eq!(
        (
            o.analog_video,
            o.compressed_digital_audio,
            o.compressed_digital_video,
            o.uncompressed_digital_audio,
            o.uncompressed_digital_video
        ),
        (100, 200, 400, 250, 300)
    );
    assert_eq!(licence.unknown_output, Some(UnknownOutput::SdOnly));
    assert_eq!(licence.output_control_flags, Some(10));
    let extension = licence.extension.as_ref().unwrap();
    assert_eq!((extension.kind_str(), extension.payload.as_slice()), ("abcd", &[1, 2, 3][..]));
    assert_eq!(licence.cookie.as_deref(), Some("corr-1"));
    assert!((licence.expires_at - (now() + 600)).abs() <= 5);
}

/// Backends that POST the form, a rental (which must be persistent), the
/// key from the demo key store by its kid, and `useHttps=true`.
#[test]
fn a_form_post_rental_with_a_stored_kid_mints() {
    let body = format!(
        "customerAuthenticator={}&kid={STORED_KID}&rightsType=Rental\
         &rental.periodEndTime=%2B86400&rental.playDuration=7200&generalFlags=00000001\
         {OPLS}&useHttps=true",
        DEMO_AUTHENTICATOR.replace(',', "%2C")
    );
    let r = post_form(shared(this_module!()).port, PATH, body.as_bytes());
    let (url, licence, _) = open_answer(&r);
    assert_eq!(url, "https://127.0.0.1:10000/playready/RightsManager.asmx");
    assert_eq!(hex::encode(licence.keys[0].content_key.expose()), STORED_KEY);
    let Rights::Rental { period_end, play_duration } = licence.rights else {
        panic!("{:?}", licence.rights)
    };
    assert!((period_end - (now() + 86_400)).abs() <= 5);
    assert_eq!(play_duration, Some(7200));
    assert!(licence.persistent());
}

/// The HbbTV reference application asks for a video and an audio key in
/// one token with indexed parameters (here with a minimum certificate
/// level of their own, and one from the key store).
#[test]
fn indexed_keys_of_the_hbbtv_script_make_one_token() {
    let audio_kid = "fedcba9876543210fedcba9876543210";
    let (_, licence, _) = get_ok(&format!(
        "&kid.1={audio_kid}&contentKey.1={}&minCertSecurityLevel.1=150&kid.2={STORED_KID}\
         &securityLevel.1=9",
        "ff".repeat(16)
    ));
    let keys: Vec<_> = licence
        .keys
        .iter()
        .map(|k| (k.kid.to_string(), hex::encode(k.content_key.expose()), k.min_cert_security_level))
        .collect();
    assert_eq!(
        keys,
        [
            (KID.to_owned(), CK.to_owned(), None),
            (audio_kid.to_owned(), "ff".repeat(16), Some(150)),
            (STORED_KID.to_owned(), STORED_KEY.to_owned(), None),
        ],
        "Widevine's securityLevel.1 is not PlayReady's: ignored"
    );
}

#[test]
fn each_playready_rule_answers_its_documented_code() {
    let auth = format!("customerAuthenticator={DEMO_AUTHENTICATOR}");
    let without = |param: &str| {
        let q = query("");
        let start = q.find(&format!("&{param}=")).unwrap();
        let end = q[start + 1..].find('&').map_or(q.len(), |i| start + 1 + i);
        format!("{}{}", &q[..start], &q[end..])
    };
    let cases: Vec<(String, i32, u16, &str)> = vec![
        (format!("{auth}&contentKey={CK}&rightsType=BuyToOwn{OPLS}"), -4018, 400, "kid is required"),
        (without("rightsType"), -2020, 400, "Missing rights type"),
        (query("").replace("BuyToOwn", "Lease"), -2021, 400, "BuyToOwn or Rental"),
        (query("&rental.periodEndTime=%2B60"), -2021, 400, "only valid with rightsType=Rental"),
        (query("&generalFlags=00000001").replace("BuyToOwn", "Rental"), -2022, 400, "period end"),
        (
            query("&rental.periodEndTime=tomorrow&generalFlags=00000001").replace("BuyToOwn", "Rental"),
            -2023,
            400,
            "RFC 3339",
        ),
        (
            query("&rental.periodEndTime=2001-01-01T00:00:00Z&generalFlags=00000001")
                .replace("BuyToOwn", "Rental"),
            -2023,
            400,
            "in the past",
        ),
        (
            query("&rental.periodEndTime=%2B60&rental.playDuration=-1&generalFlags=00000001")
                .replace("BuyToOwn", "Rental"),
            -2025,
            400,
            "seconds",
        ),
        (
            query("&rental.periodEndTime=%2B60").replace("BuyToOwn", "Rental"),
            -5003,
            400,
            "a rental must be persistent",
        ),
        (without("compressedDigitalVideoOPL"), -5006, 400, "compressedDigitalVideoOPL"),
        (query("").replace("analogVideoOPL=100", "analogVideoOPL=1000"), -2034, 400, "analogVideoOPL"),
        (
            query("").replace("uncompressedDigitalVideoOPL=300", "uncompressedDigitalVideoOPL=x"),
            -2034,
            400,
            "uncompressedDigitalVideoOPL",
        ),
        (query("&unknownOutputBehavior=allow"), -5001, 400, "Allow, Disallow or SDOnly"),
        (query("&outputControlFlags=0000000G"), -2008, 400, "8 hex digits"),
        (query("&outputControlFlags=000A"), -2040, 400, "8 hex digits"),
        (query("&extensionType=abcd"), -2037, 400, "extensionPayload is required"),
        (query("&extensionPayload=AQID"), -2036, 400, "extensionType is required"),
        (query("&extensionType=abc&extensionPayload=AQID"), -2036, 400, "4 visible"),
        (query("&extensionType=abcd&extensionPayload=***"), -2037, 400, "Base64"),
        (query("&generalFlags=00000002"), -5003, 400, "00000001"),
        (query("&minCertSecurityLevel=1000"), -9426, 400, "150, 2000 or 3000"),
        (
            query(&format!("&kid.1=fedcba9876543210fedcba9876543210&contentKey.1={CK}&minCertSecurityLevel.1=1")),
            -9426,
            400,
            "minCertSecurityLevel.1",
        ),
        (query("&kek=000102030405060708090a0b0c0d0e0f"), -5007, 400, "kek or contentKey"),
        (query("&minCertSecurityLevel.3=150"), -9425, 400, "without kid.3"),
        (query("&expirationTime=%2B9999999"), -2002, 400, "30 days"),
        (
            query("&rental.periodEndTime=&generalFlags=00000001").replace("BuyToOwn", "Rental"),
            -2022,
            400,
            "period end",
        ),
        (
            query("&rental.periodEndTime=%2B60&rental.periodEndTime=%2B90&generalFlags=00000001")
                .replace("BuyToOwn", "Rental"),
            -2023,
            400,
            "given more than once",
        ),
        (query("&unknownOutputBehavior=Allow&unknownOutputBehavior=Allow"), -5001, 400, "more than once"),
    ];
    for (q, code, status, detail) in &cases {
        check_error(q, *code, *status, detail);
    }
}

/// A customer whose configuration does not enable PlayReady gets -5002,
/// and can still mint FairPlay and Widevine as before.
#[test]
fn a_customer_without_playready_gets_5002() {
    let mut c = fpgen_fixtures::demo_json();
    c["customers"][0]
        .as_object_mut()
        .unwrap()
        .remove("playready_enabled");
    let envoy = Envoy::start(this_module!(), &c.to_string());
    let r = envoy.get(&format!("{PATH}?{}&errorFormat=json", query("")));
    assert_eq!(r.status, 403, "{r:?}");
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["code"], -5002, "{v}");
    assert!(v["message"].as_str().unwrap().contains("playready_enabled"), "{v}");
    assert!(!common::mint(&envoy, "").is_empty());
}

/// Mints a PlayReady token through `envoy`.
fn mint(envoy: &Envoy, extra: &str) -> String {
    let r = envoy.get(&format!("{PATH}?{}", query(extra)));
    open_answer(&r).2
}

/// The player's licence request as each client sends it: Bitmovin's
/// `customData` (the token in the challenge), dash.js and the HbbTV
/// script (the token in the query, more parameters after it), and both
/// at once with the same token. The challenge reaches the licence server
/// unchanged, with the licence data in headers.
#[test]
fn the_gate_reads_the_token_from_the_challenge_or_the_query() {
    let upstream = RecordingUpstream::start();
    let envoy = Envoy::start_with(
        fpgen_fixtures::DEMO_CONFIG,
        &Options::upstream(this_module!(), upstream.port),
    );
    let token = mint(
        &envoy,
        "&kid.1=fedcba9876543210fedcba9876543210&contentKey.1=ffffffffffffffffffffffffffffffff\
         &minCertSecurityLevel.1=3000&unknownOutputBehavior=Disallow&outputControlFlags=00000001\
         &extensionType=abcd&extensionPayload=AQID&cookie=c1",
    );
    let in_challenge = challenge(&format!("<CustomData>{token}</CustomData>"));
    let plain = challenge("");
    let shapes: [(String, &[u8], &str); 4] = [
        (LICENCE_PATH.to_owned(), &in_challenge, LICENCE_PATH),
        (format!("{LICENCE_PATH}?ExpressPlayToken={token}"), &plain, LICENCE_PATH),
        (
            format!("{LICENCE_PATH}?ExpressPlayToken={token}&deviceId=tv-7"),
            &plain,
            "/playready/RightsManager.asmx?deviceId=tv-7",
        ),
        (format!("{LICENCE_PATH}?ExpressPlayToken={token}"), &in_challenge, LICENCE_PATH),
    ];
    for (i, (path, body, kept)) in shapes.iter().enumerate() {
        let headers = [SOAP_HEADERS[0], SOAP_HEADERS[1], ("x-fpgen-key", "kid=00;content-key=00")];
        let r = request(envoy.port, "POST", path, &headers, Some(body));
        assert_eq!((r.status, r.text().as_str()), (200, "licence ok\n"), "{path}: {r:?}");
        let got = upstream.requests();
        let req = &got[i];
        assert_eq!(&req.body, body, "the challenge reaches the licence server unchanged");
        assert_eq!(req.path, *kept, "the query's token is removed, the rest kept");
        assert_eq!(req.header_all("soapaction"), [SOAP_ACTION]);
        assert_eq!(req.header_all("x-fpgen-drm"), ["playready"]);
        assert_eq!(
            req.header_all("x-fpgen-key"),
            [
                format!("kid={KID};content-key={CK}"),
                format!(
                    "kid=fedcba9876543210fedcba9876543210;content-key={};min-cert-security-level=3000",
                    "ff".repeat(16)
                ),
            ],
            "exactly the token's keys: the client's x-fpgen-key is gone"
        );
        let one = |name: &str| req.header_all(name).join("|");
        let got: Vec<String> = [
            "kid", "rights-type", "analog-video-opl", "compressed-digital-audio-opl",
            "compressed-digital-video-opl", "uncompressed-digital-audio-opl",
            "uncompressed-digital-video-opl", "unknown-output-behavior", "output-control-flags",
            "general-flags", "persistent", "pr-extension", "cookie", "customer", "environment",
        ]
        .iter()
        .map(|n| one(&format!("x-fpgen-{n}")))
        .collect();
        assert_eq!(
            got,
            [
                KID, "BuyToOwn", "100", "200", "400", "250", "300", "Disallow", "00000001",
                "00000000", "false", "abcd,AQID", "c1", "100001", "test",
            ]
        );
        assert!(req.header_all("x-fpgen-rental-period-end").is_empty());
        assert!(req.header_all("x-fpgen-content-key").is_empty());
    }
    // counted by DRM, and logged with it
    assert_eq!(envoy.stat("wasmcustom.fpgen.drm.playready.minted"), Some(1));
    assert_eq!(envoy.stat("wasmcustom.fpgen.drm.playready.redeemed"), Some(4));
    let mut log = String::new();
    for _ in 0..100 {
        log = envoy.access_log();
        if log.lines().filter(|l| l.contains("RightsManager.asmx")).count() >= 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("/hms/pr/token") || l.contains("RightsManager.asmx")).collect();
    assert_eq!(lines.len(), 5, "{log}");
    for line in lines {
        assert!(line.contains(" 200 code=0 customer=100001 kid=") && line.ends_with(" drm=playready"), "{line}");
    }
}

/// A rental's times reach the licence server.
#[test]
fn a_rental_hands_its_times_to_the_licence_server() {
    let upstream = RecordingUpstream::start();
    let envoy = Envoy::start_with(
        fpgen_fixtures::DEMO_CONFIG,
        &Options::upstream(this_module!(), upstream.port),
    );
    let end = fpgen::licence::rfc3339(now() + 7 * 86_400);
    let rental = format!("&rental.periodEndTime={end}&rental.playDuration=3600&generalFlags=00000001");
    let r = envoy.get(&format!("{PATH}?{}", query(&rental).replace("BuyToOwn", "Rental")));
    let (_, _, token) = open_answer(&r);
    let body = challenge(&format!("<CustomData>{token}</CustomData>"));
    let r = request(envoy.port, "POST", LICENCE_PATH, &SOAP_HEADERS, Some(&body));
    assert_eq!(r.status, 200, "{r:?}");
    let req = upstream.requests().pop().unwrap();
    assert_eq!(req.header_all("x-fpgen-rights-type"), ["Rental"]);
    assert_eq!(req.header_all("x-fpgen-rental-period-end"), [end]);
    assert_eq!(req.header_all("x-fpgen-rental-play-duration"), ["3600"]);
    assert_eq!(req.header_all("x-fpgen-persistent"), ["true"]);
}

/// What the gate refuses at PlayReady's licence path, each counted under
/// its reason, none reaching the licence server: a challenge with two
/// tokens, a query token that differs from the challenge's, a challenge
/// that is not XML or declares entities, one over the cap (413), and no
/// token at all.
#[test]
fn the_gate_refuses_challenges_it_cannot_trust() {
    let upstream = RecordingUpstream::start();
    let mut c = fpgen_fixtures::demo_json();
    c["redemption"]["error_format"] = "json".into();
    c["redemption"]["max_challenge_bytes"] = 4096.into();
    let envoy = Envoy::start_with(&c.to_string(), &Options::upstream(this_module!(), upstream.port));
    let token = mint(&envoy, "");
    let other = mint(&envoy, "&cookie=other");
    let custom = |t: &str| format!("<CustomData>{t}</CustomData>");
    let laughs = format!(
        r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><CustomData>{token}&lol2;</CustomData>"#
    );
    let cases: Vec<(String, Vec<u8>, u16, i32, &str)> = vec![
        (LICENCE_PATH.into(), challenge(&format!("{}{}", custom(&token), custom(&token))), 403, -4010, "two_tokens"),
        (format!("{LICENCE_PATH}?ExpressPlayToken={token}"), challenge(&custom(&other)), 403, -4010, "tokens_differ"),
        (LICENCE_PATH.into(), laughs.into_bytes(), 403, -4010, "malformed_challenge"),
        (LICENCE_PATH.into(), challenge(&format!("<CustomData>{token}</CustomData")), 403, -4010, "malformed_challenge"),
        (format!("{LICENCE_PATH}?ExpressPlayToken={token}"), b"\x08\x01binary".to_vec(), 403, -4010, "malformed_challenge"),
        (format!("{LICENCE_PATH}?ExpressPlayToken={token}"), challenge(&"<x/>".repeat(1200)), 413, -9413, "challenge_too_large"),
        (LICENCE_PATH.into(), challenge(""), 403, -4010, "malformed"),
    ];
    for (path, body, status, code, reason) in &cases {
        let r = request(envoy.port, "POST", path, &SOAP_HEADERS, Some(body));
        assert_eq!(r.status, *status, "{reason}: {r:?}");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["code"], *code, "{reason}: {v}");
        assert!(!r.text().contains(&token), "{reason}: the answer echoes the token");
    }
    for reason in ["two_tokens", "tokens_differ", "malformed_challenge", "challenge_too_large"] {
        let want = cases.iter().filter(|c| c.4 == reason).count() as u64;
        let name = format!("wasmcustom.fpgen.redemptions_rejected.{reason}");
        assert_eq!(envoy.stat(&name), Some(want), "{name}");
    }
    assert!(upstream.requests().is_empty(), "the licence server saw a request");
    // the same challenge, with one token, passes
    let r = request(envoy.port, "POST", LICENCE_PATH, &SOAP_HEADERS, Some(&challenge(&custom(&token))));
    assert_eq!(r.status, 200, "{r:?}");
}

/// No token opens at another DRM's gate: PlayReady's at FairPlay's and
/// Widevine's licence paths, theirs at PlayReady's (in the query and in
/// the challenge); none reaches the licence server.
#[test]
fn a_playready_token_redeems_only_at_playreadys_gate() {
    let upstream = RecordingUpstream::start();
    let mut c = fpgen_fixtures::demo_json();
    c["redemption"]["error_format"] = "json".into();
    let envoy = Envoy::start_with(&c.to_string(), &Options::upstream(this_module!(), upstream.port));
    let playready = mint(&envoy, "");
    let fairplay = common::mint(&envoy, "");
    let r = envoy.get(&format!(
        "/hms/wv/token?customerAuthenticator={DEMO_AUTHENTICATOR}&kid={KID}&contentKey={CK}\
         &securityLevel=1&hdcpOutputControl=0"
    ));
    let widevine = common::token_of_url(&r.text());
    let attempts: Vec<(String, Vec<u8>)> = vec![
        (format!("/hms/fp/rights/?ExpressPlayToken={playready}"), b"spc".to_vec()),
        (format!("/hms/wv/rights/?ExpressPlayToken={playready}"), b"challenge".to_vec()),
        (format!("{LICENCE_PATH}?ExpressPlayToken={fairplay}"), challenge("")),
        (format!("{LICENCE_PATH}?ExpressPlayToken={widevine}"), challenge("")),
        (LICENCE_PATH.to_owned(), challenge(&format!("<CustomData>{fairplay}</CustomData>"))),
        (LICENCE_PATH.to_owned(), challenge(&format!("<CustomData>{widevine}</CustomData>"))),
    ];
    for (path, body) in &attempts {
        let r = request(envoy.port, "POST", path, &SOAP_HEADERS, Some(body));
        assert_eq!(r.status, 403, "{path}: {r:?}");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["code"], -4010, "{v}");
        assert!(v["message"].as_str().unwrap().contains("another DRM"), "{path}: {v}");
    }
    assert!(upstream.requests().is_empty(), "the licence server saw a request");
    assert_eq!(
        envoy.stat("wasmcustom.fpgen.redemptions_rejected.wrong_drm"),
        Some(attempts.len() as u64)
    );
    for drm in ["fairplay", "widevine", "playready"] {
        let minted = format!("wasmcustom.fpgen.drm.{drm}.minted");
        assert_eq!(envoy.stat(&minted), Some(1), "{minted}");
        let redeemed = format!("wasmcustom.fpgen.drm.{drm}.redeemed");
        assert_eq!(envoy.stat(&redeemed), None, "{redeemed}: nothing redeemed");
    }
}

/// The demo as the README shows it: the licence acquisition URL from the
/// demo Envoy, with the token in the challenge, redeems at its stand-in;
/// a GET with the token in the query does too.
#[test]
fn the_demo_licence_url_redeems_at_the_demo_stand_in() {
    let envoy = shared(this_module!());
    let token = mint(envoy, "");
    let body = challenge(&format!("<CustomData>{token}</CustomData>"));
    let r = request(envoy.port, "POST", LICENCE_PATH, &SOAP_HEADERS, Some(&body));
    assert_eq!((r.status, r.text().as_str()), (200, common::RIGHTS_BODY), "{r:?}");
    let r = get(envoy.port, &format!("{LICENCE_PATH}?ExpressPlayToken={token}"));
    assert_eq!((r.status, r.text().as_str()), (200, common::RIGHTS_BODY), "{r:?}");
    let r = request(envoy.port, "POST", LICENCE_PATH, &SOAP_HEADERS, Some(&challenge("")));
    assert_eq!(r.status, 403, "{r:?}");
}

/// `fpgen serve` answers PlayReady's endpoint as Envoy does: the same
/// answers to the same token-API cases, tokens of the same form.
#[test]
fn fpgen_serve_answers_playready_as_envoy_does() {
    let envoy = shared(this_module!());
    let serve = common::Serve::start(common::DEMO_CONFIG);
    let auth = format!("customerAuthenticator={DEMO_AUTHENTICATOR}");
    let cases = [
        query(""),
        query("&kid.1=fedcba9876543210fedcba9876543210&contentKey.1=ffffffffffffffffffffffffffffffff"),
        format!("{auth}&kid={STORED_KID}&rightsType=BuyToOwn{OPLS}"),
        format!("{auth}&kid={KID}&contentKey={CK}{OPLS}"),
        query("&analogVideoOPL=1"),
        query("&unknownOutputBehavior=Sometimes"),
        format!("{auth}&contentKey={CK}"),
    ];
    for q in cases {
        let path = format!("{PATH}?{q}&errorFormat=json");
        let (a, b) = (get(envoy.port, &path), get(serve.port, &path));
        assert_eq!(a.status, b.status, "{q}: {a:?} {b:?}");
        if a.status == 200 {
            let (url_a, from_envoy, _) = open_answer(&a);
            let (url_b, from_serve, _) = open_answer(&b);
            assert_eq!((url_a, from_envoy.keys), (url_b, from_serve.keys), "{q}");
        } else {
            assert_eq!(a.body, b.body, "{q}");
        }
    }
    let r = post_form(serve.port, PATH, query("").as_bytes());
    open_answer(&r);
}
