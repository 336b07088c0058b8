//! Stat names, Envoy's tag rules for them, and the stats page.

#[allow(unused_imports, reason = "the shared imports, for every topic")]
use super::support::*;

/// `Refusal::ALL` holds every reason once (18, by the match above), each
/// counted under its documented name, and docs/stats.md lists them all.
#[test]
fn the_stats_page_lists_every_redemption_refusal_reason() {
    use fpgen::redeem::Refusal;
    let names: Vec<&str> = Refusal::ALL.iter().map(|&r| refusal_stat_name(r)).collect();
    let distinct: std::collections::BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        18,
        "a reason missing from Refusal::ALL, or twice: {names:?}"
    );
    for reason in Refusal::ALL {
        assert_eq!(reason.stat_name(), refusal_stat_name(reason), "{reason:?}");
    }
    let readme = include_str!("../../docs/stats.md");
    let row = readme
        .lines()
        .find(|l| l.contains("`wasmcustom.fpgen.redemptions_rejected.<reason>`"))
        .unwrap();
    for name in names {
        assert!(
            row.contains(&format!("`{name}`")),
            "{name} missing from the stats table of docs/stats.md"
        );
    }
}

/// The stat names the filter counts, Envoy's tag rules for them (which
/// `envoy/envoy.yaml` carries, checked end to end in `tests/e2e/shared/accounts.rs`), and
/// the stats table of docs/stats.md agree.
#[test]
fn stat_names_tag_rules_and_the_stats_page_agree() {
    use fpgen::redeem::Refusal;
    use fpgen::stats;
    use fpgen::wasm_stats::{ENVOY_PREFIX, TAG_RULES};
    let customer = fixtures::id("100001");
    let tags = |name: &str| -> (String, Vec<(String, String)>) {
        let mut name = format!("{ENVOY_PREFIX}{name}");
        let mut found = Vec::new();
        for (tag, rule) in TAG_RULES {
            let re = regex::Regex::new(rule).unwrap();
            if let Some(c) = re.captures(&name.clone()) {
                found.push((tag.to_owned(), c[2].to_owned()));
                name = name.replacen(&c[1], "", 1);
            }
        }
        (name, found)
    };
    let tag = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    assert_eq!(
        tags(&stats::tokens_minted(&customer)),
        (
            "wasmcustom.fpgen.tokens_minted".into(),
            vec![tag("fpgen_customer", "100001")]
        )
    );
    assert_eq!(
        tags(&stats::rejected(
            ErrorCode::ContentKeyFormat,
            Some(&customer)
        )),
        (
            "wasmcustom.fpgen.rejected".into(),
            vec![tag("fpgen_customer", "100001"), tag("fpgen_code", "2027")]
        )
    );
    assert_eq!(
        tags(&stats::rejected(ErrorCode::AuthenticatorMissing, None)),
        (
            "wasmcustom.fpgen.rejected".into(),
            vec![tag("fpgen_code", "2017")]
        )
    );
    assert_eq!(
        tags(&stats::redemptions_accepted(&customer)),
        (
            "wasmcustom.fpgen.redemptions_accepted".into(),
            vec![tag("fpgen_customer", "100001")]
        )
    );
    for reason in Refusal::ALL {
        assert_eq!(
            tags(&stats::redemptions_rejected(reason)),
            (
                "wasmcustom.fpgen.redemptions_rejected".into(),
                vec![tag("fpgen_reason", refusal_stat_name(reason))]
            )
        );
    }
    for failure in fpgen::fleet::Failure::ALL {
        assert_eq!(
            tags(&stats::fleet_budget_failed(failure)),
            (
                "wasmcustom.fpgen.fleet_budget_failed".into(),
                vec![tag("fpgen_reason", failure.stat_name())]
            )
        );
    }
    assert_eq!(
        tags(&stats::fleet_lease_tokens(&customer)),
        (
            "wasmcustom.fpgen.fleet_lease_tokens".into(),
            vec![tag("fpgen_customer", "100001")]
        )
    );
    assert_eq!(
        tags(&stats::build()),
        (
            "wasmcustom.fpgen.build".into(),
            vec![
                tag("fpgen_version", stats::VERSION),
                tag("fpgen_build", stats::BUILD)
            ]
        )
    );
    assert_eq!(
        tags("fpgen.build.1.2.0-rc.1.0123456789ab-canary"),
        (
            "wasmcustom.fpgen.build".into(),
            vec![
                tag("fpgen_version", "1.2.0-rc.1"),
                tag("fpgen_build", "0123456789ab-canary")
            ]
        )
    );
    // the stats table names each counter in the same shape
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/stats.md"))
        .unwrap()
        .replace("<id>", "100001")
        .replace("<code>", "2027");
    for name in [
        stats::tokens_minted(&customer),
        stats::rejected(ErrorCode::ContentKeyFormat, Some(&customer)),
        stats::rejected(ErrorCode::ContentKeyFormat, None),
        stats::redemptions_accepted(&customer),
        stats::fleet_lease_tokens(&customer),
        stats::FLEET_TOKEN_CALLS.to_owned(),
        stats::FLEET_LEASE_CALLS.to_owned(),
    ] {
        assert!(
            readme.contains(&format!("`{ENVOY_PREFIX}{name}`")),
            "{name} is not in docs/stats.md"
        );
    }
}
