//! Validation: from decoded parameters to the licence data of a token, one
//! rule of the API at a time, each failure with its documented code. This
//! is where domain errors (a kid's [`KidError`], a hex value's
//! [`HexProblem`]) become API codes.

use crate::config::{Config, Customer};
use crate::error::{ApiError, ErrorCode};
use crate::ids::{HexProblem, Kid, KidError};
use crate::licence::{
    FpExtension, Licence, LicenceData, OutputLevels, PlayReadyKey, PlayReadyLicence, Rights,
    TrackType, UnknownOutput, WidevineKey, WidevineLicence, CERT_SECURITY_LEVELS,
};
use crate::params::{Param, Params, PlayReady};
use crate::secret::{ContentKey, Kek};
use crate::token::{
    MAX_CONTENT_ID_BYTES, MAX_EXTENSIONS, MAX_EXTENSION_PAYLOAD, MAX_WIDEVINE_KEYS,
};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The longest `cookie`, in characters.
pub use crate::token::MAX_COOKIE_CHARS;
/// The default and the longest token lifetime: 30 days (the token format's
/// own limit, checked again when a token is opened).
pub use crate::token::MAX_LIFETIME_SECONDS;

/// Standard Base64 with or without padding.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A validated request: the licence data, and how to render the URL.
#[derive(Debug)]
pub struct Validated {
    pub licence: LicenceData,
    pub use_https: bool,
}

/// Checks `customerAuthenticator` (`<customerId>,<secret>`) against the
/// configured SHA-256 digests, in constant time, and the environment.
pub fn authenticate<'c>(config: &'c Config, params: &Params<'_>) -> Result<&'c Customer, ApiError> {
    let value = match params.get(Param::CustomerAuthenticator) {
        None | Some("") => return Err(ErrorCode::AuthenticatorMissing.into()),
        Some(v) => v,
    };
    let Some((id, secret)) = value.split_once(',') else {
        return Err(ApiError::new(
            ErrorCode::AuthenticatorInvalid,
            "expected <customerId>,<secret>",
        ));
    };
    let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    let customer = config.customers.get(id);
    // Compare even for an unknown id, so that timing does not tell ids apart.
    let expected = customer.map_or([0u8; 32], |c| c.authenticator_sha256);
    let matches = bool::from(digest.ct_eq(&expected));
    match customer {
        Some(c) if matches && c.environment == config.environment => Ok(c),
        Some(c) if matches => Err(ApiError::new(
            ErrorCode::AuthenticatorInvalid,
            format!(
                "this is a {} authenticator; this service is {}",
                c.environment.as_str(),
                config.environment.as_str()
            ),
        )),
        _ => Err(ErrorCode::AuthenticatorInvalid.into()),
    }
}

/// Validates every parameter of an authenticated request.
pub fn validate(params: &Params<'_>, customer: &Customer, now: i64) -> Result<Validated, ApiError> {
    validate_playready(params)?;
    let use_https = parse_use_https(params.get(Param::UseHttps))?;
    let kid = params.get(Param::Kid).map(parse_kid).transpose()?;
    let content_key = content_key(params, kid.as_ref(), customer)?;
    let iv = parse_iv(params.get(Param::Iv))?;
    let general_flags = parse_general_flags(params.get(Param::GeneralFlags))?;
    let rental_duration = match params.get(Param::RentalDuration) {
        None => 0,
        Some(text) => parse_u32(text).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRentalDuration,
                "expected a whole number of seconds (0 to 4294967295)",
            )
        })?,
    };
    let extensions = parse_extensions(&params.fp_extensions)?;
    let (expires_at, cookie) = expiry_and_cookie(params, now)?;
    Ok(Validated {
        licence: LicenceData {
            environment: customer.environment,
            customer_id: customer.id.clone(),
            issued_at: now,
            expires_at,
            content_key,
            iv,
            kid,
            rental_duration,
            general_flags,
            extensions,
            cookie,
        },
        use_https,
    })
}

/// Validates every parameter of an authenticated request to `drm`'s
/// endpoint: the licence data, and whether its URL is forced to https.
pub fn validate_for(
    drm: crate::licence::Drm,
    params: &Params<'_>,
    customer: &Customer,
    now: i64,
) -> Result<(Licence, bool), ApiError> {
    match drm {
        crate::licence::Drm::FairPlay => {
            validate(params, customer, now).map(|v| (Licence::FairPlay(v.licence), v.use_https))
        }
        crate::licence::Drm::Widevine => validate_widevine(params, customer, now)
            .map(|(licence, https)| (Licence::Widevine(licence), https)),
        crate::licence::Drm::PlayReady => validate_playready_request(params, customer, now)
            .map(|(licence, https)| (Licence::PlayReady(licence), https)),
    }
}

/// Validates a PlayReady token request (see `docs/api.md`), one rule at a
/// time in this order: the keys, the rights and rental times, the five
/// output protection levels, the output behaviour and flags, the
/// extension, the general flags, then the rules every endpoint shares.
pub fn validate_playready_request(
    params: &Params<'_>,
    customer: &Customer,
    now: i64,
) -> Result<(PlayReadyLicence, bool), ApiError> {
    let mut keys = vec![first_playready_key(params, customer)?];
    playready_indexed_keys(params, customer, &mut keys)?;
    let rights = parse_rights(params, now)?;
    let output_levels = parse_output_levels(params)?;
    let unknown_output = match params.get(Param::UnknownOutputBehavior) {
        None => None,
        Some(text) => Some(UnknownOutput::parse(text).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidUnknownOutputBehavior,
                "expected Allow, Disallow or SDOnly",
            )
        })?),
    };
    let output_control_flags = params
        .get(Param::OutputControlFlags)
        .map(parse_output_control_flags)
        .transpose()?;
    let extension = parse_playready_extension(params)?;
    let general_flags = parse_general_flags(params.get(Param::GeneralFlags))?;
    if matches!(rights, Rights::Rental { .. }) && general_flags & 1 == 0 {
        return Err(ApiError::new(
            ErrorCode::InvalidGeneralFlags,
            "a rental must be persistent: generalFlags=00000001",
        ));
    }
    let use_https = parse_use_https(params.get(Param::UseHttps))?;
    let (expires_at, cookie) = expiry_and_cookie(params, now)?;
    let licence = PlayReadyLicence {
        environment: customer.environment,
        customer_id: customer.id.clone(),
        issued_at: now,
        expires_at,
        keys,
        rights,
        output_levels,
        unknown_output,
        output_control_flags,
        general_flags,
        extension,
        cookie,
    };
    Ok((licence, use_https))
}

/// The keys of PlayReady's indexed parameters (`kid.N`, `contentKey.N`,
/// `minCertSecurityLevel.N`), appended to `keys` in index order, by
/// Widevine's rules for indexed keys.
fn playready_indexed_keys(
    params: &Params<'_>,
    customer: &Customer,
    keys: &mut Vec<PlayReadyKey>,
) -> Result<(), ApiError> {
    let slots = indexed_slots(params, crate::licence::Drm::PlayReady)?;
    let kek = params.get(Param::Kek).map(parse_kek).transpose()?;
    let kek = kek.as_ref().or(customer.kek.as_ref());
    for (i, row) in slots.iter().enumerate() {
        let [kid, key, _, _, _, level] = *row;
        let n = i + 1;
        let repeats = |k: &Kid| keys.iter().any(|before| &before.kid == k);
        let Some((kid, content_key)) =
            indexed_kid_and_key(n, row, (kid, key), kek, customer, repeats)?
        else {
            continue;
        };
        let min_cert_security_level = level
            .map(|t| parse_cert_level(t, &format!("minCertSecurityLevel.{n}")))
            .transpose()?;
        keys.push(PlayReadyKey {
            kid,
            content_key,
            min_cert_security_level,
        });
    }
    Ok(())
}

/// Key 0 of a PlayReady request: `kid` (required), its content key by the
/// FairPlay rules except that `kek` with `contentKey` is -5007, and
/// `minCertSecurityLevel`.
fn first_playready_key(params: &Params<'_>, customer: &Customer) -> Result<PlayReadyKey, ApiError> {
    let kid = match params.get(Param::Kid) {
        None | Some("") => {
            return Err(ApiError::new(ErrorCode::MissingKid, "kid is required"));
        }
        Some(text) => parse_kid(text)?,
    };
    if params.get(Param::Kek).is_some() && params.get(Param::ContentKey).is_some() {
        return Err(ErrorCode::KekWithContentKey.into());
    }
    let by_kid = params.get(Param::Ek).is_none().then_some(&kid);
    let content_key = content_key(params, by_kid, customer)?;
    let min_cert_security_level = params
        .get(Param::MinCertSecurityLevel)
        .map(|t| parse_cert_level(t, "minCertSecurityLevel"))
        .transpose()?;
    Ok(PlayReadyKey {
        kid,
        content_key,
        min_cert_security_level,
    })
}

/// `minCertSecurityLevel`: 150, 2000 or 3000.
fn parse_cert_level(text: &str, name: &str) -> Result<u16, ApiError> {
    parse_u32(text)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| CERT_SECURITY_LEVELS.contains(n))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidCertSecurityLevel,
                format!("{name}: expected 150, 2000 or 3000"),
            )
        })
}

/// `rightsType` (required) and the rental times, which only a `Rental`
/// may have (an empty one is none, as an empty `rightsType` is).
fn parse_rights(params: &Params<'_>, now: i64) -> Result<Rights, ApiError> {
    let end = params
        .get(Param::RentalPeriodEndTime)
        .filter(|t| !t.is_empty());
    let play = params
        .get(Param::RentalPlayDuration)
        .filter(|t| !t.is_empty());
    match params.get(Param::RightsType) {
        None | Some("") => Err(ErrorCode::MissingRightsType.into()),
        Some("BuyToOwn") => match (end, play) {
            (None, None) => Ok(Rights::BuyToOwn),
            (Some(_), _) => Err(ApiError::new(
                ErrorCode::InvalidRightsType,
                "rental.periodEndTime is only valid with rightsType=Rental",
            )),
            (None, Some(_)) => Err(ApiError::new(
                ErrorCode::InvalidRightsType,
                "rental.playDuration is only valid with rightsType=Rental",
            )),
        },
        Some("Rental") => {
            let end = end.ok_or(ErrorCode::MissingRentalPeriodEndTime)?;
            let period_end = parse_time(end, now).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidRentalPeriodEndTime,
                    "expected an RFC 3339 time ending in Z, or +seconds",
                )
            })?;
            if period_end <= now {
                return Err(ApiError::new(
                    ErrorCode::InvalidRentalPeriodEndTime,
                    "the time is in the past",
                ));
            }
            let play_duration = play
                .map(|text| {
                    parse_u32(text).ok_or_else(|| {
                        ApiError::new(
                            ErrorCode::InvalidRentalPlayDuration,
                            "expected a whole number of seconds (0 to 4294967295)",
                        )
                    })
                })
                .transpose()?;
            Ok(Rights::Rental {
                period_end,
                play_duration,
            })
        }
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidRightsType,
            "expected BuyToOwn or Rental",
        )),
    }
}

/// The five output protection levels, each required (-5006) and 0 to 999
/// (-2034), each error naming its parameter.
fn parse_output_levels(params: &Params<'_>) -> Result<OutputLevels, ApiError> {
    let level = |param: Param| -> Result<u16, ApiError> {
        match params.get(param) {
            None | Some("") => Err(ApiError::new(ErrorCode::MissingOpl, param.name())),
            Some(text) => parse_u32(text)
                .filter(|n| *n <= 999)
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::OutputControlOutOfRange,
                        format!("{}: expected an integer from 0 to 999", param.name()),
                    )
                }),
        }
    };
    Ok(OutputLevels {
        analog_video: level(Param::AnalogVideoOpl)?,
        compressed_digital_audio: level(Param::CompressedDigitalAudioOpl)?,
        compressed_digital_video: level(Param::CompressedDigitalVideoOpl)?,
        uncompressed_digital_audio: level(Param::UncompressedDigitalAudioOpl)?,
        uncompressed_digital_video: level(Param::UncompressedDigitalVideoOpl)?,
    })
}

/// `outputControlFlags`: 8 hex digits (4 bytes).
fn parse_output_control_flags(text: &str) -> Result<u32, ApiError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::new(
            ErrorCode::InvalidOutputControlFlags,
            "expected 8 hex digits",
        ));
    }
    if text.len() != 8 {
        return Err(ApiError::new(
            ErrorCode::OutputControlFlagsLength,
            "expected 8 hex digits",
        ));
    }
    u32::from_str_radix(text, 16).map_err(|_| ErrorCode::InvalidOutputControlFlags.into())
}

/// `extensionType` and `extensionPayload`: both or neither.
fn parse_playready_extension(params: &Params<'_>) -> Result<Option<FpExtension>, ApiError> {
    match (
        params.get(Param::ExtensionType),
        params.get(Param::ExtensionPayload),
    ) {
        (None, None) => Ok(None),
        (Some(kind), Some(payload)) => {
            parse_extension_parts(kind, payload, ErrorCode::ExtensionPayloadEncoding).map(Some)
        }
        (Some(_), None) => Err(ApiError::new(
            ErrorCode::ExtensionPayloadEncoding,
            "extensionPayload is required with extensionType",
        )),
        (None, Some(_)) => Err(ApiError::new(
            ErrorCode::ExtensionTypeLength,
            "extensionType is required with extensionPayload",
        )),
    }
}

/// Validates a Widevine token request (see `docs/api.md`).
pub fn validate_widevine(
    params: &Params<'_>,
    customer: &Customer,
    now: i64,
) -> Result<(WidevineLicence, bool), ApiError> {
    validate_playready(params)?;
    let use_https = parse_use_https(params.get(Param::UseHttps))?;
    let mut keys = vec![first_widevine_key(params, customer)?];
    indexed_keys(params, customer, &mut keys)?;
    let duration = |param: Param| -> Result<u32, ApiError> {
        params.get(param).map_or(Ok(0), |text| {
            parse_u32(text).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidLicenseDuration,
                    format!(
                        "{}: expected a whole number of seconds (0 to 4294967295)",
                        param.name()
                    ),
                )
            })
        })
    };
    let license_duration = duration(Param::LicenseDuration)?;
    let playback_duration = duration(Param::PlaybackDuration)?;
    let general_flags = parse_general_flags(params.get(Param::GeneralFlags))?;
    let extensions = parse_extensions_as(&params.wv_extensions, ErrorCode::InvalidWvExtension)?;
    let (expires_at, cookie) = expiry_and_cookie(params, now)?;
    let content_id = match params.get(Param::ContentId) {
        None | Some("") => None,
        Some(text) => Some(parse_content_id(text)?),
    };
    let licence = WidevineLicence {
        environment: customer.environment,
        customer_id: customer.id.clone(),
        issued_at: now,
        expires_at,
        keys,
        license_duration,
        playback_duration,
        general_flags,
        content_id,
        extensions,
        cookie,
    };
    Ok((licence, use_https))
}

/// Key 0 of a Widevine request: `kid` (required), its content key by the
/// FairPlay rules, `securityLevel` and `hdcpOutputControl` (required),
/// `trackType`.
fn first_widevine_key(params: &Params<'_>, customer: &Customer) -> Result<WidevineKey, ApiError> {
    let kid = match params.get(Param::Kid) {
        None | Some("") => {
            return Err(ApiError::new(ErrorCode::MissingKid, "kid is required"));
        }
        Some(text) => parse_kid(text)?,
    };
    // With `kek`+`ek`, the key comes wrapped and the kid only names it
    // (FairPlay's rule refuses kid and ek together: there, a kid with a
    // kek selects the key store).
    let by_kid = params.get(Param::Ek).is_none().then_some(&kid);
    let content_key = content_key(params, by_kid, customer)?;
    let security_level = match params.get(Param::SecurityLevel) {
        None | Some("") => return Err(ErrorCode::MissingSecurityLevel.into()),
        Some(text) => parse_security_level(text, "securityLevel")?,
    };
    let hdcp_output_control = match params.get(Param::HdcpOutputControl) {
        None | Some("") => return Err(ErrorCode::MissingHdcpOutputControl.into()),
        Some(text) => parse_hdcp(text, "hdcpOutputControl")?,
    };
    let track_type = params
        .get(Param::TrackType)
        .map(|t| parse_track_type(t, "trackType"))
        .transpose()?;
    Ok(WidevineKey {
        kid,
        content_key,
        security_level,
        hdcp_output_control,
        track_type,
    })
}

/// `securityLevel`: 1 to 5.
fn parse_security_level(text: &str, name: &str) -> Result<u8, ApiError> {
    parse_small(text, 1..=5).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidSecurityLevel,
            format!("{name}: expected 1 to 5"),
        )
    })
}

/// `hdcpOutputControl`: 0 to 5.
fn parse_hdcp(text: &str, name: &str) -> Result<u8, ApiError> {
    parse_small(text, 0..=5).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidHdcpOutputControl,
            format!("{name}: expected 0 to 5"),
        )
    })
}

/// A decimal number of ASCII digits within `range`.
fn parse_small(text: &str, range: std::ops::RangeInclusive<u8>) -> Option<u8> {
    parse_u32(text)
        .and_then(|n| u8::try_from(n).ok())
        .filter(|n| range.contains(n))
}

/// `trackType`: 0 (SD) to 4 (UHD2).
fn parse_track_type(text: &str, name: &str) -> Result<TrackType, ApiError> {
    parse_small(text, 0..=4)
        .and_then(TrackType::from_number)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidTrackType,
                format!("{name}: expected 0 (SD), 1 (HD), 2 (AUDIO), 3 (UHD1) or 4 (UHD2)"),
            )
        })
}

/// `contentId`: 1 to 64 bytes of printable ASCII (space included).
fn parse_content_id(text: &str) -> Result<String, ApiError> {
    if text.len() > MAX_CONTENT_ID_BYTES || !text.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(ApiError::new(
            ErrorCode::InvalidContentId,
            format!("expected at most {MAX_CONTENT_ID_BYTES} printable ASCII characters"),
        ));
    }
    Ok(text.to_owned())
}

/// The keys of the indexed parameters (`kid.N`, `contentKey.N`,
/// `securityLevel.N`, `hdcpOutputControl.N`, `trackType.N`; N from 1 to
/// 7), appended to `keys` in index order after key 0. Each key has its
/// `kid.N`; its content key is `contentKey.N`, or the key store's (opened
/// with the request's `kek` or the customer's); its security level and
/// HDCP default to key 0's. Every error names the parameter as sent.
fn indexed_keys(
    params: &Params<'_>,
    customer: &Customer,
    keys: &mut Vec<WidevineKey>,
) -> Result<(), ApiError> {
    let slots = indexed_slots(params, crate::licence::Drm::Widevine)?;
    let first = keys
        .first()
        .map(|k| (k.security_level, k.hdcp_output_control));
    let defaults = first.ok_or(ErrorCode::Internal)?;
    let kek = params.get(Param::Kek).map(parse_kek).transpose()?;
    let kek = kek.as_ref().or(customer.kek.as_ref());
    for (i, row) in slots.iter().enumerate() {
        if let Some(key) = indexed_key(i + 1, row, kek, customer, defaults, keys)? {
            keys.push(key);
        }
    }
    Ok(())
}

/// The most indexed keys: `kid.1` to `kid.7`.
const LAST_INDEX: usize = MAX_WIDEVINE_KEYS - 1;

/// The indexed parameters by index (1 to [`LAST_INDEX`], as rows) and
/// parameter (in [`crate::params::INDEXED`]'s order, as columns).
type Slots<'p> = [[Option<&'p str>; crate::params::INDEXED.len()]; LAST_INDEX];

/// The indexed parameters `drm`'s endpoint reads, in their slots (the
/// others are ignored, as unknown parameters are): an index out of range,
/// a parameter given twice, or too many is refused.
fn indexed_slots<'p>(
    params: &'p Params<'_>,
    drm: crate::licence::Drm,
) -> Result<Slots<'p>, ApiError> {
    if params.too_many_indexed {
        return Err(ApiError::new(
            ErrorCode::InvalidKeyIndex,
            format!(
                "at most {} indexed key parameters",
                crate::params::MAX_INDEXED
            ),
        ));
    }
    let mut slots: Slots<'p> = Default::default();
    for item in params
        .indexed
        .iter()
        .filter(|i| i.param.read_by().includes(drm))
    {
        let name = item.param.name();
        let index = item
            .index
            .map(usize::from)
            .filter(|i| (1..=LAST_INDEX).contains(i))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidKeyIndex,
                    format!("{name}.N: N must be 1 to {LAST_INDEX}"),
                )
            })?;
        let column = crate::params::INDEXED
            .iter()
            .position(|p| *p == item.param)
            .ok_or(ErrorCode::Internal)?;
        let slot = slots
            .get_mut(index - 1)
            .and_then(|row| row.get_mut(column))
            .ok_or(ErrorCode::Internal)?;
        if slot.is_some() {
            return Err(ApiError::new(
                item.param.invalid_code(),
                format!("{name}.{index} is given more than once"),
            ));
        }
        if item.malformed {
            return Err(ApiError::new(
                item.param.invalid_code(),
                format!("{name}.{index} holds a malformed percent escape"),
            ));
        }
        *slot = Some(&item.value);
    }
    Ok(slots)
}

/// Key `n` from its row of indexed parameters; `None` when none is given.
/// Its kid must be none of `before`'s.
fn indexed_key(
    n: usize,
    row: &[Option<&str>; crate::params::INDEXED.len()],
    kek: Option<&Kek>,
    customer: &Customer,
    (level0, hdcp0): (u8, u8),
    before: &[WidevineKey],
) -> Result<Option<WidevineKey>, ApiError> {
    let [kid, key, level, hdcp, track, _] = *row;
    let repeats = |k: &Kid| before.iter().any(|b| &b.kid == k);
    let Some((kid, content_key)) = indexed_kid_and_key(n, row, (kid, key), kek, customer, repeats)?
    else {
        return Ok(None);
    };
    Ok(Some(WidevineKey {
        kid,
        content_key,
        security_level: level
            .map(|t| parse_security_level(t, &format!("securityLevel.{n}")))
            .transpose()?
            .unwrap_or(level0),
        hdcp_output_control: hdcp
            .map(|t| parse_hdcp(t, &format!("hdcpOutputControl.{n}")))
            .transpose()?
            .unwrap_or(hdcp0),
        track_type: track
            .map(|t| parse_track_type(t, &format!("trackType.{n}")))
            .transpose()?,
    }))
}

/// The kid and content key of indexed key `n` (`kid.N`, and
/// `contentKey.N` or the key store's): `None` when its row is empty, an
/// error when it has settings but no `kid.N`, or a kid `repeats` says an
/// earlier key has.
fn indexed_kid_and_key(
    n: usize,
    row: &[Option<&str>; crate::params::INDEXED.len()],
    (kid, key): (Option<&str>, Option<&str>),
    kek: Option<&Kek>,
    customer: &Customer,
    repeats: impl Fn(&Kid) -> bool,
) -> Result<Option<(Kid, ContentKey)>, ApiError> {
    let Some(kid_text) = kid else {
        let given = row
            .iter()
            .zip(crate::params::INDEXED)
            .find(|(v, _)| v.is_some());
        return match given {
            Some((_, p)) => Err(ApiError::new(
                ErrorCode::InvalidKeyIndex,
                format!("{}.{n} is given without kid.{n}", p.name()),
            )),
            None => Ok(None),
        };
    };
    let named = |e: ApiError, param: &str| {
        let what = if e.detail.is_empty() {
            e.code.message().into()
        } else {
            e.detail
        };
        ApiError::new(e.code, format!("{param}.{n}: {what}"))
    };
    let kid = parse_kid(kid_text).map_err(|e| named(e, "kid"))?;
    if repeats(&kid) {
        return Err(ApiError::new(
            ErrorCode::InvalidKeyData,
            format!("kid.{n} repeats the kid of another key"),
        ));
    }
    let content_key = match (key, kek) {
        (Some(text), _) => parse_content_key(text).map_err(|e| named(e, "contentKey"))?,
        (None, Some(kek)) => from_key_store(customer, &kid, kek).map_err(|e| named(e, "kid"))?,
        (None, None) => {
            return Err(ApiError::new(
                ErrorCode::InvalidContentKey,
                format!("contentKey.{n} is required (or a kek for the key store)"),
            ))
        }
    };
    Ok(Some((kid, content_key)))
}

/// `expirationTime` (default: the longest lifetime) and `cookie` (empty:
/// none), as every endpoint reads them.
fn expiry_and_cookie(params: &Params<'_>, now: i64) -> Result<(i64, Option<String>), ApiError> {
    let expires_at = match params.get(Param::ExpirationTime) {
        None => now.saturating_add(MAX_LIFETIME_SECONDS),
        Some(text) => parse_expiration(text, now)?,
    };
    let cookie = match params.get(Param::Cookie) {
        None | Some("") => None,
        Some(c) => Some(parse_cookie(c)?),
    };
    Ok((expires_at, cookie))
}

/// `useHttps`: `true` or `false` in any letter case; absent is `false`.
fn parse_use_https(value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "useHttps must be true or false",
        )),
    }
}

/// `kid`, with each [`KidError`] as its API code.
pub fn parse_kid(text: &str) -> Result<Kid, ApiError> {
    Kid::parse(text).map_err(|e| {
        let code = match e {
            KidError::Hex(_) => ErrorCode::KidHexFormat,
            KidError::TooLong(_) => ErrorCode::KidStringTooLong,
            KidError::TooManyBytes(_) => ErrorCode::KidStringTooManyBytes,
            KidError::Empty | KidError::Control => ErrorCode::InvalidKid,
        };
        ApiError::new(code, e.to_string())
    })
}

/// `iv`: required, 32 hex digits.
fn parse_iv(value: Option<&str>) -> Result<[u8; 16], ApiError> {
    let text = value.ok_or_else(|| ApiError::new(ErrorCode::InvalidIv, "iv is required"))?;
    parse_hex16(text).map_err(|problem| {
        ApiError::new(
            ErrorCode::InvalidIv,
            format!("expected 32 hex digits, {problem}"),
        )
    })
}

/// `generalFlags`: the values the reference accepts.
fn parse_general_flags(value: Option<&str>) -> Result<u32, ApiError> {
    match value {
        None | Some("00000000") | Some("0000") => Ok(0),
        Some("00000001") => Ok(1),
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidGeneralFlags,
            "expected 00000000, 00000001 or 0000",
        )),
    }
}

fn parse_extensions(texts: &[std::borrow::Cow<'_, str>]) -> Result<Vec<FpExtension>, ApiError> {
    parse_extensions_as(texts, ErrorCode::InvalidFpExtension)
}

/// `fpExtension`s or `wvExtension`s: `invalid` is their parameter's code
/// (the type and payload codes are shared).
fn parse_extensions_as(
    texts: &[std::borrow::Cow<'_, str>],
    invalid: ErrorCode,
) -> Result<Vec<FpExtension>, ApiError> {
    let extensions = texts
        .iter()
        .map(|e| parse_extension(e, invalid))
        .collect::<Result<Vec<_>, _>>()?;
    if extensions.len() > MAX_EXTENSIONS {
        return Err(ApiError::new(
            invalid,
            format!("at most {MAX_EXTENSIONS} are allowed"),
        ));
    }
    Ok(extensions)
}

/// Where a request's content key comes from.
enum KeySource<'a> {
    /// `contentKey`, in the clear.
    Clear(&'a str),
    /// `ek`, wrapped with the request's `kek`.
    Wrapped { kek: Kek, ek: &'a str },
    /// The customer's key store, by `kid`, opened with the request's `kek`
    /// or (when it has none) the customer's own.
    Store { kid: &'a Kid, kek: Option<Kek> },
}

/// Decides the key source from the key parameters present. First the
/// combinations the API refuses, each its own rule; then, with those gone,
/// every remaining combination names one source.
fn key_source<'a>(params: &'a Params<'_>, kid: Option<&'a Kid>) -> Result<KeySource<'a>, ApiError> {
    let clear = params.get(Param::ContentKey);
    let ek = params.get(Param::Ek);
    let kek = params.get(Param::Kek).map(parse_kek).transpose()?;
    let conflict = |detail: &'static str| Err(ApiError::new(ErrorCode::InvalidKeyData, detail));
    if ek.is_some() && kek.is_none() {
        return conflict("ek requires kek");
    }
    if kek.is_some() && clear.is_some() {
        return conflict("give contentKey or kek, not both");
    }
    if kek.is_some() && kid.is_some() && ek.is_some() {
        return conflict("with kek, give kid or ek, not both");
    }
    match (kek, ek, clear, kid) {
        (Some(kek), Some(ek), _, _) => Ok(KeySource::Wrapped { kek, ek }),
        (Some(kek), None, _, Some(kid)) => Ok(KeySource::Store {
            kid,
            kek: Some(kek),
        }),
        (Some(_), None, _, None) => Err(ApiError::new(
            ErrorCode::MissingKid,
            "kek requires kid or ek",
        )),
        (None, _, Some(text), _) => Ok(KeySource::Clear(text)),
        (None, _, None, Some(kid)) => Ok(KeySource::Store { kid, kek: None }),
        (None, _, None, None) => Err(ApiError::new(
            ErrorCode::InvalidContentKey,
            "contentKey is required (or kid, or kek and ek)",
        )),
    }
}

/// The content key, from its source.
fn content_key(
    params: &Params<'_>,
    kid: Option<&Kid>,
    customer: &Customer,
) -> Result<ContentKey, ApiError> {
    match key_source(params, kid)? {
        KeySource::Clear(text) => parse_content_key(text),
        KeySource::Wrapped { kek, ek } => unwrap_ek(&kek, ek),
        KeySource::Store {
            kid,
            kek: Some(kek),
        } => from_key_store(customer, kid, &kek),
        KeySource::Store { kid, kek: None } => match &customer.kek {
            Some(kek) => from_key_store(customer, kid, kek),
            None => Err(ApiError::new(
                ErrorCode::KeyStoreLookup,
                "no kek given and none configured",
            )),
        },
    }
}

/// `ek`: 48 hex digits that unwrap under `kek`.
fn unwrap_ek(kek: &Kek, ek: &str) -> Result<ContentKey, ApiError> {
    if let Some(problem) = HexProblem::of(ek, &[48]) {
        return Err(ApiError::new(
            ErrorCode::InvalidWrappedKey,
            format!("ek must be 48 hex digits (a wrapped 16-byte key), {problem}"),
        ));
    }
    let wrapped = hex::decode(ek).map_err(|_| ApiError::from(ErrorCode::InvalidWrappedKey))?;
    kek.unwrap_content_key(&wrapped)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidWrappedKey, "ek does not unwrap with kek"))
}

/// `contentKey`: the wrong length is -2027 (the reference's "must be 32
/// hex digits long"), the right length with a character that is not a hex
/// digit is -2005 ("invalid content encryption key").
fn parse_content_key(text: &str) -> Result<ContentKey, ApiError> {
    match HexProblem::of(text, &[32]) {
        Some(problem @ HexProblem::Length(_)) => Err(ApiError::new(
            ErrorCode::ContentKeyFormat,
            problem.to_string(),
        )),
        Some(problem @ HexProblem::NotHex(_)) => Err(ApiError::new(
            ErrorCode::InvalidContentKey,
            format!("contentKey: {problem}"),
        )),
        None => ContentKey::from_hex(text).ok_or_else(|| ErrorCode::InvalidContentKey.into()),
    }
}

/// `kek`: 32, 48 or 64 hex digits (AES-128, -192, -256).
fn parse_kek(text: &str) -> Result<Kek, ApiError> {
    if let Some(problem) = HexProblem::of(text, &[32, 48, 64]) {
        return Err(ApiError::new(
            ErrorCode::InvalidWrappedKey,
            format!("kek must be 32, 48 or 64 hex digits, {problem}"),
        ));
    }
    Kek::from_hex(text).ok_or_else(|| ErrorCode::InvalidWrappedKey.into())
}

fn from_key_store(customer: &Customer, kid: &Kid, kek: &Kek) -> Result<ContentKey, ApiError> {
    let wrapped = customer
        .key_store
        .get(kid)
        .ok_or_else(|| ApiError::new(ErrorCode::KeyStoreLookup, "unknown kid"))?;
    kek.unwrap_content_key(wrapped).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidWrappedKey,
            "the stored key does not unwrap with this kek",
        )
    })
}

fn parse_hex16(text: &str) -> Result<[u8; 16], HexProblem> {
    if let Some(problem) = HexProblem::of(text, &[32]) {
        return Err(problem);
    }
    let mut out = [0u8; 16];
    hex::decode_to_slice(text, &mut out).map_err(|_| HexProblem::NotHex(1))?;
    Ok(out)
}

/// A decimal number of ASCII digits only (no sign, no spaces).
fn parse_u32(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_extension(text: &str, invalid: ErrorCode) -> Result<FpExtension, ApiError> {
    let Some((kind, payload)) = text.split_once(',') else {
        return Err(ApiError::new(
            invalid,
            "expected extensionType,extensionPayload",
        ));
    };
    parse_extension_parts(kind, payload, invalid)
}

/// An extension's type (4 visible ASCII characters) and its Base64
/// payload (at most [`MAX_EXTENSION_PAYLOAD`] bytes once decoded; a larger
/// one is `invalid`).
fn parse_extension_parts(
    kind: &str,
    payload: &str,
    invalid: ErrorCode,
) -> Result<FpExtension, ApiError> {
    let kind: [u8; 4] = kind
        .as_bytes()
        .try_into()
        .ok()
        .filter(|k: &[u8; 4]| k.iter().all(u8::is_ascii_graphic))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::ExtensionTypeLength,
                "expected 4 visible ASCII characters",
            )
        })?;
    // An unencoded `+` in a query string arrives as a space.
    let payload = payload.replace(' ', "+");
    // Base64 takes 4 characters per 3 bytes; the `+ 4` allows the padding
    // of a last, partial group. Longer text cannot decode to an allowed
    // payload, so it is refused before it is decoded.
    let bad_payload = || ApiError::new(ErrorCode::ExtensionPayloadEncoding, "");
    if payload.is_empty() || payload.len() > MAX_EXTENSION_PAYLOAD * 4 / 3 + 4 {
        return Err(bad_payload());
    }
    let payload = BASE64_LENIENT
        .decode(payload.as_bytes())
        .map_err(|_| bad_payload())?;
    if payload.len() > MAX_EXTENSION_PAYLOAD {
        return Err(ApiError::new(
            invalid,
            format!("payload over {MAX_EXTENSION_PAYLOAD} bytes"),
        ));
    }
    Ok(FpExtension { kind, payload })
}

/// `expirationTime`: RFC 3339 in UTC with `Z`, or `+seconds` (also ` seconds`,
/// the `+` of a client that did not percent-encode it). Must be in the future
/// and at most 30 days away.
fn parse_expiration(text: &str, now: i64) -> Result<i64, ApiError> {
    let expires_at = parse_time(text, now).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidExpirationTime,
            "expected an RFC 3339 time ending in Z, or +seconds",
        )
    })?;
    if expires_at <= now {
        return Err(ApiError::new(
            ErrorCode::InvalidExpirationTime,
            "the time is in the past",
        ));
    }
    if expires_at - now > MAX_LIFETIME_SECONDS {
        return Err(ApiError::new(
            ErrorCode::InvalidExpirationTime,
            "the longest token lifetime is 30 days",
        ));
    }
    Ok(expires_at)
}

/// Parses an absolute RFC 3339 `Z` time or a relative `+seconds`, to Unix seconds.
fn parse_time(text: &str, now: i64) -> Option<i64> {
    if let Some(digits) = text.strip_prefix('+').or_else(|| text.strip_prefix(' ')) {
        if digits.len() > 12 {
            return None;
        }
        return now.checked_add(i64::from(parse_u32(digits)?));
    }
    if !text.ends_with('Z') {
        return None;
    }
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

pub fn parse_cookie(text: &str) -> Result<String, ApiError> {
    // the usual case: short and printable ASCII (bytes are characters)
    if text.len() <= MAX_COOKIE_CHARS && text.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Ok(text.to_owned());
    }
    let chars = text.chars().count();
    if chars > MAX_COOKIE_CHARS {
        return Err(ApiError::new(
            ErrorCode::InvalidCookie,
            format!("{chars} characters, at most {MAX_COOKIE_CHARS}"),
        ));
    }
    if text.chars().any(|c| c.is_control() || c == '\u{FFFD}') {
        return Err(ApiError::new(
            ErrorCode::InvalidCookie,
            "control characters or invalid UTF-8",
        ));
    }
    Ok(text.to_owned())
}

/// The PlayReady-style parameters: never required, validated when present.
fn validate_playready(params: &Params<'_>) -> Result<(), ApiError> {
    for &param in Param::ALL {
        let (Some(rule), Some(value)) = (param.playready(), params.get(param)) else {
            continue;
        };
        if value.is_empty() {
            return Err(ApiError::new(ErrorCode::NoValue, param.name()));
        }
        let all_hex = value.bytes().all(|b| b.is_ascii_hexdigit());
        let ok = match rule {
            PlayReady::RightsType => matches!(value, "BuyToOwn" | "Rental"),
            PlayReady::Time => parse_time(value, 0).is_some(),
            PlayReady::Seconds => parse_u32(value).is_some(),
            PlayReady::OutputLevel => parse_u32(value).is_some_and(|n| n <= 999),
            PlayReady::OutputFlags if all_hex && value.len() != 8 => {
                return Err(ApiError::new(
                    ErrorCode::OutputControlFlagsLength,
                    "expected 8 hex digits",
                ));
            }
            PlayReady::OutputFlags => all_hex,
            PlayReady::Any => true,
        };
        if !ok {
            return Err(ApiError::new(param.invalid_code(), param.name()));
        }
    }
    Ok(())
}
