//! What happened to one request (a token request or a licence request at
//! the gate), for stats and the access log: the one record both paths end
//! in. Depends on nothing but the ids, the licence data and the error table.

use crate::error::ErrorCode;
use crate::ids::{CustomerId, Kid};
use crate::licence::Drm;

/// What happened to one request, for stats and the access log. Holds only
/// validated, printable values (never key material).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// `None` when a token was minted (or redeemed).
    pub error: Option<ErrorCode>,
    /// The authenticated customer, when authentication got that far.
    pub customer_id: Option<CustomerId>,
    /// The kid of the token.
    pub kid: Option<Kid>,
    /// The request's cookie, when it is valid.
    pub cookie: Option<String>,
    /// Expiry of the token, Unix seconds.
    pub expires_at: Option<i64>,
    /// The DRM of the endpoint or licence path, once the request is known
    /// to be for one.
    pub drm: Option<Drm>,
}

impl Outcome {
    /// A request refused with `code` before anything was known of it.
    pub fn refused(code: ErrorCode) -> Self {
        Self {
            error: Some(code),
            ..Self::default()
        }
    }

    /// A token minted or redeemed: whose it is, its kid (key 0's for
    /// Widevine and PlayReady), its cookie and expiry, moved out of its licence data (no copy).
    pub fn of_licence(licence: crate::licence::Licence) -> Self {
        use crate::licence::Licence;
        let drm = licence.drm();
        let (customer_id, kid, cookie, expires_at) = match licence {
            Licence::FairPlay(d) => (d.customer_id, d.kid, d.cookie, d.expires_at),
            Licence::Widevine(d) => {
                let kid = d.keys.into_iter().next().map(|k| k.kid);
                (d.customer_id, kid, d.cookie, d.expires_at)
            }
            Licence::PlayReady(d) => {
                let kid = d.keys.into_iter().next().map(|k| k.kid);
                (d.customer_id, kid, d.cookie, d.expires_at)
            }
        };
        Self {
            error: None,
            customer_id: Some(customer_id),
            kid,
            cookie,
            expires_at: Some(expires_at),
            drm: Some(drm),
        }
    }

    /// The same outcome, of `drm`'s endpoint or licence path.
    pub fn of_drm(self, drm: Drm) -> Self {
        Self {
            drm: Some(drm),
            ..self
        }
    }

    pub fn minted(&self) -> bool {
        self.error.is_none()
    }

    /// The numeric code for logs: 0 for a minted token.
    pub fn code(&self) -> i32 {
        self.error.map_or(0, ErrorCode::code)
    }

    /// The outcome as one logfmt line for the access log:
    /// `code=0 customer=100001 kid=^film cookie=corr-1 expires=2026-12-23T05:29:31Z drm=fairplay`.
    /// Fields that are unknown are left out; kid and cookie are
    /// percent-encoded where they hold spaces, `"`, `=`, `%` or non-ASCII, so
    /// the line splits on spaces.
    pub fn log_fields(&self) -> String {
        use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
        const FIELD: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'=').add(b'%');
        use std::fmt::Write;
        // (one allocation: the line is about 120 bytes)
        let mut out = String::with_capacity(160);
        let _ = write!(out, "code={}", self.code());
        if let Some(id) = &self.customer_id {
            out.push_str(" customer=");
            out.push_str(id.as_str());
        }
        match &self.kid {
            // hex needs no encoding: written as it is, with no copy
            Some(Kid::Bytes(bytes)) => {
                let mut hex = [0u8; 32];
                if hex::encode_to_slice(bytes, &mut hex).is_ok() {
                    out.push_str(" kid=");
                    out.push_str(std::str::from_utf8(&hex).unwrap_or_default());
                }
            }
            Some(Kid::Name(name)) => {
                out.push_str(" kid=^");
                out.extend(utf8_percent_encode(name, FIELD));
            }
            None => {}
        }
        if let Some(cookie) = &self.cookie {
            out.push_str(" cookie=");
            out.extend(utf8_percent_encode(cookie, FIELD));
        }
        if let Some(expires) = self.expires_at {
            out.push_str(" expires=");
            out.push_str(&crate::licence::rfc3339(expires));
        }
        if let Some(drm) = self.drm {
            out.push_str(" drm=");
            out.push_str(drm.as_str());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The access log's fields, as an operator's log pipeline splits them:
    /// a byte kid in lower-case hex, a named kid and the cookie encoded
    /// where they hold a space, `"`, `=` or `%`.
    #[test]
    fn log_fields_are_one_space_separated_line() {
        let minted = Outcome {
            error: None,
            customer_id: CustomerId::parse("100001").ok(),
            kid: Kid::parse("0123456789abcdef0123456789ABCDEF").ok(),
            cookie: Some("a b=\"%".to_owned()),
            expires_at: Some(1_798_003_771),
            drm: Some(Drm::FairPlay),
        };
        assert_eq!(
            minted.log_fields(),
            "code=0 customer=100001 kid=0123456789abcdef0123456789abcdef \
             cookie=a%20b%3D%22%25 expires=2026-12-23T05:29:31Z drm=fairplay"
        );
        let named = Outcome {
            kid: Kid::parse("^film one").ok(),
            ..Outcome::refused(ErrorCode::InvalidIv)
        };
        assert_eq!(named.log_fields(), "code=-6003 kid=^film%20one");
    }
}
