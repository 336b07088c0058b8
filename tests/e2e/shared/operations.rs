//! Running fpgen in production, through a real Envoy: secrets handed to the
//! VM from Envoy's environment (never in the configuration, `/config_dump`
//! or a log), and the module's version and build in its log line and its
//! build stat.

use crate::common;

use crate::common::{licence_request, Envoy, Options, RecordingUpstream};
use fpgen::stats::{BUILD, VERSION};
use fpgen_fixtures::{AUTHENTICATOR, DEMO_ENV, EK_CONTENT_KEY, IV, STORED_KID};

/// The demo configuration with its sealing key, KEK and stored key read
/// from Envoy's environment: a token minted from the key store (KEK and
/// wrapped key from the environment, sealed with the sealing key from the
/// environment) is redeemed at the gate, and the upstream gets the content
/// key. Neither `/config_dump` nor any log holds a value; the configure log
/// line counts them.
#[test]
fn secrets_from_envoys_environment_mint_and_redeem_and_are_shown_nowhere() {
    let upstream = RecordingUpstream::start();
    let config = fpgen_fixtures::demo_json_from_env().to_string();
    for (_, value) in DEMO_ENV {
        assert!(!config.contains(value));
    }
    let options = Options::upstream(this_module!(), upstream.port).host_env(&DEMO_ENV);
    let envoy = Envoy::start_with(&config, &options);

    // no contentKey: the key comes from the key store
    let r = envoy.get(&format!(
        "/hms/fp/token?customerAuthenticator={AUTHENTICATOR}&iv={IV}&kid={STORED_KID}"
    ));
    assert_eq!(r.status, 200, "{r:?}");
    let token = fpgen_fixtures::token_of_url(&r.text());
    let r = licence_request(
        &envoy,
        &format!("/hms/fp/rights/?ExpressPlayToken={token}"),
        &[],
        b"spc",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header_all("x-fpgen-content-key"), [EK_CONTENT_KEY]);

    let dump = envoy.admin_get("/config_dump?include_eds").text();
    for (name, value) in DEMO_ENV {
        assert!(dump.contains(name), "{name} is not in /config_dump");
        assert!(!dump.contains(value), "/config_dump shows {name}'s value");
    }
    let line = format!(
        "fpgen {VERSION} ({BUILD}): configured: environment test, 1 customer(s), active sealing key \
         \"demo-2026-11\", redemption gate on, 3 secret(s) from the environment"
    );
    let log = envoy.envoy_log_with(&line) + &envoy.access_log();
    for (name, value) in DEMO_ENV {
        assert!(!log.contains(value), "a log shows {name}'s value:\n{log}");
    }
    assert!(log.contains(&line), "no {line:?} in\n{log}");
}

/// A variable that is not handed to the VM, or holds something else,
/// refuses the configuration; the log names the field and the variable,
/// never the value.
#[test]
fn a_missing_or_malformed_variable_refuses_the_configuration_naming_it() {
    let config = fpgen_fixtures::demo_json_from_env().to_string();
    // FPGEN_KEK is set in Envoy's environment but not handed to the VM
    let mut options = Options::of(this_module!()).host_env(&DEMO_ENV);
    options.host_env.retain(|(name, _)| name != "FPGEN_KEK");
    let log = Envoy::try_start_with(&config, &options).unwrap_err();
    // each module says where it takes its variables from
    let hint = match options.module {
        common::Module::Wasm => {
            "in Envoy, list it in vm_config.environment_variables.host_env_keys"
        }
        common::Module::Native => "in Envoy's own environment",
    };
    assert!(
        log.contains(&format!(
            "fpgen {VERSION} ({BUILD}): invalid fpgen configuration: keks.demo-kek: \
             environment variable \"FPGEN_KEK\" is not set ({hint})"
        )),
        "{}",
        common::tail(&log, 40)
    );
    // the sealing key one digit short
    let short = &DEMO_ENV[0].1[1..];
    let options =
        Options::of(this_module!()).host_env(&[DEMO_ENV[1], DEMO_ENV[2], ("FPGEN_SEALING_KEY", short)]);
    let log = Envoy::try_start_with(&config, &options).unwrap_err();
    assert!(
        log.contains(
            "sealing_keys[0].key: environment variable \"FPGEN_SEALING_KEY\": expected 64 hex digits"
        ),
        "{}",
        common::tail(&log, 40)
    );
    assert!(!log.contains(short), "the log shows the value");
}

/// `/stats` shows which module runs: the build gauge, named by version and
/// build and, in Prometheus, labelled with them.
#[test]
fn the_module_reports_its_version_and_build_in_stats() {
    let envoy = common::shared(this_module!());
    let name = format!("wasmcustom.fpgen.build.{VERSION}.{BUILD}");
    assert_eq!(envoy.stat(&name), Some(1), "no {name} in /stats");
    let prometheus = envoy.admin_get("/stats/prometheus").text();
    let sample = envoy.module.prometheus_line(&format!(
        "fpgen_build{{fpgen_version=\"{VERSION}\",fpgen_build=\"{BUILD}\"}} 1"
    ));
    assert!(
        prometheus.lines().any(|line| line == sample),
        "no {sample:?} in\n{}",
        prometheus
            .lines()
            .filter(|l| l.contains("fpgen"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Key material where a name or another shape belongs (the same mistakes
/// `fpgen check-config` is given in `tests/cli.rs`), each pushed to a
/// running Envoy through LDS: each is rejected with a log line naming its
/// field, the old listener keeps minting, and neither Envoy's log nor its
/// access log holds any hex value of any of them (issue 20).
#[test]
fn configuration_mistakes_in_envoy_are_rejected_without_echoing_key_material() {
    let envoy = Envoy::start_with(
        fpgen_fixtures::DEMO_CONFIG,
        &Options {
            dynamic: true,
            ..Options::of(this_module!())
        },
    );
    let mistakes = fpgen_fixtures::key_mistakes();
    let rejected = |envoy: &Envoy| {
        envoy
            .stat("listener_manager.lds.update_rejected")
            .unwrap_or(0)
    };
    for (i, (what, json)) in mistakes.iter().enumerate() {
        envoy.replace_filter_config(json);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while rejected(&envoy) < i as u64 + 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not rejected:\n{}",
                common::tail(&envoy.envoy_log(), 30)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let r = envoy.get(&format!("/hms/fp/token?{}", fpgen_fixtures::query("")));
    assert_eq!(r.status, 200, "the old listener no longer mints");
    // Envoy flushes its log every 50 ms: the last refusals may still be on
    // their way when the last rejection shows in the stats
    let refusals_in = |log: &str| {
        log.lines()
            .filter(|l| l.contains("invalid fpgen configuration: "))
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut log = envoy.envoy_log();
    while refusals_in(&log) < mistakes.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        log = envoy.envoy_log();
    }
    let log = format!("{log}{}", envoy.access_log());
    assert!(
        refusals_in(&log) >= mistakes.len(),
        "{}",
        common::tail(&log, 60)
    );
    for (what, json) in &mistakes {
        if let Some(hex) = fpgen_fixtures::leaked_secret(json, &log) {
            let line = log.lines().find(|l| l.to_ascii_lowercase().contains(&hex));
            panic!("{what}: Envoy's log holds {hex}: {line:?}");
        }
    }
}
