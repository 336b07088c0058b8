//! The deployable configurations in envoy/: every one passes Envoy's own
//! validation with the built module, and the two-environments edge really
//! keeps the environments apart.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn configs() -> Vec<PathBuf> {
    let mut all = Vec::new();
    for dir in ["envoy", "envoy/dynamic", "envoy/ecds"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // lds.yaml and fpgen.yaml are resource files, validated through
            // their bootstraps
            let resource = name == "lds.yaml" || (dir == "envoy/ecds" && name == "fpgen.yaml");
            if path.extension().is_some_and(|e| e == "yaml") && !resource {
                all.push(path);
            }
        }
    }
    all.sort();
    all
}

/// The module exports the proxy-wasm callbacks fpgen implements and no
/// other (`make build` keeps only those of `deploy/exports.json`), so Envoy
/// never enters the VM for the response callbacks, `on_log` or `on_done`
/// (the tick and the gRPC callbacks carry fleet budgets). A callback implemented later must be added to that list, or
/// Envoy would never call it: this test names it.
#[test]
fn the_module_exports_only_the_callbacks_fpgen_implements() {
    let (_, wasm) = common::tool_paths();
    let bytes = std::fs::read(&wasm).unwrap();
    let mut exports = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        if let wasmparser::Payload::ExportSection(section) = payload.unwrap() {
            for export in section {
                exports.push(export.unwrap().name.to_owned());
            }
        }
    }
    exports.sort();
    assert_eq!(
        exports,
        [
            "_initialize",
            "memory",
            "proxy_abi_version_0_2_1",
            "proxy_on_configure",
            "proxy_on_context_create",
            "proxy_on_delete",
            "proxy_on_grpc_close",
            "proxy_on_grpc_receive",
            "proxy_on_memory_allocate",
            "proxy_on_request_body",
            "proxy_on_request_headers",
            "proxy_on_request_trailers",
            "proxy_on_tick",
            "proxy_on_vm_start",
        ],
        "{}",
        wasm.display()
    );
}

#[test]
fn every_envoy_configuration_validates() {
    let (envoy, wasm) = common::tool_paths();
    assert!(wasm.exists());
    let all = configs();
    let names: Vec<String> = all
        .iter()
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    for expected in [
        "envoy/envoy.yaml",
        "envoy/fleet.yaml",
        "envoy/two-environments.yaml",
        "envoy/gate.yaml",
        "envoy/dynamic/bootstrap.yaml",
        "envoy/ecds/bootstrap.yaml",
        "envoy/native.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    // the native module runs on Envoy 1.39 and 1.40 (make test-envoys runs
    // this on older releases too): before 1.39 Envoy refuses native.yaml
    let native_runs = common::envoy_release() >= (1, 39, 0);
    for path in all {
        let native = path.ends_with("envoy/native.yaml");
        // relative paths in the files (the module, the LDS file) are from the project root
        let out = Command::new(&envoy)
            .args(["--mode", "validate", "--disable-hot-restart", "-c"])
            .arg(&path)
            .envs(common::SHIPPED_ENV)
            // envoy/native.yaml's module: the test build, as lib<name>.so
            .env(
                "ENVOY_DYNAMIC_MODULES_SEARCH_PATH",
                common::Module::Native.path().parent().unwrap(),
            )
            .current_dir(root())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let validated = out.status.success() && text.contains("OK");
        let expected = !native || native_runs;
        assert_eq!(
            validated,
            expected,
            "{}:\n{}",
            path.display(),
            common::tail(&text, 20)
        );
        if !expected {
            assert!(
                text.contains("Failed to load dynamic module"),
                "{}",
                common::tail(&text, 20)
            );
        }
    }
}

#[test]
fn two_environments_keep_authenticators_and_tokens_apart() {
    let (test_port, prod_port) = (common::free_port(), common::free_port());
    // killed when dropped, and with the test process; logs audited
    let _envoy = common::Envoy::start_shipped(
        "envoy/two-environments.yaml",
        &[(10010, test_port), (10011, prod_port), (9911, 0)],
    );
    let q = format!(
        "contentKey={}&iv={}&errorFormat=json",
        common::CK,
        common::IV
    );
    let test_auth = "customerAuthenticator=100001,0123456789abcdef0123456789abcdef";
    let prod_auth = "customerAuthenticator=100001,fedcba9876543210fedcba9876543210";
    let r = common::get(test_port, &format!("/hms/fp/token?{test_auth}&{q}"));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r
        .text()
        .starts_with("http://fp.test.expressplay.com:80/hms/fp/rights/?ExpressPlayToken="));
    let prod = common::get(prod_port, &format!("/hms/fp/token?{prod_auth}&{q}"));
    assert_eq!(prod.status, 200, "{prod:?}");
    assert!(prod
        .text()
        .starts_with("https://fp.service.expressplay.com:443/hms/fp/rights/"));
    for (port, auth) in [(prod_port, test_auth), (test_port, prod_auth)] {
        let r = common::get(port, &format!("/hms/fp/token?{auth}&{q}"));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!((r.status, v["code"].as_i64()), (401, Some(-2018)), "{port}");
    }
}

/// Every value (at any depth) of `v` that is a map holding `key`.
fn maps_with<'v>(v: &'v serde_yaml_ng::Value, key: &str, out: &mut Vec<&'v serde_yaml_ng::Value>) {
    match v {
        serde_yaml_ng::Value::Mapping(m) => {
            if m.contains_key(key) {
                out.push(v);
            }
            for (_, child) in m {
                maps_with(child, key, out);
            }
        }
        serde_yaml_ng::Value::Sequence(s) => s.iter().for_each(|c| maps_with(c, key, out)),
        _ => {}
    }
}

/// Every shipped configuration (and the Istio hardening patch) tells
/// Envoy its limits (issue 20): the overload manager with a connection cap
/// and heap actions in every bootstrap, a buffer limit on every listener,
/// and time, stream and window limits on every connection manager, with
/// the values docs/security.md gives.
#[test]
fn every_shipped_configuration_carries_the_edge_limits() {
    let files = [
        ("envoy/envoy.yaml", true),
        ("envoy/native.yaml", true),
        ("envoy/fleet.yaml", true),
        ("envoy/gate.yaml", true),
        ("envoy/two-environments.yaml", true),
        ("envoy/dynamic/bootstrap.yaml", true),
        ("envoy/dynamic/lds.yaml", false),
        ("envoy/ecds/bootstrap.yaml", true),
        ("envoy/istio/envoyfilter-hcm-hardening.yaml", true),
    ];
    let (mut listeners, mut managers) = (0, 0);
    for (file, bootstrap) in files {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        if bootstrap {
            let mut found = Vec::new();
            maps_with(&doc, "overload_manager", &mut found);
            let om = &found
                .first()
                .unwrap_or_else(|| panic!("{file}: no overload_manager"))["overload_manager"];
            let monitors = serde_yaml_ng::to_string(&om["resource_monitors"]).unwrap();
            assert!(
                monitors.contains("max_active_downstream_connections: 10000"),
                "{file}"
            );
            assert!(
                monitors.contains("max_heap_size_bytes: 1073741824"),
                "{file}"
            );
            let actions = serde_yaml_ng::to_string(&om["actions"]).unwrap();
            for action in ["reduce_timeouts", "shrink_heap", "stop_accepting_requests"] {
                assert!(actions.contains(action), "{file}: no {action}");
            }
            let mut release = Vec::new();
            maps_with(&doc, "memory_allocator_manager", &mut release);
            assert_eq!(release.len(), 1, "{file}: no memory_allocator_manager");
        }
        let mut with_buffer = Vec::new();
        maps_with(&doc, "per_connection_buffer_limit_bytes", &mut with_buffer);
        let mut chains = Vec::new();
        maps_with(&doc, "filter_chains", &mut chains);
        for listener in &chains {
            assert_eq!(
                listener["per_connection_buffer_limit_bytes"].as_u64(),
                Some(32768),
                "{file}"
            );
            listeners += 1;
        }
        let mut hcms = Vec::new();
        maps_with(&doc, "request_headers_timeout", &mut hcms);
        let mut all_hcms = Vec::new();
        maps_with(&doc, "headers_with_underscores_action", &mut all_hcms);
        assert_eq!(
            hcms.len(),
            all_hcms.len(),
            "{file}: a connection manager without limits"
        );
        // (dynamic/bootstrap.yaml's connection manager is in lds.yaml)
        assert!(
            !hcms.is_empty() || file == "envoy/dynamic/bootstrap.yaml",
            "{file}: no connection manager"
        );
        for hcm in hcms {
            assert_eq!(
                hcm["request_headers_timeout"].as_str(),
                Some("10s"),
                "{file}"
            );
            assert_eq!(hcm["request_timeout"].as_str(), Some("15s"), "{file}");
            assert_eq!(hcm["stream_idle_timeout"].as_str(), Some("60s"), "{file}");
            assert_eq!(
                hcm["max_request_headers_kb"].as_u64(),
                Some(32),
                "{file}: the head limit fitted to the API (tests/e2e_limits.rs)"
            );
            assert_eq!(
                hcm["common_http_protocol_options"]["idle_timeout"].as_str(),
                Some("60s"),
                "{file}"
            );
            let h2 = &hcm["http2_protocol_options"];
            assert_eq!(h2["max_concurrent_streams"].as_u64(), Some(100), "{file}");
            assert_eq!(
                h2["initial_stream_window_size"].as_u64(),
                Some(65536),
                "{file}"
            );
            managers += 1;
        }
        if file.contains("istio") {
            assert!(
                text.contains("per_connection_buffer_limit_bytes: 32768"),
                "{file}"
            );
        }
    }
    assert!(
        listeners >= 6 && managers >= 7,
        "{listeners} listeners, {managers} managers"
    );
}
