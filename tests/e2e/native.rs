//! What only the native module (fpgen as an Envoy dynamic module) does,
//! through a real Envoy running its test build: a panic in a request
//! hook answers 500 and leaves Envoy serving; the module runs on the
//! releases it supports and refuses others by name; the shipped
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

/// The Envoy binary under test (the venv's `envoy` is a Python launcher:
/// the binary it runs).
fn envoy_binary() -> std::path::PathBuf {
    let real = std::fs::canonicalize(common::tool_paths().0).unwrap();
    if std::fs::read(&real).unwrap().starts_with(b"\x7fELF") {
        return real;
    }
    let venv = real.parent().unwrap().parent().unwrap();
    let found = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|d| d.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.is_file());
    found.expect("the Envoy binary inside the venv")
}

/// A copy of the Envoy under test whose build id (the release's commit,
/// in `.note.gnu.build-id`) is `commit`: the only change; it runs as before.
fn envoy_with_build_id(commit: &str) -> std::path::PathBuf {
    let mut bytes = std::fs::read(envoy_binary()).unwrap();
    // the 20-byte id follows the note's header: 4, 20, 3, "GNU\0"
    let header = [
        &4u32.to_ne_bytes()[..],
        &20u32.to_ne_bytes(),
        &3u32.to_ne_bytes(),
        b"GNU\0",
    ]
    .concat();
    let at = bytes
        .windows(header.len())
        .position(|w| w == header)
        .expect("a GNU build-id note")
        + header.len();
    bytes[at..at + 20].copy_from_slice(&hex::decode(commit).unwrap());
    let copy = common::new_workdir().join("envoy");
    std::fs::write(&copy, &bytes).unwrap();
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    copy
}

/// Envoy with `options` fails to start, and its log says each of `lines`.
fn assert_refused(options: &Options, lines: &[&str]) {
    let log = Envoy::try_start_with(DEMO_CONFIG, options).expect_err("the module must refuse");
    for line in lines {
        assert!(
            log.contains(line),
            "no {line:?} in:\n{}",
            common::tail(&log, 30)
        );
    }
}

/// 1.36's ABI is another (its callbacks have other names): Envoy cannot
/// even open the module, and says which callback it lacks.
const CANNOT_OPEN: &str = "undefined symbol: envoy_dynamic_module_callback_";

/// The module decides by the running Envoy's release, read from its build
/// id: on 1.39 and 1.40 it runs (on 1.39 logging through the older log
/// callback, as 1.39 has no `log_v2`); an older release is refused at
/// load with one line naming it and the supported range. (`make test`
/// runs this on 1.40.0; `make test-envoys` on every release of its matrix.)
#[test]
fn the_module_runs_on_1_39_and_1_40_and_refuses_an_older_release_by_name() {
    let (major, minor, patch) = common::envoy_release();
    let release = format!("{major}.{minor}.{patch}");
    let refused = "refused to load: Envoy";
    match minor {
        39.. => {
            let envoy = Envoy::start_with(DEMO_CONFIG, &native());
            assert_eq!(envoy.get(&mint_query()).status, 200);
            let log = log_with(&envoy, &format!("running on Envoy {release} ("));
            assert_eq!(
                log.contains("logging through envoy_dynamic_module_callback_log"),
                minor == 39,
                "{}",
                common::tail(&log, 20)
            );
        }
        37 | 38 => assert_refused(
            &native(),
            &[
                &format!("{refused} {release} ("),
                "older than fpgen's native module supports: it runs on Envoy 1.39.x and 1.40.x",
            ],
        ),
        _ => assert_refused(&native(), &[CANNOT_OPEN]),
    }
}

/// The same decision where the release is the only difference: a copy of
/// the Envoy under test that says, by its build id, that it is 1.38.2 is
/// refused, naming 1.38.2; one with a commit fpgen does not know (a later
/// release, an operator's own build) runs the module with a warning, as
/// its ABI has every callback fpgen calls.
#[test]
fn the_release_is_read_from_envoys_build_id() {
    match common::envoy_release().1 {
        39.. => {}
        // on 1.37 and 1.38 a copy that claims to be 1.40.0 is refused for
        // the callbacks its ABI lacks: the release named is not trusted alone
        37 | 38 => {
            let as_1_40 = Options {
                envoy_bin: Some(envoy_with_build_id(
                    "9e5580933739775e8bce696a57a2e1bc99368f23",
                )),
                ..native()
            };
            assert_refused(
                &as_1_40,
                &["refused to load: Envoy 1.40.0 (9e5580933739775e8bce696a57a2e1bc99368f23) lacks \
                   dynamic-module callbacks fpgen calls \
                   (envoy_dynamic_module_callback_http_filter_config_increment_counter"],
            );
            return;
        }
        // 1.36: Envoy cannot open the module, nor a copy of it
        _ => return assert_refused(&native(), &[CANNOT_OPEN]),
    }
    let as_1_38 = Options {
        envoy_bin: Some(envoy_with_build_id(
            "f387231af8dd7274e37c5ae2cc797cb09a948818",
        )),
        ..native()
    };
    assert_refused(
        &as_1_38,
        &["refused to load: Envoy 1.38.2 (f387231af8dd7274e37c5ae2cc797cb09a948818) is older than \
           fpgen's native module supports: it runs on Envoy 1.39.x and 1.40.x"],
    );
    let unknown = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
    let as_unknown = Options {
        envoy_bin: Some(envoy_with_build_id(unknown)),
        ..native()
    };
    let envoy = Envoy::start_with(DEMO_CONFIG, &as_unknown);
    assert_eq!(envoy.get(&mint_query()).status, 200);
    log_with(
        &envoy,
        &format!("running on Envoy at commit {unknown}, which fpgen was not tested on"),
    );
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
