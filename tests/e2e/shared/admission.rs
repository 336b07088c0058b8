//! One admission for POST: the same requests to the filter through Envoy
//! and to `fpgen serve` get the same status and code, row by row. Both ask
//! `service::admit`; this proves that the two shells feed it the same way
//! (method, content type, declared length, a body over the cap while it
//! streams).

use crate::common;

use crate::common::{request, Serve, DEMO_CONFIG};
use fpgen_fixtures::{self as fixtures, AUTHENTICATOR};

/// What a row sends, and what it must get: what it is, the method, the
/// headers, the body, and the status and code.
type Row<'a> = (
    &'a str,
    &'a str,
    Vec<(&'a str, &'a str)>,
    Option<&'a [u8]>,
    (u16, Option<i64>),
);

/// The status and the code (`None` for a minted URL) of an answer.
fn status_and_code(r: &common::HttpResponse) -> (u16, Option<i64>) {
    if r.status == 200 {
        assert!(r.text().contains("ExpressPlayToken="), "{r:?}");
        return (200, None);
    }
    let v: serde_json::Value =
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not a JSON error ({e}): {r:?}"));
    (r.status, v["code"].as_i64())
}

#[test]
fn post_admission_is_the_same_in_envoy_and_serve() {
    let envoy = common::shared(this_module!());
    let serve = Serve::start(DEMO_CONFIG);
    let form = fixtures::query("");
    let over_cap = format!("{form}&cookie={}", "x".repeat(9000));
    let json = "application/json";
    let urlencoded = "application/x-www-form-urlencoded";
    let chunk = format!("{:x}\r\n{over_cap}\r\n0\r\n\r\n", over_cap.len());
    // the query of every row: errors in JSON, so the code is read the same way
    let q = "/hms/fp/token?errorFormat=json".to_owned();
    let q_auth = format!("{q}&customerAuthenticator={AUTHENTICATOR}");
    #[rustfmt::skip]
    let rows: Vec<Row<'_>> = vec![
        ("GET, parameters in the query", "GET", vec![], None, (200, None)),
        ("POST, a form body", "POST", vec![("content-type", urlencoded)], Some(form.as_bytes()), (200, None)),
        ("POST, a form body with a charset", "POST", vec![("content-type", "application/x-www-form-urlencoded; charset=UTF-8")], Some(form.as_bytes()), (200, None)),
        ("POST, a form body without a content type", "POST", vec![], Some(form.as_bytes()), (200, None)),
        ("POST, empty, content type JSON", "POST", vec![("content-type", json), ("content-length", "0")], None, (415, Some(-9415))),
        ("POST, a JSON body", "POST", vec![("content-type", json)], Some(br#"{"contentKey":"00"}"#), (415, Some(-9415))),
        ("POST, multipart", "POST", vec![("content-type", "multipart/form-data; boundary=x")], Some(b"--x--"), (415, Some(-9415))),
        ("POST, empty form: the query alone is not enough", "POST", vec![("content-type", urlencoded), ("content-length", "0")], None, (400, Some(-2005))),
        ("POST, declared over the cap", "POST", vec![("content-type", urlencoded)], Some(over_cap.as_bytes()), (413, Some(-9413))),
        ("POST, chunked over the cap", "POST", vec![("content-type", urlencoded), ("transfer-encoding", "chunked")], Some(chunk.as_bytes()), (413, Some(-9413))),
        ("PUT", "PUT", vec![("content-type", urlencoded)], Some(form.as_bytes()), (405, Some(-9405))),
        ("DELETE", "DELETE", vec![], None, (405, Some(-9405))),
    ];
    for (what, method, headers, body, want) in rows {
        let path = if method == "GET" {
            format!("{q}&{form}")
        } else if what.starts_with("POST, empty form") {
            q_auth.clone()
        } else {
            q.clone()
        };
        let via_envoy = request(envoy.port, method, &path, &headers, body);
        let via_serve = request(serve.port, method, &path, &headers, body);
        assert_eq!(
            status_and_code(&via_envoy),
            want,
            "Envoy: {what}: {via_envoy:?}"
        );
        assert_eq!(
            status_and_code(&via_serve),
            want,
            "serve: {what}: {via_serve:?}"
        );
    }
}
