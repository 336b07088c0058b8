//! Paths: dot segments and their encodings never pass the gate, and a
//! player's licence request reaches the licence server byte for byte.

#[allow(unused_imports, reason = "the shared imports, for every topic")]
use super::support::*;

#[test]
fn dot_segments_are_refused_by_the_gate_alone() {
    let (upstream, envoy) = unhardened_gate();
    let token = mint(&envoy);
    for path in TRAVERSALS {
        let r = redeem_with(&envoy, &format!("{path}?ExpressPlayToken={token}"), &[]);
        assert_4010(&r, path);
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
    assert_eq!(
        envoy.stat("wasmcustom.fpgen.redemptions_rejected.unsafe_path"),
        Some(TRAVERSALS.len() as u64)
    );
}

/// With the shipped HCM settings, Envoy answers each traversal before the
/// gate sees it: escaped slashes are refused (400), dot segments (also
/// `%2e`, and `..;`, which Envoy reads as `..`) are resolved before
/// routing, so the request is no longer a
/// licence request and goes where its resolved path is routed (here, the
/// harness's catch-all to the same upstream, as a wide route would, with
/// no licence data); what normalisation leaves alone reaches the gate (403).
#[test]
fn with_the_shipped_settings_no_dot_segment_reaches_any_upstream() {
    let upstream = RecordingUpstream::start();
    let envoy = start(upstream.port, Options::of(this_module!()), &config_with(|_| {}));
    let token = mint(&envoy);
    // Envoy 1.39 began to read `..;` as `..` (the `;` parameter dropped);
    // up to 1.38 the segment is left alone and reaches the gate, which
    // refuses it (403): either way nothing reaches the upstream as a
    // licence request
    let dot_semicolon = if common::envoy_release() >= (1, 39, 0) {
        (200, Some("/hms/admin"))
    } else {
        (403, None)
    };
    // (path, status, the path the upstream saw)
    let expected: [(&str, u16, Option<&str>); 9] = [
        (TRAVERSALS[0], 200, Some("/hms/admin/keys")),
        (TRAVERSALS[1], 400, None),
        (TRAVERSALS[2], 200, Some("/hms/admin")),
        (TRAVERSALS[3], dot_semicolon.0, dot_semicolon.1),
        (TRAVERSALS[4], 200, Some("/hms/fp/admin")),
        (TRAVERSALS[5], 400, None),
        (TRAVERSALS[6], 403, None),
        (TRAVERSALS[7], 403, None),
        // merged slashes: a licence request, gated
        ("//hms/fp/rights/", 200, Some("/hms/fp/rights/")),
    ];
    for (path, status, seen) in expected {
        let before = upstream.requests().len();
        let r = redeem_with(&envoy, &format!("{path}?ExpressPlayToken={token}"), &[]);
        assert_eq!(r.status, status, "{path}: {r:?}");
        let requests = upstream.requests();
        match seen {
            None => assert_eq!(requests.len(), before, "{path} reached the upstream"),
            Some(seen) => {
                let req = requests.last().unwrap();
                assert_eq!(req.path.split('?').next(), Some(seen), "{path}");
                let licence = seen.starts_with("/hms/fp/rights/");
                assert_eq!(
                    fpgen_names(req).is_empty(),
                    !licence,
                    "{path}: {:?}",
                    req.headers
                );
            }
        }
    }
}

// ---- 4. HTTP/2 POST with trailers at the token endpoint ------------------

#[test]
fn players_licence_requests_reach_the_licence_server_byte_for_byte() {
    let upstream = RecordingUpstream::start();
    let envoy = start(upstream.port, Options::of(this_module!()), &config_with(|_| {}));
    let token = mint(&envoy);
    let id = "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3";
    for content_type in [
        Some("application/octet-stream"),
        None,
        Some("application/x-www-form-urlencoded"),
    ] {
        let headers: Vec<(&str, &str)> = content_type
            .iter()
            .map(|ct| ("Content-Type", *ct))
            .collect();
        let r = request(
            envoy.port,
            "POST",
            &format!("/hms/fp/rights/?ExpressPlayToken={token}&id={id}"),
            &headers,
            Some(&spc()),
        );
        assert_eq!(r.status, 200, "{content_type:?}: {r:?}");
        let req = upstream.requests().pop().unwrap();
        assert_eq!(req.body, spc(), "{content_type:?}");
        assert!(req.raw.ends_with(&spc()), "{content_type:?}");
        assert_eq!(req.path, format!("/hms/fp/rights/?id={id}"));
        let got: Vec<&str> = req.header_all("content-type");
        assert_eq!(got, content_type.into_iter().collect::<Vec<_>>());
        assert_eq!(fpgen_names(&req), LICENCE_HEADERS);
    }
}

// ---- the shipped configurations ------------------------------------------
