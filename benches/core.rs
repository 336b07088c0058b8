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
use fpgen::licence::Environment;
use fpgen::params::Params;
use fpgen::request;
use fpgen::service;
use fpgen_fixtures::{self as fixtures, FakeHost, NOW};
use std::hint::black_box;

/// The realistic request of `make bench`: authenticator, kid, contentKey, iv,
/// expirationTime, cookie, one fpExtension.
pub const QUERY: &str = "customerAuthenticator=100001,0123456789abcdef0123456789abcdef\
    &kid=11112222333344445555666677778888&contentKey=000102030405060708090a0b0c0d0e0f\
    &iv=0f0e0d0c0b0a09080706050403020100&expirationTime=%2B3600&cookie=bench-session-0001\
    &fpExtension=wudo,AAAAAA%3D%3D";

fn benches(c: &mut Criterion) {
    let config = fixtures::config();
    let host = FakeHost::default();
    c.bench_function("parse + validate", |b| {
        b.iter(|| {
            let params = Params::parse(black_box(QUERY.as_bytes()), b"");
            let customer = request::authenticate(&config, &params).unwrap();
            black_box(request::validate(&params, customer, NOW).unwrap());
        })
    });
    let params = Params::parse(QUERY.as_bytes(), b"");
    let customer = request::authenticate(&config, &params).unwrap();
    let licence = request::validate(&params, customer, NOW).unwrap().licence;
    let key = config.sealing_keys().active().unwrap();
    c.bench_function("mint (seal + encode)", |b| {
        b.iter(|| black_box(fpgen::token::seal(black_box(&licence), key, &[7; 24]).unwrap()))
    });
    let token = fpgen::token::seal(&licence, key, &[7; 24]).unwrap();
    c.bench_function("open (decode + verify)", |b| {
        b.iter(|| {
            black_box(
                fpgen::token::open(
                    black_box(&token),
                    config.sealing_keys(),
                    Environment::Test,
                    NOW,
                )
                .unwrap(),
            )
        })
    });
    c.bench_function("endpoint (handle: parse, validate, mint, render)", |b| {
        b.iter(|| black_box(service::handle(&config, black_box(QUERY), b"", &host)))
    });
}

criterion_group!(core, benches);
criterion_main!(core);
