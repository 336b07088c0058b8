//! The request's parameters: the query string and, for POST, the
//! form-urlencoded body, decoded with a real form decoder. Names are
//! case-sensitive; unknown names are ignored; `fpExtension` and
//! `wvExtension` repeat and every other known parameter may appear once;
//! Widevine's and PlayReady's per-key parameters also come indexed
//! (`kid.2`).

use crate::error::{ErrorCode, ErrorFormat};
use crate::licence::Drm;
use std::borrow::Cow;

/// How a PlayReady-style parameter's value is checked (they are never
/// required; the sibling PlayReady API defines them, clients send them here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlayReady {
    /// `BuyToOwn` or `Rental`.
    RightsType,
    /// An RFC 3339 `Z` time or `+seconds`.
    Time,
    /// A whole number of seconds.
    Seconds,
    /// An output protection level, 0 to 999.
    OutputLevel,
    /// 8 hex digits (4 bytes).
    OutputFlags,
    /// Any non-empty value.
    Any,
}

/// Which token endpoints read a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadBy {
    /// Every endpoint.
    All,
    /// FairPlay's only.
    FairPlay,
    /// Widevine's only.
    Widevine,
    /// PlayReady's only.
    PlayReady,
}

impl ReadBy {
    pub const fn includes(self, drm: Drm) -> bool {
        matches!(
            (self, drm),
            (Self::All, _)
                | (Self::FairPlay, Drm::FairPlay)
                | (Self::Widevine, Drm::Widevine)
                | (Self::PlayReady, Drm::PlayReady)
        )
    }
}

/// Declares [`Param`] from its table: one row per parameter with its name
/// on the wire, the code for an invalid value, its PlayReady rule and the
/// endpoints that read it.
macro_rules! param_table {
    ($( $variant:ident = $name:literal, $code:ident, $playready:expr, $read_by:ident; )*) => {
        /// Every parameter fpgen reads.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum Param {
            $( $variant, )*
        }

        impl Param {
            /// Every parameter, in table (and discriminant) order.
            pub const ALL: &'static [Param] = &[$(Self::$variant),*];

            /// The parameter's name on the wire.
            pub const fn name(self) -> &'static str {
                match self { $(Self::$variant => $name,)* }
            }

            /// The parameter a wire name names (names are case-sensitive).
            fn from_name(name: &str) -> Option<Self> {
                match name { $($name => Some(Self::$variant),)* _ => None }
            }

            /// The code reported when this parameter's value is not valid
            /// (also when it is given more than once).
            pub const fn invalid_code(self) -> ErrorCode {
                match self { $(Self::$variant => ErrorCode::$code,)* }
            }

            /// The code reported at `drm`'s endpoint when this parameter's
            /// value is not valid (also when it is given more than once):
            /// [`invalid_code`](Self::invalid_code), but PlayReady's own
            /// where its endpoint has one.
            pub const fn invalid_code_for(self, drm: Drm) -> ErrorCode {
                match (drm, self) {
                    (Drm::PlayReady, Self::RentalPeriodEndTime) => ErrorCode::InvalidRentalPeriodEndTime,
                    (Drm::PlayReady, Self::UnknownOutputBehavior) => ErrorCode::InvalidUnknownOutputBehavior,
                    _ => self.invalid_code(),
                }
            }

            /// How a parameter of the sibling PlayReady API is checked;
            /// `None` for FairPlay's own.
            pub const fn playready(self) -> Option<PlayReady> {
                match self { $(Self::$variant => $playready,)* }
            }

            /// The endpoints that read it (the others ignore it, as they
            /// ignore unknown parameters).
            pub const fn read_by(self) -> ReadBy {
                match self { $(Self::$variant => ReadBy::$read_by,)* }
            }
        }
    };
}

use PlayReady as P;

/// The query string of a request path (empty when there is none).
pub fn query_of(path: &str) -> &str {
    path.split_once('?').map_or("", |(_, q)| q)
}

param_table! {
    CustomerAuthenticator = "customerAuthenticator", AuthenticatorInvalid, None, All;
    ErrorFormat = "errorFormat", InvalidErrorFormat, None, All;
    GeneralFlags = "generalFlags", InvalidGeneralFlags, None, All;
    Kek = "kek", InvalidWrappedKey, None, All;
    Kid = "kid", InvalidKid, None, All;
    Ek = "ek", InvalidWrappedKey, None, All;
    // -2027 is the reference's "must be 32 hex digits long": only for the
    // length (see `request`); anything else is -2005.
    ContentKey = "contentKey", InvalidContentKey, None, All;
    Iv = "iv", InvalidIv, None, FairPlay;
    RentalDuration = "rentalDuration", InvalidRentalDuration, None, FairPlay;
    FpExtension = "fpExtension", InvalidFpExtension, None, FairPlay;
    ExpirationTime = "expirationTime", InvalidExpirationTime, None, All;
    Cookie = "cookie", InvalidCookie, None, All;
    UseHttps = "useHttps", InvalidParameter, None, All;
    RightsType = "rightsType", InvalidRightsType, Some(P::RightsType), All;
    RentalPeriodEndTime = "rental.periodEndTime", InvalidRightsType, Some(P::Time), All;
    RentalPlayDuration = "rental.playDuration", InvalidRentalPlayDuration, Some(P::Seconds), All;
    AnalogVideoOpl = "analogVideoOPL", OutputControlOutOfRange, Some(P::OutputLevel), All;
    CompressedDigitalAudioOpl = "compressedDigitalAudioOPL", OutputControlOutOfRange, Some(P::OutputLevel), All;
    CompressedDigitalVideoOpl = "compressedDigitalVideoOPL", OutputControlOutOfRange, Some(P::OutputLevel), All;
    UncompressedDigitalAudioOpl = "uncompressedDigitalAudioOPL", OutputControlOutOfRange, Some(P::OutputLevel), All;
    UncompressedDigitalVideoOpl = "uncompressedDigitalVideoOPL", OutputControlOutOfRange, Some(P::OutputLevel), All;
    OutputControlFlags = "outputControlFlags", InvalidOutputControlFlags, Some(P::OutputFlags), All;
    UnknownOutputBehavior = "unknownOutputBehavior", NoValue, Some(P::Any), All;
    PrFlag = "prFlag", NoValue, Some(P::Any), All;
    SecurityLevel = "securityLevel", InvalidSecurityLevel, None, Widevine;
    HdcpOutputControl = "hdcpOutputControl", InvalidHdcpOutputControl, None, Widevine;
    LicenseDuration = "licenseDuration", InvalidLicenseDuration, None, Widevine;
    PlaybackDuration = "playbackDuration", InvalidLicenseDuration, None, Widevine;
    TrackType = "trackType", InvalidTrackType, None, Widevine;
    ContentId = "contentId", InvalidContentId, None, Widevine;
    WvExtension = "wvExtension", InvalidWvExtension, None, Widevine;
    ExtensionType = "extensionType", ExtensionTypeLength, None, PlayReady;
    ExtensionPayload = "extensionPayload", ExtensionPayloadEncoding, None, PlayReady;
    MinCertSecurityLevel = "minCertSecurityLevel", InvalidCertSecurityLevel, None, PlayReady;
}

/// The parameters that also come indexed, one per key (`kid.1`, …).
pub const INDEXED: [Param; 6] = [
    Param::Kid,
    Param::ContentKey,
    Param::SecurityLevel,
    Param::HdcpOutputControl,
    Param::TrackType,
    Param::MinCertSecurityLevel,
];

/// The most indexed parameters a request keeps: one of each [`INDEXED`]
/// for every key a token can hold (42). More is refused (-9425) where they
/// are read, and never held.
pub const MAX_INDEXED: usize = INDEXED.len() * (crate::token::MAX_WIDEVINE_KEYS - 1);

/// One indexed parameter: `kid.2=…` is `Kid`, 2 and its value. Its
/// `Debug` shows no value (a `contentKey.N` is a content key).
pub struct Indexed<'a> {
    pub param: Param,
    /// The index as written (decimal digits): `None` when it is not a
    /// number of at most three digits.
    pub index: Option<u16>,
    pub value: Cow<'a, str>,
    /// The value held a malformed percent escape.
    pub malformed: bool,
}

impl std::fmt::Debug for Indexed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexed")
            .field("param", &self.param)
            .field("index", &self.index)
            .field("value", &"<redacted>")
            .field("malformed", &self.malformed)
            .finish()
    }
}

const COUNT: usize = Param::ALL.len();

/// The decoded parameters of one request. Its `Debug` names the
/// parameters given, never their values (`contentKey`, `kek` and the
/// authenticator are secrets).
pub struct Params<'a> {
    values: [Option<Cow<'a, str>>; COUNT],
    /// Every `fpExtension`, in order.
    pub fp_extensions: Vec<Cow<'a, str>>,
    /// Every `wvExtension`, in order.
    pub wv_extensions: Vec<Cow<'a, str>>,
    /// Every indexed parameter (`kid.1`, …), in order, at most
    /// [`MAX_INDEXED`].
    pub indexed: Vec<Indexed<'a>>,
    /// More indexed parameters than [`MAX_INDEXED`] were given.
    pub too_many_indexed: bool,
    /// The known parameters given more than once, in the order their
    /// repeats arrived (each once: at most one per parameter).
    repeated: Vec<Param>,
    /// The known parameters whose value holds a malformed percent escape
    /// (`%zz`, a lone `%`), in the order they arrived (each once): the
    /// hosted service's servlet container refuses those, so fpgen does not
    /// guess what was meant.
    malformed: Vec<Param>,
}

impl Default for Params<'_> {
    fn default() -> Self {
        Self {
            values: std::array::from_fn(|_| None),
            fp_extensions: Vec::new(),
            wv_extensions: Vec::new(),
            indexed: Vec::new(),
            too_many_indexed: false,
            repeated: Vec::new(),
            malformed: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Params<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let given: Vec<&str> = Param::ALL
            .iter()
            .filter(|p| self.get(**p).is_some())
            .map(|p| p.name())
            .collect();
        f.debug_struct("Params")
            .field("given", &given)
            .field("fp_extensions", &self.fp_extensions.len())
            .field("wv_extensions", &self.wv_extensions.len())
            .field("indexed", &self.indexed)
            .field("repeated", &self.repeated)
            .field("malformed", &self.malformed)
            .finish()
    }
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
        for pair in pairs(query).chain(pairs(body)) {
            if let Some((name, value)) = verbatim(pair) {
                params.add(name, Cow::Borrowed(value), false);
            } else if let Some((name, value)) = form_urlencoded::parse(pair).next() {
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
            return self.add_indexed(name, value, malformed);
        };
        if malformed && !self.malformed.contains(&param) {
            self.malformed.push(param);
        }
        match param {
            Param::FpExtension => return self.fp_extensions.push(value),
            Param::WvExtension => return self.wv_extensions.push(value),
            _ => {}
        }
        let Some(slot) = self.values.get_mut(param as usize) else {
            return;
        };
        if slot.is_some() {
            if !self.repeated.contains(&param) {
                self.repeated.push(param);
            }
        } else {
            *slot = Some(value);
        }
    }

    /// `name` is `<param>.<index>` for a parameter of [`INDEXED`]: kept,
    /// with whether its value held a malformed escape (for the endpoint
    /// that reads it: FairPlay's ignores indexed parameters); else ignored.
    fn add_indexed(&mut self, name: &str, value: Cow<'a, str>, malformed: bool) {
        let Some((base, index)) = name.rsplit_once('.') else {
            return;
        };
        let Some(param) = INDEXED.into_iter().find(|p| p.name() == base) else {
            return;
        };
        if self.indexed.len() >= MAX_INDEXED {
            self.too_many_indexed = true;
            return;
        }
        let index =
            (!index.is_empty() && index.len() <= 3 && index.bytes().all(|b| b.is_ascii_digit()))
                .then(|| index.parse().ok())
                .flatten();
        self.indexed.push(Indexed {
            param,
            index,
            value,
            malformed,
        });
    }

    /// The first parameter `drm`'s endpoint reads that was given more
    /// than once (in the order the repeats arrived).
    pub fn repeated(&self, drm: Drm) -> Option<Param> {
        first_of(&self.repeated, drm)
    }

    /// The first parameter `drm`'s endpoint reads whose value holds a
    /// malformed percent escape (in the order they arrived).
    pub fn malformed(&self, drm: Drm) -> Option<Param> {
        first_of(&self.malformed, drm)
    }

    /// The value of a single-valued parameter.
    pub fn get(&self, param: Param) -> Option<&str> {
        self.values.get(param as usize)?.as_deref()
    }
}

/// The first parameter of `params` that `drm`'s endpoint reads.
fn first_of(params: &[Param], drm: Drm) -> Option<Param> {
    params.iter().copied().find(|p| p.read_by().includes(drm))
}

/// `form`'s `&`-separated pairs, empty ones included (as `split` gives
/// them).
fn pairs(form: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut ends = memchr::memchr_iter(b'&', form).chain([form.len()]);
    let mut start = 0;
    std::iter::from_fn(move || {
        let end = ends.next()?;
        let pair = form.get(start..end);
        start = end + 1;
        pair
    })
}

/// One `name=value` pair (split on `&` already, and on nothing else), form
/// decoded: `None` for an empty pair. A pair with nothing to decode is
/// borrowed as it is (see `verbatim`); any other goes through
/// `form_urlencoded`.
pub fn decode_pair(pair: &[u8]) -> Option<(Cow<'_, str>, Cow<'_, str>)> {
    match verbatim(pair) {
        Some((name, value)) => Some((Cow::Borrowed(name), Cow::Borrowed(value))),
        None => form_urlencoded::parse(pair).next(),
    }
}

/// A non-empty `name=value` pair that decodes to itself (no `%`, no `+`,
/// valid UTF-8), split as `form_urlencoded` splits it: at the first `=`, or
/// all name when there is none. Most of a request's pairs are such, and
/// need neither a copy nor the decoder; every other pair is decoded by
/// `form_urlencoded`.
fn verbatim(pair: &[u8]) -> Option<(&str, &str)> {
    if pair.is_empty() || memchr::memchr2(b'%', b'+', pair).is_some() {
        return None;
    }
    let pair = std::str::from_utf8(pair).ok()?;
    Some(pair.split_once('=').unwrap_or((pair, "")))
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
pub fn error_format_of(query: &[u8]) -> Option<ErrorFormat> {
    form_urlencoded::parse(query)
        .find(|(name, _)| name == Param::ErrorFormat.name())
        .map_or(Some(ErrorFormat::Html), |(_, v)| ErrorFormat::parse(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Params` indexes its values by `p as usize`: the generated `ALL` must
    /// stay in declaration order. The wire names are the reference's.
    #[test]
    fn all_is_in_discriminant_order_and_names_are_the_wire_names() {
        for (i, p) in Param::ALL.iter().enumerate() {
            assert_eq!(*p as usize, i);
        }
        for (name, param) in [
            ("customerAuthenticator", Param::CustomerAuthenticator),
            ("contentKey", Param::ContentKey),
            ("rental.playDuration", Param::RentalPlayDuration),
            ("analogVideoOPL", Param::AnalogVideoOpl),
            (
                "uncompressedDigitalVideoOPL",
                Param::UncompressedDigitalVideoOpl,
            ),
            ("prFlag", Param::PrFlag),
        ] {
            assert_eq!(Param::from_name(name), Some(param), "{name}");
        }
    }

    #[test]
    fn decodes_query_and_body() {
        let p = Params::parse(b"iv=00%41&cookie=a+b", b"contentKey=ff&kid=%5Eabc");
        assert_eq!(p.get(Param::Iv), Some("00A"));
        assert_eq!(p.get(Param::Cookie), Some("a b"));
        assert_eq!(p.get(Param::ContentKey), Some("ff"));
        assert_eq!(p.get(Param::Kid), Some("^abc"));
        assert_eq!(p.repeated(Drm::FairPlay), None);
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
        assert_eq!(p.repeated(Drm::FairPlay), Some(Param::Iv));
        // Widevine's endpoint does not read iv: its repeat is ignored there
        assert_eq!(p.repeated(Drm::Widevine), None);
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
            let p = Params::parse(query, b"");
            assert_eq!(p.malformed(Drm::FairPlay), want, "{query:?}");
        }
        let p = Params::parse(b"", b"iv=1&customerAuthenticator=1%2Cab%x");
        assert_eq!(
            p.malformed(Drm::FairPlay),
            Some(Param::CustomerAuthenticator)
        );
    }

    /// The fast path reads a pair exactly as the decoder does, and leaves
    /// every pair it cannot read so to the decoder.
    #[test]
    fn verbatim_pairs_read_as_the_decoder_reads_them() {
        let cases: [(&[u8], bool); 13] = [
            (b"iv=00", true),
            (b"iv", true),
            (b"iv=", true),
            (b"=00", true),
            (b"=", true),
            (b"a=b=c", true),
            (b"cookie=\xc3\xa9t\xc3\xa9", true),
            (b"kid=^abc,~.", true),
            (b"", false),
            (b"cookie=a+b", false),
            (b"iv=%41", false),
            (b"c%6Fokie=1", false),
            (b"cookie=\xff", false),
        ];
        for (pair, fast) in cases {
            let read = verbatim(pair);
            assert_eq!(read.is_some(), fast, "{pair:?}");
            if let Some((name, value)) = read {
                let decoded = form_urlencoded::parse(pair).next();
                assert_eq!(Some((name.into(), value.into())), decoded, "{pair:?}");
            }
        }
    }

    #[test]
    fn pairs_split_as_split_does() {
        for form in [&b""[..], b"a", b"a&b", b"&", b"a&&b&", b"&a=1&b=%26"] {
            let want: Vec<&[u8]> = form.split(|&b| b == b'&').collect();
            assert_eq!(pairs(form).collect::<Vec<_>>(), want, "{form:?}");
        }
    }

    #[test]
    fn indexed_parameters_are_kept_in_order_and_bounded() {
        let p = Params::parse(
            b"kid.1=a&contentKey.1=b&trackType.x=2&kid.01=c&foo.1=d",
            b"",
        );
        let read: Vec<_> = p
            .indexed
            .iter()
            .map(|i| (i.param, i.index, i.value.as_ref()))
            .collect();
        assert_eq!(
            read,
            [
                (Param::Kid, Some(1), "a"),
                (Param::ContentKey, Some(1), "b"),
                (Param::TrackType, None, "2"),
                (Param::Kid, Some(1), "c"),
            ]
        );
        let many: String = (0..=MAX_INDEXED).map(|i| format!("kid.{i}=x&")).collect();
        let p = Params::parse(many.as_bytes(), b"");
        assert_eq!(p.indexed.len(), MAX_INDEXED);
        assert!(p.too_many_indexed);
    }

    /// The first repeat (or malformed escape) reported is the first to
    /// arrive, as before there were several endpoints.
    #[test]
    fn repeats_and_malformed_escapes_are_reported_in_arrival_order() {
        let p = Params::parse(b"cookie=a&cookie=b&kid=x&kid=y", b"");
        assert_eq!(p.repeated(Drm::FairPlay), Some(Param::Cookie));
        let p = Params::parse(b"kid=x&cookie=a&kid=y&cookie=b", b"");
        assert_eq!(p.repeated(Drm::FairPlay), Some(Param::Kid));
        let p = Params::parse(b"cookie=%zz&kid=%zz", b"");
        assert_eq!(p.malformed(Drm::FairPlay), Some(Param::Cookie));
        // an indexed parameter's escape is its own, never its base's
        let p = Params::parse(b"kid.1=%zz&contentKey.1=%zz", b"");
        assert_eq!(p.malformed(Drm::FairPlay), None);
        assert_eq!(p.malformed(Drm::Widevine), None);
        assert!(p.indexed.iter().all(|i| i.malformed));
        assert!(!format!("{p:?}").contains("%zz"));
    }

    #[test]
    fn each_endpoint_is_told_of_the_repeats_it_reads() {
        let p = Params::parse(
            b"securityLevel=1&securityLevel=2&rentalDuration=1",
            b"rentalDuration=2",
        );
        assert_eq!(p.repeated(Drm::FairPlay), Some(Param::RentalDuration));
        assert_eq!(p.repeated(Drm::Widevine), Some(Param::SecurityLevel));
        let p = Params::parse(b"securityLevel=1&securityLevel=2", b"");
        assert_eq!(p.repeated(Drm::FairPlay), None);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let p = Params::parse(b"cookie=%FF%FE", b"");
        assert_eq!(p.get(Param::Cookie), Some("\u{FFFD}\u{FFFD}"));
    }
}
