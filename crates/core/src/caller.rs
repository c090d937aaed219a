//! Who is asking: an organisation (by unified social credit code) and one of
//! its units. Established by the transport (a verified client certificate),
//! never by a request field.

use std::fmt;

use crate::id::{CreditCode, CreditCodeError};

/// The authenticated organisation and unit behind a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Caller {
    pub org: CreditCode,
    pub unit: String,
}

/// Why a caller reference could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallerError {
    #[error(
        "expected \"spiffe://<trust-domain>/org/<credit code>/unit/<unit>\" or \"org/<credit code>/unit/<unit>\", got {0:?}"
    )]
    Shape(String),
    #[error("organisation code: {0}")]
    Org(#[from] CreditCodeError),
    #[error("unit {0:?} must be 1-63 lower-case letters, digits or '-'")]
    Unit(String),
}

impl Caller {
    pub fn new(org: CreditCode, unit: &str) -> Result<Self, CallerError> {
        if is_unit_name(unit) {
            Ok(Self {
                org,
                unit: unit.to_owned(),
            })
        } else {
            Err(CallerError::Unit(unit.to_owned()))
        }
    }

    /// Parses `org/<code>/unit/<unit>`, optionally behind
    /// `spiffe://<trust-domain>/`. Returns the trust domain, if any.
    pub fn parse_reference(input: &str) -> Result<(Option<String>, Self), CallerError> {
        let shape = || CallerError::Shape(input.to_owned());
        let (domain, path) = match input.strip_prefix("spiffe://") {
            Some(rest) => {
                let (domain, path) = rest.split_once('/').ok_or_else(shape)?;
                if domain.is_empty() {
                    return Err(shape());
                }
                (Some(domain.to_owned()), path)
            }
            None => (None, input),
        };
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["org", org, "unit", unit] => Ok((domain, Self::new(CreditCode::parse(org)?, unit)?)),
            _ => Err(shape()),
        }
    }

    /// The trust-domain-free path `org/<code>/unit/<unit>`.
    pub fn path(&self) -> String {
        format!("org/{}/unit/{}", self.org, self.unit)
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "org/{}/unit/{}", self.org, self.unit)
    }
}

/// Unit names: 1-63 of `[a-z0-9-]`, not starting or ending with '-'.
pub fn is_unit_name(unit: &str) -> bool {
    (1..=63).contains(&unit.len())
        && unit
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !unit.starts_with('-')
        && !unit.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spiffe_and_short_forms() {
        let (domain, c) = Caller::parse_reference(
            "spiffe://tongban.example/org/91350100M000100Y43/unit/dongli-community",
        )
        .unwrap();
        assert_eq!(domain.as_deref(), Some("tongban.example"));
        assert_eq!(c.unit, "dongli-community");
        assert_eq!(
            c.to_string(),
            "org/91350100M000100Y43/unit/dongli-community"
        );
        let (domain, short) =
            Caller::parse_reference("org/91350100M000100Y43/unit/dongli-community").unwrap();
        assert_eq!(domain, None);
        assert_eq!(short, c);
    }

    #[test]
    fn rejects_bad_references() {
        assert!(matches!(
            Caller::parse_reference("org/91350100M000100Y44/unit/x"),
            Err(CallerError::Org(_))
        ));
        assert!(matches!(
            Caller::parse_reference("org/91350100M000100Y43/unit/Bad_Unit"),
            Err(CallerError::Unit(_))
        ));
        assert!(matches!(
            Caller::parse_reference("spiffe:///org/91350100M000100Y43/unit/x"),
            Err(CallerError::Shape(_))
        ));
        assert!(matches!(
            Caller::parse_reference("org/91350100M000100Y43"),
            Err(CallerError::Shape(_))
        ));
    }
}
