//! The Grafana dashboard (`deploy/grafana/fpgen.json`) and the Prometheus
//! alert rules (`deploy/grafana/fpgen-alerts.yaml`) query what Envoy
//! exports: traffic of every kind goes through a real Envoy, and every
//! metric and every label that a panel, a variable or a rule names is found
//! in its `/stats/prometheus`. Both modules (`with_wasm::dashboard`,
//! `with_native::dashboard`); a query of one module only (a legend
//! that starts `Wasm:` or `native:`, a rule labelled `module`) is checked
//! against that module. (`make test` also runs `promtool check rules` and
//! `promtool test rules` on the rules.)

use crate::common;

use crate::common::{get, request, EcdsEnvoy, Module};
use regex::Regex;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every PromQL expression of the dashboard: each panel's targets (rows
/// included) and each query variable, with where it is.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            if panel["type"] != "row" {
                let targets = panel["targets"].as_array();
                assert!(
                    targets.is_some_and(|t| !t.is_empty()),
                    "panel {title:?} has no query"
                );
                for target in targets.into_iter().flatten() {
                    let expr = target["expr"].as_str().unwrap();
                    let legend = target["legendFormat"].as_str().unwrap_or_default();
                    let only = match legend.split_once(": ") {
                        Some(("Wasm", _)) => " (Wasm)",
                        Some(("native", _)) => " (native)",
                        _ => "",
                    };
                    out.push((format!("panel {title:?}{only}"), expr.to_owned()));
                }
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            let query = var["query"]["query"].as_str().unwrap();
            out.push((
                format!("variable ${}", var["name"].as_str().unwrap()),
                query.to_owned(),
            ));
        }
    }
    out
}

/// Every alert's expression.
fn alert_queries(rules: &str) -> Vec<(String, String)> {
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(rules).unwrap();
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            let expr = rule["expr"].as_str().unwrap();
            let only = match rule["labels"]["module"].as_str() {
                Some("wasm") => " (Wasm)",
                Some("native") => " (native)",
                Some(other) => panic!("alert {name}: module {other}"),
                None => "",
            };
            out.push((format!("alert {name}{only}"), expr.to_owned()));
        }
    }
    out
}

/// The samples of a Prometheus text exposition: metric name to the label
/// names seen on it.
fn exposition(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let sample = Regex::new(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? ").unwrap();
    let label = Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)="#).unwrap();
    let mut metrics: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some(c) = sample.captures(line) {
            let labels = metrics.entry(c[1].to_owned()).or_default();
            if let Some(set) = c.get(2) {
                labels.extend(label.captures_iter(set.as_str()).map(|l| l[1].to_owned()));
            }
        }
    }
    metrics
}

/// What one PromQL expression needs from the exposition: the metrics it
/// selects (by name, or by a `__name__` regex) and the labels it matches,
/// groups by or reads in a legend.
struct Needs {
    names: Vec<String>,
    name_patterns: Vec<Regex>,
    labels: BTreeSet<String>,
}

fn needs(expr: &str) -> Needs {
    let word = Regex::new(r"\b(fpgen_[a-z_]+|envoy_[a-z0-9_]+)\b").unwrap();
    let matcher = Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"([^"]*)""#).unwrap();
    let grouping = Regex::new(r"\b(?:by|without|ignoring|on)\s*\(([^)]*)\)").unwrap();
    // `label_values(<metric or selector>, <label>)`
    let label_values = Regex::new(r"label_values\(\s*([^,]*?)\s*,\s*([a-z_]+)\s*\)").unwrap();
    // strings first: a regex inside quotes is not a metric name
    let strings = Regex::new(r#""[^"]*""#).unwrap();
    let bare = strings.replace_all(expr, "\"\"");
    // then matchers and label lists: what is left names metrics
    let selectors = Regex::new(r"\{[^}]*\}").unwrap();
    let names_only = selectors.replace_all(&bare, "{}");
    let names_only = grouping.replace_all(&names_only, "()");
    let names_only = label_values.replace_all(&names_only, "label_values($1)");
    let mut needs = Needs {
        names: word
            .find_iter(&names_only)
            .map(|m| m.as_str().to_owned())
            .filter(|w| !w.ends_with('_'))
            .collect(),
        name_patterns: Vec::new(),
        labels: BTreeSet::new(),
    };
    for c in matcher.captures_iter(expr) {
        if &c[1] == "__name__" {
            needs
                .name_patterns
                .push(Regex::new(&format!("^(?:{})$", &c[2])).unwrap());
        } else {
            needs.labels.insert(c[1].to_owned());
        }
    }
    for c in grouping.captures_iter(&bare) {
        needs.labels.extend(
            c[1].split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    for c in label_values.captures_iter(expr) {
        needs.labels.insert(c[2].to_owned());
    }
    needs
}

/// Every metric an expression selects is exported, and every label it uses
/// is on at least one of them.
fn check(place: &str, expr: &str, metrics: &BTreeMap<String, BTreeSet<String>>) {
    let needs = needs(expr);
    assert!(
        !needs.names.is_empty() || !needs.name_patterns.is_empty(),
        "{place}: no metric found in {expr:?}"
    );
    let mut labels_seen = BTreeSet::new();
    for name in &needs.names {
        let labels = metrics
            .get(name)
            .unwrap_or_else(|| panic!("{place}: {name} is not in /stats/prometheus ({expr})"));
        labels_seen.extend(labels.iter().cloned());
    }
    for pattern in &needs.name_patterns {
        let matched: Vec<&String> = metrics.keys().filter(|n| pattern.is_match(n)).collect();
        assert!(
            !matched.is_empty(),
            "{place}: no metric in /stats/prometheus matches {pattern} ({expr})"
        );
        for name in matched {
            labels_seen.extend(metrics[name].iter().cloned());
        }
    }
    for label in &needs.labels {
        assert!(
            labels_seen.contains(label),
            "{place}: label {label} is on none of {:?} in /stats/prometheus ({expr})",
            needs.names
        );
    }
}

#[test]
fn every_metric_and_label_the_dashboard_and_alerts_query_is_exported() {
    // the filter as Istio delivers it (ECDS), so the update stats exist too
    let module = this_module!();
    let dir = common::new_workdir();
    let config = fpgen_fixtures::demo_json();
    let ecds = match module {
        Module::Wasm => {
            let first = common::resource("1", &module.path(), &config);
            EcdsEnvoy::start(dir.clone(), &first)
        }
        Module::Native => {
            EcdsEnvoy::start_native(dir.clone(), &common::native_resource("1", &config))
        }
    };
    let envoy = &ecds.envoy;
    // traffic of every kind the dashboard shows
    let token = common::mint(envoy, "");
    let auth = fpgen_fixtures::AUTHENTICATOR;
    assert_eq!(
        get(
            envoy.port,
            &format!("/hms/fp/token?customerAuthenticator={auth}&contentKey=00")
        )
        .status,
        400
    );
    assert_eq!(get(envoy.port, "/hms/fp/token").status, 401);
    let licence = format!("/hms/fp/rights/?ExpressPlayToken={token}");
    assert_eq!(
        common::licence_request(envoy, &licence, &[], b"spc").status,
        200
    );
    // a token with one character of its sealed part changed: forged
    let mut forged = token.into_bytes();
    let middle = forged.len() / 2;
    forged[middle] = if forged[middle] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let forged = format!("/hms/fp/rights/?ExpressPlayToken={forged}");
    assert_eq!(
        request(envoy.port, "POST", &forged, &[], Some(b"spc")).status,
        403
    );
    let text = envoy.admin_get("/stats/prometheus").text();
    let forged_line =
        module.prometheus_line("fpgen_redemptions_rejected{fpgen_reason=\"forged\"} 1");
    assert!(
        text.contains(&forged_line),
        "the FpgenRedemptionsForged alert's reason: {forged_line}"
    );
    let metrics = exposition(&text);

    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/fpgen.json")).unwrap();
    let queries = dashboard_queries(&dashboard);
    let alerts = alert_queries(&read("deploy/grafana/fpgen-alerts.yaml"));
    assert!(
        queries.len() >= 10 && alerts.len() >= 5,
        "{queries:?} {alerts:?}"
    );
    let other = match module {
        Module::Wasm => " (native)",
        Module::Native => " (Wasm)",
    };
    let mut checked = 0;
    for (place, expr) in queries.iter().chain(&alerts) {
        if !place.ends_with(other) {
            check(place, expr, &metrics);
            checked += 1;
        }
    }
    assert!(checked >= 14, "{checked} queries apply to this module");

    // what the issue asks the dashboard to show, and the alerts to watch
    let all = |list: &[(String, String)]| {
        list.iter()
            .map(|(_, e)| e.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (shown, watched) = (all(&queries), all(&alerts));
    // (a metric of both modules is selected by `__name__`: `name(M)`)
    let name = |m: &str| format!("{{__name__=~\"(envoy_dynamicmodulescustom_)?fpgen_{m}\"");
    for needle in [
        format!("sum by (fpgen_customer) (rate({}", name("tokens_minted")),
        format!("sum by (fpgen_code) (rate({}", name("rejected")),
        format!(
            "sum by (fpgen_customer) (rate({}",
            name("redemptions_accepted")
        ),
        format!(
            "sum by (fpgen_reason) (rate({}",
            name("redemptions_rejected")
        ),
        "fpgen_vm_reload\"".to_owned(),
        "envoy_dynamicmodulescustom_fpgen_panics".to_owned(),
        "fpgen_update_rejected".to_owned(),
        format!(
            "count by (fpgen_version, fpgen_build) ({})",
            name("build") + "}"
        ),
    ] {
        assert!(
            shown.contains(&needle),
            "the dashboard does not show {needle}"
        );
    }
    for needle in [
        format!("rate({}[5m])", name("rejected") + "}"),
        "fpgen_vm_reload\"".to_owned(),
        "envoy_dynamicmodulescustom_fpgen_panics".to_owned(),
        format!("{}, fpgen_reason=~", name("redemptions_rejected")),
    ] {
        assert!(watched.contains(&needle), "no alert on {needle}");
    }
    drop(ecds);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The checker itself: a metric or label that Envoy does not export is
/// caught (so the test above can fail).
#[test]
#[should_panic(expected = "label fpgen_customer is on none of")]
fn a_label_the_exposition_lacks_is_caught() {
    let metrics = exposition("fpgen_redemptions_rejected{fpgen_reason=\"forged\"} 1\n");
    check(
        "example",
        "sum by (fpgen_customer) (rate(fpgen_redemptions_rejected[5m]))",
        &metrics,
    );
}

#[test]
#[should_panic(expected = "fpgen_tokens_issued is not in /stats/prometheus")]
fn a_metric_the_exposition_lacks_is_caught() {
    let metrics = exposition("fpgen_tokens_minted{fpgen_customer=\"100001\"} 1\n");
    check("example", "rate(fpgen_tokens_issued[5m])", &metrics);
}
