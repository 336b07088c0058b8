//! The access-log record of a request (`Outcome`, `log_fields`).

#[allow(unused_imports, reason = "the shared imports, for every topic")]
use super::support::*;

#[test]
fn outcome_for_the_access_log() {
    let (_, o) = call(&format!(
        "{}&kid=^film&cookie=corr-1&expirationTime=%2B60",
        base()
    ));
    assert_eq!(
        o,
        Outcome {
            error: None,
            customer_id: Some(CustomerId::parse("100001").unwrap()),
            kid: Some(Kid::parse("^film").unwrap()),
            cookie: Some("corr-1".into()),
            expires_at: Some(NOW + 60),
            drm: Some(fpgen::licence::Drm::FairPlay),
        }
    );
    let (_, o) = call(&format!("{AUTH}&contentKey=00&iv={IV}&cookie=corr-2"));
    assert_eq!(
        (
            o.code(),
            o.cookie.as_deref(),
            o.customer_id.as_ref().map(CustomerId::as_str)
        ),
        (-2027, Some("corr-2"), Some("100001"))
    );
    let (_, o) = call(&format!("{AUTH}&contentKey=00&iv={IV}&cookie=bad%0Acookie"));
    assert_eq!(o.cookie, None, "an invalid cookie never reaches the log");
}

#[test]
fn access_log_fields() {
    let (_, o) = call(&format!(
        "{}&kid=%5Efilm%20%C3%A9%3D1&cookie=a%20b%22c%25&expirationTime=%2B60",
        base()
    ));
    assert_eq!(
        o.log_fields(),
        "code=0 customer=100001 kid=^film%20%C3%A9%3D1 cookie=a%20b%22c%25 expires=2027-01-15T08:01:00Z drm=fairplay"
    );
    let (_, o) = call("contentKey=00");
    assert_eq!(o.log_fields(), "code=-2017 drm=fairplay");
    // each DRM's endpoint names its DRM, refused or minted
    use fpgen::licence::Drm;
    let o = |drm, query: &str| service::handle_for(&config(), drm, query, b"", &host()).outcome;
    assert_eq!(o(Drm::Widevine, "").log_fields(), "code=-2017 drm=widevine");
    assert_eq!(
        o(Drm::PlayReady, "").log_fields(),
        "code=-2017 drm=playready"
    );
    assert!(o(Drm::FairPlay, "x")
        .log_fields()
        .ends_with(" drm=fairplay"));
}
