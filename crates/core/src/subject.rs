//! Who a case is about: people (identity numbers) and organisations
//! (unified social credit codes), each in a role the matter declares.

use std::fmt;

use crate::id::{CreditCode, IdNumber};

/// What kind of subject a piece of evidence is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubjectKind {
    /// A natural person, named by a resident identity number (GB 11643).
    Person,
    /// An enterprise or other organisation, named by a unified social
    /// credit code (GB 32100).
    Organisation,
}

impl SubjectKind {
    pub const ALL: [Self; 2] = [Self::Person, Self::Organisation];

    /// The name used in the catalogue and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Person => "person",
            Self::Organisation => "organisation",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The name with its indefinite article, for messages.
    pub fn with_article(self) -> &'static str {
        match self {
            Self::Person => "a person",
            Self::Organisation => "an organisation",
        }
    }
}

impl fmt::Display for SubjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A subject's role in a case. Closed: a matter declares which of these it
/// needs, and the evidence for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The person applying (申请人).
    Applicant,
    /// The applicant's spouse (配偶).
    Spouse,
    /// Another member of the applicant's household (家庭成员).
    HouseholdMember,
    /// An enterprise's legal representative (法定代表人).
    LegalRepresentative,
    /// The enterprise (or other organisation) the case is about (企业).
    Enterprise,
}

impl Role {
    pub const ALL: [Self; 5] = [
        Self::Applicant,
        Self::Spouse,
        Self::HouseholdMember,
        Self::LegalRepresentative,
        Self::Enterprise,
    ];

    /// The name used in the catalogue and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Applicant => "applicant",
            Self::Spouse => "spouse",
            Self::HouseholdMember => "household-member",
            Self::LegalRepresentative => "legal-representative",
            Self::Enterprise => "enterprise",
        }
    }

    pub fn title_zh(self) -> &'static str {
        match self {
            Self::Applicant => "申请人",
            Self::Spouse => "配偶",
            Self::HouseholdMember => "家庭成员",
            Self::LegalRepresentative => "法定代表人",
            Self::Enterprise => "企业",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The kind of subject that can hold the role.
    pub fn kind(self) -> SubjectKind {
        match self {
            Self::Enterprise => SubjectKind::Organisation,
            _ => SubjectKind::Person,
        }
    }

    /// Every role name, for error messages.
    pub fn names() -> String {
        Self::ALL
            .iter()
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A validated subject identifier.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubjectId {
    Person(IdNumber),
    Organisation(CreditCode),
}

impl SubjectId {
    pub fn kind(&self) -> SubjectKind {
        match self {
            Self::Person(_) => SubjectKind::Person,
            Self::Organisation(_) => SubjectKind::Organisation,
        }
    }

    /// The identifier as sent to the department that holds the data.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Person(id) => id.as_str(),
            Self::Organisation(code) => code.as_str(),
        }
    }

    /// The input of the audit log's subject pseudonym: the identity number
    /// itself for a person (so earlier entries stay findable), the credit
    /// code behind an `org:` prefix for an organisation — both are 18
    /// characters over overlapping alphabets, and the prefix keeps an
    /// organisation's pseudonym from ever being a person's.
    pub fn pseudonym_input(&self) -> String {
        match self {
            Self::Person(id) => id.as_str().to_owned(),
            Self::Organisation(code) => format!("org:{}", code.as_str()),
        }
    }

    pub fn person(&self) -> Option<&IdNumber> {
        match self {
            Self::Person(id) => Some(id),
            Self::Organisation(_) => None,
        }
    }
}

/// Masked like [`IdNumber`]'s Debug for a person; a credit code identifies
/// an organisation, not a person, and is shown whole.
impl fmt::Debug for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Person(id) => write!(f, "Person({id:?})"),
            Self::Organisation(code) => write!(f, "Organisation({code})"),
        }
    }
}

/// Masked for a person (see [`IdNumber`]'s Display), whole for an
/// organisation: safe for logs and spans.
impl fmt::Display for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Person(id) => write!(f, "{id}"),
            Self::Organisation(code) => write!(f, "{code}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_and_kind_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.name()), Some(role));
        }
        for kind in SubjectKind::ALL {
            assert_eq!(SubjectKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(Role::parse("Applicant"), None);
        assert_eq!(Role::Enterprise.kind(), SubjectKind::Organisation);
        assert_eq!(Role::LegalRepresentative.kind(), SubjectKind::Person);
    }

    #[test]
    fn organisation_pseudonym_input_is_separated_from_people() {
        let code = CreditCode::with_check("91510400MA6200001").unwrap();
        let org = SubjectId::Organisation(code.clone());
        assert_eq!(org.pseudonym_input(), format!("org:{code}"));
        assert_eq!(org.kind(), SubjectKind::Organisation);
        let person = SubjectId::Person(IdNumber::parse("510403198507220465").unwrap());
        assert_eq!(person.pseudonym_input(), "510403198507220465");
        // A person's Display is masked, never the whole number.
        assert!(!person.to_string().contains("198507220465"));
    }
}
