//! The secrets audit of the end-to-end run: every log that every Envoy of
//! the e2e tests wrote (`target/e2e-logs/*/{envoy,access,stdout,stderr}.log`)
//! is searched for the key material and secrets that the tests used.
//!
//! `make test` runs this after all the other tests (it is `test = false` in
//! Cargo.toml, so a plain `cargo test` does not run it before the logs
//! exist): `cargo test --test log_audit`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::path::Path;

/// Every secret the e2e tests send or configure (hex of keys, KEKs,
/// secrets), looked for in every rendering (`fpgen_fixtures::renderings`).
const SECRETS: [(&str, &str); 9] = [
    (
        "demo sealing key",
        "a88deb5c6fc4b09434f9dab3a25f79cd7ddf67a025c179c9a9b6153dbf56f132",
    ),
    (
        "rotation test key old",
        "1111111111111111111111111111111111111111111111111111111111111111",
    ),
    (
        "rotation test key new",
        "2222222222222222222222222222222222222222222222222222222222222222",
    ),
    ("content key / demo KEK", "000102030405060708090a0b0c0d0e0f"),
    (
        "content key unwrapped from the key store",
        "00112233445566778899aabbccddeeff",
    ),
    ("authenticator secret", "0123456789abcdef0123456789abcdef"),
    (
        "wrong KEK of the -4024 tests",
        "ffffffffffffffffffffffffffffffff",
    ),
    (
        "wrapped content key (ek)",
        "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5",
    ),
    (
        "content key of the debug-level test (tests/e2e/shared/edge/)",
        "d1d2d3d4d5d6d7d8d9dadbdcdddedfd0",
    ),
];

#[test]
fn no_secret_in_any_envoy_log_of_the_e2e_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e-logs");
    let mut files = 0;
    let mut bytes = 0;
    let mut access_lines = 0;
    for dir in
        fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e} (run `make test`)", root.display()))
    {
        for file in fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let original = String::from_utf8_lossy(&fs::read(&path).unwrap()).into_owned();
            let text = original.to_lowercase();
            files += 1;
            bytes += text.len();
            if path.ends_with("access.log") {
                access_lines += text.lines().filter(|l| l.contains("/hms/fp/")).count();
            }
            for (what, secret) in SECRETS {
                // hex in any case, a Debug byte array, Base64
                for (i, form) in fpgen_fixtures::renderings(secret).iter().enumerate() {
                    let haystack = if i == 0 { &text } else { &original };
                    assert!(
                        !haystack.contains(form.as_str()),
                        "{what} appears in {} (as {form})",
                        path.display()
                    );
                }
            }
            assert!(
                !text.contains("customerauthenticator="),
                "a token request's query in {}",
                path.display()
            );
        }
    }
    // the audit means something only if the e2e tests ran and logged
    assert!(
        files >= 20,
        "only {files} log files under {}",
        root.display()
    );
    assert!(
        access_lines >= 100,
        "only {access_lines} token/licence requests in the access logs"
    );
    println!("audited {files} files, {bytes} bytes, {access_lines} fpgen access-log lines");
}
