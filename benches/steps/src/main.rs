//! Times each step of fpgen's request paths, one after the other, and
//! prints `step<TAB>nanoseconds per call` (the median of 7 batches).
//! `benches/steps.py` runs it natively and under wasmtime.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fpgen::config::Config;
use fpgen::licence::{Drm, Environment};
use fpgen::params::Params;
use fpgen::{redeem, render, request, service, token};
use fpgen_fixtures::{self as fixtures, FakeHost, NOW};
use std::hint::black_box;
use std::time::Instant;

/// The realistic request of `make bench` (benches/bench.py, QUERY).
const QUERY: &str = "customerAuthenticator=100001,0123456789abcdef0123456789abcdef\
    &kid=11112222333344445555666677778888&contentKey=000102030405060708090a0b0c0d0e0f\
    &iv=0f0e0d0c0b0a09080706050403020100&expirationTime=%2B3600&cookie=bench-session-0001\
    &fpExtension=wudo,AAAAAA%3D%3D";

/// Nanoseconds per call of `f`: the median of 7 batches sized to ~20 ms.
fn time<T>(mut f: impl FnMut() -> T) -> f64 {
    let start = Instant::now();
    let mut calibrate = 0u32;
    while start.elapsed().as_millis() < 20 {
        black_box(f());
        calibrate += 1;
    }
    let mut batches: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..calibrate {
                black_box(f());
            }
            t.elapsed().as_nanos() as f64 / f64::from(calibrate)
        })
        .collect();
    batches.sort_by(f64::total_cmp);
    batches[3]
}

/// Times and prints one step; with `FPGEN_STEP=text` in the environment,
/// only the steps whose name holds `text` (for a profiler).
fn step<T>(name: &str, f: impl FnMut() -> T) {
    if std::env::var("FPGEN_STEP").is_ok_and(|only| !name.contains(&only)) {
        return;
    }
    println!("{name}\t{:.0}", time(f));
}

fn main() {
    let config = fixtures::config();
    let host = FakeHost::default();
    let params = Params::parse(QUERY.as_bytes(), b"");
    let customer = request::authenticate(&config, &params).unwrap();
    let valid = request::validate(&params, customer, NOW).unwrap();
    let key = config.sealing_keys().active().unwrap();
    let token = token::seal(&valid.licence, key, &[7; 24]).unwrap();
    let answer = service::handle(&config, QUERY, b"", &host);
    let gate = config.redemption().unwrap();
    let rights = format!("/hms/fp/rights/?ExpressPlayToken={token}");

    // the mint path, step by step
    step("mint: parse the query (Params::parse)", || Params::parse(black_box(QUERY.as_bytes()), b""));
    step("mint: authenticate (SHA-256, constant-time compare)", || {
        request::authenticate(&config, black_box(&params)).is_ok()
    });
    step("mint: validate the parameters", || request::validate(black_box(&params), customer, NOW));
    step("mint: a nonce (the host's pool of getrandom bytes)", || {
        fpgen::service::nonces::next(|buf| {
            getrandom::fill(buf).map_err(|_| fpgen::service::HostFailure("no randomness"))
        })
        .unwrap()
    });
    step("mint: seal (XChaCha20-Poly1305) and base64url", || {
        token::seal(black_box(&valid.licence), key, &[7; 24])
    });
    step("mint: render the 200 (URL + CRLF)", || render::success(black_box(token.clone())));
    step("mint: access-log fields (Outcome::log_fields)", || answer.outcome.log_fields());
    step("mint: whole (service::handle)", || service::handle(&config, black_box(QUERY), b"", &host));
    // the gate
    step("gate: open the token (base64url, AEAD)", || {
        token::open(black_box(&token), config.sealing_keys(), Environment::Test, NOW).is_ok()
    });
    step("gate: whole (redeem::redeem)", || redeem::redeem(&config, gate, Drm::FairPlay, black_box(&rights), NOW).is_ok());
    step("gate: is_reserved_header x 8 names", || {
        ["host", "user-agent", "accept", "content-type", "content-length", "x-request-id", "x-forwarded-for", "x-forwarded-proto"]
            .iter()
            .filter(|n| redeem::is_reserved_header(&gate.header_prefix, black_box(n)))
            .count()
    });
    // configuration
    step("configure: the demo configuration (Config::from_json)", || {
        Config::from_json(black_box(fixtures::DEMO_CONFIG.as_bytes())).is_ok()
    });
    if std::env::var("FPGEN_STEP").is_ok_and(|only| !"configure: 100 customers".contains(&only)) {
        return;
    }
    let big = big_config(100, 100);
    let ns = time(|| Config::from_json(black_box(big.as_bytes())).is_ok());
    println!("configure: 100 customers x 100 stored keys, per customer\t{:.0}", ns / 100.0);
    // as the filter reads it: from Envoy in 64 KiB pieces, through a reader
    let ns = time(|| {
        let reader = std::io::BufReader::with_capacity(64 * 1024, black_box(big.as_bytes()));
        Config::from_reader(reader).is_ok()
    });
    println!("configure: the same read in 64 KiB pieces (as the filter does), per customer\t{:.0}", ns / 100.0);
}

/// The demo configuration with `customers` customers of `keys` stored keys
/// each (the shape of benches/scale.py).
fn big_config(customers: usize, keys: usize) -> String {
    let mut config: serde_json::Value = serde_json::from_str(fixtures::DEMO_CONFIG).unwrap();
    let demo = config["customers"][0].clone();
    let wrapped = fixtures::EK;
    let list: Vec<serde_json::Value> = (0..customers)
        .map(|i| {
            let mut c = demo.clone();
            c["id"] = format!("{}", 200_000 + i).into();
            c["key_store"] = (0..keys)
                .map(|j| (format!("{j:08x}{i:024x}"), serde_json::Value::from(wrapped)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            c
        })
        .collect();
    config["customers"] = list.into();
    config.to_string()
}
