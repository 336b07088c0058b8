//! Turning outcomes into HTTP responses: the licence URL on success, an HTML
//! page or a JSON object on error. Everything echoed is escaped here.

use crate::error::{ApiError, ErrorCode, ErrorFormat};
use serde::Serialize;
use std::borrow::Cow;
use std::fmt::Write as _;

pub const CONTENT_TYPE_URI_LIST: &str = "text/uri-list";
pub const CONTENT_TYPE_HTML: &str = "text/html; charset=utf-8";
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// A response for the host shell to send. Its `Debug` shows the body of an
/// error, never of a success (a licence URL: a bearer token for 30 days).
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// Extra headers (e.g. `allow` on 405).
    pub headers: Vec<(&'static str, &'static str)>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body: &dyn std::fmt::Debug = if self.status == 200 {
            &"<redacted licence URL>"
        } else {
            &self.body
        };
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .field("body", body)
            .field("headers", &self.headers)
            .finish()
    }
}

impl Response {
    /// Every header of the reply, in order: its content type, `cache-control:
    /// no-store` (a licence URL or an error about one is never cached),
    /// then its own (`allow` on 405). Hosts send exactly these.
    pub fn headers_to_send(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        [
            ("content-type", self.content_type),
            ("cache-control", "no-store"),
        ]
        .into_iter()
        .chain(self.headers.iter().copied())
    }
}

/// The 200 answer: the licence URL, CRLF-terminated as `text/uri-list` wants.
pub fn success(url: String) -> Response {
    let mut body = url;
    body.push_str("\r\n");
    Response {
        status: 200,
        content_type: CONTENT_TYPE_URI_LIST,
        body,
        headers: Vec::new(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlayReadyAnswer<'a> {
    license_acquisition_url: &'a str,
    token: &'a str,
}

/// PlayReady's 200 answer: `{"licenseAcquisitionUrl": …, "token": …}`.
pub fn playready_success(url: &str, token: &str) -> Response {
    let answer = PlayReadyAnswer {
        license_acquisition_url: url,
        token,
    };
    Response {
        status: 200,
        content_type: CONTENT_TYPE_JSON,
        body: serde_json::to_string(&answer).unwrap_or_default(),
        headers: Vec::new(),
    }
}

#[derive(Serialize)]
struct JsonError<'a> {
    code: i32,
    message: &'a str,
}

/// An error in the requested format.
pub fn error(err: &ApiError, format: ErrorFormat) -> Response {
    let code = err.code.code();
    let message = err.message();
    let message = visible(&message);
    let (content_type, body) = match format {
        ErrorFormat::Json => {
            let body = serde_json::to_string(&JsonError {
                code,
                message: &message,
            })
            .unwrap_or_else(|_| format!("{{\"code\":{code},\"message\":\"\"}}"));
            (CONTENT_TYPE_JSON, body)
        }
        ErrorFormat::Html => {
            let mut body = String::with_capacity(256 + message.len());
            let _ = write!(
                body,
                "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/><title>Error {code}</title></head>\n\
                 <body><h1>Error {code}</h1><p id=\"message\">"
            );
            escape_html(&message, &mut body);
            body.push_str("</p></body></html>\n");
            (CONTENT_TYPE_HTML, body)
        }
    };
    let headers = if err.code == ErrorCode::MethodNotAllowed {
        vec![("allow", "GET, POST")]
    } else {
        Vec::new()
    };
    Response {
        status: err.code.http_status(),
        content_type,
        body,
        headers,
    }
}

/// Whether `c` may not be echoed as it is: control characters (C0, DEL,
/// C1; also tab and line breaks), which XML 1.0 forbids or which break a
/// message's line; Unicode noncharacters (U+FDD0–U+FDEF, U+xFFFE,
/// U+xFFFF), which XML excludes; and the bidirectional formatting
/// characters, which reorder how the text around them is displayed.
fn must_be_encoded(c: char) -> bool {
    let n = u32::from(c);
    c.is_control()
        || (0xFDD0..=0xFDEF).contains(&n)
        || n & 0xFFFE == 0xFFFE
        || matches!(n, 0x061C | 0x200E | 0x200F | 0x202A..=0x202E | 0x2066..=0x2069)
}

/// `text` with every character that `must_be_encoded` written as
/// `\u{XXXX}` (its code point in hex), so that an error page is always
/// well-formed XML and shows what was sent. Applied to every message, in
/// both formats, because messages may echo request text.
pub fn visible(text: &str) -> Cow<'_, str> {
    if !text.chars().any(must_be_encoded) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if must_be_encoded(c) {
            let _ = write!(out, "\\u{{{:04X}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_error_is_escaped() {
        let e = ApiError::new(
            ErrorCode::InvalidErrorFormat,
            "<script>alert('x')&\"</script>",
        );
        let r = error(&e, ErrorFormat::Html);
        assert_eq!(r.status, 400);
        assert_eq!(r.content_type, CONTENT_TYPE_HTML);
        assert!(
            r.body
                .contains("&lt;script&gt;alert(&#39;x&#39;)&amp;&quot;&lt;/script&gt;"),
            "{}",
            r.body
        );
        assert!(!r.body.contains("<script>"));
        assert!(r.body.contains("Error -3004"));
    }

    #[test]
    fn characters_xml_cannot_hold_are_shown_as_code_points() {
        let e = ApiError::new(
            ErrorCode::InvalidErrorFormat,
            "\u{1}\u{8}\u{1b}\u{7f}\r\nx\u{fffe}\u{202e}\u{1fffe}\u{85}é€",
        );
        let want = "\\u{0001}\\u{0008}\\u{001B}\\u{007F}\\u{000D}\\u{000A}x\\u{FFFE}\\u{202E}\\u{1FFFE}\\u{0085}é€";
        let html = error(&e, ErrorFormat::Html).body;
        assert!(html.contains(want), "{html}");
        let json = error(&e, ErrorFormat::Json).body;
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(v["message"].as_str().unwrap().ends_with(want), "{json}");
        assert_eq!(visible("plain"), Cow::Borrowed("plain"));
    }

    #[test]
    fn json_error_shape() {
        let e = ApiError::new(ErrorCode::AuthenticatorInvalid, "quote \" and \\ and /");
        let r = error(&e, ErrorFormat::Json);
        assert_eq!(r.status, 401);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["code"], -2018);
        assert_eq!(
            v["message"],
            "Invalid authentication token: quote \" and \\ and /"
        );
        assert_eq!(v.as_object().unwrap().len(), 2);
    }

    #[test]
    fn method_not_allowed_has_allow_header() {
        let r = error(&ErrorCode::MethodNotAllowed.into(), ErrorFormat::Html);
        assert_eq!(r.status, 405);
        assert_eq!(r.headers, vec![("allow", "GET, POST")]);
    }

    #[test]
    fn success_is_uri_list() {
        let r = success("http://x/?ExpressPlayToken=abc".into());
        assert_eq!(r.body, "http://x/?ExpressPlayToken=abc\r\n");
        assert_eq!(r.content_type, "text/uri-list");
    }
}
