//! The request's parameters: the query string and, for POST, the
//! form-urlencoded body, decoded with a real form decoder. Names are
//! case-sensitive; unknown names are ignored; `fpExtension` repeats and
//! every other known parameter may appear once.

use crate::error::ErrorCode;
use std::borrow::Cow;

/// Every parameter fpgen reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    CustomerAuthenticator,
    ErrorFormat,
    GeneralFlags,
    Kek,
    Kid,
    Ek,
    ContentKey,
    Iv,
    RentalDuration,
    FpExtension,
    ExpirationTime,
    Cookie,
    UseHttps,
    RightsType,
    RentalPeriodEndTime,
    RentalPlayDuration,
    AnalogVideoOpl,
    CompressedDigitalAudioOpl,
    CompressedDigitalVideoOpl,
    UncompressedDigitalAudioOpl,
    UncompressedDigitalVideoOpl,
    OutputControlFlags,
    UnknownOutputBehavior,
    PrFlag,
}

const COUNT: usize = 24;

impl Param {
    pub const ALL: [Param; COUNT] = [
        Self::CustomerAuthenticator,
        Self::ErrorFormat,
        Self::GeneralFlags,
        Self::Kek,
        Self::Kid,
        Self::Ek,
        Self::ContentKey,
        Self::Iv,
        Self::RentalDuration,
        Self::FpExtension,
        Self::ExpirationTime,
        Self::Cookie,
        Self::UseHttps,
        Self::RightsType,
        Self::RentalPeriodEndTime,
        Self::RentalPlayDuration,
        Self::AnalogVideoOpl,
        Self::CompressedDigitalAudioOpl,
        Self::CompressedDigitalVideoOpl,
        Self::UncompressedDigitalAudioOpl,
        Self::UncompressedDigitalVideoOpl,
        Self::OutputControlFlags,
        Self::UnknownOutputBehavior,
        Self::PrFlag,
    ];

    /// The parameter's name on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            Self::CustomerAuthenticator => "customerAuthenticator",
            Self::ErrorFormat => "errorFormat",
            Self::GeneralFlags => "generalFlags",
            Self::Kek => "kek",
            Self::Kid => "kid",
            Self::Ek => "ek",
            Self::ContentKey => "contentKey",
            Self::Iv => "iv",
            Self::RentalDuration => "rentalDuration",
            Self::FpExtension => "fpExtension",
            Self::ExpirationTime => "expirationTime",
            Self::Cookie => "cookie",
            Self::UseHttps => "useHttps",
            Self::RightsType => "rightsType",
            Self::RentalPeriodEndTime => "rental.periodEndTime",
            Self::RentalPlayDuration => "rental.playDuration",
            Self::AnalogVideoOpl => "analogVideoOPL",
            Self::CompressedDigitalAudioOpl => "compressedDigitalAudioOPL",
            Self::CompressedDigitalVideoOpl => "compressedDigitalVideoOPL",
            Self::UncompressedDigitalAudioOpl => "uncompressedDigitalAudioOPL",
            Self::UncompressedDigitalVideoOpl => "uncompressedDigitalVideoOPL",
            Self::OutputControlFlags => "outputControlFlags",
            Self::UnknownOutputBehavior => "unknownOutputBehavior",
            Self::PrFlag => "prFlag",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The code reported when this parameter's value is not valid (also
    /// when it is given more than once).
    pub const fn invalid_code(self) -> ErrorCode {
        match self {
            Self::CustomerAuthenticator => ErrorCode::AuthenticatorInvalid,
            Self::ErrorFormat => ErrorCode::InvalidErrorFormat,
            Self::GeneralFlags => ErrorCode::InvalidGeneralFlags,
            Self::Kek | Self::Ek => ErrorCode::InvalidWrappedKey,
            Self::Kid => ErrorCode::InvalidKid,
            // -2027 is the reference's "must be 32 hex digits long": only
            // for the length (see `request`); anything else is -2005.
            Self::ContentKey => ErrorCode::InvalidContentKey,
            Self::Iv => ErrorCode::InvalidIv,
            Self::RentalDuration => ErrorCode::InvalidRentalDuration,
            Self::FpExtension => ErrorCode::InvalidFpExtension,
            Self::ExpirationTime => ErrorCode::InvalidExpirationTime,
            Self::Cookie => ErrorCode::InvalidCookie,
            Self::UseHttps => ErrorCode::InvalidParameter,
            Self::RightsType | Self::RentalPeriodEndTime => ErrorCode::InvalidRightsType,
            Self::RentalPlayDuration => ErrorCode::InvalidRentalPlayDuration,
            Self::AnalogVideoOpl
            | Self::CompressedDigitalAudioOpl
            | Self::CompressedDigitalVideoOpl
            | Self::UncompressedDigitalAudioOpl
            | Self::UncompressedDigitalVideoOpl => ErrorCode::OutputControlOutOfRange,
            Self::OutputControlFlags => ErrorCode::InvalidOutputControlFlags,
            Self::UnknownOutputBehavior | Self::PrFlag => ErrorCode::NoValue,
        }
    }

    /// Parameters of the sibling PlayReady API that clients send here.
    pub const fn is_playready(self) -> bool {
        matches!(
            self,
            Self::RightsType
                | Self::RentalPeriodEndTime
                | Self::RentalPlayDuration
                | Self::AnalogVideoOpl
                | Self::CompressedDigitalAudioOpl
                | Self::CompressedDigitalVideoOpl
                | Self::UncompressedDigitalAudioOpl
                | Self::UncompressedDigitalVideoOpl
                | Self::OutputControlFlags
                | Self::UnknownOutputBehavior
                | Self::PrFlag
        )
    }
}

/// The decoded parameters of one request.
#[derive(Debug, Default)]
pub struct Params<'a> {
    values: [Option<Cow<'a, str>>; COUNT],
    /// Every `fpExtension`, in order.
    pub fp_extensions: Vec<Cow<'a, str>>,
    /// The first known parameter that was given more than once.
    pub repeated: Option<Param>,
    /// The first known parameter whose value holds a malformed percent
    /// escape (`%zz`, a lone `%`): the hosted service's servlet container
    /// refuses those, so fpgen does not guess what was meant.
    pub malformed: Option<Param>,
}

impl<'a> Params<'a> {
    /// Decodes the query string, then the body (both
    /// `application/x-www-form-urlencoded`). Never fails: invalid UTF-8 is
    /// replaced (and then refused by the validators), repeats and malformed
    /// escapes are recorded.
    pub fn parse(query: &'a [u8], body: &'a [u8]) -> Self {
        let mut params = Self::default();
        // One `name=value` at a time (form decoding splits on `&` only), so
        // that the raw value can be checked for malformed escapes.
        for pair in query
            .split(|&b| b == b'&')
            .chain(body.split(|&b| b == b'&'))
        {
            if let Some((name, value)) = form_urlencoded::parse(pair).next() {
                let raw_value = pair
                    .iter()
                    .position(|&b| b == b'=')
                    .and_then(|i| pair.get(i + 1..))
                    .unwrap_or_default();
                params.add(&name, value, has_malformed_escape(raw_value));
            }
        }
        params
    }

    fn add(&mut self, name: &str, value: Cow<'a, str>, malformed: bool) {
        let Some(param) = Param::from_name(name) else {
            return;
        };
        if malformed {
            self.malformed.get_or_insert(param);
        }
        if param == Param::FpExtension {
            self.fp_extensions.push(value);
            return;
        }
        let Some(slot) = self.values.get_mut(param as usize) else {
            return;
        };
        if slot.is_some() {
            self.repeated.get_or_insert(param);
        } else {
            *slot = Some(value);
        }
    }

    /// The value of a single-valued parameter.
    pub fn get(&self, param: Param) -> Option<&str> {
        self.values.get(param as usize)?.as_deref()
    }
}

/// Whether `raw` (undecoded form text) holds a `%` that is not followed by
/// two hex digits. Only a check: the decoding itself is `form_urlencoded`'s.
fn has_malformed_escape(raw: &[u8]) -> bool {
    raw.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            && !raw
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    })
}

/// The `errorFormat` a request asks for (query string only, so that it can
/// be read before the body arrives); `None` when the value is not valid.
pub fn error_format_of(query: &[u8]) -> Option<crate::render::ErrorFormat> {
    form_urlencoded::parse(query)
        .find(|(name, _)| name == Param::ErrorFormat.name())
        .map_or(Some(crate::render::ErrorFormat::Html), |(_, v)| {
            crate::render::ErrorFormat::parse(&v)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_discriminant_order() {
        for (i, p) in Param::ALL.iter().enumerate() {
            assert_eq!(*p as usize, i);
            assert_eq!(Param::from_name(p.name()), Some(*p));
        }
    }

    #[test]
    fn decodes_query_and_body() {
        let p = Params::parse(b"iv=00%41&cookie=a+b", b"contentKey=ff&kid=%5Eabc");
        assert_eq!(p.get(Param::Iv), Some("00A"));
        assert_eq!(p.get(Param::Cookie), Some("a b"));
        assert_eq!(p.get(Param::ContentKey), Some("ff"));
        assert_eq!(p.get(Param::Kid), Some("^abc"));
        assert_eq!(p.repeated, None);
    }

    #[test]
    fn names_are_case_sensitive_and_unknown_ignored() {
        let p = Params::parse(b"ContentKey=1&contentkey=2&foo=3&useHttps=true", b"");
        assert_eq!(p.get(Param::ContentKey), None);
        assert_eq!(p.get(Param::UseHttps), Some("true"));
    }

    #[test]
    fn repeats() {
        let p = Params::parse(b"fpExtension=a&fpExtension=b&iv=1", b"iv=2");
        assert_eq!(p.fp_extensions, vec!["a", "b"]);
        assert_eq!(p.repeated, Some(Param::Iv));
        assert_eq!(p.get(Param::Iv), Some("1"));
    }

    #[test]
    fn malformed_escapes_in_known_parameters_are_recorded() {
        for (query, want) in [
            (&b"cookie=%zz%"[..], Some(Param::Cookie)),
            (b"iv=00%4", Some(Param::Iv)),
            (b"iv=%", Some(Param::Iv)),
            (b"fpExtension=wudo,%G0", Some(Param::FpExtension)),
            (b"foo=%zz&cookie=ok%25zz%2B", None),
            (b"cookie=%41%42&iv=1", None),
            (b"c%6Fokie=%zz", Some(Param::Cookie)),
        ] {
            assert_eq!(Params::parse(query, b"").malformed, want, "{query:?}");
        }
        let p = Params::parse(b"", b"iv=1&customerAuthenticator=1%2Cab%x");
        assert_eq!(p.malformed, Some(Param::CustomerAuthenticator));
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let p = Params::parse(b"cookie=%FF%FE", b"");
        assert_eq!(p.get(Param::Cookie), Some("\u{FFFD}\u{FFFD}"));
    }
}
