//! Live reconfiguration through Envoy's file-based LDS: under steady load,
//! a broken filter configuration is rejected (old one keeps serving, the log
//! names the field), then a good one that adds a customer and rotates the
//! active sealing key takes effect; no request fails during the swaps.

use crate::common;

use crate::common::{get, request, Envoy, Options, CK, DEMO_CONFIG, IV};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The content key and IV of a mint, after the authenticator.
fn key_and_iv() -> String {
    format!("contentKey={CK}&iv={IV}")
}
const NEW_KEY: &str = "2222222222222222222222222222222222222222222222222222222222222222";
use fpgen_fixtures::AUTHENTICATOR_SHA256 as DIGEST;

fn token_of(r: &common::HttpResponse) -> String {
    assert_eq!(r.status, 200, "{r:?}");
    common::token_of_url(&r.text())
}

#[test]
fn swap_the_filter_configuration_under_load() {
    let envoy = Arc::new(Envoy::start_with(
        DEMO_CONFIG,
        &Options {
            dynamic: true,
            ..Options::of(this_module!())
        },
    ));
    let port = envoy.port;
    let old_token = token_of(&get(
        port,
        &format!("/hms/fp/token?{}", fpgen_fixtures::query("")),
    ));
    assert_eq!(common::key_id(&old_token).as_deref(), Some("demo-2026-11"));

    // steady load: mint and redeem, counting every answer that is not 200
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let (stop, sent, failed, old_token) = (
                stop.clone(),
                sent.clone(),
                failed.clone(),
                old_token.clone(),
            );
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let r = if i % 2 == 0 {
                        common::try_raw(
                            port,
                            &common::request_bytes(
                                "GET",
                                &format!("/hms/fp/token?{}", fpgen_fixtures::query("")),
                                &[],
                                None,
                            ),
                        )
                    } else {
                        common::try_raw(
                            port,
                            &common::request_bytes(
                                "POST",
                                &format!("/hms/fp/rights/?ExpressPlayToken={old_token}"),
                                &[],
                                Some(b"spc"),
                            ),
                        )
                    };
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !matches!(r, Ok(ref r) if r.status == 200) {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("failed during the swap: {r:?}");
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    // 1. a broken configuration: rejected, the old one keeps serving
    let mut broken = fpgen_fixtures::demo_json();
    broken["customers"][0]["authenticator_sha256"] = "not-a-digest".into();
    envoy.replace_filter_config(&broken.to_string());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !envoy
        .envoy_log()
        .contains("customers[0].authenticator_sha256")
    {
        assert!(
            Instant::now() < deadline,
            "no log line names the broken field:\n{}",
            common::tail(&envoy.envoy_log(), 30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        get(
            port,
            &format!("/hms/fp/token?{}", fpgen_fixtures::query(""))
        )
        .status,
        200
    );

    // 2. a good one: a new customer, and a new active sealing key (the old one kept to verify)
    let mut good = fpgen_fixtures::demo_json();
    good["sealing_keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "2027-01", "key": NEW_KEY}));
    good["active_sealing_key"] = "2027-01".into();
    good["customers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "800001", "environment": "test", "authenticator_sha256": DIGEST}));
    let swapped = Instant::now();
    envoy.replace_filter_config(&good.to_string());
    let new_customer = format!(
        "/hms/fp/token?customerAuthenticator=800001,0123456789abcdef0123456789abcdef&{}",
        key_and_iv()
    );
    let new_token = loop {
        let r = get(port, &new_customer);
        if r.status == 200 {
            break token_of(&r);
        }
        assert!(
            swapped.elapsed() < Duration::from_secs(10),
            "the new customer never worked: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let latency = swapped.elapsed();
    assert_eq!(
        common::key_id(&new_token).as_deref(),
        Some("2027-01"),
        "new tokens name the new key"
    );
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    // tokens from before the swap still redeem, new ones too
    for t in [&old_token, &new_token] {
        let r = request(
            port,
            "POST",
            &format!("/hms/fp/rights/?ExpressPlayToken={t}"),
            &[],
            Some(b"spc"),
        );
        assert_eq!(r.status, 200, "{r:?}");
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("reload: {sent} requests during the swaps, {failed} failed; new configuration served {latency:?} after the file moved");
    assert!(sent > 200, "too little load: {sent}");
    assert_eq!(failed, 0, "requests failed during the swaps");
}
