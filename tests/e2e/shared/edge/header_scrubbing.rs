//! Licence-data headers: no client can send one to the licence server, in
//! any spelling, on any route, in trailers; the token is stripped.

#[allow(unused_imports, reason = "the shared imports, for every topic")]
use super::support::*;

#[test]
fn underscore_spellings_never_reach_the_licence_server() {
    for options in [Options::of(this_module!()).unhardened(), Options::of(this_module!())] {
        let hardened = options.hardened;
        let upstream = RecordingUpstream::start();
        let (envoy, r) = redeem_spoofed(upstream.port, options, "");
        assert_eq!(r.status, 200, "hardened {hardened}: {r:?}");
        let req = upstream.requests().pop().unwrap();
        assert_eq!(fpgen_names(&req), LICENCE_HEADERS, "hardened {hardened}");
        assert_eq!(req.header_all("x-fpgen-content-key"), [CK]);
        assert_eq!(req.header_all("x-fpgen-customer"), ["100001"]);
        let raw = String::from_utf8_lossy(&req.raw);
        assert!(!raw.contains(EVIL_KEY) && !raw.contains("999999"), "{raw}");
        // the second wall: the HCM itself dropped them before the filter ran
        let dropped = envoy.stat("http1.dropped_headers_with_underscores");
        if hardened {
            assert_eq!(dropped, Some(5), "5 underscore names dropped");
        } else {
            assert_eq!(dropped.unwrap_or(0), 0);
        }
    }
}

#[test]
fn a_wsgi_licence_server_reads_only_the_gates_licence_data() {
    for options in [Options::of(this_module!()).unhardened(), Options::of(this_module!())] {
        let wsgi = WsgiServer::start();
        let (_envoy, r) = redeem_spoofed(wsgi.port, options, "&id=42");
        assert_eq!(r.status, 200, "{r:?}");
        let seen: Value = serde_json::from_slice(&r.body).unwrap();
        let http = seen["http"].as_object().unwrap();
        assert_eq!(http["HTTP_X_FPGEN_CONTENT_KEY"], CK, "{seen}");
        assert_eq!(http["HTTP_X_FPGEN_CUSTOMER"], "100001", "{seen}");
        let fpgen: Vec<&String> = http
            .keys()
            .filter(|k| k.starts_with("HTTP_X_FPGEN"))
            .collect();
        assert_eq!(fpgen.len(), LICENCE_HEADERS.len(), "{fpgen:?}");
        assert_eq!(seen["query"], "id=42", "the token is stripped, id is kept");
        assert_eq!(seen["body_hex"], hex::encode(spc()));
    }
}

// ---- 2. reserved headers on every route, and in trailers -----------------

#[test]
fn reserved_headers_are_removed_on_every_route_and_in_trailers() {
    let (upstream, envoy) = unhardened_gate();
    // routes wider than the gate's prefix reach the upstream without a token
    for path in [
        "/hms/fp/rights",
        "//hms/fp/rights/",
        "/HMS/fp/rights/",
        "/hms/fp/rights%2F",
        "/hms/fp/./rights/",
        "/segments/1.ts",
    ] {
        let r = request(
            envoy.port,
            "GET",
            path,
            &[("x-fpgen-content-key", EVIL_KEY), ("X_FPGEN_CUSTOMER", "9")],
            None,
        );
        assert_eq!(r.status, 200, "{path}: {r:?}");
        let req = upstream.requests().pop().unwrap();
        assert_eq!(req.path, path);
        assert!(fpgen_names(&req).is_empty(), "{path}: {:?}", req.headers);
    }
    // trailers: an HTTP/2 licence request whose SPC ends with trailers
    let token = mint(&envoy);
    let (status, body) = h2c(
        envoy.port,
        "POST",
        &format!("/hms/fp/rights/?ExpressPlayToken={token}"),
        &[("content-type", "application/octet-stream")],
        Some(&spc()),
        &[
            ("x-fpgen-content-key", EVIL_KEY),
            ("x_fpgen_customer", "9"),
            ("x-checksum", "abc"),
        ],
    );
    assert_eq!((status, body.as_slice()), (0x88, &b"licence ok\n"[..]));
    let req = upstream.requests().pop().unwrap();
    assert_eq!(req.trailers, [("x-checksum".to_owned(), "abc".to_owned())]);
    assert_eq!(fpgen_names(&req), LICENCE_HEADERS);
    assert_eq!(req.body, spc());
    // and on a path the gate does not cover
    let (status, _) = h2c(
        envoy.port,
        "POST",
        "/segments/upload",
        &[],
        Some(b"x"),
        &[("x-fpgen-iv", "00"), ("x-other", "1")],
    );
    assert_eq!(status, 0x88);
    let req = upstream.requests().pop().unwrap();
    assert_eq!(req.path, "/segments/upload");
    assert_eq!(req.trailers, [("x-other".to_owned(), "1".to_owned())]);
}

// ---- 3. dot segments and path parameters ---------------------------------

#[test]
fn the_token_is_stripped_by_default_and_no_other_spelling_survives() {
    let upstream = RecordingUpstream::start();
    let envoy = start(upstream.port, Options::of(this_module!()), &config_with(|_| {}));
    let token = mint(&envoy);
    let id = "0123456789abcdef0123456789abcdef01234567";
    for (query, forwarded) in [
        (
            format!("ExpressPlayToken={token}&id={id}"),
            format!("?id={id}"),
        ),
        (
            format!("expressplaytoken={token}&id={id}"),
            format!("?id={id}"),
        ),
        (
            format!("a=1;ExpressPlayToken={token}&b=%2F"),
            "?a=1&b=%2F".to_owned(),
        ),
        (format!("ExpressPlayToken={token}"), String::new()),
    ] {
        let r = redeem_with(&envoy, &format!("/hms/fp/rights/?{query}"), &[]);
        assert_eq!(r.status, 200, "{query}: {r:?}");
        let req = upstream.requests().pop().unwrap();
        assert_eq!(req.path, format!("/hms/fp/rights/{forwarded}"), "{query}");
        assert!(!String::from_utf8_lossy(&req.raw).contains(&token));
    }
    // two spellings: the gate cannot know which one a licence server reads
    let before = upstream.requests().len();
    for query in [
        format!("ExpressPlayToken={token}&expressPlayToken=x"),
        format!("ExpressPlayToken={token};ExpressPlayToken={token}"),
        format!("EXPRESSPLAYTOKEN={token}&ExpressPlayToken={token}"),
    ] {
        assert_4010(
            &redeem_with(&envoy, &format!("/hms/fp/rights/?{query}"), &[]),
            &query,
        );
    }
    assert_eq!(upstream.requests().len(), before);
}

// ---- 8 and 9. true answers for key errors and malformed escapes ----------

/// A header value with obs-text bytes (legal in HTTP/1.1, passed on by
/// Envoy) used to panic the proxy-wasm SDK's `String` getters: a 503 and a
/// new VM for every such request. Now the filter reads bytes.
#[test]
fn header_values_that_are_not_utf8_get_their_true_answer() {
    let upstream = RecordingUpstream::start();
    let envoy = start(upstream.port, Options::of(this_module!()), &config_with(|_| {}));
    // a panic costs the Wasm module a new VM, the native one a counted 500
    let vms = || match envoy.module {
        common::Module::Wasm => envoy.stat("wasm.envoy.wasm.runtime.v8.created"),
        common::Module::Native => envoy.stat("dynamicmodulescustom.fpgen.panics"),
    };
    let created = vms();
    assert!(created.is_some(), "the VM (or panic) stat exists");
    let token = mint(&envoy);
    let raw = |bytes: &[u8]| common::raw(envoy.port, bytes);
    let mut licence =
        format!("POST /hms/fp/rights/?ExpressPlayToken={token} HTTP/1.1\r\nHost: a\r\nX-Player: ")
            .into_bytes();
    licence.extend_from_slice(b"\xff\xfe\r\nContent-Length: 3\r\nConnection: close\r\n\r\nspc");
    assert_eq!(
        raw(&licence).status,
        200,
        "a licence request with an obs-text header"
    );
    let post = b"POST /hms/fp/token?errorFormat=json HTTP/1.1\r\nHost: a\r\nContent-Type: \xff\r\nContent-Length: 3\r\nConnection: close\r\n\r\na=b";
    let r = raw(post);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((r.status, v["code"].as_i64()), (415, Some(-9415)), "{r:?}");
    assert_eq!(vms(), created, "no VM was replaced");
    assert_eq!(upstream.requests().len(), 1);
}
