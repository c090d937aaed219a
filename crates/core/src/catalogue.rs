//! The matter catalogue: departments, the evidence types they hold, and the
//! matters (purposes) that need them. Loaded from TOML; a default is embedded.
//!
//! A bad catalogue is refused at start-up with `file:line:column: problem`.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::evidence::FieldSpec;
use crate::subject::{Role, SubjectKind};

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
    /// Whom the evidence is about: a person (the default) or an organisation.
    pub subject: SubjectKind,
    /// Other roles of the same case whose subjects the department compares
    /// against its register (market.registration: is the case's legal
    /// representative the registered one?). Only evidence that names a role
    /// here is sent that role's subject.
    pub compares_with: Vec<Role>,
}

impl EvidenceTypeDef {
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// The administrative level a matter is handled at ("pushed down" to), from
/// the lowest. A service point at a level handles the matters at its level
/// and below, so levels are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Village or community (村/社区).
    Community,
    /// Township or street (乡镇/街道).
    Township,
    /// County or district (县/区).
    County,
    /// City (市).
    City,
}

impl Level {
    pub const ALL: [Self; 4] = [Self::Community, Self::Township, Self::County, Self::City];

    /// The name used in the catalogue, the policy and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Community => "community",
            Self::Township => "township",
            Self::County => "county",
            Self::City => "city",
        }
    }

    pub fn title_zh(self) -> &'static str {
        match self {
            Self::Community => "村（社区）",
            Self::Township => "乡镇（街道）",
            Self::County => "县（区）",
            Self::City => "市",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.name() == name)
    }

    /// Every level name, for error messages.
    pub fn names() -> String {
        Self::ALL
            .iter()
            .map(|l| l.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Most subjects one role of a matter may name (a household's members).
pub const MAX_SUBJECTS_PER_ROLE: u32 = 20;

/// One role a matter needs, and the evidence about its subject(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleNeed {
    pub role: Role,
    /// Evidence type ids about each subject in this role, in order.
    pub evidence: Vec<String>,
    /// Fewest subjects a case must name in this role (0: optional).
    pub min: u32,
    /// Most subjects a case may name in this role.
    pub max: u32,
}

impl RoleNeed {
    pub fn needs(&self, evidence_type: &str) -> bool {
        self.evidence.iter().any(|e| e == evidence_type)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matter {
    pub code: String,
    pub title: String,
    pub title_zh: String,
    pub description: String,
    /// Every evidence type id any role needs, each once, in the
    /// catalogue's order.
    pub evidence: Vec<String>,
    /// The roles the matter needs, the primary one first (the role of a
    /// request that names no role).
    pub roles: Vec<RoleNeed>,
    /// The level the matter is handled at.
    pub level: Level,
    /// Handled at any service point of that level in the city (同城通办),
    /// not only where the applicant's household is registered.
    pub city_wide: bool,
    /// Days for which accesses under this matter are sealed from the
    /// subject (e.g. a criminal investigation); `None` when they are not.
    pub disclosure_delay_days: Option<u32>,
}

/// Bounds of a matter's `disclosure_delay_days`: at least a day (zero would
/// mean "not sealed", which is said by leaving the key out), at most ten years.
pub const DISCLOSURE_DELAY_DAYS: std::ops::RangeInclusive<i64> = 1..=3650;

impl Matter {
    /// Whether any role of the matter needs the evidence type.
    pub fn needs(&self, evidence_type: &str) -> bool {
        self.evidence.iter().any(|e| e == evidence_type)
    }

    /// The role's needs, when the matter has the role.
    pub fn role(&self, role: Role) -> Option<&RoleNeed> {
        self.roles.iter().find(|r| r.role == role)
    }

    /// The role of a subject named without one: the first declared.
    pub fn primary_role(&self) -> &RoleNeed {
        // A loaded matter has at least one role (`Catalogue::from_toml`
        // refuses a matter without); index 0 is therefore always present.
        &self.roles[0]
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
    /// "person" (the default) or "organisation".
    #[serde(default)]
    subject: Option<Spanned<String>>,
    #[serde(default)]
    compares_with: Vec<Spanned<String>>,
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
    /// Shorthand for one role: the applicant, or the enterprise when the
    /// evidence is about organisations. Exactly one of this and `role`.
    #[serde(default)]
    evidence: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    role: Vec<Spanned<RawRole>>,
    level: Spanned<String>,
    #[serde(default)]
    city_wide: bool,
    #[serde(default)]
    /// Any value, so a wrong type gets this key's own message.
    disclosure_delay_days: Option<Spanned<toml::Value>>,
}

/// A role as declared: name, evidence, min, max.
type RawRoleParts = (
    Spanned<String>,
    Spanned<Vec<Spanned<String>>>,
    Option<u32>,
    Option<u32>,
);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    role: Spanned<String>,
    evidence: Spanned<Vec<Spanned<String>>>,
    min: Option<u32>,
    max: Option<u32>,
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
            let subject = match &e.subject {
                None => SubjectKind::Person,
                Some(kind) => SubjectKind::parse(kind.get_ref()).ok_or_else(|| {
                    at(
                        kind.span(),
                        format!(
                            "evidence type {id:?}: subject must be \"person\" or \"organisation\", got {:?}",
                            kind.get_ref()
                        ),
                    )
                })?,
            };
            let mut compares_with = Vec::new();
            for role in &e.compares_with {
                let parsed = Role::parse(role.get_ref()).ok_or_else(|| {
                    at(
                        role.span(),
                        format!(
                            "evidence type {id:?}: compares_with names unknown role {:?} (known: {})",
                            role.get_ref(),
                            Role::names()
                        ),
                    )
                })?;
                if parsed.kind() != SubjectKind::Person || compares_with.contains(&parsed) {
                    return Err(at(
                        role.span(),
                        format!(
                            "evidence type {id:?}: compares_with takes each role held by a person at most once"
                        ),
                    ));
                }
                compares_with.push(parsed);
            }
            evidence_index.insert(id.clone(), evidence.len());
            evidence.push(EvidenceTypeDef {
                id: e.id.into_inner(),
                department: e.department.into_inner(),
                title: e.title,
                title_zh: e.title_zh,
                description: e.description,
                fields,
                subject,
                compares_with,
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
            let raw_roles: Vec<RawRoleParts> = match (m.evidence, m.role.is_empty()) {
                (Some(_), false) => {
                    return Err(at(
                        m.code.span(),
                        format!(
                            "matter {code:?} has both evidence and [[matter.role]]; list the evidence under its roles"
                        ),
                    ));
                }
                (None, true) => {
                    return Err(at(
                        m.code.span(),
                        format!(
                            "matter {code:?} needs no evidence: give evidence = [...] or [[matter.role]] tables"
                        ),
                    ));
                }
                (Some(shorthand), true) => {
                    // The shorthand's role follows from its evidence:
                    // about an organisation, the enterprise; else the
                    // applicant.
                    let about_organisation = shorthand.get_ref().first().is_some_and(|e| {
                        evidence_index
                            .get(e.get_ref())
                            .is_some_and(|&i| evidence[i].subject == SubjectKind::Organisation)
                    });
                    let role = if about_organisation {
                        Role::Enterprise
                    } else {
                        Role::Applicant
                    };
                    let span = shorthand.span();
                    vec![(
                        Spanned::new(span, role.name().to_owned()),
                        shorthand,
                        Some(1),
                        Some(1),
                    )]
                }
                (None, false) => m
                    .role
                    .into_iter()
                    .map(|r| {
                        let r = r.into_inner();
                        (r.role, r.evidence, r.min, r.max)
                    })
                    .collect(),
            };
            let mut roles: Vec<RoleNeed> = Vec::new();
            let mut union: Vec<String> = Vec::new();
            for (index, (role_name, role_evidence, min, max)) in raw_roles.into_iter().enumerate() {
                let role = Role::parse(role_name.get_ref()).ok_or_else(|| {
                    at(
                        role_name.span(),
                        format!(
                            "matter {code:?}: unknown role {:?} (known: {})",
                            role_name.get_ref(),
                            Role::names()
                        ),
                    )
                })?;
                if roles.iter().any(|r| r.role == role) {
                    return Err(at(
                        role_name.span(),
                        format!("matter {code:?} declares role {role} twice"),
                    ));
                }
                // The primary role is the one a request without roles
                // fills: it must be required, and hold one subject.
                let (min, max) = (min.unwrap_or(1), max.unwrap_or(1));
                if max == 0 || max > MAX_SUBJECTS_PER_ROLE || min > max {
                    return Err(at(
                        role_name.span(),
                        format!(
                            "matter {code:?}, role {role}: need 0 <= min <= max, 1 <= max <= {MAX_SUBJECTS_PER_ROLE}; got min {min}, max {max}"
                        ),
                    ));
                }
                if index == 0 && (min, max) != (1, 1) {
                    return Err(at(
                        role_name.span(),
                        format!(
                            "matter {code:?}: the first role ({role}) is the primary one and must have min = max = 1"
                        ),
                    ));
                }
                if role_evidence.get_ref().is_empty() {
                    return Err(at(
                        role_evidence.span(),
                        format!("matter {code:?}, role {role} needs no evidence"),
                    ));
                }
                let mut seen = HashSet::new();
                let mut needed = Vec::new();
                for ev in role_evidence.into_inner() {
                    let Some(&def) = evidence_index.get(ev.get_ref()) else {
                        return Err(at(
                            ev.span(),
                            format!(
                                "matter {code:?} needs unknown evidence type {:?}",
                                ev.get_ref()
                            ),
                        ));
                    };
                    if !seen.insert(ev.get_ref().clone()) {
                        return Err(at(
                            ev.span(),
                            format!(
                                "matter {code:?} lists {:?} twice for role {role}",
                                ev.get_ref()
                            ),
                        ));
                    }
                    let about = evidence[def].subject;
                    if about != role.kind() {
                        return Err(at(
                            ev.span(),
                            format!(
                                "matter {code:?}: {:?} is about {} but role {role} is held by {}",
                                ev.get_ref(),
                                about.with_article(),
                                role.kind().with_article()
                            ),
                        ));
                    }
                    if !union.contains(ev.get_ref()) {
                        union.push(ev.get_ref().clone());
                    }
                    needed.push(ev.into_inner());
                }
                roles.push(RoleNeed {
                    role,
                    evidence: needed,
                    min,
                    max,
                });
            }
            let level = Level::parse(m.level.get_ref()).ok_or_else(|| {
                at(
                    m.level.span(),
                    format!(
                        "matter {code:?}: unknown level {:?} (known: {})",
                        m.level.get_ref(),
                        Level::names()
                    ),
                )
            })?;
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
                evidence: union,
                roles,
                level,
                city_wide: m.city_wide,
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
level = "township"
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
                "hrss.contributions",
                "market.registration",
                "market.abnormal",
                "medins.enrolment",
            ]
        );
        // The seed's scale, in kind: at least 20 matters over at least five
        // departments, every level represented, every evidence type used.
        assert!(c.matters().len() >= 20, "{}", c.matters().len());
        assert_eq!(Catalogue::embedded().matters().len(), c.matters().len());
        let departments: HashSet<&str> = c
            .matters()
            .iter()
            .flat_map(|m| m.evidence.iter())
            .map(|e| c.evidence(e).unwrap().department.as_str())
            .collect();
        assert_eq!(departments.len(), 5, "{departments:?}");
        for level in Level::ALL {
            assert!(c.matters().iter().any(|m| m.level == level), "{level}");
        }
        for e in c.evidence_types() {
            assert!(
                c.matters().iter().any(|m| m.needs(&e.id)),
                "{} unused",
                e.id
            );
        }
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
        // A household matter: the applicant plus up to nine members.
        let dibao = c.matter("subsistence-allowance-review").unwrap();
        assert_eq!(dibao.primary_role().role, Role::Applicant);
        let members = dibao.role(Role::HouseholdMember).unwrap();
        assert_eq!((members.min, members.max), (0, 9));
        assert!(members.needs("hrss.pension") && !members.needs("civil.subsistence"));
        // An enterprise matter: market regulation about the enterprise, the
        // police about its legal representative.
        let employer = c
            .matter("enterprise-social-insurance-registration")
            .unwrap();
        assert_eq!(employer.primary_role().role, Role::Enterprise);
        assert_eq!(
            employer.role(Role::LegalRepresentative).unwrap().evidence,
            ["police.identity"]
        );
        assert_eq!(
            c.evidence("market.registration").unwrap().subject,
            SubjectKind::Organisation
        );
        assert!(employer.city_wide && employer.level == Level::Township);
        // Only the business registration is sent the legal representative.
        let comparing: Vec<_> = c
            .evidence_types()
            .iter()
            .filter(|e| !e.compares_with.is_empty())
            .map(|e| (e.id.as_str(), e.compares_with.clone()))
            .collect();
        assert_eq!(
            comparing,
            [("market.registration", vec![Role::LegalRepresentative])]
        );
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
            "{SMALL}\n[[matter]]\ncode = \"temporary-id-card\"\ntitle = \"x\"\nlevel = \"city\"\nevidence = [\"police.identity\"]\n"
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

    #[test]
    fn roles_levels_and_subject_kinds_are_read() {
        let text = format!(
            "{SMALL}\n[[department]]\nid = \"market\"\ntitle = \"Market\"\n\n[[evidence]]\nid = \"market.registration\"\ndepartment = \"market\"\nsubject = \"organisation\"\ntitle = \"Registration\"\nfields = [{{ name = \"status\", type = \"text\" }}]\n\n[[matter]]\ncode = \"employer-registration\"\ntitle = \"Employer\"\nlevel = \"county\"\ncity_wide = true\n[[matter.role]]\nrole = \"enterprise\"\nevidence = [\"market.registration\"]\n[[matter.role]]\nrole = \"legal-representative\"\nevidence = [\"police.identity\"]\n[[matter.role]]\nrole = \"household-member\"\nmin = 0\nmax = 3\nevidence = [\"police.identity\"]\n"
        );
        let c = Catalogue::from_toml(&text, "test.toml").unwrap();
        let m = c.matter("employer-registration").unwrap();
        assert_eq!(m.level, Level::County);
        assert!(m.city_wide);
        let roles: Vec<_> = m.roles.iter().map(|r| (r.role, r.min, r.max)).collect();
        assert_eq!(
            roles,
            [
                (Role::Enterprise, 1, 1),
                (Role::LegalRepresentative, 1, 1),
                (Role::HouseholdMember, 0, 3)
            ]
        );
        assert_eq!(m.evidence, ["market.registration", "police.identity"]);
        let small = c.matter("temporary-id-card").unwrap();
        assert_eq!(small.primary_role().role, Role::Applicant);
        assert!(!small.city_wide);

        // Shorthand evidence about an organisation makes the enterprise role.
        let shorthand = text.replace(
            "[[matter.role]]\nrole = \"enterprise\"\nevidence = [\"market.registration\"]\n[[matter.role]]\nrole = \"legal-representative\"\nevidence = [\"police.identity\"]\n[[matter.role]]\nrole = \"household-member\"\nmin = 0\nmax = 3\nevidence = [\"police.identity\"]\n",
            "evidence = [\"market.registration\"]\n",
        );
        let c = Catalogue::from_toml(&shorthand, "test.toml").unwrap();
        let m = c.matter("employer-registration").unwrap();
        assert_eq!(m.primary_role().role, Role::Enterprise);

        let cases = [
            (
                "role = \"enterprise\"",
                "role = \"boss\"",
                "unknown role \"boss\"",
            ),
            (
                "role = \"enterprise\"",
                "role = \"applicant\"",
                "about an organisation but role applicant is held by a person",
            ),
            (
                "role = \"legal-representative\"",
                "role = \"enterprise\"",
                "declares role enterprise twice",
            ),
            (
                "level = \"county\"",
                "level = \"province\"",
                "unknown level \"province\"",
            ),
            ("max = 3", "max = 21", "1 <= max <= 20"),
            ("min = 0\nmax = 3", "min = 4\nmax = 3", "min <= max"),
            (
                "subject = \"organisation\"",
                "subject = \"company\"",
                "must be \"person\" or \"organisation\"",
            ),
            (
                "title = \"Employer\"\n",
                "title = \"Employer\"\nevidence = [\"police.identity\"]\n",
                "both evidence and [[matter.role]]",
            ),
        ];
        for (from, to, message) in cases {
            let bad = text.replacen(from, to, 1);
            assert_ne!(bad, text, "{from}");
            let e = error(&bad);
            assert!(e.message.contains(message), "{from} -> {to}: {e}");
        }
        // The primary role holds exactly one subject.
        let optional_primary = text.replace(
            "role = \"enterprise\"\nevidence",
            "role = \"enterprise\"\nmin = 0\nevidence",
        );
        assert!(error(&optional_primary).message.contains("primary"));
        let no_level = SMALL.replace("level = \"township\"\n", "");
        assert!(
            error(&no_level).message.contains("level"),
            "{}",
            error(&no_level)
        );
    }
}
