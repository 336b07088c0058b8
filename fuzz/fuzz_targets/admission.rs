//! `fpgen serve`'s admission of a request, as it runs it: an arbitrary
//! method, headers (values as raw bytes, repeated names joined as Envoy
//! joins them, `service::joined_header`) and body, through
//! `service::admit`, the body cap and `service::handle`. Input: the method,
//! a newline, header lines `name:value`, an empty line, the body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    static CONFIG: OnceLock<fpgen::config::Config> = OnceLock::new();
    let config = CONFIG.get_or_init(common::config);
    let mut lines = data.split(|&b| b == b'\n');
    let method = String::from_utf8_lossy(lines.next().unwrap_or_default());
    let mut headers: Vec<(String, &[u8])> = Vec::new();
    let mut body_at = data.len();
    let mut offset = method.len().min(data.len()) + 1;
    for line in lines.by_ref() {
        if line.is_empty() {
            body_at = offset.min(data.len());
            break;
        }
        offset += line.len() + 1;
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &[][..]),
        };
        headers.push((String::from_utf8_lossy(name).to_ascii_lowercase(), value));
    }
    let body = data.get(body_at + 1..).unwrap_or_default();
    let header = |name: &str| {
        fpgen::service::joined_header(headers.iter().filter(|(n, _)| n == name).map(|(_, v)| *v))
    };
    let query = fpgen_fixtures::query("");
    let answer = match fpgen::service::admit(&method, header, config.max_body_bytes()) {
        fpgen::service::Admission::Refuse(code) => {
            assert!(
                [405, 413, 415].contains(&code.http_status()),
                "admission refused with {}",
                code.code()
            );
            fpgen::service::refuse(code, &query)
        }
        fpgen::service::Admission::Query => {
            assert_eq!(method, "GET");
            fpgen::service::handle(config, &query, b"", &common::host())
        }
        fpgen::service::Admission::Body => {
            assert_eq!(method, "POST");
            if body.len() > config.max_body_bytes() {
                fpgen::service::refuse(fpgen::error::ErrorCode::BodyTooLarge, &query)
            } else {
                fpgen::service::handle(config, &query, body, &common::host())
            }
        }
    };
    let status = answer.response.status;
    assert!([200, 400, 401, 403, 405, 413, 415, 429, 500].contains(&status), "status {status}");
    assert!(!answer.response.body.contains(common::SEALING_KEY));
});
