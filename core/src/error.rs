//! The API's error table in one place: every failure a request can meet,
//! its numeric code (from the ExpressPlay reference, or fpgen's own `-9xxx`
//! range where the reference has none), its HTTP status and its message,
//! one row per code. Also how errors are rendered ([`ErrorFormat`]).

use std::borrow::Cow;
use std::fmt;

/// Declares [`ErrorCode`] from its table: each row is one code, so adding a
/// code is one line and no accessor can miss it.
macro_rules! error_table {
    ($( $(#[doc = $doc:literal])* $variant:ident = $code:literal, $status:literal, $message:literal; )*) => {
        /// One row of the error table.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in table order (generated from the table, so
            /// it holds every variant).
            pub const ALL: &'static [ErrorCode] = &[$(Self::$variant),*];

            /// The numeric code clients see.
            pub const fn code(self) -> i32 {
                match self { $(Self::$variant => $code,)* }
            }

            /// The HTTP status of the response that carries this code.
            pub const fn http_status(self) -> u16 {
                match self { $(Self::$variant => $status,)* }
            }

            /// The message of the reference table (English), without details.
            pub const fn message(self) -> &'static str {
                match self { $(Self::$variant => $message,)* }
            }
        }
    };
}

error_table! {
    /// `expirationTime` is malformed, in the past, or beyond 30 days.
    InvalidExpirationTime = -2002, 400, "Invalid token expiration time";
    /// The client address is not allowed for this customer.
    InvalidIpAddress = -2003, 403, "Invalid IP address";
    /// No usable content key (missing, or not hex).
    InvalidContentKey = -2005, 400, "Invalid content encryption key";
    /// `outputControlFlags` is not hexadecimal.
    InvalidOutputControlFlags = -2008, 400, "Invalid output control flags specified";
    /// `customerAuthenticator` is missing.
    AuthenticatorMissing = -2017, 401, "Authentication token must be supplied";
    /// `customerAuthenticator` is wrong or belongs to the other environment.
    AuthenticatorInvalid = -2018, 401, "Invalid authentication token";
    /// The customer's token budget is spent.
    InsufficientTokens = -2019, 429, "Insufficient tokens available";
    /// PlayReady: `rightsType` is missing.
    MissingRightsType = -2020, 400, "Missing rights type";
    /// `rightsType` (or a `rental.*` time) is not valid.
    InvalidRightsType = -2021, 400, "Invalid rights type";
    /// PlayReady: a `Rental` without `rental.periodEndTime`.
    MissingRentalPeriodEndTime = -2022, 400, "Missing rental period end time";
    /// PlayReady: `rental.periodEndTime` is not a time (RFC 3339 `Z` or
    /// `+seconds`), or is not in the future.
    InvalidRentalPeriodEndTime = -2023, 400, "Invalid rental period end time";
    /// `rental.playDuration` is not valid.
    InvalidRentalPlayDuration = -2025, 400, "Invalid rental play duration";
    /// `contentKey` is not 32 characters long.
    ContentKeyFormat = -2027, 400, "Content encryption key must be 32 hex digits long";
    /// The customer's account is disabled.
    AccountDisabled = -2031, 403, "Service account disabled";
    /// `cookie` is longer than 32 characters or holds control characters.
    InvalidCookie = -2033, 400, "Invalid cookie";
    /// An output protection level is not an integer in 0..=999.
    OutputControlOutOfRange = -2034, 400, "Invalid output control, values out of range";
    /// A PlayReady-style parameter is present with an empty value.
    NoValue = -2035, 400, "No corresponding value specified";
    /// An `fpExtension` type is not 4 characters.
    ExtensionTypeLength = -2036, 400, "Extension type must be 4 characters";
    /// An `fpExtension` payload is not Base64.
    ExtensionPayloadEncoding = -2037, 400, "Extension payload must be Base64 encoded";
    /// `outputControlFlags` does not encode 4 bytes.
    OutputControlFlagsLength = -2040, 400, "OutputControlFlag must encode 4 bytes";
    /// `errorFormat` is neither `html` nor `json`.
    InvalidErrorFormat = -3004, 400, "Invalid error format specified";
    /// A token presented for redemption is not valid.
    InvalidToken = -4010, 403, "Invalid token";
    /// `kek` was given with neither `kid` nor `ek`.
    MissingKid = -4018, 400, "Missing kid";
    /// The key store has no key for the `kid` (or no KEK to open it).
    KeyStoreLookup = -4019, 400, "Could not get the content key from the key storage service";
    /// A hex `kid` is not 32 hex characters.
    KidHexFormat = -4020, 400, "kid must be 32 hex characters";
    /// A `^` kid is longer than 64 characters after the `^`.
    KidStringTooLong = -4021, 400, "kid must be at most 64 characters after the ^";
    /// A `^` kid is empty or holds control characters.
    InvalidKid = -4022, 400, "Invalid kid";
    /// `kek` or `ek` is malformed, or `ek` does not unwrap under `kek`.
    InvalidWrappedKey = -4024, 400, "Invalid encrypted key or kek";
    /// PlayReady: `unknownOutputBehavior` is not `Allow`, `Disallow` or
    /// `SDOnly`.
    InvalidUnknownOutputBehavior = -5001, 400, "Invalid unknown output behavior";
    /// PlayReady: the customer may not use PlayReady.
    PlayReadyDisabled = -5002, 403, "PlayReady option disabled";
    /// `generalFlags` is not one of the accepted values.
    InvalidGeneralFlags = -5003, 400, "Invalid general flags";
    /// PlayReady: one of the five output protection levels is missing.
    MissingOpl = -5006, 400, "Missing OPL value";
    /// PlayReady: `kek` and `contentKey` are both given.
    KekWithContentKey = -5007, 400, "Only one of kek or contentKey may be given";
    /// An `fpExtension` is malformed, or there are too many.
    InvalidFpExtension = -6001, 400, "Invalid FPExtension parameters specified";
    /// `iv` is missing or not 32 hex digits.
    InvalidIv = -6003, 400, "Invalid iv parameter specified";
    /// The key parameters contradict each other.
    InvalidKeyData = -6005, 400, "Invalid key data specified";
    /// The customer is not authorized for FairPlay.
    FairPlayNotAuthorized = -6006, 403, "Service not authorized for FairPlay support";
    /// `rentalDuration` is not a non-negative integer of seconds.
    InvalidRentalDuration = -6007, 400, "Invalid rental duration specified";
    /// The customer's FairPlay option is switched off.
    FairPlayDisabled = -6009, 403, "FairPlay option disabled";
    /// Widevine: `securityLevel` is missing.
    MissingSecurityLevel = -7003, 400, "Missing security level value";
    /// Widevine: `securityLevel` is not 1 to 5.
    InvalidSecurityLevel = -7004, 400, "Invalid security level value";
    /// Widevine: `hdcpOutputControl` is missing.
    MissingHdcpOutputControl = -7006, 400, "Missing HDCP output control value";
    /// Widevine: `licenseDuration` or `playbackDuration` is not a whole
    /// number of seconds within 0 to 4294967295.
    InvalidLicenseDuration = -7007, 400, "Invalid license duration";
    /// Widevine: a `wvExtension` is malformed, or there are too many.
    InvalidWvExtension = -7009, 400, "Invalid wvExtension parameters";
    /// Widevine: the customer may not use Widevine.
    WidevineDisabled = -7011, 403, "Widevine option disabled";
    /// fpgen: a parameter the reference gives no code for is malformed.
    InvalidParameter = -9400, 400, "Invalid parameter";
    /// fpgen: method other than GET or POST on the token path.
    MethodNotAllowed = -9405, 405, "Method not allowed";
    /// fpgen: the POST body is larger than the configured cap.
    BodyTooLarge = -9413, 413, "Request body too large";
    /// fpgen: a POST body that is not `application/x-www-form-urlencoded`.
    UnsupportedMediaType = -9415, 415, "Unsupported media type";
    /// fpgen: a `^` kid within 64 characters but over 255 bytes of UTF-8
    /// (a token holds the name behind a one-byte length).
    KidStringTooManyBytes = -9421, 400, "kid must be at most 255 bytes of UTF-8 after the ^";
    /// fpgen (Widevine): `hdcpOutputControl` is not 0 to 5 (the reference
    /// has no code for it).
    InvalidHdcpOutputControl = -9422, 400, "Invalid HDCP output control value";
    /// fpgen (Widevine): `trackType` is not 0 to 4.
    InvalidTrackType = -9423, 400, "Invalid track type";
    /// fpgen (Widevine): `contentId` is longer than 64 bytes or holds a
    /// character that is not visible ASCII.
    InvalidContentId = -9424, 400, "Invalid content id";
    /// fpgen (Widevine): an indexed key parameter (`kid.N`, …) has an index
    /// out of range, or a per-key setting names a key that is not given.
    InvalidKeyIndex = -9425, 400, "Invalid key index";
    /// fpgen (PlayReady): `minCertSecurityLevel` is not 150, 2000 or 3000.
    InvalidCertSecurityLevel = -9426, 400, "Invalid minimum certificate security level";
    /// fpgen: the filter could not mint (no configuration, no randomness,
    /// or the host failed while taking from a token budget).
    Internal = -9500, 500, "Internal error";
    /// fpgen: the customer's fleet budget cannot be asked (the rate-limit
    /// service is unreachable, errs, is too slow or answers nonsense) and
    /// `rate_limit_service.failure_mode` is `closed`.
    BudgetUnavailable = -9503, 503, "Token budget cannot be checked";
}

/// How errors are rendered (`errorFormat`, and the gate's `error_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ErrorFormat {
    #[default]
    Html,
    Json,
}

impl ErrorFormat {
    /// `html` or `json`, in any letter case.
    pub fn parse(text: &str) -> Option<Self> {
        if text.eq_ignore_ascii_case("html") {
            Some(Self::Html)
        } else if text.eq_ignore_ascii_case("json") {
            Some(Self::Json)
        } else {
            None
        }
    }
}

/// A failure to answer a request: a code from the table plus details for a
/// human. Details never contain key material; they may echo request text
/// (a parameter name, a format value), which the renderer escapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: Cow<'static, str>,
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    /// The message as clients see it: the table's message, then the details.
    pub fn message(&self) -> String {
        if self.detail.is_empty() {
            self.code.message().to_owned()
        } else {
            format!("{}: {}", self.code.message(), self.detail)
        }
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        Self {
            code,
            detail: Cow::Borrowed(""),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message(), self.code.code())
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_negative() {
        let codes: HashSet<i32> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(codes.len(), ErrorCode::ALL.len());
        assert!(codes.iter().all(|c| *c < 0));
    }

    /// What clients see for each code that is not a plain 400, and two
    /// that are, written out as docs/api.md's error table has them.
    const DOCUMENTED: [(ErrorCode, i32, u16, &str); 17] = [
        (
            ErrorCode::InvalidIpAddress,
            -2003,
            403,
            "Invalid IP address",
        ),
        (
            ErrorCode::AuthenticatorMissing,
            -2017,
            401,
            "Authentication token must be supplied",
        ),
        (
            ErrorCode::AuthenticatorInvalid,
            -2018,
            401,
            "Invalid authentication token",
        ),
        (
            ErrorCode::InsufficientTokens,
            -2019,
            429,
            "Insufficient tokens available",
        ),
        (
            ErrorCode::AccountDisabled,
            -2031,
            403,
            "Service account disabled",
        ),
        (ErrorCode::InvalidToken, -4010, 403, "Invalid token"),
        (
            ErrorCode::FairPlayNotAuthorized,
            -6006,
            403,
            "Service not authorized for FairPlay support",
        ),
        (
            ErrorCode::FairPlayDisabled,
            -6009,
            403,
            "FairPlay option disabled",
        ),
        (
            ErrorCode::WidevineDisabled,
            -7011,
            403,
            "Widevine option disabled",
        ),
        (
            ErrorCode::PlayReadyDisabled,
            -5002,
            403,
            "PlayReady option disabled",
        ),
        (
            ErrorCode::MethodNotAllowed,
            -9405,
            405,
            "Method not allowed",
        ),
        (
            ErrorCode::BodyTooLarge,
            -9413,
            413,
            "Request body too large",
        ),
        (
            ErrorCode::UnsupportedMediaType,
            -9415,
            415,
            "Unsupported media type",
        ),
        (ErrorCode::Internal, -9500, 500, "Internal error"),
        (
            ErrorCode::BudgetUnavailable,
            -9503,
            503,
            "Token budget cannot be checked",
        ),
        (
            ErrorCode::ContentKeyFormat,
            -2027,
            400,
            "Content encryption key must be 32 hex digits long",
        ),
        (
            ErrorCode::InvalidIv,
            -6003,
            400,
            "Invalid iv parameter specified",
        ),
    ];

    #[test]
    fn codes_statuses_and_messages_are_the_documented_ones() {
        for (code, number, status, message) in DOCUMENTED {
            assert_eq!(
                (code.code(), code.http_status(), code.message()),
                (number, status, message)
            );
        }
        let plain = ErrorCode::ALL
            .iter()
            .filter(|c| c.http_status() == 400)
            .count();
        assert_eq!(
            plain,
            ErrorCode::ALL.len() - 15,
            "a new code that is not 400 goes above"
        );
    }

    #[test]
    fn format_parse() {
        assert_eq!(ErrorFormat::parse("JSON"), Some(ErrorFormat::Json));
        assert_eq!(ErrorFormat::parse("html"), Some(ErrorFormat::Html));
        assert_eq!(ErrorFormat::parse("xml"), None);
    }

    #[test]
    fn authentication_failures_are_401() {
        assert_eq!(ErrorCode::AuthenticatorMissing.http_status(), 401);
        assert_eq!(ErrorCode::AuthenticatorInvalid.http_status(), 401);
        assert_eq!(ErrorCode::ContentKeyFormat.http_status(), 400);
    }

    #[test]
    fn message_appends_details() {
        let e = ApiError::new(ErrorCode::InvalidErrorFormat, "xml");
        assert_eq!(e.message(), "Invalid error format specified: xml");
        assert_eq!(
            ApiError::from(ErrorCode::InvalidIv).message(),
            "Invalid iv parameter specified"
        );
    }
}
