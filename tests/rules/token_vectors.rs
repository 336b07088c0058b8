//! The token format's test vectors (`tests/vectors/v1.json` and `v2.json`,
//! documented in `docs/token-format.md`, written by an independent Python
//! implementation): sealing the licence data with the given key and nonce
//! must give the token byte for byte, and opening it must give the data.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use base64::Engine as _;
use fpgen::ids::{CustomerId, KeyId, Kid};
use fpgen::licence::{
    Drm, Environment, FpExtension, Licence, LicenceData, OutputLevels, PlayReadyKey,
    PlayReadyLicence, Rights, TrackType, UnknownOutput, WidevineKey, WidevineLicence,
};
use fpgen::secret::{ContentKey, SealingKeyBytes};
use fpgen::token::{self, KeyRing, SealingKey, TokenError};
use serde_json::Value;

fn licence(v: &Value) -> LicenceData {
    let hex16 = |s: &Value| -> [u8; 16] {
        hex::decode(s.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    };
    LicenceData {
        environment: serde_json::from_value::<Environment>(v["environment"].clone()).unwrap(),
        customer_id: CustomerId::parse(v["customer_id"].as_str().unwrap()).unwrap(),
        issued_at: v["issued_at"].as_i64().unwrap(),
        expires_at: v["expires_at"].as_i64().unwrap(),
        content_key: ContentKey::new(hex16(&v["content_key"])),
        iv: hex16(&v["iv"]),
        kid: v["kid"].as_str().map(|k| Kid::parse(k).unwrap()),
        rental_duration: v["rental_duration"].as_u64().unwrap() as u32,
        general_flags: v["general_flags"].as_u64().unwrap() as u32,
        extensions: v["fp_extensions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| FpExtension {
                kind: e["type"].as_str().unwrap().as_bytes().try_into().unwrap(),
                payload: base64::engine::general_purpose::STANDARD
                    .decode(e["payload"].as_str().unwrap())
                    .unwrap(),
            })
            .collect(),
        cookie: v["cookie"].as_str().map(str::to_owned),
    }
}

fn extensions(v: &Value) -> Vec<FpExtension> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| FpExtension {
            kind: e["type"].as_str().unwrap().as_bytes().try_into().unwrap(),
            payload: base64::engine::general_purpose::STANDARD
                .decode(e["payload"].as_str().unwrap())
                .unwrap(),
        })
        .collect()
}

fn widevine(v: &Value) -> WidevineLicence {
    let track = |t: &Value| {
        t.as_str().map(|name| {
            (0..5)
                .filter_map(TrackType::from_number)
                .find(|t| t.as_str() == name)
                .unwrap()
        })
    };
    WidevineLicence {
        environment: serde_json::from_value::<Environment>(v["environment"].clone()).unwrap(),
        customer_id: CustomerId::parse(v["customer_id"].as_str().unwrap()).unwrap(),
        issued_at: v["issued_at"].as_i64().unwrap(),
        expires_at: v["expires_at"].as_i64().unwrap(),
        keys: v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| WidevineKey {
                kid: Kid::parse(k["kid"].as_str().unwrap()).unwrap(),
                content_key: ContentKey::from_hex(k["content_key"].as_str().unwrap()).unwrap(),
                security_level: k["security_level"].as_u64().unwrap() as u8,
                hdcp_output_control: k["hdcp_output_control"].as_u64().unwrap() as u8,
                track_type: track(&k["track_type"]),
            })
            .collect(),
        license_duration: v["license_duration"].as_u64().unwrap() as u32,
        playback_duration: v["playback_duration"].as_u64().unwrap() as u32,
        general_flags: v["general_flags"].as_u64().unwrap() as u32,
        content_id: v["content_id"].as_str().map(str::to_owned),
        extensions: extensions(&v["wv_extensions"]),
        cookie: v["cookie"].as_str().map(str::to_owned),
    }
}

fn playready(v: &Value) -> PlayReadyLicence {
    let level = |name: &str| v["output_levels"][name].as_u64().unwrap() as u16;
    let rights = match v["rights_type"].as_str().unwrap() {
        "BuyToOwn" => Rights::BuyToOwn,
        "Rental" => Rights::Rental {
            period_end: v["rental_period_end"].as_i64().unwrap(),
            play_duration: v["rental_play_duration"].as_u64().map(|s| s as u32),
        },
        other => panic!("rights type {other}"),
    };
    PlayReadyLicence {
        environment: serde_json::from_value::<Environment>(v["environment"].clone()).unwrap(),
        customer_id: CustomerId::parse(v["customer_id"].as_str().unwrap()).unwrap(),
        issued_at: v["issued_at"].as_i64().unwrap(),
        expires_at: v["expires_at"].as_i64().unwrap(),
        keys: v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| PlayReadyKey {
                kid: Kid::parse(k["kid"].as_str().unwrap()).unwrap(),
                content_key: ContentKey::from_hex(k["content_key"].as_str().unwrap()).unwrap(),
                min_cert_security_level: k["min_cert_security_level"].as_u64().map(|l| l as u16),
            })
            .collect(),
        rights,
        output_levels: OutputLevels {
            analog_video: level("analog_video"),
            compressed_digital_audio: level("compressed_digital_audio"),
            compressed_digital_video: level("compressed_digital_video"),
            uncompressed_digital_audio: level("uncompressed_digital_audio"),
            uncompressed_digital_video: level("uncompressed_digital_video"),
        },
        unknown_output: v["unknown_output_behavior"]
            .as_str()
            .map(|b| UnknownOutput::parse(b).unwrap()),
        output_control_flags: v["output_control_flags"].as_u64().map(|f| f as u32),
        general_flags: v["general_flags"].as_u64().unwrap() as u32,
        extension: match &v["extension"] {
            Value::Null => None,
            e => extensions(&Value::Array(vec![e.clone()])).pop(),
        },
        cookie: v["cookie"].as_str().map(str::to_owned),
    }
}

fn vectors_v2() -> Value {
    serde_json::from_str(include_str!("../vectors/v2.json")).unwrap()
}

/// Version 2: each Widevine and PlayReady vector is sealed byte for byte
/// and opens to its licence; the FairPlay one (fpgen seals FairPlay as version 1) opens to
/// the same licence as its version-1 twin.
#[test]
fn version_2_vectors_seal_and_open_byte_for_byte() {
    let all = vectors_v2();
    let valid = all["valid"].as_array().unwrap();
    assert_eq!(valid.len(), 5);
    for v in valid {
        let ring = ring(v);
        let nonce: [u8; 24] = hex::decode(v["nonce"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let drm = Drm::parse(v["drm"].as_str().unwrap()).unwrap();
        let licence = match drm {
            Drm::Widevine => Licence::Widevine(widevine(&v["licence"])),
            Drm::PlayReady => Licence::PlayReady(playready(&v["licence"])),
            Drm::FairPlay => Licence::FairPlay(licence(&v["licence"])),
        };
        // the JSON fpgen inspect prints is the vector's licence
        if drm != Drm::FairPlay {
            let shown = licence.to_json(true);
            for (name, value) in v["licence"].as_object().unwrap() {
                assert_eq!(&shown[name], value, "vector {}: {name}", v["name"]);
            }
        }
        let token = v["token"].as_str().unwrap();
        if drm != Drm::FairPlay {
            let sealed = token::seal_licence(&licence, ring.active().unwrap(), &nonce).unwrap();
            assert_eq!(sealed, token, "vector {}", v["name"]);
        }
        let opened = token::open(token, &ring, licence.environment(), licence.issued_at());
        assert_eq!(
            opened.unwrap().into_licence(),
            licence,
            "vector {}",
            v["name"]
        );
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .unwrap();
        assert_eq!(&raw[..2], &[2, drm_byte(drm)], "vector {}", v["name"]);
    }
    for v in all["invalid"].as_array().unwrap() {
        let env = serde_json::from_value::<Environment>(v["environment"].clone()).unwrap();
        let got = token::open(
            v["token"].as_str().unwrap(),
            &ring(v),
            env,
            v["now"].as_i64().unwrap(),
        );
        let want = match v["error"].as_str().unwrap() {
            "malformed" => TokenError::Malformed,
            "forged" => TokenError::Forged,
            other => panic!("unknown error {other}"),
        };
        assert_eq!(got.err(), Some(want), "vector {}", v["name"]);
    }
}

/// The DRM byte of a version-2 header, as docs/token-format.md lists them.
fn drm_byte(drm: Drm) -> u8 {
    match drm {
        Drm::FairPlay => 0,
        Drm::Widevine => 1,
        Drm::PlayReady => 2,
    }
}

fn vectors() -> Value {
    serde_json::from_str(include_str!("../vectors/v1.json")).unwrap()
}

fn ring(v: &Value) -> KeyRing {
    let key = SealingKey {
        id: KeyId::parse(v["sealing_key"]["id"].as_str().unwrap()).unwrap(),
        key: SealingKeyBytes::from_hex(v["sealing_key"]["key"].as_str().unwrap()).unwrap(),
    };
    let id = key.id.clone();
    KeyRing::new(vec![key], &id).unwrap()
}

#[test]
fn valid_vectors_seal_and_open_byte_for_byte() {
    let all = vectors();
    let valid = all["valid"].as_array().unwrap();
    assert!(valid.len() >= 2);
    for v in valid {
        let ring = ring(v);
        let data = licence(&v["licence"]);
        let nonce: [u8; 24] = hex::decode(v["nonce"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let sealed = token::seal(&data, ring.active().unwrap(), &nonce).unwrap();
        assert_eq!(sealed, v["token"].as_str().unwrap(), "vector {}", v["name"]);
        let opened = token::open(&sealed, &ring, data.environment, data.issued_at).unwrap();
        assert_eq!(opened.key_id(), &ring.active().unwrap().id);
        assert_eq!(
            opened.into_fairplay().unwrap(),
            data,
            "vector {}",
            v["name"]
        );
        // the hex dump in the vector is the token's bytes
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&sealed)
            .unwrap();
        assert_eq!(hex::encode(&raw), v["token_hex"].as_str().unwrap());
        // the layout: header, nonce, then exactly the documented payload's length of ciphertext, then the tag
        let key_id_len = v["sealing_key"]["id"].as_str().unwrap().len();
        let payload_len = v["payload_hex"].as_str().unwrap().len() / 2;
        assert_eq!(
            raw.len(),
            2 + key_id_len + 24 + payload_len + 16,
            "vector {}",
            v["name"]
        );
        assert_eq!(
            hex::encode(&raw[2 + key_id_len..2 + key_id_len + 24]),
            v["nonce"].as_str().unwrap()
        );
    }
}

#[test]
fn invalid_vectors_are_refused_with_their_reason() {
    let all = vectors();
    for v in all["invalid"].as_array().unwrap() {
        let ring = ring(v);
        let env = serde_json::from_value::<Environment>(v["environment"].clone()).unwrap();
        let got = token::open(
            v["token"].as_str().unwrap(),
            &ring,
            env,
            v["now"].as_i64().unwrap(),
        )
        .map(|t| t.into_fairplay().unwrap());
        let want = match v["error"].as_str().unwrap() {
            "malformed" => TokenError::Malformed,
            "unknown_version" => TokenError::UnknownVersion,
            "unknown_key" => TokenError::UnknownKey,
            "forged" => TokenError::Forged,
            "wrong_environment" => TokenError::WrongEnvironment,
            "expired" => TokenError::Expired,
            other => panic!("unknown error {other}"),
        };
        assert_eq!(got.unwrap_err(), want, "vector {}", v["name"]);
    }
}
