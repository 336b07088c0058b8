//! Native micro-benchmarks of the core steps the filter runs per request:
//! parse + validate, mint (seal + encode), open (decode + verify), and the
//! whole endpoint. `cargo bench --bench core` (or `make bench`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use criterion::{criterion_group, criterion_main, Criterion};
use fpgen::config::Config;
use fpgen::licence::Environment;
use fpgen::params::Params;
use fpgen::request;
use fpgen::service::{self, Host};
use std::hint::black_box;
use std::net::IpAddr;

const CONFIG: &str = r#"{
  "environment": "test",
  "sealing_keys": [{"id": "bench-1", "key": "a88deb5c6fc4b09434f9dab3a25f79cd7ddf67a025c179c9a9b6153dbf56f132"}],
  "customers": [{"id": "100001", "environment": "test",
    "authenticator_sha256": "3eb1bd439947eb762998e566ccc2e099c791118b2f40579cc4f7da2b5061b7f9"}]
}"#;

/// The realistic request of `make bench`: authenticator, kid, contentKey, iv,
/// expirationTime, cookie, one fpExtension.
pub const QUERY: &str = "customerAuthenticator=100001,0123456789abcdef0123456789abcdef\
    &kid=11112222333344445555666677778888&contentKey=000102030405060708090a0b0c0d0e0f\
    &iv=0f0e0d0c0b0a09080706050403020100&expirationTime=%2B3600&cookie=bench-session-0001\
    &fpExtension=wudo,AAAAAA%3D%3D";

struct BenchHost;

impl Host for BenchHost {
    fn now(&self) -> i64 {
        1_800_000_000
    }
    fn fill_random(&self, buf: &mut [u8]) -> bool {
        buf.fill(7);
        true
    }
    fn client_address(&self) -> Option<IpAddr> {
        None
    }
    fn take_from_budget(&self, _: &str, _: u64) -> bool {
        true
    }
}

fn benches(c: &mut Criterion) {
    let config = Config::from_json(CONFIG.as_bytes()).unwrap();
    c.bench_function("parse + validate", |b| {
        b.iter(|| {
            let params = Params::parse(black_box(QUERY.as_bytes()), b"");
            let customer = request::authenticate(&config, &params).unwrap();
            black_box(request::validate(&params, customer, 1_800_000_000).unwrap());
        })
    });
    let params = Params::parse(QUERY.as_bytes(), b"");
    let customer = request::authenticate(&config, &params).unwrap();
    let licence = request::validate(&params, customer, 1_800_000_000)
        .unwrap()
        .licence;
    let key = config.sealing_keys.active().unwrap();
    c.bench_function("mint (seal + encode)", |b| {
        b.iter(|| black_box(fpgen::token::seal(black_box(&licence), key, &[7; 24]).unwrap()))
    });
    let token = fpgen::token::seal(&licence, key, &[7; 24]).unwrap();
    c.bench_function("open (decode + verify)", |b| {
        b.iter(|| {
            black_box(
                fpgen::token::open(
                    black_box(&token),
                    &config.sealing_keys,
                    Environment::Test,
                    1_800_000_000,
                )
                .unwrap(),
            )
        })
    });
    c.bench_function("endpoint (handle: parse, validate, mint, render)", |b| {
        b.iter(|| black_box(service::handle(&config, black_box(QUERY), b"", &BenchHost)))
    });
}

criterion_group!(core, benches);
criterion_main!(core);
