//! Tests of the end-to-end harness itself (tests/common/mod.rs) and of the
//! demo bootstrap, envoy/envoy.yaml.

use crate::common;

use crate::common::{Envoy, Options};
use std::path::Path;
use std::process::Command;

#[test]
fn other_paths_pass_through_the_filter() {
    let envoy = common::shared(this_module!());
    let r = envoy.get("/passthrough");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), common::PASSTHROUGH_BODY);

    let r = envoy.get("/passthrough/deeper?x=a+b&y=%2B");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, common::PASSTHROUGH_BODY),
        "{r:?}"
    );

    let r = envoy.get("/nothing/here");
    assert_eq!(
        (r.status, r.text().as_str()),
        (404, common::NOT_FOUND_BODY),
        "{r:?}"
    );

    // the demo enables the redemption gate: a bad token stops at the filter
    let r = envoy.get("/hms/fp/rights/?ExpressPlayToken=abc");
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.text().contains("Error -4010"), "{r:?}");
}

#[test]
fn demo_envoy_yaml_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (envoy, _) = common::tool_paths();
    assert!(
        root.join("target/wasm32-wasip1/release/fpgen.wasm").is_file(),
        "envoy/envoy.yaml loads target/wasm32-wasip1/release/fpgen.wasm: build it with `make build`"
    );
    let out = Command::new(envoy)
        .args([
            "--mode",
            "validate",
            "-c",
            "envoy/envoy.yaml",
            "--disable-hot-restart",
        ])
        .current_dir(root)
        .output()
        .expect("run envoy --mode validate");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "envoy --mode validate -c envoy/envoy.yaml: {}\n{log}",
        out.status
    );
    assert!(log.contains("configuration 'envoy/envoy.yaml' OK"), "{log}");
}

/// The demo's filter configuration in envoy/envoy.yaml (the `value: |`
/// block) is DEMO_CONFIG, up to whitespace.
#[test]
fn demo_envoy_yaml_carries_demo_config() {
    let yaml =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/envoy.yaml"))
            .unwrap();
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "value: |");
    let key_line = lines
        .next()
        .expect("envoy/envoy.yaml has a `value: |` block");
    let key_indent = key_line.len() - key_line.trim_start().len();
    let block: String = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > key_indent)
        .collect::<Vec<_>>()
        .join("\n");
    let squeeze = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    assert_eq!(
        squeeze(&block),
        squeeze(common::DEMO_CONFIG),
        "envoy/envoy.yaml and DEMO_CONFIG differ"
    );
}

#[test]
fn two_workers_and_drop_kills_envoy() {
    let envoy = Envoy::start_with(common::DEMO_CONFIG, &Options::concurrency(this_module!(), 2));
    for _ in 0..4 {
        let r = envoy.get("/passthrough");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, common::PASSTHROUGH_BODY),
            "{r:?}"
        );
    }
    assert!(envoy.is_running());
    let info = envoy.admin_get("/server_info").text();
    assert!(info.contains("\"concurrency\": 2"), "{info}");
    let pid = envoy.pid();
    let workdir = envoy.workdir().to_path_buf();
    drop(envoy);
    assert!(
        !Path::new("/proc").join(pid.to_string()).exists(),
        "Envoy {pid} still exists after drop"
    );
    assert!(!workdir.exists(), "{} not removed", workdir.display());
}

#[test]
fn try_start_reports_a_rejected_configuration() {
    let err =
        Envoy::try_start(this_module!(), "this is not JSON, reject it").expect_err("Envoy must reject the filter");
    let refusal = match this_module!() {
        common::Module::Wasm => "Unable to create Wasm plugin fpgen",
        common::Module::Native => "Failed to initialize dynamic module",
    };
    assert!(err.contains(refusal), "{err}");
    assert!(err.contains("invalid fpgen configuration"), "{err}");
}

#[test]
fn client_decodes_chunked_bodies_and_skips_interim_responses() {
    let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n\
                 5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n";
    let r = common::parse_response(wire, false, false)
        .unwrap()
        .expect("complete");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-a"), Some("1"));
    assert_eq!(r.text(), "hello, world");
    // Incomplete until the last chunk; close-delimited bodies end at EOF.
    assert_eq!(
        common::parse_response(&wire[..wire.len() - 2], false, false).unwrap(),
        None
    );
    let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef";
    assert_eq!(
        common::parse_response(wire, false, false)
            .unwrap()
            .unwrap()
            .body,
        b"abc"
    );
    let wire = b"HTTP/1.1 400 Bad Request\r\n\r\nbye";
    assert_eq!(common::parse_response(wire, false, false).unwrap(), None);
    assert_eq!(
        common::parse_response(wire, true, false)
            .unwrap()
            .unwrap()
            .text(),
        "bye"
    );
    // The recording upstream shares the chunked decoder and reads trailers.
    let chunked = common::chunked_body(b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\nnext")
        .unwrap()
        .unwrap();
    assert_eq!(chunked.used, 21);
    assert_eq!(chunked.body, b"abc");
    assert_eq!(chunked.trailers, [("X-T".to_owned(), "1".to_owned())]);
    assert_eq!(common::chunked_body(b"3\r\nabcX").unwrap(), None);
    assert!(common::chunked_body(b"3\r\nabcXY0\r\n\r\n").is_err());
}

/// Each copy of the shared suites runs the module it is named for: the
/// Envoy of a test under `with_native::` runs the native module (Envoy
/// counts its panics stat, and has no Wasm VM), any other the Wasm one.
/// `module_path!` is where the compiler put this copy, not the thread name
/// the harness reads.
#[test]
fn each_copy_of_the_shared_suites_runs_its_own_module() {
    let envoy = common::shared(this_module!());
    let native = module_path!().starts_with("e2e::with_native::");
    assert_eq!(
        envoy.module,
        if native {
            common::Module::Native
        } else {
            common::Module::Wasm
        }
    );
    let wasm_vms = envoy.stat("wasm.envoy.wasm.runtime.v8.created");
    let native_panics = envoy.stat("dynamicmodulescustom.fpgen.panics");
    if native {
        assert!(wasm_vms.is_none() && native_panics.is_some(), "{wasm_vms:?} {native_panics:?}");
    } else {
        assert!(wasm_vms.is_some_and(|n| n > 0), "{wasm_vms:?}");
        assert_eq!(native_panics, None);
    }
}
