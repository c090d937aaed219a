//! Certificate identities: `spiffe://<trust-domain>/org/<credit code>/unit/<unit>`.

use std::fmt;
use std::str::FromStr;

use tongban_core::{CreditCode, CreditCodeError};
use x509_parser::extensions::GeneralName;

const SCHEME: &str = "spiffe://";
const MAX_TRUST_DOMAIN_LEN: usize = 255;
const MAX_UNIT_LEN: usize = 63;

/// The identity of a peer, taken from the URI SAN of its verified certificate.
///
/// Equality covers all three parts; the trust domain is part of the identity so
/// a certificate from a federated domain never aliases a local unit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerIdentity {
    trust_domain: String,
    org: CreditCode,
    unit: String,
}

/// Why a certificate or URI does not carry a valid tongban identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("certificate is not valid DER X.509: {0}")]
    BadCertificate(String),
    #[error("certificate has no URI subject alternative name (expected one spiffe:// identity)")]
    NoUriSan,
    #[error(
        "certificate has {count} URI subject alternative names, expected exactly one spiffe:// identity"
    )]
    MultipleUriSans { count: usize },
    #[error("URI {uri:?} is not a spiffe:// URI")]
    NotSpiffe { uri: String },
    #[error(
        "trust domain {trust_domain:?} is invalid: use 1-255 lowercase letters, digits, '.', '-' or '_'"
    )]
    BadTrustDomain { trust_domain: String },
    #[error("path {path:?} must be /org/<unified social credit code>/unit/<unit>")]
    BadPath { path: String },
    #[error("organisation {org:?} is not a valid unified social credit code: {source}")]
    BadCreditCode {
        org: String,
        #[source]
        source: CreditCodeError,
    },
    #[error("unit {unit:?} is invalid: use 1-63 lowercase letters, digits or '-'")]
    BadUnit { unit: String },
}

impl PeerIdentity {
    /// Builds an identity from validated parts.
    pub fn new(
        trust_domain: impl Into<String>,
        org: CreditCode,
        unit: impl Into<String>,
    ) -> Result<Self, IdentityError> {
        let trust_domain = trust_domain.into();
        let unit = unit.into();
        validate_trust_domain(&trust_domain)?;
        validate_unit(&unit)?;
        Ok(Self {
            trust_domain,
            org,
            unit,
        })
    }

    /// Parses `spiffe://<trust-domain>/org/<credit code>/unit/<unit>`.
    pub fn parse_uri(uri: &str) -> Result<Self, IdentityError> {
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdentityError::NotSpiffe {
                uri: uri.to_owned(),
            })?;
        let (trust_domain, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        validate_trust_domain(trust_domain)?;
        let bad_path = || IdentityError::BadPath {
            path: path.to_owned(),
        };
        let segments: Vec<&str> = path.split('/').collect();
        let ["", "org", org, "unit", unit] = segments.as_slice() else {
            return Err(bad_path());
        };
        let org = CreditCode::parse(org).map_err(|source| IdentityError::BadCreditCode {
            org: (*org).to_owned(),
            source,
        })?;
        validate_unit(unit)?;
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            org,
            unit: (*unit).to_owned(),
        })
    }

    /// Extracts the identity from a DER certificate. The certificate must carry
    /// exactly one URI SAN (as X.509-SVIDs do) and it must be a tongban identity.
    /// This does not verify the certificate; call it on certificates that rustls
    /// already verified.
    pub fn from_der(cert_der: &[u8]) -> Result<Self, IdentityError> {
        let (rest, cert) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(IdentityError::BadCertificate(format!(
                "{} trailing bytes after the certificate",
                rest.len()
            )));
        }
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let uris: Vec<&str> = san
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::URI(uri) => Some(*uri),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        match uris.as_slice() {
            [] => Err(IdentityError::NoUriSan),
            [uri] => Self::parse_uri(uri),
            more => Err(IdentityError::MultipleUriSans { count: more.len() }),
        }
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn org(&self) -> &CreditCode {
        &self.org
    }

    pub fn unit(&self) -> &str {
        &self.unit
    }

    /// The SPIFFE URI (same as `Display`).
    pub fn to_uri(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/org/{}/unit/{}",
            self.trust_domain, self.org, self.unit
        )
    }
}

impl FromStr for PeerIdentity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_uri(s)
    }
}

impl serde::Serialize for PeerIdentity {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PeerIdentity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let uri = String::deserialize(deserializer)?;
        Self::parse_uri(&uri).map_err(serde::de::Error::custom)
    }
}

/// Checks a SPIFFE trust domain name.
pub fn validate_trust_domain(trust_domain: &str) -> Result<(), IdentityError> {
    let ok = !trust_domain.is_empty()
        && trust_domain.len() <= MAX_TRUST_DOMAIN_LEN
        && trust_domain.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadTrustDomain {
            trust_domain: trust_domain.to_owned(),
        })
    }
}

/// Checks a unit name: 1-63 lowercase letters, digits or '-'.
pub fn validate_unit(unit: &str) -> Result<(), IdentityError> {
    let ok = !unit.is_empty()
        && unit.len() <= MAX_UNIT_LEN
        && unit
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadUnit {
            unit: unit.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICE: &str = "spiffe://panzhihua.tongban.test/org/11510400TB0000028Y/unit/police";

    #[test]
    fn parses_and_renders_round_trip() {
        let id = PeerIdentity::parse_uri(POLICE).unwrap();
        assert_eq!(id.trust_domain(), "panzhihua.tongban.test");
        assert_eq!(id.org().as_str(), "11510400TB0000028Y");
        assert_eq!(id.unit(), "police");
        assert_eq!(id.to_string(), POLICE);
        assert_eq!(POLICE.parse::<PeerIdentity>().unwrap(), id);
    }

    #[test]
    fn rejects_malformed_uris_precisely() {
        type Expect = fn(&IdentityError) -> bool;
        let cases: &[(&str, Expect)] = &[
            ("https://x/org/11510400TB0000028Y/unit/a", |e| {
                matches!(e, IdentityError::NotSpiffe { .. })
            }),
            ("spiffe:///org/11510400TB0000028Y/unit/a", |e| {
                matches!(e, IdentityError::BadTrustDomain { .. })
            }),
            ("spiffe://Upper.test/org/11510400TB0000028Y/unit/a", |e| {
                matches!(e, IdentityError::BadTrustDomain { .. })
            }),
            ("spiffe://t.test:8443/org/11510400TB0000028Y/unit/a", |e| {
                matches!(e, IdentityError::BadTrustDomain { .. })
            }),
            ("spiffe://t.test", |e| {
                matches!(e, IdentityError::BadPath { .. })
            }),
            ("spiffe://t.test/org/11510400TB0000028Y/unit/a/", |e| {
                matches!(e, IdentityError::BadPath { .. })
            }),
            ("spiffe://t.test/org/11510400TB0000028Y/unit/a?x=1", |e| {
                matches!(e, IdentityError::BadUnit { .. })
            }),
            ("spiffe://t.test/unit/a/org/11510400TB0000028Y", |e| {
                matches!(e, IdentityError::BadPath { .. })
            }),
            ("spiffe://t.test/org/11510400TB0000028X/unit/a", |e| {
                matches!(
                    e,
                    IdentityError::BadCreditCode {
                        source: CreditCodeError::WrongCheckCharacter { .. },
                        ..
                    }
                )
            }),
            ("spiffe://t.test/org/11510400TB0000028Y/unit/Police", |e| {
                matches!(e, IdentityError::BadUnit { .. })
            }),
            ("spiffe://t.test/org/11510400TB0000028Y/unit/", |e| {
                matches!(e, IdentityError::BadUnit { .. })
            }),
        ];
        for (uri, is_expected) in cases {
            let err = PeerIdentity::parse_uri(uri).unwrap_err();
            assert!(is_expected(&err), "{uri}: unexpected error {err:?}");
        }
        let long_unit = format!(
            "spiffe://t.test/org/11510400TB0000028Y/unit/{}",
            "a".repeat(64)
        );
        assert!(matches!(
            PeerIdentity::parse_uri(&long_unit),
            Err(IdentityError::BadUnit { .. })
        ));
        let max_unit = format!(
            "spiffe://t.test/org/11510400TB0000028Y/unit/{}",
            "a".repeat(63)
        );
        assert!(PeerIdentity::parse_uri(&max_unit).is_ok());
    }

    #[test]
    fn new_validates_parts() {
        let org = CreditCode::parse("11510400TB0000028Y").unwrap();
        assert!(PeerIdentity::new("t.test", org.clone(), "salian-police-station").is_ok());
        assert!(PeerIdentity::new("t.test", org.clone(), "a_b").is_err());
        assert!(PeerIdentity::new("T", org, "a").is_err());
    }

    #[test]
    fn serde_uses_the_uri() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Holder {
            id: PeerIdentity,
        }
        let text = format!("id = \"{POLICE}\"\n");
        let holder: Holder = toml::from_str(&text).unwrap();
        assert_eq!(holder.id.unit(), "police");
        assert_eq!(toml::to_string(&holder).unwrap(), text);
        assert!(toml::from_str::<Holder>("id = \"spiffe://t.test/org/x/unit/a\"").is_err());
    }
}
