//! The matter catalogue: departments, the evidence types they hold, and the
//! matters (purposes) that need them. Loaded from TOML; a default is embedded.
//!
//! A bad catalogue is refused at start-up with `file:line:column: problem`.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::evidence::FieldSpec;

/// The catalogue tongban ships with.
pub const DEFAULT_CATALOGUE_TOML: &str = include_str!("default_catalogue.toml");

/// A catalogue that failed to load, with the place and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}:{column}: {message}")]
pub struct CatalogueError {
    pub source_name: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Department {
    pub id: String,
    pub title: String,
    pub title_zh: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceTypeDef {
    pub id: String,
    pub department: String,
    pub title: String,
    pub title_zh: String,
    pub description: String,
    pub fields: Vec<FieldSpec>,
}

impl EvidenceTypeDef {
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matter {
    pub code: String,
    pub title: String,
    pub title_zh: String,
    pub description: String,
    /// Evidence type ids, in the catalogue's order.
    pub evidence: Vec<String>,
    /// Days for which accesses under this matter are sealed from the
    /// subject (e.g. a criminal investigation); `None` when they are not.
    pub disclosure_delay_days: Option<u32>,
}

/// Bounds of a matter's `disclosure_delay_days`: at least a day (zero would
/// mean "not sealed", which is said by leaving the key out), at most ten years.
pub const DISCLOSURE_DELAY_DAYS: std::ops::RangeInclusive<i64> = 1..=3650;

impl Matter {
    pub fn needs(&self, evidence_type: &str) -> bool {
        self.evidence.iter().any(|e| e == evidence_type)
    }

    /// How long after an access under this matter the subject may learn of
    /// it; `None` when at once.
    pub fn disclosure_delay(&self) -> Option<chrono::Duration> {
        self.disclosure_delay_days
            .and_then(|days| chrono::Duration::try_days(i64::from(days)))
    }
}

/// A validated catalogue. Lookups are by id; iteration keeps file order.
#[derive(Debug, Clone)]
pub struct Catalogue {
    departments: Vec<Department>,
    evidence: Vec<EvidenceTypeDef>,
    matters: Vec<Matter>,
    evidence_index: BTreeMap<String, usize>,
    matter_index: BTreeMap<String, usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogue {
    #[serde(default)]
    department: Vec<Spanned<RawDepartment>>,
    #[serde(default)]
    evidence: Vec<Spanned<RawEvidence>>,
    #[serde(default)]
    matter: Vec<Spanned<RawMatter>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDepartment {
    id: Spanned<String>,
    title: String,
    #[serde(default)]
    title_zh: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvidence {
    id: Spanned<String>,
    department: Spanned<String>,
    title: String,
    #[serde(default)]
    title_zh: String,
    #[serde(default)]
    description: String,
    fields: Spanned<Vec<Spanned<FieldSpec>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatter {
    code: Spanned<String>,
    title: String,
    #[serde(default)]
    title_zh: String,
    #[serde(default)]
    description: String,
    evidence: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    /// Any value, so a wrong type gets this key's own message.
    disclosure_delay_days: Option<Spanned<toml::Value>>,
}

impl Catalogue {
    /// The embedded default catalogue.
    pub fn embedded() -> Self {
        // The embedded catalogue is checked by a unit test; a failure here is
        // a build defect, so fall back to an empty catalogue rather than panic.
        Self::from_toml(DEFAULT_CATALOGUE_TOML, "default catalogue").unwrap_or_else(|_| Self {
            departments: Vec::new(),
            evidence: Vec::new(),
            matters: Vec::new(),
            evidence_index: BTreeMap::new(),
            matter_index: BTreeMap::new(),
        })
    }

    /// Parses and validates a catalogue; `source_name` names it in errors.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Self, CatalogueError> {
        let at = |span: Range<usize>, message: String| {
            let (line, column) = line_column(text, span.start);
            CatalogueError {
                source_name: source_name.to_owned(),
                line,
                column,
                message,
            }
        };
        let raw: RawCatalogue = toml::from_str(text)
            .map_err(|e| at(e.span().unwrap_or(0..0), e.message().trim().to_owned()))?;

        let mut departments = Vec::new();
        let mut department_ids = HashSet::new();
        for d in raw.department {
            let span = d.span();
            let d = d.into_inner();
            check_id(&d.id, "department id", false).map_err(|e| at(d.id.span(), e.to_string()))?;
            if !department_ids.insert(d.id.get_ref().clone()) {
                return Err(at(
                    d.id.span(),
                    format!("department {:?} is declared twice", d.id.get_ref()),
                ));
            }
            if d.title.trim().is_empty() {
                return Err(at(
                    span,
                    format!("department {:?} needs a title", d.id.get_ref()),
                ));
            }
            departments.push(Department {
                id: d.id.into_inner(),
                title: d.title,
                title_zh: d.title_zh,
            });
        }

        let mut evidence = Vec::new();
        let mut evidence_index = BTreeMap::new();
        for e in raw.evidence {
            let e = e.into_inner();
            let id = e.id.get_ref();
            check_id(&e.id, "evidence type id", true)
                .map_err(|err| at(e.id.span(), err.to_string()))?;
            if evidence_index.contains_key(id) {
                return Err(at(
                    e.id.span(),
                    format!("evidence type {id:?} is declared twice"),
                ));
            }
            if !department_ids.contains(e.department.get_ref()) {
                return Err(at(
                    e.department.span(),
                    format!(
                        "evidence type {id:?} names unknown department {:?}",
                        e.department.get_ref()
                    ),
                ));
            }
            let fields_span = e.fields.span();
            if e.fields.get_ref().is_empty() {
                return Err(at(
                    fields_span,
                    format!("evidence type {id:?} has no fields"),
                ));
            }
            let mut names = HashSet::new();
            let mut fields = Vec::new();
            for f in e.fields.into_inner() {
                let span = f.span();
                let f = f.into_inner();
                if !is_field_name(&f.name) {
                    return Err(at(
                        span,
                        format!("field name {:?} must be lower_snake_case", f.name),
                    ));
                }
                if !names.insert(f.name.clone()) {
                    return Err(at(
                        span,
                        format!("field {:?} is declared twice in {id:?}", f.name),
                    ));
                }
                fields.push(f);
            }
            evidence_index.insert(id.clone(), evidence.len());
            evidence.push(EvidenceTypeDef {
                id: e.id.into_inner(),
                department: e.department.into_inner(),
                title: e.title,
                title_zh: e.title_zh,
                description: e.description,
                fields,
            });
        }

        let mut matters = Vec::new();
        let mut matter_index = BTreeMap::new();
        for m in raw.matter {
            let m = m.into_inner();
            let code = m.code.get_ref();
            check_id(&m.code, "matter code", false)
                .map_err(|e| at(m.code.span(), e.to_string()))?;
            if matter_index.contains_key(code) {
                return Err(at(
                    m.code.span(),
                    format!("matter {code:?} is declared twice"),
                ));
            }
            if m.evidence.get_ref().is_empty() {
                return Err(at(
                    m.evidence.span(),
                    format!("matter {code:?} needs no evidence"),
                ));
            }
            let mut seen = HashSet::new();
            let mut needed = Vec::new();
            for ev in m.evidence.into_inner() {
                if !evidence_index.contains_key(ev.get_ref()) {
                    return Err(at(
                        ev.span(),
                        format!(
                            "matter {code:?} needs unknown evidence type {:?}",
                            ev.get_ref()
                        ),
                    ));
                }
                if !seen.insert(ev.get_ref().clone()) {
                    return Err(at(
                        ev.span(),
                        format!("matter {code:?} lists {:?} twice", ev.get_ref()),
                    ));
                }
                needed.push(ev.into_inner());
            }
            let disclosure_delay_days = match &m.disclosure_delay_days {
                None => None,
                Some(days) => Some(disclosure_delay_days(days.get_ref()).ok_or_else(|| {
                    at(
                        days.span(),
                        format!(
                            "matter {code:?}: disclosure_delay_days must be a whole number of days from {} to {}, got {}",
                            DISCLOSURE_DELAY_DAYS.start(),
                            DISCLOSURE_DELAY_DAYS.end(),
                            days.get_ref()
                        ),
                    )
                })?),
            };
            matter_index.insert(code.clone(), matters.len());
            matters.push(Matter {
                code: m.code.into_inner(),
                title: m.title,
                title_zh: m.title_zh,
                description: m.description,
                evidence: needed,
                disclosure_delay_days,
            });
        }
        if matters.is_empty() {
            return Err(at(0..0, "the catalogue declares no matter".to_owned()));
        }

        Ok(Self {
            departments,
            evidence,
            matters,
            evidence_index,
            matter_index,
        })
    }

    pub fn departments(&self) -> &[Department] {
        &self.departments
    }

    pub fn department(&self, id: &str) -> Option<&Department> {
        self.departments.iter().find(|d| d.id == id)
    }

    pub fn evidence_types(&self) -> &[EvidenceTypeDef] {
        &self.evidence
    }

    pub fn evidence(&self, id: &str) -> Option<&EvidenceTypeDef> {
        self.evidence_index.get(id).map(|&i| &self.evidence[i])
    }

    pub fn matters(&self) -> &[Matter] {
        &self.matters
    }

    pub fn matter(&self, code: &str) -> Option<&Matter> {
        self.matter_index.get(code).map(|&i| &self.matters[i])
    }
}

/// A `disclosure_delay_days` value, when it is an integer within
/// [`DISCLOSURE_DELAY_DAYS`].
fn disclosure_delay_days(value: &toml::Value) -> Option<u32> {
    match value {
        toml::Value::Integer(days) if DISCLOSURE_DELAY_DAYS.contains(days) => {
            u32::try_from(*days).ok()
        }
        _ => None,
    }
}

/// An identifier in the catalogue that breaks the naming rules.
#[derive(Debug, thiserror::Error)]
enum BadId {
    #[error("{what} {id:?} must look like \"department.name\" (lower-case letters, digits, '-')")]
    NotDotted { what: &'static str, id: String },
    #[error("{what} {id:?} must be lower-case letters, digits and '-'")]
    NotPlain { what: &'static str, id: String },
}

fn check_id(id: &Spanned<String>, what: &'static str, dotted: bool) -> Result<(), BadId> {
    let s = id.get_ref();
    let parts: Vec<&str> = s.split('.').collect();
    let ok = !s.is_empty()
        && s.len() <= 64
        && parts.len() == if dotted { 2 } else { 1 }
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.starts_with(|c: char| c.is_ascii_lowercase())
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    if ok {
        Ok(())
    } else if dotted {
        Err(BadId::NotDotted {
            what,
            id: s.clone(),
        })
    } else {
        Err(BadId::NotPlain {
            what,
            id: s.clone(),
        })
    }
}

fn is_field_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
[[department]]
id = "police"
title = "Police"

[[evidence]]
id = "police.identity"
department = "police"
title = "Identity"
fields = [{ name = "alive", type = "bool" }]

[[matter]]
code = "temporary-id-card"
title = "Temporary ID card"
evidence = ["police.identity"]
"#;

    fn error(text: &str) -> CatalogueError {
        Catalogue::from_toml(text, "test.toml").unwrap_err()
    }

    #[test]
    fn embedded_catalogue_is_valid_and_complete() {
        let c = Catalogue::from_toml(DEFAULT_CATALOGUE_TOML, "default").unwrap();
        let ids: Vec<_> = c.evidence_types().iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "police.identity",
                "police.household",
                "civil.marriage",
                "civil.subsistence",
                "civil.death",
                "hrss.unemployment",
                "hrss.pension",
                "hrss.contributions"
            ]
        );
        for code in [
            "temporary-id-card",
            "unemployment-benefit",
            "pension-qualification",
            "social-insurance-record",
            "subsistence-allowance",
            "criminal-investigation-assist",
        ] {
            assert!(c.matter(code).is_some(), "{code}");
        }
        assert_eq!(Catalogue::embedded().matters().len(), 6);
        // Only the investigation is sealed, for 180 days.
        let sealed: Vec<_> = c
            .matters()
            .iter()
            .filter(|m| m.disclosure_delay().is_some())
            .map(|m| m.code.as_str())
            .collect();
        assert_eq!(sealed, ["criminal-investigation-assist"]);
        let assist = c.matter("criminal-investigation-assist").unwrap();
        assert_eq!(assist.disclosure_delay_days, Some(180));
        assert_eq!(assist.disclosure_delay(), Some(chrono::Duration::days(180)));
        assert_eq!(assist.title_zh, "刑事案件侦查协查");
        assert!(assist.needs("police.identity") && assist.needs("police.household"));
    }

    #[test]
    fn disclosure_delay_is_read_and_bounded() {
        let with = |value: &str| {
            SMALL.replace(
                r#"evidence = ["police.identity"]"#,
                &format!("evidence = [\"police.identity\"]\ndisclosure_delay_days = {value}"),
            )
        };
        let plain = Catalogue::from_toml(SMALL, "test.toml").unwrap();
        assert_eq!(
            plain
                .matter("temporary-id-card")
                .unwrap()
                .disclosure_delay(),
            None
        );
        for (value, days) in [("1", 1), ("180", 180), ("3650", 3650)] {
            let c = Catalogue::from_toml(&with(value), "test.toml").unwrap();
            let m = c.matter("temporary-id-card").unwrap();
            assert_eq!(m.disclosure_delay_days, Some(days));
            assert_eq!(
                m.disclosure_delay(),
                Some(chrono::Duration::days(days.into()))
            );
        }
        // Out of range, negative, not an integer: refused at the value.
        for value in ["0", "-5", "3651", "99999999999", "1.5", "\"180\"", "true"] {
            let e = error(&with(value));
            assert_eq!((e.line, e.column), (16, 25), "{value}: {e}");
            assert!(e.to_string().starts_with("test.toml:16:25: "), "{e}");
        }
        let e = error(&with("0"));
        assert!(
            e.message
                .contains("whole number of days from 1 to 3650, got 0"),
            "{e}"
        );
        assert!(error(&with("-5")).message.contains("got -5"));
        assert!(error(&with("1.5")).message.contains("got 1.5"));
        assert!(error(&with("\"180\"")).message.contains("got \"180\""));
    }

    #[test]
    fn small_catalogue_loads() {
        let c = Catalogue::from_toml(SMALL, "test.toml").unwrap();
        assert!(
            c.matter("temporary-id-card")
                .unwrap()
                .needs("police.identity")
        );
        assert_eq!(c.evidence("police.identity").unwrap().department, "police");
    }

    #[test]
    fn unknown_evidence_in_matter_names_line() {
        let text = SMALL.replace(
            r#"evidence = ["police.identity"]"#,
            r#"evidence = ["police.identity", "police.dna"]"#,
        );
        let e = error(&text);
        assert_eq!(e.line, 15);
        assert_eq!(e.column, 32);
        assert!(
            e.message.contains("unknown evidence type \"police.dna\""),
            "{e}"
        );
        assert!(e.to_string().starts_with("test.toml:15:32: "), "{e}");
    }

    #[test]
    fn syntax_error_names_line() {
        let text = SMALL.replace("title = \"Identity\"", "title = Identity");
        let e = error(&text);
        assert_eq!(e.line, 9, "{e}");
    }

    #[test]
    fn unknown_key_is_rejected() {
        let text = SMALL.replace(
            "title = \"Police\"",
            "title = \"Police\"\ncolour = \"blue\"",
        );
        let e = error(&text);
        assert!(e.message.contains("colour"), "{e}");
        assert_eq!(e.line, 5);
    }

    #[test]
    fn unknown_department_is_rejected() {
        let text = SMALL.replace("department = \"police\"", "department = \"tax\"");
        let e = error(&text);
        assert_eq!(e.line, 8);
        assert!(e.message.contains("unknown department \"tax\""), "{e}");
    }

    #[test]
    fn duplicates_and_bad_names_are_rejected() {
        let dup = format!(
            "{SMALL}\n[[matter]]\ncode = \"temporary-id-card\"\ntitle = \"x\"\nevidence = [\"police.identity\"]\n"
        );
        assert!(error(&dup).message.contains("declared twice"));
        let bad_field = SMALL.replace("name = \"alive\"", "name = \"Alive\"");
        assert!(error(&bad_field).message.contains("lower_snake_case"));
        let bad_type = SMALL.replace("type = \"bool\"", "type = \"boolean\"");
        assert!(error(&bad_type).message.contains("boolean"));
        let bad_id = SMALL.replace("id = \"police.identity\"", "id = \"identity\"");
        assert!(error(&bad_id).message.contains("department.name"));
        let empty = SMALL.replace(r#"evidence = ["police.identity"]"#, "evidence = []");
        assert!(error(&empty).message.contains("needs no evidence"));
        let twice = SMALL.replace(
            r#"evidence = ["police.identity"]"#,
            r#"evidence = ["police.identity", "police.identity"]"#,
        );
        assert!(error(&twice).message.contains("twice"));
    }
}
