//! Configuration mistakes are refused without echoing key material.

#[allow(unused_imports, reason = "the shared imports, for every topic")]
use super::support::*;

/// Key material where a name or another shape belongs is refused, and no
/// message says any of it (issue 20: serde's words quoted the string, and
/// "no KEK named" quoted the name).
#[test]
fn configuration_mistakes_never_echo_key_material() {
    for (what, json) in fixtures::key_mistakes() {
        let errors = match Config::from_json_with(json.as_bytes(), &|_: &str| None) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => e,
        };
        let text = errors.to_string();
        assert!(
            fixtures::leaked_secret(&json, &text).is_none(),
            "{what}: {text}"
        );
        assert!(
            text.starts_with("invalid fpgen configuration: "),
            "{what}: {text}"
        );
    }
    // the names an operator chose are still shown
    let json = fixtures::json_with(|v| v["customers"][0]["kek"] = "other-kek".into());
    let text = Config::from_json(json.as_bytes())
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        text.as_deref(),
        Some("invalid fpgen configuration: customers[0].kek: no KEK named \"other-kek\" in keks")
    );
}
