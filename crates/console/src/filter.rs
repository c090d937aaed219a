//! Search filters read from forms and query strings, and the checks on
//! what an administrator may type.

use tongban_audit::{EntryKind, SearchFilter, SubjectPseudonymizer};
use tongban_core::{CreditCode, IdNumber, SubjectId};

use crate::text::is_unsafe_for_log;
use crate::time::parse_local_time;
use crate::url::{param, url_encode};

/// Text filters: query key, label.
pub const TEXT_FILTERS: [(&str, &str); 8] = [
    ("node", "节点 Node"),
    ("caller_org", "调用机构 Caller organisation"),
    ("caller_unit", "调用单位 Caller unit"),
    ("operator", "经办人 Operator"),
    ("department", "部门 Department"),
    ("evidence_type", "证据类型 Evidence type"),
    ("matter", "事项 Matter"),
    ("case", "案件号 Case number"),
];

pub fn is_pseudonym(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What `tongban_audit` accepts as a node id; nothing else can be found,
/// so nothing else is logged.
pub fn is_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Why a filter cannot be read; the message names the field, for the page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("{0}: too long (at most 128 characters)")]
    TooLong(&'static str),
    #[error("{0}: contains control or text-direction characters")]
    UnsafeText(&'static str),
    /// The same words as `EntryKind`'s own parse error.
    #[error("unknown entry kind {0:?}")]
    Kind(String),
    #[error("outcome: {0:?} is not a status code")]
    Outcome(String),
    #[error("{field}: {value:?} is not a time like 2026-11-26T08:30")]
    Time { field: &'static str, value: String },
    #[error("身份证号无效 not a valid resident identity number ({0} check failed)")]
    IdNumber(&'static str),
    #[error(
        "统一社会信用代码无效 not a valid unified social credit code ({0} check failed); a person is named by an 18-character identity number"
    )]
    CreditCode(&'static str),
    #[error("subject: not a pseudonym")]
    Subject,
}

/// A search filter read from form or query parameters, and the canonical
/// parameters that reproduce it (identity numbers replaced by pseudonyms).
#[derive(Debug, Clone, Default)]
pub struct ParsedFilter {
    pub filter: SearchFilter,
    pub params: Vec<(String, String)>,
}

impl ParsedFilter {
    /// A description for the audit log.
    pub fn describe(&self) -> String {
        if self.params.is_empty() {
            return "filter: all entries".into();
        }
        let parts: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("filter: {}", parts.join(" "))
    }

    pub fn query_string(&self) -> String {
        self.params
            .iter()
            .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    pub fn has_subject(&self) -> bool {
        self.params.iter().any(|(k, _)| k == "subject")
    }
}

/// Reads a filter; the error names the field and why, for the page.
pub fn parse_filter(
    pseudonymizer: &SubjectPseudonymizer,
    params: &[(String, String)],
) -> Result<ParsedFilter, FilterError> {
    let mut out = ParsedFilter::default();
    let text = |k: &str| {
        let v = param(params, k);
        (!v.is_empty()).then(|| v.to_owned())
    };
    for (key, _) in TEXT_FILTERS {
        if let Some(v) = text(key) {
            if v.chars().count() > 128 {
                return Err(FilterError::TooLong(key));
            }
            if v.chars().any(is_unsafe_for_log) {
                return Err(FilterError::UnsafeText(key));
            }
            out.params.push((key.to_owned(), v.clone()));
            let f = &mut out.filter;
            match key {
                "node" => f.node = Some(v),
                "caller_org" => f.caller_org = Some(v),
                "caller_unit" => f.caller_unit = Some(v),
                "operator" => f.operator = Some(v),
                "department" => f.department = Some(v),
                "evidence_type" => f.evidence_type = Some(v),
                "matter" => f.matter = Some(v),
                _ => f.case_number = Some(v),
            }
        }
    }
    if let Some(k) = text("kind") {
        out.filter.kind = Some(
            k.parse::<EntryKind>()
                .map_err(|_| FilterError::Kind(k.clone()))?,
        );
        out.params.push(("kind".into(), k));
    }
    if let Some(o) = text("outcome") {
        out.filter.outcome_code = Some(
            o.parse::<i32>()
                .map_err(|_| FilterError::Outcome(o.clone()))?,
        );
        out.params.push(("outcome".into(), o));
    }
    for key in ["from", "to"] {
        if let Some(t) = text(key) {
            let time = parse_local_time(&t).ok_or_else(|| FilterError::Time {
                field: key,
                value: t.clone(),
            })?;
            if key == "from" {
                out.filter.from = Some(time);
            } else {
                out.filter.to = Some(time);
            }
            out.params.push((key.to_owned(), t));
        }
    }
    if let Some(id) = text("subject_id") {
        let p = pseudonymizer.pseudonym(&subject_of(&id)?.pseudonym_input());
        out.filter.subject = Some(p.clone());
        out.params.push(("subject".into(), p));
    } else if let Some(p) = text("subject") {
        if !is_pseudonym(&p) {
            return Err(FilterError::Subject);
        }
        out.filter.subject = Some(p.clone());
        out.params.push(("subject".into(), p));
    }
    Ok(out)
}

/// Whom a typed identifier names: a person's identity number, or an
/// organisation's credit code (`org:` in front, or any valid code that is
/// not an identity number — the two checksums rarely agree, and where they
/// do the prefix says which is meant).
fn subject_of(typed: &str) -> Result<SubjectId, FilterError> {
    if let Some(code) = typed.strip_prefix("org:") {
        return CreditCode::parse(code.trim())
            .map(SubjectId::Organisation)
            .map_err(|e| FilterError::CreditCode(e.check()));
    }
    match IdNumber::parse(typed) {
        Ok(id) => Ok(SubjectId::Person(id)),
        Err(id_error) => match CreditCode::parse(typed) {
            Ok(code) => Ok(SubjectId::Organisation(code)),
            // Digits (and an X check character): meant as an identity number.
            Err(_)
                if typed
                    .trim_end_matches(['X', 'x'])
                    .chars()
                    .all(|c| c.is_ascii_digit()) =>
            {
                Err(FilterError::IdNumber(id_error.check()))
            }
            Err(e) => Err(FilterError::CreditCode(e.check())),
        },
    }
}

/// `510421********0825`: enough to recognise, not enough to use.
pub fn mask_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() < 10 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_identity_numbers() {
        assert_eq!(mask_id("510421199603140825"), "510421********0825");
        assert_eq!(mask_id("123"), "***");
    }

    #[test]
    fn refusals_name_the_field_and_why() {
        let pseudonymizer = SubjectPseudonymizer::from_bytes(&[9u8; 32]).unwrap();
        let refused = |key: &str, value: &str| {
            parse_filter(&pseudonymizer, &[(key.to_owned(), value.to_owned())])
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            refused("matter", &"m".repeat(129)),
            "matter: too long (at most 128 characters)"
        );
        assert_eq!(
            refused("operator", "a\u{202e}b"),
            "operator: contains control or text-direction characters"
        );
        assert_eq!(refused("kind", "Nope"), "unknown entry kind \"Nope\"");
        assert_eq!(
            refused("outcome", "x"),
            "outcome: \"x\" is not a status code"
        );
        assert_eq!(
            refused("to", "soon"),
            "to: \"soon\" is not a time like 2026-11-26T08:30"
        );
        assert_eq!(
            refused("subject_id", "123"),
            "身份证号无效 not a valid resident identity number (length check failed)"
        );
        assert_eq!(refused("subject", "abc"), "subject: not a pseudonym");
        assert!(
            refused("subject_id", "91510421TB6A1B2C3N").contains("(checksum check failed)"),
            "a credit code with a wrong check character"
        );
        assert!(refused("subject_id", "org:91510421TB6A1B2C3").contains("(length check failed)"));
    }

    #[test]
    fn an_organisation_is_searched_under_its_own_pseudonym() {
        let pseudonymizer = SubjectPseudonymizer::from_bytes(&[9u8; 32]).unwrap();
        let code = "91510421TB6A1B2C3G";
        for typed in [code.to_owned(), format!("org:{code}")] {
            let parsed = parse_filter(&pseudonymizer, &[("subject_id".to_owned(), typed)]).unwrap();
            assert_eq!(
                parsed.filter.subject.as_deref(),
                Some(pseudonymizer.pseudonym(&format!("org:{code}")).as_str())
            );
        }
    }

    #[test]
    fn pseudonyms_are_64_lower_hex() {
        assert!(is_pseudonym(&"a1".repeat(32)));
        assert!(!is_pseudonym(&"A1".repeat(32)));
        assert!(!is_pseudonym("510421199603140825"));
    }
}
