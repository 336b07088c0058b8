//! PlayReady's endpoint and gate natively: what the endpoint reads and
//! answers, its account rule and shared budget, and how the gate chooses
//! the token of a licence request (query, challenge, both).

#[allow(unused_imports, reason = "the shared imports, for every topic")]
use super::support::*;
use fpgen::licence::{Drm, Licence, PlayReadyLicence, Rights};
use fpgen::redeem::{self, Refusal};

const KID: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
const OPLS: &str = "&analogVideoOPL=1&compressedDigitalAudioOPL=2&compressedDigitalVideoOPL=3\
                    &uncompressedDigitalAudioOPL=4&uncompressedDigitalVideoOPL=5";

fn pr_base() -> String {
    format!("{AUTH}&kid={KID}&contentKey={CK}&rightsType=BuyToOwn{OPLS}")
}

fn pr_call(config: &Config, query: &str, host: &FakeHost) -> Answer {
    service::handle_for(config, Drm::PlayReady, query, b"", host)
}

/// The answer's JSON members, and the token's licence.
#[track_caller]
fn pr_mints(config: &Config, query: &str) -> (serde_json::Value, PlayReadyLicence) {
    let answer = pr_call(config, query, &host());
    let r = &answer.response;
    assert_eq!(
        (r.status, r.content_type),
        (200, "application/json"),
        "{query}: {}",
        r.body
    );
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let token = v["token"].as_str().unwrap();
    let opened = token::open(token, config.sealing_keys(), Environment::Test, NOW).unwrap();
    match opened.into_licence() {
        Licence::PlayReady(licence) => (v, licence),
        other => panic!("{other:?}"),
    }
}

#[track_caller]
fn pr_code(query: &str) -> i32 {
    pr_call(&config(), query, &host()).outcome.code()
}

/// The answer is exactly the two members, the URL without the token
/// parameter (forced to https by `useHttps`), and the log records key 0's
/// kid and the expiry as for the other DRMs.
#[test]
fn the_answer_is_the_licence_acquisition_url_and_the_token_apart() {
    let (v, licence) = pr_mints(&config(), &pr_base());
    assert_eq!(
        v.to_string(),
        format!(
            r#"{{"licenseAcquisitionUrl":"http://127.0.0.1:10000/playready/RightsManager.asmx","token":"{}"}}"#,
            v["token"].as_str().unwrap()
        )
    );
    assert_eq!(licence.rights, Rights::BuyToOwn);
    let (v, _) = pr_mints(&config(), &format!("{}&useHttps=TRUE", pr_base()));
    assert_eq!(
        v["licenseAcquisitionUrl"],
        "https://127.0.0.1:10000/playready/RightsManager.asmx"
    );
    let answer = pr_call(&config(), &pr_base(), &host());
    assert_eq!(
        answer.outcome.kid.map(|k| k.to_string()).as_deref(),
        Some(KID)
    );
    // the hosted default, without configuration
    let mut v = config_json();
    v.as_object_mut().unwrap().remove("playready_redeem_url");
    let hosted = Config::from_json(v.to_string().as_bytes()).unwrap();
    let (v, _) = pr_mints(&hosted, &pr_base());
    assert_eq!(
        v["licenseAcquisitionUrl"],
        "http://pr.test.expressplay.com:80/playready/RightsManager.asmx"
    );
}

/// Each endpoint reads its own parameters and ignores the others' (even
/// repeated or malformed), as unknown parameters are ignored.
#[test]
fn each_endpoint_reads_its_own_parameters() {
    let (_, licence) = pr_mints(
        &config(),
        &format!(
            "{}&iv=zz&iv=again&fpExtension=bad&securityLevel=9&trackType=%zz&securityLevel.1=x\
             &wvExtension=bad&rentalDuration=x",
            pr_base()
        ),
    );
    assert_eq!(licence.keys.len(), 1);
    let (r, outcome) = call(&format!(
        "{}&extensionType=x&extensionPayload=%zz&minCertSecurityLevel=7&minCertSecurityLevel.1=7",
        base()
    ));
    assert_eq!((r.status, outcome.code()), (200, 0), "{}", r.body);
    // FairPlay still checks PlayReady-style values when present, as before
    assert_eq!(
        call(&format!("{}&rightsType=Lease", base())).1.code(),
        -2021
    );
    // repeated and malformed PlayReady parameters are their own errors
    assert_eq!(pr_code(&format!("{}&rightsType=Rental", pr_base())), -2021);
    assert_eq!(
        pr_code(&format!("{}&minCertSecurityLevel=%zz", pr_base())),
        -9426
    );
}

#[test]
fn rentals_are_persistent_and_carry_their_times() {
    let (_, licence) = pr_mints(
        &config(),
        &format!(
            "{}&rental.periodEndTime=%2B3600&rental.playDuration=0&generalFlags=00000001",
            pr_base().replace("BuyToOwn", "Rental")
        ),
    );
    assert_eq!(
        licence.rights,
        Rights::Rental {
            period_end: NOW + 3600,
            play_duration: Some(0)
        }
    );
    assert!(licence.persistent());
    let rental = pr_base().replace("BuyToOwn", "Rental");
    assert_eq!(
        pr_code(&format!("{rental}&rental.periodEndTime=%2B3600")),
        -5003
    );
    assert_eq!(
        pr_code(&format!(
            "{rental}&rental.periodEndTime=%2B0&generalFlags=00000001"
        )),
        -2023
    );
    assert_eq!(
        pr_code(&format!(
            "{rental}&rental.periodEndTime=%2B60&rental.playDuration=4294967296&generalFlags=00000001"
        )),
        -2025
    );
    assert_eq!(
        pr_code(&format!("{}&rental.playDuration=1", pr_base())),
        -2021
    );
    // an empty rental time is none, for either rights type
    let (_, licence) = pr_mints(
        &config(),
        &format!("{}&rental.periodEndTime=&rental.playDuration=", pr_base()),
    );
    assert_eq!(licence.rights, Rights::BuyToOwn);
    assert_eq!(
        pr_code(&format!(
            "{rental}&rental.periodEndTime=&generalFlags=00000001"
        )),
        -2022
    );
}

/// `playready_enabled` is off unless the configuration turns it on, and it
/// changes nothing of the other DRMs.
#[test]
fn playready_is_a_right_of_its_own() {
    let off = account_config(|c| {
        c.as_object_mut().unwrap().remove("playready_enabled");
    });
    assert_eq!(pr_call(&off, &pr_base(), &host()).outcome.code(), -5002);
    assert_eq!(account_call(&off, None).1.code(), 0);
    let no_fairplay = account_config(|c| c["fairplay_enabled"] = false.into());
    assert_eq!(pr_call(&no_fairplay, &pr_base(), &host()).outcome.code(), 0);
}

/// One account, one budget: its FairPlay and PlayReady tokens are counted
/// together.
#[test]
fn the_token_budget_counts_playready_tokens_too() {
    let config = account_config(|c| c["token_budget"] = 2.into());
    let host = FakeHost {
        budgets: Budgets::Counted,
        ..FakeHost::default()
    };
    let fairplay = service::handle(&config, &base(), b"", &host).outcome.code();
    let playready = pr_call(&config, &pr_base(), &host).outcome.code();
    let third = pr_call(&config, &pr_base(), &host).outcome.code();
    assert_eq!((fairplay, playready, third), (0, 0, -2019));
}

/// A challenge as a PlayReady CDM writes it (abridged), `custom` in `LA`.
fn challenge(custom: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\">\
         <soap:Body><AcquireLicense xmlns=\"http://schemas.microsoft.com/DRM/2007/03/protocols\"><challenge>\
         <Challenge xmlns=\"http://schemas.microsoft.com/DRM/2007/03/protocols/messages\"><LA><Version>1</Version>\
         {custom}</LA></Challenge></challenge></AcquireLicense></soap:Body></soap:Envelope>"
    )
    .into_bytes()
}

/// The gate's choice of token: the query's, the challenge's, or both when
/// they are the same; two, a mismatch, or none is refused; only
/// PlayReady's licence path reads a challenge.
#[test]
fn the_gate_reads_one_token_from_the_query_or_the_challenge() {
    let config = fixtures::config();
    let gate = config.redemption().unwrap();
    let (v, _) = pr_mints(&config, &pr_base());
    let token = v["token"].as_str().unwrap().to_owned();
    let (v, _) = pr_mints(&config, &format!("{}&cookie=other", pr_base()));
    let other = v["token"].as_str().unwrap().to_owned();
    let custom = |t: &str| challenge(&format!("<CustomData>{t}</CustomData>"));
    let path = "/playready/RightsManager.asmx";
    let with_query = format!("{path}?ExpressPlayToken={token}");
    let redeem = |drm, path: &str, body: Option<&[u8]>| {
        redeem::redeem_challenge(&config, gate, drm, path, body, NOW).map(|r| r.new_path)
    };
    let pr = Drm::PlayReady;
    assert_eq!(
        redeem(pr, path, Some(&custom(&token))),
        Ok(Some(path.into()))
    );
    assert_eq!(
        redeem(pr, &with_query, Some(&challenge(""))),
        Ok(Some(path.into()))
    );
    assert_eq!(
        redeem(pr, &with_query, Some(&custom(&token))),
        Ok(Some(path.into()))
    );
    assert_eq!(redeem(pr, &with_query, None), Ok(Some(path.into())));
    assert_eq!(redeem(pr, &with_query, Some(b"")), Ok(Some(path.into())));
    // the other token is another licence, and fine on its own
    assert!(redeem(pr, path, Some(&custom(&other))).is_ok());
    let refusals = [
        (with_query.clone(), custom(&other), Refusal::TokensDiffer),
        (
            path.to_owned(),
            challenge(&format!(
                "<CustomData>{token}</CustomData><CustomData>{token}</CustomData>"
            )),
            Refusal::Challenge(fpgen::challenge::ChallengeError::TwoTokens),
        ),
        (
            with_query.clone(),
            b"not xml".to_vec(),
            Refusal::Challenge(fpgen::challenge::ChallengeError::Malformed),
        ),
        (
            path.to_owned(),
            challenge(""),
            Refusal::Token(token::TokenError::Malformed),
        ),
        (
            format!("{with_query}&ExpressPlayToken={token}"),
            custom(&token),
            Refusal::Token(token::TokenError::Malformed),
        ),
    ];
    for (path, body, want) in &refusals {
        assert_eq!(redeem(pr, path, Some(body)).err(), Some(*want), "{path}");
    }
    // FairPlay's and Widevine's gates read no challenge: a token there is
    // the query's or none
    for drm in [Drm::FairPlay, Drm::Widevine] {
        let at = if drm == Drm::FairPlay {
            "/hms/fp/rights/"
        } else {
            "/hms/wv/rights/"
        };
        assert_eq!(
            redeem(drm, at, Some(&custom(&token))).err(),
            Some(Refusal::Token(token::TokenError::Malformed))
        );
        assert_eq!(
            redeem(drm, &format!("{at}?ExpressPlayToken={token}"), None).err(),
            Some(Refusal::Token(token::TokenError::WrongDrm))
        );
    }
}

/// The licence data's `Debug` never shows a content key.
#[test]
fn debug_shows_no_content_key() {
    let (_, licence) = pr_mints(&config(), &pr_base());
    let shown = format!("{licence:?}");
    assert!(!shown.contains(CK), "{shown}");
    let redeemed = {
        let config = fixtures::config();
        let (v, _) = pr_mints(&config, &pr_base());
        let path = format!(
            "/playready/RightsManager.asmx?ExpressPlayToken={}",
            v["token"].as_str().unwrap()
        );
        redeem::redeem(
            &config,
            config.redemption().unwrap(),
            Drm::PlayReady,
            &path,
            NOW,
        )
        .unwrap()
    };
    let shown = format!("{redeemed:?}");
    assert!(!shown.contains(CK), "{shown}");
    assert!(redeemed
        .headers
        .iter()
        .any(|(n, v)| n == "x-fpgen-key" && v.contains(CK)));
}
