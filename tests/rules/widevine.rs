//! Widevine's endpoint natively: what it reads and what it ignores, its
//! account rules, and the budgets it shares with FairPlay.

#[allow(unused_imports, reason = "the shared imports, for every topic")]
use super::support::*;
use fpgen::licence::{Drm, Licence, WidevineLicence};

const KID: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";

fn wv_base() -> String {
    format!("{AUTH}&kid={KID}&contentKey={CK}&securityLevel=1&hdcpOutputControl=0")
}

fn wv_call(config: &Config, query: &str, host: &FakeHost) -> Answer {
    service::handle_for(config, Drm::Widevine, query, b"", host)
}

#[track_caller]
fn wv_mints(query: &str) -> WidevineLicence {
    let answer = wv_call(&config(), query, &host());
    assert_eq!(
        answer.response.status, 200,
        "{query}: {}",
        answer.response.body
    );
    let token = fixtures::token_of_url(&answer.response.body);
    let opened = token::open(&token, config().sealing_keys(), Environment::Test, NOW).unwrap();
    match opened.into_licence() {
        Licence::Widevine(licence) => licence,
        other => panic!("{other:?}"),
    }
}

#[track_caller]
fn wv_code(query: &str) -> i32 {
    wv_call(&config(), query, &host()).outcome.code()
}

/// FairPlay's own parameters (`iv`, `rentalDuration`, `fpExtension`) are
/// not Widevine's: ignored there, as unknown parameters are, even repeated
/// or malformed; and Widevine's are ignored at FairPlay's endpoint.
#[test]
fn each_endpoint_reads_its_own_parameters() {
    let licence = wv_mints(&format!(
        "{}&iv=zz&rentalDuration=x&fpExtension=bad&iv=again&rentalDuration=%zz",
        wv_base()
    ));
    assert_eq!(licence.keys.len(), 1);
    let (r, outcome) = call(&format!(
        "{}&securityLevel=9&securityLevel=9&hdcpOutputControl=%zz&wvExtension=bad&kid.9=x\
         &kid.1=%zz&contentKey.1=%zz&kid.1=again",
        base()
    ));
    assert_eq!(
        (r.status, outcome_code(&outcome)),
        (200, None),
        "{}",
        r.body
    );
}

#[test]
fn the_widevine_settings_are_carried() {
    let licence = wv_mints(&format!(
        "{}&wvExtension=wudo,AAAAAA%3D%3D&wvExtension=abcd,AQID&licenseDuration=0&playbackDuration=4294967295",
        wv_base()
    ));
    let kinds: Vec<&str> = licence.extensions.iter().map(|e| e.kind_str()).collect();
    assert_eq!(kinds, ["wudo", "abcd"]);
    assert_eq!(licence.playback_duration, u32::MAX);
    // repeated and malformed Widevine parameters are their own errors
    assert_eq!(wv_code(&format!("{}&securityLevel=2", wv_base())), -7004);
    assert_eq!(wv_code(&format!("{}&trackType=%zz", wv_base())), -9423);
    assert_eq!(wv_code(&format!("{}&kid.1=%zz", wv_base())), -4022);
    let answer = wv_call(&config(), &format!("{}&kid.1=%zz", wv_base()), &host());
    assert!(answer
        .response
        .body
        .contains("kid.1 holds a malformed percent escape"));
    assert_eq!(
        wv_code(&format!("{}&playbackDuration=4294967296", wv_base())),
        -7007
    );
    let many = "&wvExtension=wudo,AAAA".repeat(17);
    assert_eq!(wv_code(&format!("{}{many}", wv_base())), -7009);
}

#[test]
fn indexed_keys_follow_the_single_key_rules_and_name_the_parameter() {
    let message = |query: String| {
        let answer = wv_call(&config(), &format!("{query}&errorFormat=json"), &host());
        let v: serde_json::Value = serde_json::from_str(&answer.response.body).unwrap();
        (
            v["code"].as_i64().unwrap(),
            v["message"].as_str().unwrap().to_owned(),
        )
    };
    let (code, text) = message(format!("{}&kid.2={KID}0", wv_base()));
    assert_eq!(code, -4020);
    assert!(text.contains("kid.2"), "{text}");
    let (code, text) = message(format!(
        "{}&kid.1=ffffffffffffffffffffffffffffffff&contentKey.1=00",
        wv_base()
    ));
    assert_eq!(code, -2027);
    assert!(text.contains("contentKey.1"), "{text}");
    let (code, text) = message(format!("{}&trackType.3=1", wv_base()));
    assert_eq!(code, -9425);
    assert!(
        text.contains("trackType.3 is given without kid.3"),
        "{text}"
    );
    let (code, _) = message(format!("{}&kid.1={KID}", wv_base()));
    assert_eq!(code, -6005, "a second key with key 0's kid");
    let (code, _) = message(format!("{}&kid.0={KID}", wv_base()));
    assert_eq!(code, -9425);
    // a kid.N of the key store, when the customer has no KEK and the
    // request none: the key cannot be had
    let no_kek = account_config(|c| {
        c.as_object_mut().unwrap().remove("kek");
    });
    let query = format!("{}&kid.1={STORED_KID}", wv_base());
    assert_eq!(wv_call(&no_kek, &query, &host()).outcome.code(), -2005);
    // seven indexed keys are allowed, each its own
    let seven: String = (1..=7)
        .map(|n| format!("&kid.{n}={n:032x}&contentKey.{n}={CK}"))
        .collect();
    assert_eq!(wv_mints(&format!("{}{seven}", wv_base())).keys.len(), 8);
}

/// Key 0 may come wrapped (`kek`+`ek`): the required `kid` then names it.
#[test]
fn key_zero_may_come_wrapped() {
    let licence = wv_mints(&format!(
        "{AUTH}&kid={KID}&kek={DEMO_KEK}&ek={EK}&securityLevel=1&hdcpOutputControl=0"
    ));
    assert_eq!(licence.keys[0].kid.to_string(), KID);
    assert_eq!(
        hex::encode(licence.keys[0].content_key.expose()),
        fpgen_fixtures::EK_CONTENT_KEY
    );
    // ek without kek, and kek with contentKey, are refused as FairPlay's are
    assert_eq!(wv_code(&format!("{}&ek={EK}", wv_base())), -6005);
    assert_eq!(wv_code(&format!("{}&kek={DEMO_KEK}", wv_base())), -6005);
}

/// `widevine_enabled` is off unless the configuration turns it on, and it
/// changes nothing of FairPlay; FairPlay's switches change nothing of
/// Widevine's.
#[test]
fn widevine_is_a_right_of_its_own() {
    let off = account_config(|c| {
        c.as_object_mut().unwrap().remove("widevine_enabled");
    });
    assert_eq!(wv_call(&off, &wv_base(), &host()).outcome.code(), -7011);
    assert_eq!(account_call(&off, None).1.code(), 0);
    let no_fairplay = account_config(|c| c["fairplay_enabled"] = false.into());
    assert_eq!(wv_call(&no_fairplay, &wv_base(), &host()).outcome.code(), 0);
    assert_eq!(account_call(&no_fairplay, None).1.code(), -6009);
    let disabled = account_config(|c| c["enabled"] = false.into());
    assert_eq!(
        wv_call(&disabled, &wv_base(), &host()).outcome.code(),
        -2031
    );
}

/// One account, one budget: its FairPlay and Widevine tokens are counted
/// together, as the hosted service counts one account's tokens.
#[test]
fn the_token_budget_counts_every_drm() {
    let config = account_config(|c| c["token_budget"] = 2.into());
    let host = FakeHost {
        budgets: Budgets::Counted,
        ..FakeHost::default()
    };
    let fairplay = service::handle(&config, &base(), b"", &host).outcome.code();
    let widevine = wv_call(&config, &wv_base(), &host).outcome.code();
    let third = wv_call(&config, &wv_base(), &host).outcome.code();
    assert_eq!((fairplay, widevine, third), (0, 0, -2019));
}
