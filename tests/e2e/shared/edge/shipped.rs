//! The shipped configurations: hardened connection managers, the filter
//! scoped to its routes, the demo and the gate as shipped.

#[allow(unused_imports, reason = "the shared imports, for every topic")]
use super::support::*;

/// Every HTTP connection manager in `envoy/` carries the settings of
/// [`common::hardened_hcm`] (the harness's, proven above), and the gate as
/// shipped holds against the attacks above with its own routes.
#[test]
fn every_shipped_connection_manager_is_hardened() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = 0;
    for file in SHIPPED {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let managers = text.matches("HttpConnectionManager").count();
        assert!(managers >= 1, "{file}");
        for (key, yaml_value, json_value) in [
            ("normalize_path", "true", "true"),
            ("merge_slashes", "true", "true"),
            (
                "path_with_escaped_slashes_action",
                "REJECT_REQUEST",
                "\"REJECT_REQUEST\"",
            ),
            (
                "headers_with_underscores_action",
                "DROP_HEADER",
                "\"DROP_HEADER\"",
            ),
        ] {
            let setting = format!("{key}: {yaml_value}");
            assert_eq!(
                text.matches(&setting).count(),
                managers,
                "{file}: {setting}"
            );
            let hcm = common::hardened_hcm();
            let harness = hcm
                .get(key)
                .or_else(|| hcm["common_http_protocol_options"].get(key));
            assert_eq!(
                harness.map(ToString::to_string).as_deref(),
                Some(json_value),
                "the harness lacks {setting}"
            );
        }
        files += 1;
    }
    assert_eq!(files, SHIPPED.len());
}

/// Every configuration in `envoy/` scopes the filter to its routes: each
/// Wasm filter is `disabled: true`, every connection manager has a token
/// route that enables it, and so does every licence route and every other
/// route that reaches an upstream.
#[test]
fn every_shipped_configuration_scopes_the_filter_to_its_routes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in SHIPPED {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let followed_by = |at: usize, what: &str, within: usize| {
            lines[at + 1..(at + 1 + within).min(lines.len())]
                .iter()
                .any(|l| l.starts_with(what))
        };
        let managers = text.matches("HttpConnectionManager").count();
        let filters: Vec<usize> = (0..lines.len())
            // (the ECDS bootstrap names its filter "fpgen")
            .filter(|&i| {
                lines[i] == "- name: envoy.filters.http.wasm"
                    || lines[i] == "- name: envoy.filters.http.dynamic_modules"
                    || (lines[i] == "- name: fpgen" && text.contains("config_discovery:"))
            })
            .collect();
        assert_eq!(filters.len(), managers, "{file}");
        for &at in &filters {
            assert_eq!(lines[at + 1], "disabled: true", "{file}:{}", at + 2);
        }
        let enabling = "typed_per_filter_config:";
        let routes: Vec<usize> = (0..lines.len())
            .filter(|&i| {
                lines[i] == "- match: { path_separated_prefix: /hms/fp/token }"
                    || lines[i] == "- match: { prefix: /hms/fp/rights/ }"
            })
            .collect();
        let token_routes = routes
            .iter()
            .filter(|&&i| lines[i].contains("/hms/fp/token"))
            .count();
        assert_eq!(token_routes, managers, "{file}: a token route per HCM");
        for at in routes {
            assert!(followed_by(at, enabling, 3), "{file}:{}", at + 1);
        }
        // every route to an upstream runs the filter: scoped, it removes
        // licence headers only where it runs
        for at in (0..lines.len()).filter(|&i| lines[i].starts_with("- match:")) {
            let end = (at + 1..lines.len())
                .find(|&i| lines[i].starts_with("- match:") || lines[i] == "http_filters:")
                .unwrap_or(lines.len());
            let block = &lines[at..end];
            if block.iter().any(|l| l.starts_with("route:")) {
                assert!(
                    block.contains(&enabling),
                    "{file}:{}: a route to an upstream without the filter",
                    at + 1
                );
            }
        }
        assert_eq!(
            text.matches("envoy.config.route.v3.FilterConfig").count(),
            text.matches(enabling).count(),
            "{file}"
        );
    }
}

/// Scoped, the filter answers the token route and gates the licence
/// route, and a request to any other route reaches its upstream exactly
/// as sent: the filter, which removes client-sent licence headers from
/// every request it sees, never saw it (the VM was not entered).
#[test]
fn scoped_the_filter_runs_on_its_routes_only() {
    let upstream = RecordingUpstream::start();
    let envoy = start(
        upstream.port,
        Options::of(this_module!()).scoped(),
        &config_with(|_| {}),
    );
    let token = mint(&envoy);
    let slash = get(
        envoy.port,
        &format!("/hms/fp/token/?{}", fpgen_fixtures::query("")),
    );
    assert_eq!(slash.status, 200, "{slash:?}");
    assert_eq!(
        get(envoy.port, "/hms/fp/token/deeper").status,
        404,
        "only the token path is the endpoint"
    );
    let spoof = [("x-fpgen-customer", "999999")];
    let r = redeem_with(
        &envoy,
        &format!("/hms/fp/rights/?ExpressPlayToken={token}"),
        &spoof,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let licence = upstream.requests().pop().unwrap();
    assert_eq!(licence.header_all("x-fpgen-customer"), ["100001"]);
    assert_4010(
        &redeem_with(&envoy, "/hms/fp/rights/?ExpressPlayToken=forged", &[]),
        "a forged token on the gated route",
    );
    let before = upstream.requests().len();
    let r = redeem_with(&envoy, "/segments/1.ts", &spoof);
    assert_eq!(r.status, 200, "{r:?}");
    let requests = upstream.requests();
    assert_eq!(requests.len(), before + 1);
    let other = requests.last().unwrap();
    assert_eq!(other.path, "/segments/1.ts");
    assert_eq!(
        other.header_all("x-fpgen-customer"),
        ["999999"],
        "the filter ran on an unrelated route"
    );
}

/// The demo as shipped (`make run`): tokens, the gate in front of the
/// licence stand-in, and a 404 elsewhere.
#[test]
fn the_shipped_demo_mints_and_gates_on_its_routes() {
    let port = common::free_port();
    let envoy = Envoy::start_shipped("envoy/envoy.yaml", &[(10000, port), (9901, 0)]);
    let token = mint(&envoy);
    let r = redeem_with(
        &envoy,
        &format!("/hms/fp/rights/?ExpressPlayToken={token}"),
        &[("x-fpgen-customer", "999999")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-demo-customer"), Some("100001"), "{r:?}");
    let r = redeem_with(&envoy, "/hms/fp/rights/?ExpressPlayToken=forged", &[]);
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(get(port, "/other").status, 404);
}

#[test]
fn the_shipped_gate_holds() {
    let upstream = RecordingUpstream::start();
    let envoy = Envoy::start_shipped(
        "envoy/gate.yaml",
        &[
            (10012, common::free_port()),
            (9912, 0),
            (10020, upstream.port),
        ],
    );
    let token = mint(&envoy);
    // the genuine request, with every injected spelling
    let mut injected = underscore_spellings();
    injected.push(("x-fpgen-customer", "999999"));
    let r = redeem_with(
        &envoy,
        &format!("/hms/fp/rights/?ExpressPlayToken={token}&id=1"),
        &injected,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let req = upstream.requests().pop().unwrap();
    assert_eq!(fpgen_names(&req), LICENCE_HEADERS);
    assert_eq!(req.header_all("x-fpgen-customer"), ["100001"]);
    assert_eq!(
        req.path, "/hms/fp/rights/?id=1",
        "gate.yaml strips the token"
    );
    let before = upstream.requests().len();
    // traversals: refused (400, 403) or resolved away from the licence route (404)
    for path in TRAVERSALS {
        let r = redeem_with(&envoy, &format!("{path}?ExpressPlayToken={token}"), &[]);
        assert!([400, 403, 404].contains(&r.status), "{path}: {r:?}");
    }
    assert_eq!(
        upstream.requests().len(),
        before,
        "{:?}",
        upstream.requests()
    );
}

// ---- bytes that are not UTF-8 ----------------------------------------------
