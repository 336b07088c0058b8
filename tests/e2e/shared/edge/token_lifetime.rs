//! Tokens of disabled, removed or revoked customers are refused.

#[allow(unused_imports, reason = "the shared imports, for every topic")]
use super::support::*;

#[test]
fn tokens_of_disabled_removed_or_revoked_customers_are_refused() {
    let upstream = RecordingUpstream::start();
    let minting = start(upstream.port, Options::of(this_module!()), &config_with(|_| {}));
    let token = mint(&minting);
    let issued = now();
    let path = format!("/hms/fp/rights/?ExpressPlayToken={token}");
    assert_eq!(redeem_with(&minting, &path, &[]).status, 200);
    drop(minting);

    // (reason, the customer's field, its new value)
    let cases = [
        ("customer_disabled", "enabled", json!(false)),
        ("unknown_customer", "id", json!("100002")),
        (
            "revoked",
            "tokens_not_before",
            json!(fpgen::licence::rfc3339(issued + 1)),
        ),
    ];
    for (reason, field, value) in cases {
        let config = config_with(|c| c["customers"][0][field] = value);
        let envoy = start(upstream.port, Options::of(this_module!()), &config);
        let before = upstream.requests().len();
        assert_4010(&redeem_with(&envoy, &path, &[]), reason);
        assert_eq!(upstream.requests().len(), before, "{reason}");
        assert_eq!(
            envoy.stat(&format!("wasmcustom.fpgen.redemptions_rejected.{reason}")),
            Some(1),
            "{reason}"
        );
        if reason == "revoked" {
            // tokens minted from that moment on redeem
            while now() < issued + 1 {
                std::thread::sleep(Duration::from_millis(100));
            }
            let fresh = mint(&envoy);
            let r = redeem_with(
                &envoy,
                &format!("/hms/fp/rights/?ExpressPlayToken={fresh}"),
                &[],
            );
            assert_eq!(r.status, 200, "{r:?}");
        }
    }

    // times no mint of fpgen's produces, sealed with the right key
    let envoy = start(upstream.port, Options::of(this_module!()), &config_with(|_| {}));
    let t = now();
    let before = upstream.requests().len();
    for (token, reason) in [
        (seal_demo(t + 600, t + 1200), "issued_in_future"),
        (
            seal_demo(t - 60, t - 60 + 31 * 24 * 3600),
            "lifetime_too_long",
        ),
    ] {
        assert_4010(
            &redeem_with(
                &envoy,
                &format!("/hms/fp/rights/?ExpressPlayToken={token}"),
                &[],
            ),
            reason,
        );
        assert_eq!(
            envoy.stat(&format!("wasmcustom.fpgen.redemptions_rejected.{reason}")),
            Some(1),
            "{reason}"
        );
    }
    assert_eq!(upstream.requests().len(), before);
    // a clock a few seconds ahead at the minting Envoy is tolerated
    let r = redeem_with(
        &envoy,
        &format!(
            "/hms/fp/rights/?ExpressPlayToken={}",
            seal_demo(t + 5, t + 600)
        ),
        &[],
    );
    assert_eq!(r.status, 200, "{r:?}");
}

// ---- 7. the token upstream -----------------------------------------------
