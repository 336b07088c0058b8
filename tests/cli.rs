//! The `fpgen` command, run as a process: every subcommand's success and
//! failure paths and exit codes, and a token minted by Envoy opened by
//! `fpgen inspect`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::{CK, IV};

const AUTH: &str = "customerAuthenticator=100001,0123456789abcdef0123456789abcdef";

fn fpgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fpgen"))
        .args(args)
        .output()
        .unwrap()
}

/// `fpgen mint --config <config> args…`.
fn mint(config: &TempFile, args: &[&str]) -> Output {
    fpgen(&[&["mint", "--config", config.path()], args].concat())
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// A file under the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(content: &str) -> TempFile {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "fpgen-cli-{}-{}.json",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, content).unwrap();
        TempFile(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn demo() -> TempFile {
    TempFile::new(common::DEMO_CONFIG)
}

#[test]
fn help_for_every_subcommand() {
    for sub in [
        "keygen",
        "authenticator",
        "mint",
        "inspect",
        "check-config",
        "serve",
        "ratelimit",
    ] {
        let o = fpgen(&[sub, "--help"]);
        assert_eq!(o.status.code(), Some(0), "{sub}");
        assert!(stdout(&o).contains("Exit codes:"), "{sub}: {}", stdout(&o));
    }
    let o = fpgen(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(fpgen(&["no-such-command"]).status.code(), Some(2));
    assert_eq!(fpgen(&["mint"]).status.code(), Some(2), "missing --config");
}

/// `fpgen ratelimit` exits 3 when an address is taken, naming the option
/// and the address that failed (issue 30: a taken `--admin` port was
/// reported as the gRPC address), and never the Redis URL's password.
#[test]
fn a_taken_address_is_named_by_its_own_option() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = free.local_addr().unwrap().port();
    drop(free);
    for (option, args) in [
        (
            "--admin",
            [
                "--listen".to_owned(),
                format!("127.0.0.1:{listen}"),
                "--admin".to_owned(),
                format!("127.0.0.1:{port}"),
            ],
        ),
        (
            "--listen",
            [
                "--listen".to_owned(),
                format!("127.0.0.1:{port}"),
                "--admin".to_owned(),
                format!("127.0.0.1:{listen}"),
            ],
        ),
    ] {
        let mut all = vec!["ratelimit", "--redis", "redis://:pw-Bind77@127.0.0.1:1"];
        all.extend(args.iter().map(String::as_str));
        let o = fpgen(&all);
        assert_eq!(o.status.code(), Some(3), "{option}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("{option} 127.0.0.1:{port}: ")),
            "{option}: {err}"
        );
        assert!(!err.contains("pw-Bind77"), "{err}");
    }
}

/// `fpgen check-config` says when a valid configuration turns the
/// redemption gate off (issue 30), on standard error, and still exits 0.
#[test]
fn check_config_warns_when_the_gate_is_off() {
    let on = fpgen(&["check-config", demo().path()]);
    assert_eq!(on.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&on.stderr).contains("warning"));
    for edit in [
        serde_json::json!({"enabled": false}),
        serde_json::Value::Null,
    ] {
        let mut config = fpgen_fixtures::demo_json();
        if edit.is_null() {
            config.as_object_mut().unwrap().remove("redemption");
        } else {
            config["redemption"] = edit;
        }
        let file = TempFile::new(&config.to_string());
        let o = fpgen(&["check-config", file.path()]);
        assert_eq!(o.status.code(), Some(0));
        assert!(stdout(&o).contains("redemption gate off"), "{}", stdout(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("warning: the redemption gate is off"), "{err}");
    }
}

#[test]
fn keygen_prints_a_key_the_configuration_accepts() {
    let o = fpgen(&["keygen", "--id", "2027-01"]);
    assert_eq!(o.status.code(), Some(0));
    let key: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(key["id"], "2027-01");
    assert_eq!(key["key"].as_str().unwrap().len(), 64);
    let mut config = fpgen_fixtures::demo_json();
    config["sealing_keys"] = serde_json::json!([key]);
    config["active_sealing_key"] = "2027-01".into();
    fpgen::config::Config::from_json(config.to_string().as_bytes()).unwrap();
    // two keys differ; a default id is generated
    let a: serde_json::Value = serde_json::from_str(&stdout(&fpgen(&["keygen"]))).unwrap();
    let b: serde_json::Value = serde_json::from_str(&stdout(&fpgen(&["keygen"]))).unwrap();
    assert_ne!(a["key"], b["key"]);
    assert!(a["id"].as_str().unwrap().starts_with("k-"));
    let o = fpgen(&["keygen", "--id", "bad id"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("[A-Za-z0-9._-]"));
}

#[test]
fn authenticator_creates_and_digests() {
    let o = fpgen(&["authenticator", "--customer", "700001", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let authenticator = v["authenticator"].as_str().unwrap();
    let secret = authenticator.strip_prefix("700001,").unwrap();
    assert_eq!(secret.len(), 32);
    assert_eq!(
        v["authenticator_sha256"],
        hex::encode(Sha256::digest(secret.as_bytes()))
    );
    // the new customer authenticates through mint
    let mut config = fpgen_fixtures::demo_json();
    config["customers"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
        "id": "700001", "environment": "test", "authenticator_sha256": v["authenticator_sha256"]}));
    let file = TempFile::new(&config.to_string());
    let o = mint(
        &file,
        &[
            &format!("customerAuthenticator={authenticator}"),
            &format!("contentKey={CK}"),
            &format!("iv={IV}"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // digest of an existing one, from the argument and from stdin
    let o = fpgen(&[
        "authenticator",
        "--digest",
        "100001,0123456789abcdef0123456789abcdef",
    ]);
    assert_eq!(
        stdout(&o).trim(),
        "3eb1bd439947eb762998e566ccc2e099c791118b2f40579cc4f7da2b5061b7f9"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_fpgen"))
        .args(["authenticator", "--digest", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"100001,0123456789abcdef0123456789abcdef\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        stdout(&o).trim(),
        "3eb1bd439947eb762998e566ccc2e099c791118b2f40579cc4f7da2b5061b7f9"
    );
    // failures
    assert_eq!(
        fpgen(&["authenticator", "--digest", "no-comma"])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        fpgen(&["authenticator", "--customer", "a.b"]).status.code(),
        Some(1)
    );
    assert_eq!(fpgen(&["authenticator"]).status.code(), Some(2));
}

#[test]
fn mint_then_inspect() {
    let config = demo();
    let o = mint(
        &config,
        &[
            AUTH,
            &format!("contentKey={CK}"),
            &format!("iv={IV}"),
            "cookie=a b&c",
            "kid=^film 1",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let url = stdout(&o).trim().to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:10000/hms/fp/rights/?ExpressPlayToken="),
        "{url}"
    );
    // the URL, or the bare token
    let token = common::token_of_url(&url);
    for input in [url.as_str(), token.as_str()] {
        let o = fpgen(&["inspect", "--config", config.path(), input]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["key_id"], "demo-2026-11");
        assert_eq!(
            v["licence"]["cookie"], "a b&c",
            "values are form-encoded by fpgen mint"
        );
        assert_eq!(v["licence"]["kid"], "^film 1");
        assert_eq!(v["licence"]["iv"], IV);
        assert!(
            v["licence"].get("content_key").is_none(),
            "content key shown without the flag"
        );
        assert!(!stdout(&o).contains(CK));
    }
    let o = fpgen(&[
        "inspect",
        "--config",
        config.path(),
        "--show-content-key",
        &token,
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["licence"]["content_key"], CK);
    // a raw query string works too
    let o = mint(
        &config,
        &["--query", &format!("{AUTH}&contentKey={CK}&iv={IV}")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // query and pairs combine
    let o = mint(
        &config,
        &[
            "--query",
            &format!("{AUTH}&iv={IV}"),
            &format!("contentKey={CK}"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// `fpgen mint --drm widevine` mints what `/hms/wv/token` would, and
/// `fpgen inspect` says which DRM a token is for.
#[test]
fn mint_and_inspect_know_widevine() {
    let config = demo();
    let args = [
        "--drm",
        "widevine",
        AUTH,
        "kid=a1b2c3d4e5f60718293a4b5c6d7e8f90",
        &format!("contentKey={CK}"),
        "securityLevel=1",
        "hdcpOutputControl=0",
    ];
    let o = mint(&config, &args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let url = stdout(&o).trim().to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:10000/hms/wv/rights/?ExpressPlayToken="),
        "{url}"
    );
    let o = fpgen(&["inspect", "--config", config.path(), &url]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["drm"], "widevine");
    assert_eq!(
        v["licence"]["keys"][0]["kid"],
        "a1b2c3d4e5f60718293a4b5c6d7e8f90"
    );
    assert_eq!(v["licence"]["keys"][0]["security_level"], 1);
    assert!(
        !stdout(&o).contains(CK),
        "content key shown without the flag"
    );
    // Widevine's own rules, with their codes
    let o = mint(&config, &args[..args.len() - 1]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("error -7006"), "{}", stderr(&o));
    let o = mint(&config, &["--drm", "clearkey", AUTH]);
    assert_eq!(o.status.code(), Some(2), "an unknown DRM is a usage error");
}

/// `fpgen mint --drm playready` prints what `/hms/pr/token` answers (its
/// JSON), and `fpgen inspect` reads that answer for its token.
#[test]
fn mint_and_inspect_know_playready() {
    let config = demo();
    let args = [
        "--drm",
        "playready",
        AUTH,
        "kid=a1b2c3d4e5f60718293a4b5c6d7e8f90",
        &format!("contentKey={CK}"),
        "rightsType=BuyToOwn",
        "analogVideoOPL=100",
        "compressedDigitalAudioOPL=200",
        "compressedDigitalVideoOPL=400",
        "uncompressedDigitalAudioOPL=250",
        "uncompressedDigitalVideoOPL=300",
    ];
    let o = mint(&config, &args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let answer = stdout(&o).trim().to_owned();
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        v["licenseAcquisitionUrl"],
        "http://127.0.0.1:10000/playready/RightsManager.asmx"
    );
    let o = fpgen(&["inspect", "--config", config.path(), &answer]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let shown: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(shown["drm"], "playready");
    assert_eq!(shown["licence"]["rights_type"], "BuyToOwn");
    assert_eq!(
        shown["licence"]["output_levels"]["compressed_digital_video"],
        400
    );
    assert!(
        !stdout(&o).contains(CK),
        "content key shown without the flag"
    );
    // the bare token opens the same
    let token = v["token"].as_str().unwrap();
    let o = fpgen(&["inspect", "--config", config.path(), token]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // PlayReady's own rules, with their codes
    let o = mint(&config, &args[..args.len() - 1]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("error -5006"), "{}", stderr(&o));
}

#[test]
fn mint_reports_api_errors_with_their_codes() {
    let config = demo();
    let o = mint(&config, &[AUTH, "contentKey=0011", &format!("iv={IV}")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("error -2027: Content encryption key must be 32 hex digits long"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).is_empty());
    let o = mint(
        &config,
        &[
            "customerAuthenticator=100001,wrong",
            &format!("contentKey={CK}"),
            &format!("iv={IV}"),
        ],
    );
    assert!(stderr(&o).starts_with("error -2018"), "{}", stderr(&o));
}

#[test]
fn inspect_refuses_bad_tokens_with_the_reason() {
    let config = demo();
    let url = stdout(&mint(
        &config,
        &[
            AUTH,
            &format!("contentKey={CK}"),
            &format!("iv={IV}"),
            "expirationTime=+60",
        ],
    ));
    let token = common::token_of_url(&url);
    // one character changed
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    let o = fpgen(&["inspect", "--config", config.path(), &tampered]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).trim(),
        "invalid token (-4010): token authentication failed"
    );
    // expired, judged at a later time
    let later = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600)
        .to_string();
    let o = fpgen(&[
        "inspect",
        "--config",
        config.path(),
        "--now",
        &later,
        &token,
    ]);
    assert_eq!(
        (o.status.code(), stderr(&o).trim()),
        (Some(1), "invalid token (-4010): token has expired")
    );
    let o = fpgen(&[
        "inspect",
        "--config",
        config.path(),
        "http://x/hms/fp/rights/?a=b",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let o = fpgen(&["inspect", "--config", config.path(), "not-a-token"]);
    assert_eq!(
        (o.status.code(), stderr(&o).trim()),
        (Some(1), "invalid token (-4010): malformed token")
    );
}

/// `fpgen` with `env` as its whole environment (besides PATH).
fn fpgen_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fpgen"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Secrets given as `{"env": …}` are read from the command's environment
/// by check-config, mint and inspect, as the filter reads them from the
/// VM's; a missing or wrong variable is named, its value never shown.
#[test]
fn the_commands_read_env_secrets_from_their_environment() {
    let config = TempFile::new(&fpgen_fixtures::demo_json_from_env().to_string());
    let env = fpgen_fixtures::DEMO_ENV;
    let o = fpgen_env(&["check-config", config.path()], &env);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).ends_with("redemption gate on, 3 secret(s) from the environment\n"),
        "{}",
        stdout(&o)
    );
    // minted from the environment's keys, opened with the literal ones
    let stored_kid = format!("kid={}", fpgen_fixtures::STORED_KID);
    let o = fpgen_env(
        &[
            "mint",
            "--config",
            config.path(),
            AUTH,
            &format!("iv={IV}"),
            &stored_kid,
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let url = stdout(&o).trim().to_owned();
    let literal = demo();
    let o = fpgen(&[
        "inspect",
        "--config",
        literal.path(),
        "--show-content-key",
        &url,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["licence"]["content_key"], fpgen_fixtures::EK_CONTENT_KEY);
    let o = fpgen_env(&["inspect", "--config", config.path(), &url], &env);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // unset, and one digit short
    let o = fpgen_env(&["check-config", config.path()], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).lines().count(), 3, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            ": sealing_keys[0].key: environment variable \"FPGEN_SEALING_KEY\" is not set\n"
        ),
        "{}",
        stderr(&o)
    );
    assert!(
        !stderr(&o).contains("vm_config"),
        "the command reads its own environment"
    );
    let short: Vec<(&str, &str)> = env.iter().map(|&(k, v)| (k, &v[1..])).collect();
    for command in ["check-config", "inspect"] {
        let mut args = vec![command, "--config", config.path(), url.as_str()];
        if command == "check-config" {
            args = vec![command, config.path()];
        }
        let o = fpgen_env(&args, &short);
        assert_eq!(o.status.code(), Some(1), "{command}");
        let err = stderr(&o);
        assert!(
            err.contains("keks.demo-kek: environment variable \"FPGEN_KEK\": expected"),
            "{err}"
        );
        for (_, value) in &short {
            assert!(!err.contains(&value[..8]), "{command} shows a value: {err}");
        }
    }
}

#[test]
fn keygen_hex_and_version_for_operators() {
    let o = fpgen(&["keygen", "--hex"]);
    let key = stdout(&o);
    assert_eq!((o.status.code(), key.trim().len()), (Some(0), 64), "{key}");
    assert!(key.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(stdout(&fpgen(&["keygen", "--hex"])), key);
    // the version and the build, as the module reports them
    let o = fpgen(&["--version"]);
    assert_eq!(
        stdout(&o).trim(),
        format!("fpgen {} ({})", fpgen::stats::VERSION, fpgen::stats::BUILD)
    );
    // a 12-digit git commit (`unknown` outside a git checkout)
    let build = regex::Regex::new("^(?:[0-9a-f]{12}|unknown)(?:-[a-z0-9-]+)?$").unwrap();
    assert!(
        build.is_match(fpgen::stats::BUILD),
        "{}",
        fpgen::stats::BUILD
    );
}

#[test]
fn check_config_lists_every_problem() {
    let config = demo();
    let o = fpgen(&["check-config", config.path()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains(
            "valid: environment test, 1 customer(s), active sealing key \"demo-2026-11\""
        ),
        "{}",
        stdout(&o)
    );
    let mut bad = fpgen_fixtures::demo_json();
    bad["sealing_keys"][0]["key"] = "00".into();
    bad["customers"][0]["kek"] = "missing".into();
    bad["max_body_bytes"] = 0.into();
    let file = TempFile::new(&bad.to_string());
    let o = fpgen(&["check-config", file.path()]);
    assert_eq!(o.status.code(), Some(1));
    let lines: Vec<String> = stderr(&o).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].ends_with("sealing_keys[0].key: expected 64 hex digits (32 bytes)"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("customers[0].kek: no KEK named \"missing\""),
        "{lines:?}"
    );
    assert!(lines[2].contains("max_body_bytes"), "{lines:?}");
    assert_eq!(
        fpgen(&["check-config", "/nonexistent/fpgen.json"])
            .status
            .code(),
        Some(3)
    );
    let broken = TempFile::new("{not json");
    assert_eq!(
        fpgen(&["check-config", broken.path()]).status.code(),
        Some(1)
    );
}

#[test]
fn a_token_minted_by_envoy_opens_with_fpgen_inspect() {
    let envoy = common::shared(common::Module::Wasm);
    let r = common::get(
        envoy.port,
        &format!("/hms/fp/token?{AUTH}&contentKey={CK}&iv={IV}&cookie=rt-1&kid=^round-trip"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let url = r.text().trim_end().to_owned();
    let config = demo();
    let o = fpgen(&[
        "inspect",
        "--config",
        config.path(),
        "--show-content-key",
        &url,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let l = &v["licence"];
    assert_eq!(
        (
            l["customer_id"].as_str(),
            l["cookie"].as_str(),
            l["kid"].as_str()
        ),
        (Some("100001"), Some("rt-1"), Some("^round-trip"))
    );
    assert_eq!(
        (l["iv"].as_str(), l["content_key"].as_str()),
        (Some(IV), Some(CK))
    );
}

#[test]
fn serve_answers_like_the_filter() {
    let serve = common::Serve::start(common::DEMO_CONFIG);
    let port = serve.port;
    let r = common::get(
        port,
        &format!("/hms/fp/token?{AUTH}&contentKey={CK}&iv={IV}"),
    );

    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("text/uri-list"))
    );
    assert!(r.text().ends_with("\r\n") && r.text().contains("ExpressPlayToken="));
    let r = common::post_form(
        port,
        "/hms/fp/token?errorFormat=json",
        format!("{AUTH}&contentKey=00&iv={IV}").as_bytes(),
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((r.status, v["code"].as_i64()), (400, Some(-2027)));
    let r = common::request(port, "PUT", "/hms/fp/token", &[], None);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, POST")));
    let big = vec![b'a'; 9000];
    let r = common::post_form(port, "/hms/fp/token", &big);
    assert_eq!(r.status, 413);
    assert_eq!(common::get(port, "/other").status, 404);
}

/// Key material where a name or another shape belongs: every command that
/// reads the configuration refuses it (exit 1), and nothing it prints holds
/// any of the input's hex values (issue 20).
#[test]
fn configuration_mistakes_are_refused_without_echoing_key_material() {
    for (what, json) in fpgen_fixtures::key_mistakes() {
        let file = TempFile::new(&json);
        let runs = [
            fpgen(&["check-config", file.path()]),
            fpgen(&["mint", "--config", file.path(), "--query", "x=1"]),
            fpgen(&["inspect", "--config", file.path(), "AQ"]),
            fpgen(&["serve", "--config", file.path(), "--listen", "127.0.0.1:0"]),
        ];
        for o in runs {
            let text = format!("{}{}", stdout(&o), stderr(&o));
            assert_eq!(o.status.code(), Some(1), "{what}: {text}");
            assert!(
                text.contains(&format!("{}: ", file.path())),
                "{what}: {text}"
            );
            if let Some(hex) = fpgen_fixtures::leaked_secret(&json, &text) {
                panic!("{what}: the output holds {hex}: {text}");
            }
        }
    }
}

/// `fpgen serve` and the filter in Envoy read a request's headers the same
/// way (issue 20): one table of raw requests, sent to both, with the status
/// and code each must give. A content type that is not UTF-8 is a content
/// type (415), repeated content types are joined as Envoy joins them (415),
/// and `client_address.use_x_forwarded_for` counts trusted hops from the
/// peer's own entry in both.
#[test]
fn serve_and_the_filter_read_headers_alike() {
    let config = fpgen_fixtures::json_with(|v| {
        v["client_address"] = serde_json::json!({"use_x_forwarded_for": true, "trusted_hops": 1});
        v["customers"][0]["allowed_networks"] = serde_json::json!(["192.0.2.0/24"]);
    });
    let envoy = common::Envoy::start(common::Module::Wasm, &config);
    let serve = common::Serve::start(&config);
    let query = format!("/hms/fp/token?errorFormat=json&{AUTH}&contentKey={CK}&iv={IV}");
    let post = |headers: &[&[u8]]| {
        let mut r = format!(
            "POST {query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n"
        )
        .into_bytes();
        for h in headers {
            r.extend_from_slice(h);
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"\r\n");
        r
    };
    let get = |xff: Option<&str>| {
        let xff = xff.map_or(String::new(), |v| format!("X-Forwarded-For: {v}\r\n"));
        format!("GET {query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{xff}\r\n").into_bytes()
    };
    let rows: Vec<(&str, Vec<u8>, (u16, i64))> = vec![
        (
            "a form POST from an allowed client",
            post(&[
                b"Content-Type: application/x-www-form-urlencoded",
                b"X-Forwarded-For: 192.0.2.7",
            ]),
            (200, 0),
        ),
        (
            "Content-Type: \\xff",
            post(&[b"Content-Type: \xff", b"X-Forwarded-For: 192.0.2.7"]),
            (415, -9415),
        ),
        (
            "two content types, form then json",
            post(&[
                b"Content-Type: application/x-www-form-urlencoded",
                b"Content-Type: application/json",
                b"X-Forwarded-For: 192.0.2.7",
            ]),
            (415, -9415),
        ),
        (
            "x-forwarded-for of an allowed client",
            get(Some("192.0.2.7")),
            (200, 0),
        ),
        (
            "x-forwarded-for of another client",
            get(Some("198.51.100.1")),
            (403, -2003),
        ),
        (
            "a forged entry left of the client's",
            get(Some("192.0.2.9, 198.51.100.1")),
            (403, -2003),
        ),
        (
            "no x-forwarded-for: only the peer's entry",
            get(None),
            (403, -2003),
        ),
    ];
    for (what, request, expected) in rows {
        for (host, port) in [("the filter", envoy.port), ("fpgen serve", serve.port)] {
            let r = common::raw(port, &request);
            let code = if r.status == 200 {
                assert!(
                    r.text().contains("ExpressPlayToken="),
                    "{what}, {host}: {r:?}"
                );
                0
            } else {
                let v: serde_json::Value = serde_json::from_slice(&r.body)
                    .unwrap_or_else(|e| panic!("{what}, {host}: {e}: {r:?}"));
                v["code"].as_i64().unwrap_or(1)
            };
            assert_eq!((r.status, code), expected, "{what}, {host}");
        }
    }
}

/// `fpgen inspect` reads a licence URL with the gate's own parser (issue
/// 20): a `;` separator and another letter case are the token, as at the
/// gate; a URL with two tokens (in any spelling) is refused, as at the gate.
#[test]
fn inspect_reads_urls_as_the_gate_does() {
    let config = demo();
    let o = mint(
        &config,
        &[AUTH, &format!("contentKey={CK}"), &format!("iv={IV}")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let token = common::token_of_url(stdout(&o).trim());
    let base = "http://127.0.0.1:10000/hms/fp/rights/";
    for accepted in [
        format!("{base}?a=1;ExpressPlayToken={token}"),
        format!("{base}?expressplaytoken={token}&b=2"),
        format!("{base}?ExpressPlayToken%20={token}"),
    ] {
        let o = fpgen(&["inspect", "--config", config.path(), &accepted]);
        assert_eq!(o.status.code(), Some(0), "{accepted}: {}", stderr(&o));
    }
    for refused in [
        format!("{base}?ExpressPlayToken={token}&ExpressPlayToken={token}"),
        format!("{base}?ExpressPlayToken={token};EXPRESSPLAYTOKEN=x"),
        format!("{base}?other=1"),
    ] {
        let o = fpgen(&["inspect", "--config", config.path(), &refused]);
        assert_eq!(o.status.code(), Some(1), "{refused}: {}", stdout(&o));
        assert!(stderr(&o).contains("-4010"), "{}", stderr(&o));
    }
}
