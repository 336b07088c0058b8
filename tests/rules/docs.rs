//! Docs that cannot drift: the reference pages of `docs/` checked against
//! the code.
//!
//! - Every configuration field the parser accepts has a row in
//!   `docs/configuration.md`, and every row names a field it accepts (the
//!   parser's own list, from its refusal of an unknown field at each
//!   object).
//! - The error table of `docs/api.md` and the tag rules of
//!   `docs/stats.md` are generated from the code's own tables (`make docs`
//!   writes them: `FPGEN_WRITE_DOCS=1`); this test fails when the committed
//!   page is not what the code generates, and when a code has no "when".
//! - Every stat name in the stats table of `docs/stats.md` is one the code
//!   counts, and every one it counts is there.
//! - Every `envoy/…` file the README or `docs/` names exists, and is one
//!   that `make test` validates (`tests/e2e/deploy.rs` runs Envoy's `--mode
//!   validate` on `envoy/`, `envoy/dynamic/` and `envoy/ecds/`; `make
//!   check-istio` checks `envoy/istio/` against Istio's schemas).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use fpgen::config::Config;
use fpgen::error::ErrorCode;
use fpgen::ids::CustomerId;
use fpgen::stats;
use regex::Regex;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(page: &str) -> String {
    std::fs::read_to_string(root().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"))
}

/// The first column of a page's table rows, where it is one backticked name.
fn first_column_names(page: &str, prefix: &str) -> BTreeSet<String> {
    let row = Regex::new(r"^\| `([^`]+)` \|").unwrap();
    read(page)
        .lines()
        .filter_map(|l| row.captures(l))
        .map(|c| c[1].to_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

// ---- configuration fields ----

/// The fields the parser accepts in the object at `at` (a JSON pointer
/// into `config`): what it lists when refusing an unknown one there.
fn accepted_at(config: &Value, at: &str) -> Vec<String> {
    let mut bad = config.clone();
    let object = bad.pointer_mut(at).and_then(Value::as_object_mut);
    object
        .unwrap_or_else(|| panic!("no object at {at}"))
        .insert("zz_unknown".into(), json!(1));
    let error = Config::from_json(bad.to_string().as_bytes())
        .err()
        .unwrap_or_else(|| panic!("an unknown field at {at} was accepted"))
        .to_string();
    let list = Regex::new(r"unknown field `zz_unknown`, expected (?:one of )?(.*)").unwrap();
    let found = list
        .captures(&error)
        .unwrap_or_else(|| panic!("{at}: {error}"));
    let field = Regex::new(r"`([a-z0-9_]+)`").unwrap();
    field
        .captures_iter(&found[1])
        .map(|c| c[1].to_owned())
        .collect()
}

/// Every field path the parser accepts, as the reference writes them
/// (`customers[].fleet_budget.lease`).
fn accepted_fields() -> BTreeSet<String> {
    let mut config = fpgen_fixtures::demo_json();
    config["rate_limit_service"] = json!({"cluster": "ratelimit"});
    config["customers"][0]["fleet_budget"] = json!({"tokens": 10, "per": "day"});
    config["client_address"] = json!({"use_x_forwarded_for": false});
    config["redeem_url"] = json!({"host": "licences.example.com"});
    assert!(config["redemption"].is_object(), "the demo has a gate");
    let objects = [
        ("", ""),
        ("/redeem_url", "redeem_url."),
        ("/widevine_redeem_url", "widevine_redeem_url."),
        ("/playready_redeem_url", "playready_redeem_url."),
        ("/sealing_keys/0", "sealing_keys[]."),
        ("/customers/0", "customers[]."),
        ("/customers/0/fleet_budget", "customers[].fleet_budget."),
        ("/client_address", "client_address."),
        ("/rate_limit_service", "rate_limit_service."),
        ("/redemption", "redemption."),
    ];
    let mut all = BTreeSet::new();
    for (at, path) in objects {
        let fields = accepted_at(&config, at);
        assert!(!fields.is_empty(), "{at}");
        all.extend(fields.into_iter().map(|f| format!("{path}{f}")));
    }
    all
}

#[test]
fn every_configuration_field_is_documented_and_every_documented_one_accepted() {
    let accepted = accepted_fields();
    let documented = first_column_names("docs/configuration.md", "");
    let undocumented: Vec<_> = accepted.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        undocumented.is_empty(),
        "fields the parser accepts with no row in docs/configuration.md: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "rows of docs/configuration.md the parser does not accept: {unknown:?}"
    );
    assert!(accepted.len() >= 40, "{accepted:?}");
}

/// The check itself finds a field the reference lacks (so the test above
/// can fail): the parser's list at the top level has one the page does
/// not.
#[test]
fn a_field_missing_from_the_reference_is_found() {
    let documented = first_column_names("docs/configuration.md", "");
    let page_without = |field: &str| -> Vec<String> {
        let mut less = documented.clone();
        less.remove(field);
        accepted_fields()
            .into_iter()
            .filter(|f| !less.contains(f))
            .collect()
    };
    assert_eq!(page_without("max_body_bytes"), ["max_body_bytes"]);
    assert_eq!(
        page_without("customers[].fleet_budget.lease"),
        ["customers[].fleet_budget.lease"]
    );
}

// ---- generated tables ----

/// The text between `<!-- make docs: … -->` (whose text starts with
/// `marker`) and `<!-- /make docs -->`: (start, end) byte offsets of what
/// lies between the two lines.
fn generated_span(text: &str, marker: &str) -> (usize, usize) {
    let open = format!("<!-- make docs: {marker}");
    let start = text.find(&open).unwrap_or_else(|| panic!("no {open:?}"));
    let body = start + text[start..].find('\n').unwrap() + 1;
    let end = body
        + text[body..]
            .find("<!-- /make docs -->")
            .unwrap_or_else(|| panic!("{marker}: no end marker"));
    (body, end)
}

/// The error table from [`ErrorCode::ALL`]: code, status and message from
/// the code; "when" kept from `current` (the committed table), by code.
fn error_table(current: &str) -> String {
    let mut when: BTreeMap<String, String> = BTreeMap::new();
    for line in current.lines().filter(|l| l.starts_with("| -")) {
        let cells: Vec<&str> = line
            .trim_start_matches("| ")
            .trim_end_matches(" |")
            .splitn(4, " | ")
            .collect();
        if let [code, _, _, text] = cells.as_slice() {
            when.insert((*code).to_owned(), (*text).to_owned());
        }
    }
    let mut out = String::from("| code | status | message | when |\n| --- | --- | --- | --- |\n");
    for code in ErrorCode::ALL {
        let number = code.code().to_string();
        let text = when.get(&number).map_or("", String::as_str);
        out.push_str(&format!(
            "| {number} | {} | {} | {text} |\n",
            code.http_status(),
            code.message()
        ));
    }
    out
}

/// The tag rules of [`fpgen::wasm_stats::TAG_RULES`], as a bootstrap's `stats_tags`.
fn tag_rules_table(_: &str) -> String {
    let mut out = String::from("| tag | regex (on the stat name) |\n| --- | --- |\n");
    for (name, regex) in fpgen::wasm_stats::TAG_RULES {
        // (a `|` would end the cell: Markdown tables take it escaped)
        let regex = regex.replace('|', "\\|");
        out.push_str(&format!("| `{name}` | `{regex}` |\n"));
    }
    out
}

type Generator = fn(&str) -> String;

const GENERATED: [(&str, &str, Generator); 2] = [
    ("docs/api.md", "the error table", error_table),
    ("docs/stats.md", "the tag rules", tag_rules_table),
];

/// `make docs` (FPGEN_WRITE_DOCS=1) writes the tables; otherwise each must
/// be what the code generates.
#[test]
fn the_generated_tables_are_current() {
    let write = std::env::var_os("FPGEN_WRITE_DOCS").is_some();
    for (page, marker, generate) in GENERATED {
        let text = read(page);
        let (start, end) = generated_span(&text, marker);
        let wanted = generate(&text[start..end]);
        if write {
            let new = format!("{}{wanted}{}", &text[..start], &text[end..]);
            std::fs::write(root().join(page), new).unwrap();
        } else {
            let committed: BTreeSet<&str> = text[start..end].lines().collect();
            let generated: BTreeSet<&str> = wanted.lines().collect();
            let stale: Vec<_> = committed.difference(&generated).collect();
            let missing: Vec<_> = generated.difference(&committed).collect();
            assert!(
                text[start..end] == wanted,
                "{page}: {marker} is not what the code says (run `make docs`):\n\
                 rows the code does not give: {stale:#?}\nrows it gives that the page lacks: {missing:#?}"
            );
        }
    }
    let api = read("docs/api.md");
    for code in ErrorCode::ALL {
        let row = format!(
            "| {} | {} | {} | ",
            code.code(),
            code.http_status(),
            code.message()
        );
        let line = api.lines().find(|l| l.starts_with(&row));
        let line = line.unwrap_or_else(|| panic!("{}: no row in docs/api.md", code.code()));
        assert!(
            line.len() > row.len() + 2,
            "{}: the error table says nothing of when it is sent",
            code.code()
        );
    }
}

/// The check itself: a code whose row is missing, or whose status or
/// message differs, makes a table the generator would change.
#[test]
fn a_stale_error_table_is_found() {
    let text = read("docs/api.md");
    let (start, end) = generated_span(&text, "the error table");
    let current = &text[start..end];
    assert_eq!(error_table(current), current);
    let first = ErrorCode::ALL[0];
    let row = format!(
        "| {} | {} | {} |",
        first.code(),
        first.http_status(),
        first.message()
    );
    let missing: String = current
        .lines()
        .filter(|l| !l.starts_with(&row))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(error_table(&missing), missing);
    let wrong = current.replacen(first.message(), "Some other message", 1);
    assert_ne!(error_table(&wrong), wrong);
}

// ---- stats ----

#[test]
fn every_stat_in_the_stats_page_is_one_the_code_counts() {
    use fpgen::fleet::Failure;
    use fpgen::redeem::Refusal;
    let customer = CustomerId::parse("100001").unwrap();
    let sample = |name: &str| {
        name.replace("<id>", "100001")
            .replace("<code>", "2027")
            .replace("<reason>", "REASON")
            .replace("<version>.<build>", "VERSION_BUILD")
            .replace("<drm>", "playready")
    };
    let documented: BTreeSet<String> =
        first_column_names("docs/stats.md", fpgen::wasm_stats::ENVOY_PREFIX)
            .iter()
            .map(|n| sample(n))
            .collect();
    // what the code counts, with the same samples; a reason stands for all
    let reason = |name: String, each: &str| name.replace(each, "REASON");
    let build = stats::build().replacen(
        &format!("{}.{}", stats::VERSION, stats::BUILD),
        "VERSION_BUILD",
        1,
    );
    let counted: BTreeSet<String> = [
        stats::tokens_minted(&customer),
        stats::rejected(ErrorCode::ContentKeyFormat, Some(&customer)),
        stats::rejected(ErrorCode::ContentKeyFormat, None),
        stats::redemptions_accepted(&customer),
        reason(
            stats::redemptions_rejected(Refusal::ALL[0]),
            Refusal::ALL[0].stat_name(),
        ),
        reason(
            stats::fleet_budget_failed(Failure::ALL[0]),
            Failure::ALL[0].stat_name(),
        ),
        stats::FLEET_TOKEN_CALLS.to_owned(),
        stats::FLEET_LEASE_CALLS.to_owned(),
        stats::fleet_lease_tokens(&customer),
        stats::minted(fpgen::licence::Drm::PlayReady),
        stats::redeemed(fpgen::licence::Drm::PlayReady),
        build,
    ]
    .into_iter()
    .map(|n| format!("{}{n}", fpgen::wasm_stats::ENVOY_PREFIX))
    .collect();
    assert_eq!(
        documented, counted,
        "the stats table of docs/stats.md and the stats the code counts differ"
    );
}

// ---- Envoy configurations named in the docs ----

#[test]
fn every_envoy_file_the_docs_name_exists_and_is_validated() {
    let mut pages = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let named = Regex::new(r"\benvoy/[A-Za-z0-9_./-]+\.yaml\b").unwrap();
    let mut seen = BTreeSet::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for m in named.find_iter(&text) {
            seen.insert(m.as_str().to_owned());
        }
    }
    // the directories whose files make test validates
    let validated = ["envoy/", "envoy/dynamic/", "envoy/ecds/", "envoy/istio/"];
    for file in &seen {
        assert!(
            root().join(file).is_file(),
            "{file} is named in the docs but does not exist"
        );
        let dir = &file[..=file.rfind('/').unwrap()];
        assert!(
            validated.contains(&dir),
            "{file}: not in a directory make test validates"
        );
    }
    for shipped in [
        "envoy/envoy.yaml",
        "envoy/native.yaml",
        "envoy/fleet.yaml",
        "envoy/istio/wasmplugin.yaml",
    ] {
        assert!(seen.contains(shipped), "{shipped} is not named in the docs");
    }
}
