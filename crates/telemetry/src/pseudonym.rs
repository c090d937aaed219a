//! Keyed pseudonyms for correlating records about one person without
//! revealing who.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::TelemetryError;

/// Turns an identifier into a stable pseudonym: `p-` and the first 16 hex
/// digits of HMAC-SHA256(key, value).
///
/// Keyed on purpose: identity numbers come from a small space (a few region
/// codes, birth dates, 1000 sequences), so a plain hash is reversed by
/// enumeration in minutes. Without the key the pseudonym reveals nothing;
/// with the same key, the same person always gets the same pseudonym, so
/// logs and traces can be correlated. Keep the key secret and out of logs.
#[derive(Clone)]
pub struct Pseudonymiser {
    key: Vec<u8>,
}

impl std::fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymiser(<key redacted>)")
    }
}

impl Pseudonymiser {
    pub const MIN_KEY_BYTES: usize = 16;

    pub fn new(key: impl Into<Vec<u8>>) -> Result<Self, TelemetryError> {
        let key = key.into();
        if key.len() < Self::MIN_KEY_BYTES {
            return Err(TelemetryError::WeakKey {
                min: Self::MIN_KEY_BYTES,
            });
        }
        Ok(Self { key })
    }

    pub fn pseudonym(&self, value: &str) -> String {
        // HMAC accepts keys of any length, so this cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return "p-unavailable".to_owned();
        };
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        format!("p-{}", hex::encode(&digest[..8]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "510402198001010018";

    #[test]
    fn pseudonyms_are_stable_keyed_and_opaque() {
        let a = Pseudonymiser::new(*b"0123456789abcdef").expect("key");
        let b = Pseudonymiser::new(*b"fedcba9876543210").expect("key");
        let p = a.pseudonym(ID);
        assert_eq!(p, a.pseudonym(ID));
        assert_ne!(p, b.pseudonym(ID));
        assert_ne!(p, a.pseudonym("510403197506150026"));
        assert_eq!(p.len(), 2 + 16);
        assert!(!p.contains("510402") && !p.contains("19800101"));
        assert!(!format!("{a:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(
            Pseudonymiser::new(*b"short"),
            Err(TelemetryError::WeakKey { min: 16 })
        ));
    }
}
