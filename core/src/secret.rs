//! Key material that must never be printed: content keys, KEKs, sealing keys.
//! The bytes are zeroized on drop, `Debug` prints a placeholder, and equality
//! is constant-time.

use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// `N` secret bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret<const N: usize>([u8; N]);

impl<const N: usize> Secret<N> {
    pub const fn new(bytes: [u8; N]) -> Self {
        Self(bytes)
    }

    /// Parses exactly `2 * N` hex digits; `None` otherwise (the caller picks
    /// the error, so that nothing here can echo the input).
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; N];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    pub fn expose(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> fmt::Debug for Secret<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret<{N}>(redacted)")
    }
}

impl<const N: usize> PartialEq for Secret<N> {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl<const N: usize> Eq for Secret<N> {}

/// Declares a key type of its own over [`Secret`], so that a content key
/// cannot be passed where a KEK or a sealing key is expected.
macro_rules! key_type {
    ($(#[doc = $doc:literal])* $name:ident, $n:literal) => {
        $(#[doc = $doc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name(Secret<$n>);

        impl $name {
            pub const fn new(bytes: [u8; $n]) -> Self {
                Self(Secret::new(bytes))
            }

            /// Parses exactly the key's length in hex digits.
            pub fn from_hex(text: &str) -> Option<Self> {
                Secret::from_hex(text).map(Self)
            }

            pub fn expose(&self) -> &[u8; $n] {
                self.0.expose()
            }
        }
    };
}

key_type! {
    /// A content encryption key (16 bytes): what the licence carries.
    ContentKey, 16
}

key_type! {
    /// A token sealing key (32 bytes, XChaCha20-Poly1305).
    SealingKeyBytes, 32
}

/// An AES key-encryption key of 128, 192 or 256 bits.
#[derive(Clone, PartialEq, Eq)]
pub enum Kek {
    Aes128(Secret<16>),
    Aes192(Secret<24>),
    Aes256(Secret<32>),
}

impl Kek {
    /// Parses 32, 48 or 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        match text.len() {
            32 => Secret::from_hex(text).map(Self::Aes128),
            48 => Secret::from_hex(text).map(Self::Aes192),
            64 => Secret::from_hex(text).map(Self::Aes256),
            _ => None,
        }
    }

    /// Unwraps a wrapped 16-byte content key (RFC 3394 AES Key Wrap: 24 bytes
    /// in). `None` when the integrity check fails or the size is wrong.
    pub fn unwrap_content_key(&self, wrapped: &[u8]) -> Option<ContentKey> {
        use aes_kw::{KeyInit, KwAes128, KwAes192, KwAes256};
        if wrapped.len() != 24 {
            return None;
        }
        let mut out = [0u8; 16];
        let ok = match self {
            Self::Aes128(k) => KwAes128::new(k.expose().into())
                .unwrap_key(wrapped, &mut out)
                .is_ok(),
            Self::Aes192(k) => KwAes192::new(k.expose().into())
                .unwrap_key(wrapped, &mut out)
                .is_ok(),
            Self::Aes256(k) => KwAes256::new(k.expose().into())
                .unwrap_key(wrapped, &mut out)
                .is_ok(),
        };
        let key = ContentKey::new(out);
        out.zeroize();
        ok.then_some(key)
    }

    /// Wraps a content key (used by tests and the tooling that fills key stores).
    pub fn wrap_content_key(&self, key: &ContentKey) -> Option<[u8; 24]> {
        use aes_kw::{KeyInit, KwAes128, KwAes192, KwAes256};
        let mut out = [0u8; 24];
        let ok = match self {
            Self::Aes128(k) => KwAes128::new(k.expose().into())
                .wrap_key(key.expose(), &mut out)
                .is_ok(),
            Self::Aes192(k) => KwAes192::new(k.expose().into())
                .wrap_key(key.expose(), &mut out)
                .is_ok(),
            Self::Aes256(k) => KwAes256::new(k.expose().into())
                .wrap_key(key.expose(), &mut out)
                .is_ok(),
        };
        ok.then_some(out)
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek(redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_key_bytes() {
        let key = ContentKey::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
        let kek = Kek::from_hex("0f0e0d0c0b0a09080706050403020100").unwrap();
        for text in [
            format!("{key:?}"),
            format!("{kek:?}"),
            format!("{:?}", Some(&key)),
            format!("{:?}", SealingKeyBytes::new([7; 32])),
        ] {
            assert!(!text.contains("0102"), "{text}");
            assert!(!text.contains("[0, 1"), "{text}");
            assert!(text.contains("redacted"));
        }
    }

    #[test]
    fn rfc3394_vector_unwraps() {
        // RFC 3394 section 4.1: 128-bit key data with a 128-bit KEK.
        let kek = Kek::from_hex("000102030405060708090A0B0C0D0E0F").unwrap();
        let wrapped = hex::decode("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5").unwrap();
        let key = kek.unwrap_content_key(&wrapped).unwrap();
        assert_eq!(
            hex::encode(key.expose()),
            "00112233445566778899aabbccddeeff"
        );
        assert_eq!(
            kek.wrap_content_key(&key).unwrap().as_slice(),
            wrapped.as_slice()
        );
    }

    #[test]
    fn rfc3394_vector_256_bit_kek() {
        // RFC 3394 section 4.3: 128-bit key data with a 256-bit KEK.
        let kek = Kek::from_hex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
            .unwrap();
        let wrapped = hex::decode("64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7").unwrap();
        let key = kek.unwrap_content_key(&wrapped).unwrap();
        assert_eq!(
            hex::encode(key.expose()),
            "00112233445566778899aabbccddeeff"
        );
    }

    #[test]
    fn wrong_kek_or_corrupt_wrap_is_refused() {
        let kek = Kek::from_hex("000102030405060708090A0B0C0D0E0F").unwrap();
        let other = Kek::from_hex("100102030405060708090A0B0C0D0E0F").unwrap();
        let mut wrapped = hex::decode("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5").unwrap();
        assert!(other.unwrap_content_key(&wrapped).is_none());
        wrapped[5] ^= 1;
        assert!(kek.unwrap_content_key(&wrapped).is_none());
        assert!(kek.unwrap_content_key(&wrapped[..16]).is_none());
    }

    #[test]
    fn kek_sizes() {
        assert!(Kek::from_hex(&"00".repeat(16)).is_some());
        assert!(Kek::from_hex(&"00".repeat(24)).is_some());
        assert!(Kek::from_hex(&"00".repeat(32)).is_some());
        assert!(Kek::from_hex(&"00".repeat(20)).is_none());
        assert!(Kek::from_hex(&"zz".repeat(16)).is_none());
    }
}
