//! The API's error table in one place: every failure a request can meet,
//! its numeric code (from the ExpressPlay reference, or fpgen's own `-9xxx`
//! range where the reference has none), its HTTP status and its message.

use std::borrow::Cow;
use std::fmt;

/// One row of the error table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// -2002: `expirationTime` is malformed, in the past, or beyond 30 days.
    InvalidExpirationTime,
    /// -2003: the client address is not allowed for this customer.
    InvalidIpAddress,
    /// -2005: no usable content key (missing, or unwrapped to the wrong size).
    InvalidContentKey,
    /// -2008: `outputControlFlags` is not hexadecimal.
    InvalidOutputControlFlags,
    /// -2017: `customerAuthenticator` is missing.
    AuthenticatorMissing,
    /// -2018: `customerAuthenticator` is wrong or belongs to the other environment.
    AuthenticatorInvalid,
    /// -2019: the customer's token budget is spent.
    InsufficientTokens,
    /// -2021: `rightsType` (or a `rental.*` time) is not valid.
    InvalidRightsType,
    /// -2025: `rental.playDuration` is not valid.
    InvalidRentalPlayDuration,
    /// -2027: `contentKey` is not 32 hex digits.
    ContentKeyFormat,
    /// -2031: the customer's account is disabled.
    AccountDisabled,
    /// -2033: `cookie` is longer than 32 characters or holds control characters.
    InvalidCookie,
    /// -2034: an output protection level is not an integer in 0..=999.
    OutputControlOutOfRange,
    /// -2035: a PlayReady-style parameter is present with an empty value.
    NoValue,
    /// -2036: an `fpExtension` type is not 4 characters.
    ExtensionTypeLength,
    /// -2037: an `fpExtension` payload is not Base64.
    ExtensionPayloadEncoding,
    /// -2040: `outputControlFlags` does not encode 4 bytes.
    OutputControlFlagsLength,
    /// -3004: `errorFormat` is neither `html` nor `json`.
    InvalidErrorFormat,
    /// -4010: a token presented for redemption is not valid.
    InvalidToken,
    /// -4018: `kek` was given with neither `kid` nor `ek`.
    MissingKid,
    /// -4019: the key store has no key for the `kid` (or no KEK to open it).
    KeyStoreLookup,
    /// -4020: a hex `kid` is not 32 hex characters.
    KidHexFormat,
    /// -4021: a `^` kid is longer than 64 characters after the `^`.
    KidStringTooLong,
    /// -4022: a `^` kid is empty or holds control characters.
    InvalidKid,
    /// -4024: `kek` or `ek` is malformed, or `ek` does not unwrap under `kek`.
    InvalidWrappedKey,
    /// -5003: `generalFlags` is not one of the accepted values.
    InvalidGeneralFlags,
    /// -6001: an `fpExtension` is malformed, or there are too many.
    InvalidFpExtension,
    /// -6003: `iv` is missing or not 32 hex digits.
    InvalidIv,
    /// -6005: the key parameters contradict each other.
    InvalidKeyData,
    /// -6006: the customer is not authorized for FairPlay.
    FairPlayNotAuthorized,
    /// -6007: `rentalDuration` is not a non-negative integer of seconds.
    InvalidRentalDuration,
    /// -6009: the customer's FairPlay option is switched off.
    FairPlayDisabled,
    /// -9400 (fpgen): a parameter the reference gives no code for is malformed.
    InvalidParameter,
    /// -9405 (fpgen): method other than GET or POST on the token path.
    MethodNotAllowed,
    /// -9413 (fpgen): the POST body is larger than the configured cap.
    BodyTooLarge,
    /// -9415 (fpgen): a POST body that is not `application/x-www-form-urlencoded`.
    UnsupportedMediaType,
    /// -9500 (fpgen): the filter could not mint (no randomness from the host).
    Internal,
}

impl ErrorCode {
    /// Every code, in table order (used by the docs test and the stats).
    pub const ALL: [ErrorCode; 37] = [
        Self::InvalidExpirationTime,
        Self::InvalidIpAddress,
        Self::InvalidContentKey,
        Self::InvalidOutputControlFlags,
        Self::AuthenticatorMissing,
        Self::AuthenticatorInvalid,
        Self::InsufficientTokens,
        Self::InvalidRightsType,
        Self::InvalidRentalPlayDuration,
        Self::ContentKeyFormat,
        Self::AccountDisabled,
        Self::InvalidCookie,
        Self::OutputControlOutOfRange,
        Self::NoValue,
        Self::ExtensionTypeLength,
        Self::ExtensionPayloadEncoding,
        Self::OutputControlFlagsLength,
        Self::InvalidErrorFormat,
        Self::InvalidToken,
        Self::MissingKid,
        Self::KeyStoreLookup,
        Self::KidHexFormat,
        Self::KidStringTooLong,
        Self::InvalidKid,
        Self::InvalidWrappedKey,
        Self::InvalidGeneralFlags,
        Self::InvalidFpExtension,
        Self::InvalidIv,
        Self::InvalidKeyData,
        Self::FairPlayNotAuthorized,
        Self::InvalidRentalDuration,
        Self::FairPlayDisabled,
        Self::InvalidParameter,
        Self::MethodNotAllowed,
        Self::BodyTooLarge,
        Self::UnsupportedMediaType,
        Self::Internal,
    ];

    /// The numeric code clients see.
    pub const fn code(self) -> i32 {
        match self {
            Self::InvalidExpirationTime => -2002,
            Self::InvalidIpAddress => -2003,
            Self::InvalidContentKey => -2005,
            Self::InvalidOutputControlFlags => -2008,
            Self::AuthenticatorMissing => -2017,
            Self::AuthenticatorInvalid => -2018,
            Self::InsufficientTokens => -2019,
            Self::InvalidRightsType => -2021,
            Self::InvalidRentalPlayDuration => -2025,
            Self::ContentKeyFormat => -2027,
            Self::AccountDisabled => -2031,
            Self::InvalidCookie => -2033,
            Self::OutputControlOutOfRange => -2034,
            Self::NoValue => -2035,
            Self::ExtensionTypeLength => -2036,
            Self::ExtensionPayloadEncoding => -2037,
            Self::OutputControlFlagsLength => -2040,
            Self::InvalidErrorFormat => -3004,
            Self::InvalidToken => -4010,
            Self::MissingKid => -4018,
            Self::KeyStoreLookup => -4019,
            Self::KidHexFormat => -4020,
            Self::KidStringTooLong => -4021,
            Self::InvalidKid => -4022,
            Self::InvalidWrappedKey => -4024,
            Self::InvalidGeneralFlags => -5003,
            Self::InvalidFpExtension => -6001,
            Self::InvalidIv => -6003,
            Self::InvalidKeyData => -6005,
            Self::FairPlayNotAuthorized => -6006,
            Self::InvalidRentalDuration => -6007,
            Self::FairPlayDisabled => -6009,
            Self::InvalidParameter => -9400,
            Self::MethodNotAllowed => -9405,
            Self::BodyTooLarge => -9413,
            Self::UnsupportedMediaType => -9415,
            Self::Internal => -9500,
        }
    }

    /// The HTTP status of the response that carries this code.
    pub const fn http_status(self) -> u16 {
        match self {
            Self::AuthenticatorMissing | Self::AuthenticatorInvalid => 401,
            Self::InvalidIpAddress
            | Self::AccountDisabled
            | Self::FairPlayNotAuthorized
            | Self::FairPlayDisabled
            | Self::InvalidToken => 403,
            Self::MethodNotAllowed => 405,
            Self::BodyTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::InsufficientTokens => 429,
            Self::Internal => 500,
            _ => 400,
        }
    }

    /// The message of the reference table (English), without details.
    pub const fn message(self) -> &'static str {
        match self {
            Self::InvalidExpirationTime => "Invalid token expiration time",
            Self::InvalidIpAddress => "Invalid IP address",
            Self::InvalidContentKey => "Invalid content encryption key",
            Self::InvalidOutputControlFlags => "Invalid output control flags specified",
            Self::AuthenticatorMissing => "Authentication token must be supplied",
            Self::AuthenticatorInvalid => "Invalid authentication token",
            Self::InsufficientTokens => "Insufficient tokens available",
            Self::InvalidRightsType => "Invalid rights type",
            Self::InvalidRentalPlayDuration => "Invalid rental play duration",
            Self::ContentKeyFormat => "Content encryption key must be 32 hex digits long",
            Self::AccountDisabled => "Service account disabled",
            Self::InvalidCookie => "Invalid cookie",
            Self::OutputControlOutOfRange => "Invalid output control, values out of range",
            Self::NoValue => "No corresponding value specified",
            Self::ExtensionTypeLength => "Extension type must be 4 characters",
            Self::ExtensionPayloadEncoding => "Extension payload must be Base64 encoded",
            Self::OutputControlFlagsLength => "OutputControlFlag must encode 4 bytes",
            Self::InvalidErrorFormat => "Invalid error format specified",
            Self::InvalidToken => "Invalid token",
            Self::MissingKid => "Missing kid",
            Self::KeyStoreLookup => "Could not get the content key from the key storage service",
            Self::KidHexFormat => "kid must be 32 hex characters",
            Self::KidStringTooLong => "kid must be at most 64 characters after the ^",
            Self::InvalidKid => "Invalid kid",
            Self::InvalidWrappedKey => "Invalid encrypted key or kek",
            Self::InvalidGeneralFlags => "Invalid general flags",
            Self::InvalidFpExtension => "Invalid FPExtension parameters specified",
            Self::InvalidIv => "Invalid iv parameter specified",
            Self::InvalidKeyData => "Invalid key data specified",
            Self::FairPlayNotAuthorized => "Service not authorized for FairPlay support",
            Self::InvalidRentalDuration => "Invalid rental duration specified",
            Self::FairPlayDisabled => "FairPlay option disabled",
            Self::InvalidParameter => "Invalid parameter",
            Self::MethodNotAllowed => "Method not allowed",
            Self::BodyTooLarge => "Request body too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::Internal => "Internal error",
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
