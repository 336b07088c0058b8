//! A hostile catalogue through a real Envoy: oversize and malformed input,
//! metacharacters in every echoed field, extreme numbers and times, wrong
//! content types, chunked bodies, HTTP/2. Each gets its documented answer,
//! the HTML and JSON bodies parse and are escaped, and Envoy stays healthy.

use crate::common;

use crate::common::{request, shared, try_raw, HttpResponse, CK, DEMO_AUTHENTICATOR, IV};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn base() -> String {
    fpgen_fixtures::query("")
}

/// Checks an fpgen error body in both formats: the JSON parses with the code
/// and the HTML parses as XML with the code in its title.
#[track_caller]
fn assert_fpgen_error(r: &HttpResponse, status: u16, code: i32) {
    assert_eq!(r.status, status, "{r:?}");
    match r.header("content-type") {
        Some("application/json") => {
            let v: serde_json::Value =
                serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {r:?}"));
            assert_eq!(v["code"], code, "{v}");
            assert!(v["message"].is_string());
        }
        Some("text/html; charset=utf-8") => {
            let text = r.text();
            let doc = parse_html(&text);
            let title = doc.descendants().find(|n| n.has_tag_name("title")).unwrap();
            assert_eq!(title.text(), Some(format!("Error {code}").as_str()));
        }
        other => panic!("unexpected content type {other:?}: {r:?}"),
    }
}

/// Parses fpgen's HTML error page as XML (it is written to be both).
fn parse_html(text: &str) -> roxmltree::Document<'_> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    roxmltree::Document::parse_with_options(text, options)
        .unwrap_or_else(|e| panic!("not well-formed: {e}\n{text}"))
}

fn get_raw_path(path: &str) -> HttpResponse {
    request(shared(this_module!()).port, "GET", path, &[], None)
}

fn token(query: &str) -> HttpResponse {
    get_raw_path(&format!("/hms/fp/token?{query}"))
}

fn post(content_type: &str, body: &[u8]) -> HttpResponse {
    request(
        shared(this_module!()).port,
        "POST",
        "/hms/fp/token?errorFormat=json",
        &[("Content-Type", content_type)],
        Some(body),
    )
}

#[track_caller]
fn assert_healthy() {
    let envoy = shared(this_module!());
    assert!(envoy.is_running(), "Envoy died");
    assert_eq!(envoy.admin_get("/ready").status, 200);
    let r = token(&base());
    assert_eq!(r.status, 200, "minting after the hostile input: {r:?}");
    assert!(r.text().contains("ExpressPlayToken="));
}

#[test]
fn the_hostile_catalogue() {
    let b = base();
    let many_unknown: String = (0..4000).map(|i| format!("&p{i}=v")).collect();
    let many_ext: String = (0..2000).map(|_| "&fpExtension=wudo,AAAA").collect();
    let cases: Vec<(&str, String, u16, i32)> = vec![
        ("thousands of unknown parameters are ignored", format!("{b}{many_unknown}"), 200, 0),
        ("thousands of fpExtensions", format!("{b}{many_ext}&errorFormat=json"), 400, -6001),
        ("invalid UTF-8 in the cookie", format!("{b}&cookie=%FF%FE%FD&errorFormat=json"), 400, -2033),
        ("broken percent sequence in the key", format!("customerAuthenticator={DEMO_AUTHENTICATOR}&contentKey=%ZZ0102030405060708090a0b0c0d0e&iv={IV}"), 400, -2005),
        ("truncated percent sequence (the servlet container refuses it)", format!("{b}&cookie=abc%2"), 400, -2033),
        ("NUL in the cookie", format!("{b}&cookie=a%00b&errorFormat=json"), 400, -2033),
        ("NUL in the content key", format!("customerAuthenticator={DEMO_AUTHENTICATOR}&contentKey=%00{}&iv={IV}", &CK[1..]), 400, -2005),
        ("NUL in the authenticator", format!("customerAuthenticator=100001%00,x&contentKey={CK}&iv={IV}"), 401, -2018),
        ("repeated authenticator", format!("{b}&customerAuthenticator={DEMO_AUTHENTICATOR}"), 401, -2018),
        ("repeated iv", format!("{b}&iv={IV}&errorFormat=json"), 400, -6003),
        ("huge rental duration", format!("{b}&rentalDuration=999999999999999999999999999&errorFormat=json"), 400, -6007),
        ("negative rental duration", format!("{b}&rentalDuration=-1"), 400, -6007),
        ("huge relative expiry", format!("{b}&expirationTime=%2B99999999999999999999"), 400, -2002),
        ("negative relative expiry", format!("{b}&expirationTime=%2B-60"), 400, -2002),
        ("far past expiry", format!("{b}&expirationTime=0001-01-01T00:00:00Z"), 400, -2002),
        ("far future expiry", format!("{b}&expirationTime=9999-12-31T23:59:59Z"), 400, -2002),
        ("five-digit year", format!("{b}&expirationTime=10000-01-01T00:00:00Z"), 400, -2002),
        ("leap second", format!("{b}&expirationTime=2016-12-31T23:59:60Z"), 400, -2002),
        ("huge OPL", format!("{b}&analogVideoOPL=99999999999999999999"), 400, -2034),
        ("negative OPL", format!("{b}&analogVideoOPL=-1"), 400, -2034),
        ("huge kid name", format!("{b}&kid=%5E{}", "k".repeat(5000)), 400, -4021),
        ("huge content key", format!("customerAuthenticator={DEMO_AUTHENTICATOR}&contentKey={}&iv={IV}", "0".repeat(5000)), 400, -2027),
        ("huge authenticator", format!("customerAuthenticator=100001,{}&contentKey={CK}&iv={IV}", "s".repeat(8000)), 401, -2018),
        ("empty query", String::new(), 401, -2017),
        ("only separators", "&&&&===&&".to_owned(), 401, -2017),
    ];
    for (name, query, status, code) in cases {
        let r = token(&query);
        if status == 200 {
            assert_eq!(r.status, 200, "{name}: {r:?}");
        } else {
            assert_fpgen_error(&r, status, code);
        }
    }
    assert_healthy();
}

#[test]
fn metacharacters_in_echoed_fields_are_escaped() {
    // errorFormat is the field fpgen echoes; it is always rendered as HTML
    for payload in [
        "<script>alert(1)</script>",
        "\"'&<>",
        "</p></body></html><b>x",
        "&amp;&#39;",
        "{\"code\":0}",
    ] {
        let encoded: String = form_urlencoded::byte_serialize(payload.as_bytes()).collect();
        let r = token(&format!("{}&errorFormat={encoded}", base()));
        assert_fpgen_error(&r, 400, -3004);
        let text = r.text();
        let doc = parse_html(&text);
        let message = doc
            .descendants()
            .find(|n| n.attribute("id") == Some("message"))
            .unwrap();
        // the parsed text is the payload itself: escaped once, exactly
        let shown: String = payload.chars().take(32).collect();
        assert_eq!(
            message.text(),
            Some(format!("Invalid error format specified: {shown}").as_str())
        );
    }
    // JSON: metacharacters in details survive as data
    let r = token(&format!("{}&kid=%5E%22%5C%3C%2F{}", base(), "x".repeat(70)));
    assert_fpgen_error(&r, 400, -4021);
    assert_healthy();
}

#[test]
fn wrong_content_types_and_framing() {
    for ct in [
        "application/json",
        "multipart/form-data; boundary=x",
        "text/plain",
        "application/octet-stream",
    ] {
        assert_fpgen_error(&post(ct, base().as_bytes()), 415, -9415);
    }
    // form type with a charset parameter, and upper case, is a form
    assert_eq!(
        post(
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
            base().as_bytes()
        )
        .status,
        200
    );
    // chunked with many tiny chunks
    let body = base();
    let mut framed = Vec::new();
    for byte in body.as_bytes() {
        framed.extend_from_slice(b"1\r\n");
        framed.push(*byte);
        framed.extend_from_slice(b"\r\n");
    }
    framed.extend_from_slice(b"0\r\n\r\n");
    let r = request(
        shared(this_module!()).port,
        "POST",
        "/hms/fp/token",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Transfer-Encoding", "chunked"),
        ],
        Some(&framed),
    );
    assert_eq!(r.status, 200, "{r:?}");
    // a body that lies about its length (shorter than declared): Envoy waits, then the client gives up
    let mut s = TcpStream::connect(("127.0.0.1", shared(this_module!()).port)).unwrap();
    s.write_all(b"POST /hms/fp/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nabc").unwrap();
    drop(s);
    // an oversize declared length is refused before the body
    let r = request(
        shared(this_module!()).port,
        "POST",
        "/hms/fp/token?errorFormat=json",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Content-Length", "1000000"),
        ],
        Some(b""),
    );
    assert_fpgen_error(&r, 413, -9413);
    assert_healthy();
}

#[test]
fn oversize_and_garbage_requests_are_stopped_by_envoy() {
    // a query beyond Envoy's header limit (60 KiB by default): Envoy answers 431
    let huge = format!("/hms/fp/token?{}&pad={}", base(), "a".repeat(70 * 1024));
    match try_raw(
        shared(this_module!()).port,
        &common::request_bytes("GET", &huge, &[], None),
    ) {
        Ok(r) => assert_eq!(r.status, 431, "{r:?}"),
        Err(e) => assert!(
            e.contains("reset") || e.contains("closed") || e.contains("pipe"),
            "{e}"
        ),
    }
    // raw invalid bytes and NUL in the request line, and plain garbage
    for bytes in [
        &b"GET /hms/fp/token?cookie=\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
        b"GET /hms/fp/token?a=\x00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
    ] {
        if let Ok(r) = try_raw(shared(this_module!()).port, bytes) {
            assert!(r.status == 400 || r.status == 401, "{r:?}");
        }
    }
    assert_healthy();
}

// ---- HTTP/2 cleartext (prior knowledge) -----------------------------------

fn h2c(method: &str, path: &str, body: Option<&[u8]>) -> (u8, Vec<u8>) {
    let headers: &[(&str, &str)] = if body.is_some() {
        &[("content-type", "application/x-www-form-urlencoded")]
    } else {
        &[]
    };
    common::h2c(shared(this_module!()).port, method, path, headers, body, &[])
}

#[test]
fn http2_cleartext_get_and_post() {
    let (status, body) = h2c("GET", &format!("/hms/fp/token?{}", base()), None);
    assert_eq!(status, 0x88, "HTTP/2 GET is answered 200");
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.starts_with("http://127.0.0.1:10000/hms/fp/rights/?ExpressPlayToken=")
            && text.ends_with("\r\n"),
        "{text}"
    );
    let (status, body) = h2c("POST", "/hms/fp/token", Some(base().as_bytes()));
    assert_eq!(
        status,
        0x88,
        "HTTP/2 POST is answered 200: {}",
        String::from_utf8_lossy(&body)
    );
    let (_, body) = h2c("GET", "/hms/fp/token?contentKey=00&errorFormat=json", None);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], -2017);
    assert_healthy();
}

#[test]
fn pipelined_requests_on_one_connection() {
    let first = common::request_bytes(
        "GET",
        &format!("/hms/fp/token?{}", base()),
        &[("Connection", "keep-alive")],
        None,
    );
    let mut bytes = first.clone();
    bytes.extend_from_slice(&common::request_bytes(
        "GET",
        &format!("/hms/fp/token?{}", base()),
        &[],
        None,
    ));
    let mut s = TcpStream::connect(("127.0.0.1", shared(this_module!()).port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&bytes).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert_eq!(text.matches("ExpressPlayToken=").count(), 2, "{text}");
    assert_healthy();
}
