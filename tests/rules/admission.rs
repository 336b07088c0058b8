//! What the endpoint takes before it reads a parameter: methods, media
//! types, body size, and how `fpgen serve` joins headers as Envoy does.

#[allow(unused_imports, reason = "the shared imports, for every topic")]
use super::support::*;

#[test]
fn routing_and_content_types() {
    assert!(service::is_token_path("/hms/fp/token"));
    assert!(service::is_token_path("/hms/fp/token/"));
    assert!(service::is_token_path("/hms/fp/token?a=b"));
    assert!(service::is_token_path("/hms/fp/token/?a=b"));
    assert!(!service::is_token_path("/hms/fp/tokens"));
    assert!(!service::is_token_path("/hms/fp/token/x"));
    assert!(!service::is_token_path("/HMS/fp/token"));
    assert!(!service::is_token_path("/hms/fp/rights/"));
    assert!(service::is_form_content_type(None));
    assert!(service::is_form_content_type(Some(
        "application/x-www-form-urlencoded; charset=UTF-8"
    )));
    assert!(!service::is_form_content_type(Some("application/json")));
    let r = service::refuse(ErrorCode::BodyTooLarge, "errorFormat=json").response;
    assert_eq!((r.status, r.content_type), (413, "application/json"));
}

/// The admission rule that the filter and `fpgen serve` share (the
/// end-to-end test `post_admission_is_the_same_in_envoy_and_serve` sends
/// the same requests to both).
#[test]
fn admission() {
    use service::Admission::{Body, Query, Refuse};
    let form = Some("application/x-www-form-urlencoded");
    for (method, content_type, length, want) in [
        ("GET", None, None, Query),
        ("GET", Some("application/json"), Some("99999"), Query),
        ("POST", None, None, Body),
        ("POST", form, Some("8192"), Body),
        ("POST", form, Some("8193"), Refuse(ErrorCode::BodyTooLarge)),
        (
            "POST",
            Some("application/json"),
            Some("0"),
            Refuse(ErrorCode::UnsupportedMediaType),
        ),
        (
            "POST",
            Some("application/json"),
            None,
            Refuse(ErrorCode::UnsupportedMediaType),
        ),
        ("PUT", form, None, Refuse(ErrorCode::MethodNotAllowed)),
        ("HEAD", None, None, Refuse(ErrorCode::MethodNotAllowed)),
        ("get", None, None, Refuse(ErrorCode::MethodNotAllowed)),
    ] {
        assert_eq!(
            service::admit(
                method,
                |name| match name {
                    "content-type" => content_type,
                    "content-length" => length,
                    _ => None,
                },
                8192
            ),
            want,
            "{method} {content_type:?} {length:?}"
        );
    }
}

/// Headers reach `service::admit` from `fpgen serve` as the filter gets
/// them from Envoy: repeated values joined with `,`, bytes that are not
/// UTF-8 replaced, so both hosts admit and refuse the same requests.
#[test]
fn serve_joins_headers_as_envoy_does() {
    use fpgen::service::{admit, joined_header, Admission};
    let form: &[u8] = b"application/x-www-form-urlencoded";
    assert_eq!(joined_header(std::iter::empty()), None);
    assert_eq!(
        joined_header([form]).as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    let two = joined_header([form, b"application/json".as_slice()]);
    assert_eq!(
        two.as_deref(),
        Some("application/x-www-form-urlencoded,application/json")
    );
    let not_utf8 = joined_header([b"\xff".as_slice()]);
    assert_eq!(not_utf8.as_deref(), Some("\u{FFFD}"));
    for (value, expected) in [
        (Some(form.to_vec()), Admission::Body),
        (None, Admission::Body),
        (
            two.map(String::into_bytes),
            Admission::Refuse(ErrorCode::UnsupportedMediaType),
        ),
        (
            not_utf8.map(String::into_bytes),
            Admission::Refuse(ErrorCode::UnsupportedMediaType),
        ),
    ] {
        let header = |name: &str| match (&value, name) {
            (Some(v), "content-type") => joined_header([v.as_slice()]),
            _ => None,
        };
        assert_eq!(admit("POST", header, 8192), expected, "{value:?}");
    }
}
