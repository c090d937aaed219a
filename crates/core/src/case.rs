//! The case context every request carries: purpose (matter), case number and
//! operator. Validated before anything else happens.

/// One violated rule in a request, for a `BadRequest` detail at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Request field path, e.g. `case.case_number`.
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Validated case context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseContext {
    pub matter: String,
    pub case_number: String,
    pub operator_id: String,
}

const MAX_TOKEN_LEN: usize = 64;

impl CaseContext {
    /// Validates the three mandatory parts; collects every violation at once
    /// so the caller can fix them in one go.
    pub fn new(
        matter: &str,
        case_number: &str,
        operator_id: &str,
    ) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        check_token(
            "case.matter",
            matter,
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
            "lower-case letters, digits and '-'",
            &mut violations,
        );
        check_token(
            "case.case_number",
            case_number,
            |c| c.is_ascii_alphanumeric() || "-_/.:".contains(c),
            "letters, digits and -_/.:",
            &mut violations,
        );
        check_token(
            "case.operator_id",
            operator_id,
            |c| c.is_ascii_alphanumeric() || "-_/.:@".contains(c),
            "letters, digits and -_/.:@",
            &mut violations,
        );
        if violations.is_empty() {
            Ok(Self {
                matter: matter.to_owned(),
                case_number: case_number.to_owned(),
                operator_id: operator_id.to_owned(),
            })
        } else {
            Err(violations)
        }
    }
}

/// Checks a catalogue code named by a caller (an evidence type such as
/// `hrss.unemployment`, a department, a field name): at most 64 lower-case
/// letters, digits and `.-_`. Codes reach the audit log and the reports
/// printed from it, so anything else is refused before it is looked up.
pub fn check_code(field: &str, value: &str, out: &mut Vec<FieldViolation>) {
    check_token(
        field,
        value,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c),
        "lower-case letters, digits and .-_",
        out,
    );
}

fn check_token(
    field: &str,
    value: &str,
    allowed: impl Fn(char) -> bool,
    allowed_text: &str,
    out: &mut Vec<FieldViolation>,
) {
    if value.is_empty() {
        out.push(FieldViolation::new(field, "is required"));
    } else if value.len() > MAX_TOKEN_LEN {
        out.push(FieldViolation::new(
            field,
            format!(
                "must be at most {MAX_TOKEN_LEN} characters, got {}",
                value.len()
            ),
        ));
    } else if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
        out.push(FieldViolation::new(
            field,
            format!("contains {bad:?}; allowed are {allowed_text}"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_case() {
        let c = CaseContext::new("temporary-id-card", "MY-2026-000123", "clerk.li@salian").unwrap();
        assert_eq!(c.case_number, "MY-2026-000123");
    }

    #[test]
    fn codes_are_short_plain_identifiers() {
        let mut v = Vec::new();
        check_code("evidence_type", "hrss.unemployment", &mut v);
        check_code("fields[0]", "insured_months", &mut v);
        assert!(v.is_empty(), "{v:?}");
        check_code("evidence_type", "x\n\u{1b}[31mforged", &mut v);
        check_code("evidence_type", &"a".repeat(16 * 1024), &mut v);
        check_code("evidence_type", "", &mut v);
        assert_eq!(v.len(), 3);
        assert!(v[0].description.contains("'\\n'"), "{}", v[0].description);
        assert!(v[1].description.contains("at most 64"));
        assert_eq!(v[2].description, "is required");
    }

    #[test]
    fn every_violation_is_reported() {
        let v = CaseContext::new("", "case 1", &"x".repeat(65)).unwrap_err();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0], FieldViolation::new("case.matter", "is required"));
        assert_eq!(v[1].field, "case.case_number");
        assert!(v[1].description.contains("' '"), "{}", v[1].description);
        assert!(v[2].description.contains("at most 64"));
    }
}
