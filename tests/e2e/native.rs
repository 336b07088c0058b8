//! What only the native module (fpgen as an Envoy dynamic module) does,
//! through a real Envoy 1.40 running its test build: a panic in a request
//! hook answers 500 and leaves Envoy serving; the module refuses an Envoy
//! it was not built for; the shipped
//! `envoy/native.yaml` serves the demo. (Everything the two modules share
//! is proven by the shared suites, under `with_native::`.)

use crate::common;

use crate::common::{free_port, get, Envoy, Module, Options, DEMO_CONFIG};

fn native() -> Options {
    Options::of(Module::Native)
}

fn mint_query() -> String {
    format!("/hms/fp/token?{}", fpgen_fixtures::query(""))
}

/// The test build panics on `/fpgen-test/panic` inside the request-headers
/// hook: the request gets fpgen's internal error, the panic is counted and
/// logged, and the same Envoy (and worker) goes on serving.
#[test]
fn a_panic_in_a_request_hook_answers_500_and_envoy_keeps_serving() {
    let envoy = Envoy::start_with(DEMO_CONFIG, &native());
    for round in 1..=2u64 {
        let r = envoy.get("/fpgen-test/panic");
        assert_eq!(r.status, 500, "{r:?}");
        assert!(r.text().contains("-9500"), "{r:?}");
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(envoy.stat("dynamicmodulescustom.fpgen.panics"), Some(round));
        let minted = envoy.get(&mint_query());
        assert_eq!(minted.status, 200, "after panic {round}: {minted:?}");
    }
    assert!(envoy.is_running());
    let log = log_with(&envoy, "a hook panicked");
    assert!(
        log.contains("fpgen: panic: panicked at"),
        "{}",
        common::tail(&log, 20)
    );
}

/// Envoy's log once it holds `needle`; fails after 5 s without it.
fn log_with(envoy: &Envoy, needle: &str) -> String {
    let log = envoy.envoy_log_with(needle);
    assert!(
        log.contains(needle),
        "no {needle:?} in:\n{}",
        common::tail(&log, 20)
    );
    log
}

/// An Envoy that is not 1.40 is refused at load: here a copy of Envoy
/// 1.40.0 whose version string says 1.41.0 (the only change; it runs as
/// before), so the module's check is all that differs.
#[test]
fn the_module_refuses_an_envoy_it_was_not_built_for() {
    let real = common::tool_paths().0;
    let real = std::fs::canonicalize(&real).unwrap();
    // the venv's `envoy` is a Python launcher: find the binary it runs
    let binary = if std::fs::read(&real).unwrap().starts_with(b"\x7fELF") {
        real
    } else {
        let venv = real.parent().unwrap().parent().unwrap();
        let found = std::fs::read_dir(venv.join("lib"))
            .unwrap()
            .filter_map(Result::ok)
            .map(|d| d.path().join("site-packages/envoy/_bin/envoy"))
            .find(|p| p.is_file());
        found.expect("the Envoy binary inside the venv")
    };
    let mut bytes = std::fs::read(&binary).unwrap();
    let at = memchr_find(&bytes, b"\x001.40.0\x00").expect("Envoy 1.40.0's version string");
    bytes[at + 1..at + 7].copy_from_slice(b"1.41.0");
    let dir = common::new_workdir();
    let copy = dir.join("envoy-1.41");
    std::fs::write(&copy, &bytes).unwrap();
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let options = Options {
        envoy_bin: Some(copy),
        ..native()
    };
    let log = Envoy::try_start_with(DEMO_CONFIG, &options).expect_err("the module must refuse");
    assert!(
        log.contains("refused to load: this Envoy is not 1.40.x"),
        "{}",
        common::tail(&log, 30)
    );
    // and the same module loads into the real one
    let envoy = Envoy::start_with(DEMO_CONFIG, &native());
    assert_eq!(envoy.get(&mint_query()).status, 200);
}

fn memchr_find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `envoy/native.yaml` as shipped (`make run-native`): the demo's token,
/// its redemption through the gate, the labelled counters and the access
/// log's fpgen fields.
#[test]
fn the_shipped_native_yaml_serves_the_demo() {
    let port = free_port();
    let envoy = Envoy::start_shipped("envoy/native.yaml", &[(10000, port), (9901, 0)]);
    let r = get(port, &mint_query());
    assert_eq!(r.status, 200, "{r:?}");
    let url = r.text().trim_end().to_owned();
    // the demo's licence URLs point at 127.0.0.1:10000: follow the path
    let path = url.split_once(":10000").unwrap().1.to_owned();
    let licence = get(port, &path);
    assert_eq!(licence.status, 200, "{licence:?}");
    assert_eq!(licence.header("x-demo-customer"), Some("100001"));
    let prometheus = envoy.admin_get("/stats/prometheus").text();
    for sample in [
        "envoy_dynamicmodulescustom_fpgen_tokens_minted{fpgen_customer=\"100001\"} 1",
        "envoy_dynamicmodulescustom_fpgen_redemptions_accepted{fpgen_customer=\"100001\"} 1",
    ] {
        assert!(
            prometheus.lines().any(|l| l == sample),
            "{sample} not in\n{prometheus}"
        );
    }
    let log = log_with(&envoy, "\"GET /hms/fp/rights/\" 200 code=0 customer=100001");
    assert!(
        log.contains("\"GET /hms/fp/token\" 200 code=0 customer=100001"),
        "{}",
        common::tail(&log, 20)
    );
}

/// A configuration update delivered through ECDS (as for the Wasm module
/// in `tests/e2e/ecds.rs`, with the native filter's type) takes effect under
/// steady load with no failed request, and a configuration fpgen refuses
/// is rejected while the running one keeps serving.
#[test]
fn ecds_updates_the_native_configuration_under_load() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let config = |host: &str| {
        let mut c = fpgen_fixtures::demo_json();
        c["redeem_url"]["host"] = host.into();
        c
    };
    let dir = common::new_workdir();
    let ecds = common::EcdsEnvoy::start_native(
        dir,
        &common::native_resource("1", &config("one.licences.test")),
    );
    let port = ecds.envoy.port;
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut conn = common::KeepAlive::open(port);
            let (mut hosts, mut failed) = (std::collections::BTreeMap::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let r = conn.get(&mint_query());
                let text = r.text();
                let authority = text.split('/').nth(2).unwrap_or_default();
                let host = authority.split(':').next().unwrap_or_default().to_owned();
                if r.status == 200 {
                    *hosts.entry(host).or_insert(0u32) += 1;
                } else {
                    failed.push(format!("{r:?}"));
                }
            }
            (hosts, failed)
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    ecds.publish(&common::native_resource("2", &config("two.licences.test")));
    ecds.wait("the second configuration", || {
        get(port, &mint_query())
            .text()
            .contains("two.licences.test")
    });
    let updated = ecds.ecds_stat("update_success");
    let mut broken = config("three.licences.test");
    broken["active_sealing_key"] = "no-such-key".into();
    ecds.publish(&common::native_resource("3", &broken));
    ecds.wait("the broken configuration's rejection", || {
        ecds.ecds_stat("update_rejected") == 1
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (hosts, failed) = load.join().unwrap();
    assert!(failed.is_empty(), "failed under load: {failed:?}");
    assert!(hosts.contains_key("one.licences.test"), "{hosts:?}");
    assert!(hosts.contains_key("two.licences.test"), "{hosts:?}");
    assert!(!hosts.contains_key("three.licences.test"), "{hosts:?}");
    assert_eq!(
        ecds.ecds_stat("update_success"),
        updated,
        "the broken one was not loaded"
    );
    assert!(get(port, &mint_query())
        .text()
        .contains("two.licences.test"));
}
