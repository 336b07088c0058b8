#!/usr/bin/env python3
"""Writes tests/vectors/v1.json and v2.json: fpgen token format test vectors
(version 1: FairPlay; version 2: the DRM named in the header).

This is an independent implementation of docs/token-format.md in Python
(PyNaCl's libsodium XChaCha20-Poly1305), so the vectors do not come from the
Rust code they check. Run: python3 -m pip install pynacl && python3 tests/vectors/generate.py
"""
import base64
import json
import os
import struct

from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt as seal

ENV = {"test": 0, "production": 1}


def short(b: bytes) -> bytes:
    assert len(b) < 256
    return bytes([len(b)]) + b


def payload(lic: dict) -> bytes:
    out = bytes([ENV[lic["environment"]]])
    out += struct.pack(">qq", lic["issued_at"], lic["expires_at"])
    out += short(lic["customer_id"].encode())
    out += bytes.fromhex(lic["content_key"]) + bytes.fromhex(lic["iv"])
    kid = lic["kid"]
    if kid is None:
        out += b"\x00"
    elif kid.startswith("^"):
        out += b"\x02" + short(kid[1:].encode())
    else:
        out += b"\x01" + bytes.fromhex(kid)
    out += struct.pack(">II", lic["rental_duration"], lic["general_flags"])
    out += short((lic["cookie"] or "").encode())
    out += bytes([len(lic["fp_extensions"])])
    for ext in lic["fp_extensions"]:
        data = base64.b64decode(ext["payload"])
        out += ext["type"].encode() + struct.pack(">H", len(data)) + data
    return out


DRM = {"fairplay": 0, "widevine": 1, "playready": 2}
TRACK = {"SD": 0, "HD": 1, "AUDIO": 2, "UHD1": 3, "UHD2": 4}


def kid_bytes(kid: str) -> bytes:
    if kid.startswith("^"):
        return b"\x02" + short(kid[1:].encode())
    return b"\x01" + bytes.fromhex(kid)


def widevine_payload(lic: dict) -> bytes:
    out = bytes([ENV[lic["environment"]]])
    out += struct.pack(">qq", lic["issued_at"], lic["expires_at"])
    out += short(lic["customer_id"].encode())
    out += bytes([len(lic["keys"])])
    for key in lic["keys"]:
        out += kid_bytes(key["kid"]) + bytes.fromhex(key["content_key"])
        track = key["track_type"]
        out += bytes([key["security_level"], key["hdcp_output_control"], 0xFF if track is None else TRACK[track]])
    out += struct.pack(">III", lic["license_duration"], lic["playback_duration"], lic["general_flags"])
    out += short((lic["content_id"] or "").encode())
    out += short((lic["cookie"] or "").encode())
    out += bytes([len(lic["wv_extensions"])])
    for ext in lic["wv_extensions"]:
        data = base64.b64decode(ext["payload"])
        out += ext["type"].encode() + struct.pack(">H", len(data)) + data
    return out


UNKNOWN_OUTPUT = {None: 0, "Allow": 1, "Disallow": 2, "SDOnly": 3}
OPLS = ["analog_video", "compressed_digital_audio", "compressed_digital_video",
        "uncompressed_digital_audio", "uncompressed_digital_video"]


def playready_payload(lic: dict) -> bytes:
    out = bytes([ENV[lic["environment"]]])
    out += struct.pack(">qq", lic["issued_at"], lic["expires_at"])
    out += short(lic["customer_id"].encode())
    out += bytes([len(lic["keys"])])
    for key in lic["keys"]:
        out += kid_bytes(key["kid"]) + bytes.fromhex(key["content_key"])
        out += struct.pack(">H", key["min_cert_security_level"] or 0)
    rental = lic["rights_type"] == "Rental"
    play = lic["rental_play_duration"]
    out += bytes([1 if rental else 0]) + struct.pack(">q", lic["rental_period_end"] or 0)
    out += bytes([0 if play is None else 1]) + struct.pack(">I", play or 0)
    for name in OPLS:
        out += struct.pack(">H", lic["output_levels"][name])
    out += bytes([UNKNOWN_OUTPUT[lic["unknown_output_behavior"]]])
    flags = lic["output_control_flags"]
    out += bytes([0 if flags is None else 1]) + struct.pack(">I", flags or 0)
    out += struct.pack(">I", lic["general_flags"])
    out += short((lic["cookie"] or "").encode())
    ext = lic["extension"]
    out += bytes([0 if ext is None else 1])
    if ext is not None:
        data = base64.b64decode(ext["payload"])
        out += ext["type"].encode() + struct.pack(">H", len(data)) + data
    return out


PAYLOADS = {"widevine": widevine_payload, "playready": playready_payload}


def token(key_id: str, key_hex: str, nonce_hex: str, lic: dict, drm=None):
    """Version 1 when drm is None (FairPlay), else version 2 naming drm."""
    if drm is None:
        header = b"\x01" + short(key_id.encode())
    else:
        header = b"\x02" + bytes([DRM[drm]]) + short(key_id.encode())
    nonce = bytes.fromhex(nonce_hex)
    body = PAYLOADS.get(drm, payload)(lic)
    sealed = seal(body, header, nonce, bytes.fromhex(key_hex))  # ciphertext || tag
    raw = header + nonce + sealed
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode(), raw.hex(), body.hex()


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


KEY = {"id": "2026-11", "key": "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"}
MINIMAL = {
    "environment": "test", "customer_id": "100001",
    "issued_at": 1800000000, "expires_at": 1802592000,
    "content_key": "000102030405060708090a0b0c0d0e0f", "iv": "0f0e0d0c0b0a09080706050403020100",
    "kid": None, "rental_duration": 0, "general_flags": 0, "cookie": None, "fp_extensions": [],
}
FULL = {
    "environment": "production", "customer_id": "201722",
    "issued_at": 1800000000, "expires_at": 1800003600,
    "content_key": "b366360da82e9c6e0b0984002a362cf2", "iv": "00112233445566778899aabbccddeeff",
    "kid": "b366360da82e9c6e0b0984002a362cf2", "rental_duration": 86400, "general_flags": 1,
    "cookie": "session-42",
    "fp_extensions": [{"type": "wudo", "payload": "AAAAAA=="}, {"type": "abcd", "payload": "AQID"}],
}
NAMED = dict(MINIMAL, kid="^movie-7", cookie="é ü", expires_at=1800000060)

valid = []
for name, lic, nonce in [
    ("minimal", MINIMAL, "000102030405060708090a0b0c0d0e0f1011121314151617"),
    ("full", FULL, "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7"),
    ("named-kid", NAMED, "ffffffffffffffffffffffffffffffffffffffffffffffff"),
]:
    t, raw_hex, body_hex = token(KEY["id"], KEY["key"], nonce, lic)
    valid.append({"name": name, "sealing_key": KEY, "nonce": nonce, "licence": lic,
                  "payload_hex": body_hex, "token_hex": raw_hex, "token": t})

minimal = bytes.fromhex(valid[0]["token_hex"])
flipped = bytearray(minimal)
flipped[-1] ^= 1
other_key, _, _ = token("2026-10", KEY["key"], valid[0]["nonce"], MINIMAL)
wrong_secret, _, _ = token(KEY["id"], "ff" * 32, valid[0]["nonce"], MINIMAL)
invalid = [
    {"name": "not base64url", "token": valid[0]["token"][:-1] + "+", "error": "malformed"},
    {"name": "truncated", "token": b64(minimal[:30]), "error": "malformed"},
    {"name": "version 3", "token": b64(b"\x03" + minimal[1:]), "error": "unknown_version"},
    {"name": "flipped tag bit", "token": b64(bytes(flipped)), "error": "forged"},
    {"name": "sealed with another key under the same id", "token": wrong_secret, "error": "forged"},
    {"name": "key id not in the ring", "token": other_key, "error": "unknown_key"},
    {"name": "at its expiry second", "token": valid[0]["token"], "now": MINIMAL["expires_at"], "error": "expired"},
    {"name": "test token on production", "token": valid[0]["token"], "environment": "production", "error": "wrong_environment"},
]
for v in invalid:
    v.setdefault("now", 1800000000)
    v.setdefault("environment", "test")
    v["sealing_key"] = KEY



def write(name: str, content: dict):
    path = os.path.join(os.path.dirname(__file__), name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print("wrote", path)


write("v1.json", {"format": "fpgen token v1", "valid": valid, "invalid": invalid})

# ---- version 2: the DRM in the header --------------------------------------

WIDEVINE = {
    "environment": "test", "customer_id": "100001",
    "issued_at": 1800000000, "expires_at": 1800086400,
    "keys": [{"kid": "0123456789abcdef0123456789abcdef", "content_key": "000102030405060708090a0b0c0d0e0f",
              "security_level": 1, "hdcp_output_control": 0, "track_type": None}],
    "license_duration": 0, "playback_duration": 0, "general_flags": 0,
    "content_id": None, "cookie": None, "wv_extensions": [],
}
WIDEVINE_HBBTV = {
    "environment": "production", "customer_id": "201722",
    "issued_at": 1800000000, "expires_at": 1800003600,
    "keys": [
        {"kid": "0123456789abcdef0123456789abcdef", "content_key": "b366360da82e9c6e0b0984002a362cf2",
         "security_level": 5, "hdcp_output_control": 4, "track_type": "HD"},
        {"kid": "^audio-en", "content_key": "ffeeddccbbaa99887766554433221100",
         "security_level": 1, "hdcp_output_control": 0, "track_type": "AUDIO"},
    ],
    "license_duration": 86400, "playback_duration": 7200, "general_flags": 1,
    "content_id": "movie-42", "cookie": "session-42",
    "wv_extensions": [{"type": "wudo", "payload": "AQID"}],
}
PLAYREADY = {
    "environment": "test", "customer_id": "100001",
    "issued_at": 1800000000, "expires_at": 1800086400,
    "keys": [{"kid": "0123456789abcdef0123456789abcdef", "content_key": "000102030405060708090a0b0c0d0e0f",
              "min_cert_security_level": None}],
    "rights_type": "BuyToOwn", "rental_period_end": None, "rental_play_duration": None,
    "output_levels": {"analog_video": 100, "compressed_digital_audio": 200, "compressed_digital_video": 400,
                      "uncompressed_digital_audio": 250, "uncompressed_digital_video": 300},
    "unknown_output_behavior": None, "output_control_flags": None, "general_flags": 0,
    "extension": None, "cookie": None,
}
PLAYREADY_RENTAL = {
    "environment": "production", "customer_id": "201722",
    "issued_at": 1800000000, "expires_at": 1800003600,
    "keys": [
        {"kid": "0123456789abcdef0123456789abcdef", "content_key": "b366360da82e9c6e0b0984002a362cf2",
         "min_cert_security_level": 2000},
        {"kid": "^audio-en", "content_key": "ffeeddccbbaa99887766554433221100",
         "min_cert_security_level": 150},
    ],
    "rights_type": "Rental", "rental_period_end": 1800604800, "rental_play_duration": 172800,
    "output_levels": {"analog_video": 0, "compressed_digital_audio": 999, "compressed_digital_video": 500,
                      "uncompressed_digital_audio": 301, "uncompressed_digital_video": 270},
    "unknown_output_behavior": "SDOnly", "output_control_flags": 10, "general_flags": 1,
    "extension": {"type": "abcd", "payload": "AQID"}, "cookie": "session-42",
}
valid2 = []
for name, drm, lic, nonce in [
    ("playready-minimal", "playready", PLAYREADY, "101112131415161718191a1b1c1d1e1f2021222324252627"),
    ("playready-rental-two-keys", "playready", PLAYREADY_RENTAL, "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7"),
    ("widevine-minimal", "widevine", WIDEVINE, "000102030405060708090a0b0c0d0e0f1011121314151617"),
    ("widevine-two-keys", "widevine", WIDEVINE_HBBTV, "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7"),
    ("fairplay-in-version-2", "fairplay", FULL, "0f0e0d0c0b0a09080706050403020100f0f1f2f3f4f5f6f7"),
]:
    t, raw_hex, body_hex = token(KEY["id"], KEY["key"], nonce, lic, drm)
    valid2.append({"name": name, "drm": drm, "sealing_key": KEY, "nonce": nonce, "licence": lic,
                   "payload_hex": body_hex, "token_hex": raw_hex, "token": t})

wv = bytes.fromhex(next(v for v in valid2 if v["drm"] == "widevine")["token_hex"])
pr = bytearray(bytes.fromhex(valid2[0]["token_hex"]))
pr[1] = DRM["widevine"]
relabelled = bytearray(wv)
relabelled[1] = DRM["fairplay"]
unknown_drm = bytearray(wv)
unknown_drm[1] = 0x7F
invalid2 = [
    {"name": "a Widevine token relabelled FairPlay", "token": b64(bytes(relabelled)), "error": "forged"},
    {"name": "a DRM no version-2 reader knows", "token": b64(bytes(unknown_drm)), "error": "malformed"},
    {"name": "a PlayReady token relabelled Widevine", "token": b64(bytes(pr)), "error": "forged"},
]
for v in invalid2:
    v.setdefault("now", 1800000000)
    v.setdefault("environment", "test")
    v["sealing_key"] = KEY

write("v2.json", {"format": "fpgen token v2", "valid": valid2, "invalid": invalid2})
