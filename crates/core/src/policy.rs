//! The access policy: deny by default, grants bound to purpose.
//!
//! A grant names callers (a unit, every unit of an organisation, or a group)
//! and the matters they may handle. The catalogue then implies the evidence
//! they may request: evidence E only within a matter that needs E. A grant may
//! restrict the fields released per evidence type. Everything else is denied.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::caller::Caller;
use crate::catalogue::{Catalogue, CatalogueError, Matter, line_column};
use crate::id::CreditCode;

/// Per-caller and per-request bounds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Sustained requests per second per caller (a Gather counts once per
    /// evidence type it asks for).
    pub requests_per_second: f64,
    /// Requests a caller may make in a burst above the sustained rate.
    pub burst: u32,
    /// Most evidence items one Gather may ask for: one per subject and
    /// evidence type its role needs (a household of ten in a subsistence
    /// allowance case is 6 + 9 × 4 = 42 items).
    pub max_gather_evidence: usize,
    /// Largest encoded request accepted, in bytes.
    pub max_request_bytes: usize,
    /// Sustained refusals per second per caller that are recorded and
    /// answered at once; beyond it (and `refusal_burst`), a caller's
    /// refusals wait their turn, so a flood of calls bound to be refused
    /// grows the log by at most this rate.
    pub refusals_per_second: f64,
    /// Refusals a caller may receive at once above the sustained rate.
    pub refusal_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            requests_per_second: 200.0,
            burst: 400,
            // Room for the largest household the catalogue allows (42
            // items), still a bound on what one call fans out to.
            max_gather_evidence: 64,
            max_request_bytes: 16 * 1024,
            refusals_per_second: 50.0,
            refusal_burst: 100,
        }
    }
}

/// Which fields of an evidence type a caller receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldRelease {
    All,
    Only(BTreeSet<String>),
}

impl FieldRelease {
    pub fn allows(&self, field: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(field),
        }
    }
}

/// Why a request is refused. Says what grant is missing, never any data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("{caller} holds no grant for matter {matter:?}")]
    MatterNotGranted { caller: String, matter: String },
    #[error(
        "matter {matter:?} does not need evidence {evidence_type:?}; evidence is released only for a matter that needs it"
    )]
    EvidenceNotInMatter {
        matter: String,
        evidence_type: String,
    },
    #[error("{caller} is not an administrator")]
    NotAdministrator { caller: String },
    #[error("{caller} is not a citizen portal (the policy's [portal] callers)")]
    NotPortal { caller: String },
}

impl Denial {
    /// Stable machine-readable reason (for ErrorInfo).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MatterNotGranted { .. } => "MATTER_NOT_GRANTED",
            Self::EvidenceNotInMatter { .. } => "EVIDENCE_NOT_IN_MATTER",
            Self::NotAdministrator { .. } => "NOT_ADMINISTRATOR",
            Self::NotPortal { .. } => "NOT_PORTAL",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CallerPattern {
    Unit(Caller),
    Org(CreditCode),
}

impl std::fmt::Display for CallerPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unit(c) => write!(f, "{c}"),
            Self::Org(org) => write!(f, "org/{org}/unit/*"),
        }
    }
}

impl CallerPattern {
    fn matches(&self, caller: &Caller) -> bool {
        match self {
            Self::Unit(c) => c == caller,
            Self::Org(org) => &caller.org == org,
        }
    }
}

#[derive(Debug, Clone)]
struct Grant {
    callers: Vec<CallerPattern>,
    matters: BTreeSet<String>,
    /// Evidence type -> released fields; absent evidence types release all.
    fields: BTreeMap<String, BTreeSet<String>>,
}

/// A validated access policy.
#[derive(Debug, Clone)]
pub struct Policy {
    trust_domain: Option<String>,
    grants: Vec<Grant>,
    admins: Vec<CallerPattern>,
    /// Citizen portals: may ask for every entry about a person (the portal
    /// vouches for the person; the policy only says who is a portal).
    portals: Vec<CallerPattern>,
    /// `[organisations]`: credit code → name, for citizens' histories.
    organisations: BTreeMap<String, String>,
    limits: Limits,
    version: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    trust_domain: Option<Spanned<String>>,
    #[serde(default)]
    groups: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    grant: Vec<Spanned<RawGrant>>,
    #[serde(default)]
    admin: Option<RawCallers>,
    #[serde(default)]
    portal: Option<RawCallers>,
    /// Credit code → the organisation's name, shown to citizens beside the
    /// accesses in their history.
    #[serde(default)]
    organisations: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    limits: Option<Spanned<Limits>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    callers: Spanned<Vec<Spanned<String>>>,
    matters: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    fields: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
}

/// Longest organisation name in `[organisations]`, in characters.
pub const MAX_ORGANISATION_NAME_CHARS: usize = 100;

/// A role's table (`[admin]`, `[portal]`): who holds it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCallers {
    callers: Spanned<Vec<Spanned<String>>>,
}

impl Policy {
    /// Parses and validates a policy against the catalogue it will be used
    /// with; `source_name` names it in errors.
    pub fn from_toml(
        text: &str,
        source_name: &str,
        catalogue: &Catalogue,
    ) -> Result<Self, CatalogueError> {
        let at = |span: Range<usize>, message: String| {
            let (line, column) = line_column(text, span.start);
            CatalogueError {
                source_name: source_name.to_owned(),
                line,
                column,
                message,
            }
        };
        let raw: RawPolicy = toml::from_str(text)
            .map_err(|e| at(e.span().unwrap_or(0..0), e.message().trim().to_owned()))?;
        let trust_domain = raw.trust_domain.map(Spanned::into_inner);

        let mut groups: BTreeMap<String, Vec<CallerPattern>> = BTreeMap::new();
        for (name, members) in &raw.groups {
            let mut patterns = Vec::new();
            for m in members.get_ref() {
                if m.get_ref().starts_with("group:") {
                    return Err(at(m.span(), "groups cannot contain groups".to_owned()));
                }
                patterns.push(
                    parse_pattern(m.get_ref(), trust_domain.as_deref())
                        .map_err(|e| at(m.span(), e.to_string()))?,
                );
            }
            groups.insert(name.clone(), patterns);
        }
        let resolve =
            |refs: &Spanned<Vec<Spanned<String>>>| -> Result<Vec<CallerPattern>, CatalogueError> {
                if refs.get_ref().is_empty() {
                    return Err(at(refs.span(), "names no caller".to_owned()));
                }
                let mut out = Vec::new();
                for r in refs.get_ref() {
                    match r.get_ref().strip_prefix("group:") {
                        Some(g) => out.extend(
                            groups
                                .get(g)
                                .ok_or_else(|| at(r.span(), format!("unknown group {g:?}")))?
                                .iter()
                                .cloned(),
                        ),
                        None => out.push(
                            parse_pattern(r.get_ref(), trust_domain.as_deref())
                                .map_err(|e| at(r.span(), e.to_string()))?,
                        ),
                    }
                }
                Ok(out)
            };

        let mut grants = Vec::new();
        for g in &raw.grant {
            let g = g.get_ref();
            let callers = resolve(&g.callers)?;
            if g.matters.get_ref().is_empty() {
                return Err(at(g.matters.span(), "grant names no matter".to_owned()));
            }
            let mut matters = BTreeSet::new();
            for m in g.matters.get_ref() {
                if catalogue.matter(m.get_ref()).is_none() {
                    return Err(at(m.span(), format!("unknown matter {:?}", m.get_ref())));
                }
                matters.insert(m.get_ref().clone());
            }
            let mut fields = BTreeMap::new();
            for (evidence_type, names) in &g.fields {
                let def = catalogue.evidence(evidence_type).ok_or_else(|| {
                    at(
                        names.span(),
                        format!("unknown evidence type {evidence_type:?}"),
                    )
                })?;
                if !matters
                    .iter()
                    .any(|m| catalogue.matter(m).is_some_and(|m| m.needs(evidence_type)))
                {
                    return Err(at(
                        names.span(),
                        format!("no matter of this grant needs {evidence_type:?}"),
                    ));
                }
                let mut set = BTreeSet::new();
                for n in names.get_ref() {
                    if def.field(n.get_ref()).is_none() {
                        return Err(at(
                            n.span(),
                            format!("{evidence_type:?} has no field {:?}", n.get_ref()),
                        ));
                    }
                    set.insert(n.get_ref().clone());
                }
                fields.insert(evidence_type.clone(), set);
            }
            grants.push(Grant {
                callers,
                matters,
                fields,
            });
        }
        let admins = match &raw.admin {
            Some(a) => resolve(&a.callers)?,
            None => Vec::new(),
        };
        let portals = match &raw.portal {
            Some(p) => resolve(&p.callers)?,
            None => Vec::new(),
        };
        let mut organisations = BTreeMap::new();
        for (code, name) in &raw.organisations {
            let parsed = CreditCode::parse(code.get_ref()).map_err(|e| {
                at(
                    code.span(),
                    format!("organisation code {:?}: {e}", code.get_ref()),
                )
            })?;
            let text = name.get_ref().trim();
            if text.is_empty()
                || text.chars().count() > MAX_ORGANISATION_NAME_CHARS
                || text.chars().any(char::is_control)
            {
                return Err(at(
                    name.span(),
                    format!(
                        "organisation name must be 1 to {MAX_ORGANISATION_NAME_CHARS} characters without control characters"
                    ),
                ));
            }
            organisations.insert(parsed.as_str().to_owned(), text.to_owned());
        }
        let limits = match raw.limits {
            Some(l) => {
                let span = l.span();
                let l = l.into_inner();
                let positive = |rate: f64| rate > 0.0 && rate.is_finite();
                if !positive(l.requests_per_second)
                    || l.burst == 0
                    || !positive(l.refusals_per_second)
                    || l.refusal_burst == 0
                    || l.max_gather_evidence == 0
                    || l.max_request_bytes < 256
                {
                    return Err(at(
                        span,
                        "limits must be positive (max_request_bytes at least 256)".to_owned(),
                    ));
                }
                l
            }
            None => Limits::default(),
        };
        Ok(Self {
            trust_domain,
            grants,
            admins,
            portals,
            organisations,
            limits,
            version: policy_version(text),
        })
    }

    /// The version of this policy: the first 16 hex digits of the SHA-256 of
    /// its source text. Every audit entry records the version that decided
    /// it, so a decision can be traced to the exact file in force.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// What this policy permits, one canonical line per permission
    /// (`grant <caller pattern> <matter>`, `fields <caller pattern> <matter>
    /// <evidence type> <field,…>`, `admin <caller pattern>`, `portal <caller
    /// pattern>`, `trust_domain …`,
    /// `limits …`). Two policies' lines differ exactly where what they permit
    /// differs, so a reload can record what was added and removed.
    pub fn permissions(&self) -> BTreeSet<String> {
        let mut lines = BTreeSet::new();
        for g in &self.grants {
            for caller in &g.callers {
                for matter in &g.matters {
                    lines.insert(format!("grant {caller} {matter}"));
                    for (evidence, fields) in &g.fields {
                        let list: Vec<&str> = fields.iter().map(String::as_str).collect();
                        lines.insert(format!(
                            "fields {caller} {matter} {evidence} {}",
                            list.join(",")
                        ));
                    }
                }
            }
        }
        for admin in &self.admins {
            lines.insert(format!("admin {admin}"));
        }
        for portal in &self.portals {
            lines.insert(format!("portal {portal}"));
        }
        if let Some(domain) = &self.trust_domain {
            lines.insert(format!("trust_domain {domain}"));
        }
        let l = &self.limits;
        lines.insert(format!(
            "limits requests_per_second={} burst={} max_gather_evidence={} max_request_bytes={} refusals_per_second={} refusal_burst={}",
            l.requests_per_second,
            l.burst,
            l.max_gather_evidence,
            l.max_request_bytes,
            l.refusals_per_second,
            l.refusal_burst
        ));
        lines
    }

    /// The trust domain callers' certificates must belong to, if pinned.
    pub fn trust_domain(&self) -> Option<&str> {
        self.trust_domain.as_deref()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// May `caller` receive `evidence_type` for `matter`, and which fields?
    pub fn authorize(
        &self,
        caller: &Caller,
        matter: &Matter,
        evidence_type: &str,
    ) -> Result<FieldRelease, Denial> {
        let mut grants = self.grants_for(caller, &matter.code).peekable();
        if grants.peek().is_none() {
            return Err(Denial::MatterNotGranted {
                caller: caller.to_string(),
                matter: matter.code.clone(),
            });
        }
        if !matter.needs(evidence_type) {
            return Err(Denial::EvidenceNotInMatter {
                matter: matter.code.clone(),
                evidence_type: evidence_type.to_owned(),
            });
        }
        let mut union = BTreeSet::new();
        for g in grants {
            match g.fields.get(evidence_type) {
                None => return Ok(FieldRelease::All),
                Some(f) => union.extend(f.iter().cloned()),
            }
        }
        Ok(FieldRelease::Only(union))
    }

    /// May `caller` handle matter `code` at all?
    pub fn may_handle(&self, caller: &Caller, code: &str) -> bool {
        self.grants_for(caller, code).next().is_some()
    }

    /// Matters `caller` may handle, in catalogue order.
    pub fn granted_matters<'c>(
        &self,
        caller: &Caller,
        catalogue: &'c Catalogue,
    ) -> Vec<&'c Matter> {
        catalogue
            .matters()
            .iter()
            .filter(|m| self.may_handle(caller, &m.code))
            .collect()
    }

    /// The fields of `evidence_type` that `caller` receives under some
    /// granted matter needing it (the union over those matters), or `None`
    /// when no granted matter needs it. What discovery may show this caller.
    pub fn evidence_release(
        &self,
        caller: &Caller,
        evidence_type: &str,
        catalogue: &Catalogue,
    ) -> Option<FieldRelease> {
        let mut union: Option<BTreeSet<String>> = None;
        for matter in self.granted_matters(caller, catalogue) {
            match self.authorize(caller, matter, evidence_type) {
                Ok(FieldRelease::All) => return Some(FieldRelease::All),
                Ok(FieldRelease::Only(fields)) => {
                    union.get_or_insert_with(BTreeSet::new).extend(fields)
                }
                Err(_) => {}
            }
        }
        union.map(FieldRelease::Only)
    }

    pub fn require_admin(&self, caller: &Caller) -> Result<(), Denial> {
        if self.admins.iter().any(|p| p.matches(caller)) {
            Ok(())
        } else {
            Err(Denial::NotAdministrator {
                caller: caller.to_string(),
            })
        }
    }

    /// Is `caller` a citizen portal (`[portal] callers`)? Being one grants
    /// nothing else: no matter, no administrator right.
    pub fn is_portal(&self, caller: &Caller) -> bool {
        self.portals.iter().any(|p| p.matches(caller))
    }

    /// [`is_portal`](Self::is_portal), as a decision.
    pub fn require_portal(&self, caller: &Caller) -> Result<(), Denial> {
        if self.is_portal(caller) {
            Ok(())
        } else {
            Err(Denial::NotPortal {
                caller: caller.to_string(),
            })
        }
    }

    /// The name `[organisations]` gives the organisation with this credit code.
    pub fn organisation_name(&self, credit_code: &str) -> Option<&str> {
        self.organisations.get(credit_code).map(String::as_str)
    }

    fn grants_for<'a>(
        &'a self,
        caller: &'a Caller,
        matter: &'a str,
    ) -> impl Iterator<Item = &'a Grant> {
        self.grants.iter().filter(move |g| {
            g.matters.contains(matter) && g.callers.iter().any(|p| p.matches(caller))
        })
    }
}

/// Why a caller pattern in the policy is unusable.
#[derive(Debug, thiserror::Error)]
enum PatternError {
    #[error("bad SPIFFE id")]
    BadSpiffeId,
    #[error("caller pattern {0:?} must start with \"org/\"")]
    NoOrg(String),
    #[error("caller pattern {pattern:?}: organisation code {source}")]
    OrgCode {
        pattern: String,
        source: crate::id::CreditCodeError,
    },
    #[error(transparent)]
    Caller(#[from] crate::caller::CallerError),
    #[error("trust domain {domain:?} differs from the policy's {pinned:?}")]
    OtherTrustDomain { domain: String, pinned: String },
}

/// `org/<code>/unit/<unit>`, `org/<code>/unit/*` (every unit), either behind
/// `spiffe://<trust-domain>/`.
fn parse_pattern(input: &str, trust_domain: Option<&str>) -> Result<CallerPattern, PatternError> {
    if let Some(org_part) = input.strip_suffix("/unit/*") {
        let path = match org_part.strip_prefix("spiffe://") {
            Some(rest) => {
                let (domain, path) = rest.split_once('/').ok_or(PatternError::BadSpiffeId)?;
                check_domain(domain, trust_domain)?;
                path
            }
            None => org_part,
        };
        let code = path
            .strip_prefix("org/")
            .ok_or_else(|| PatternError::NoOrg(input.to_owned()))?;
        return CreditCode::parse(code)
            .map(CallerPattern::Org)
            .map_err(|source| PatternError::OrgCode {
                pattern: input.to_owned(),
                source,
            });
    }
    let (domain, caller) = Caller::parse_reference(input)?;
    if let Some(d) = domain {
        check_domain(&d, trust_domain)?;
    }
    Ok(CallerPattern::Unit(caller))
}

/// See [`Policy::version`].
fn policy_version(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn check_domain(domain: &str, pinned: Option<&str>) -> Result<(), PatternError> {
    match pinned {
        Some(p) if p != domain => Err(PatternError::OtherTrustDomain {
            domain: domain.to_owned(),
            pinned: p.to_owned(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMUNITY: &str = "91510403MB1F00001B";

    fn org(n: u32) -> CreditCode {
        CreditCode::with_check(&format!("11510400MB{n:07}")).unwrap()
    }

    fn policy(text: &str) -> Result<Policy, CatalogueError> {
        Policy::from_toml(text, "policy.toml", &Catalogue::embedded())
    }

    fn sample() -> String {
        format!(
            r#"
trust_domain = "tongban.test"

[groups]
community-centres = ["org/{a}/unit/dongli-community", "spiffe://tongban.test/org/{b}/unit/*"]

[[grant]]
callers = ["group:community-centres"]
matters = ["unemployment-benefit", "pension-qualification"]

[[grant]]
callers = ["org/{c}/unit/hotline-96196"]
matters = ["unemployment-benefit"]
fields = {{ "hrss.unemployment" = ["eligible", "reason"] }}

[admin]
callers = ["org/{c}/unit/admin"]

[portal]
callers = ["org/{d}/unit/tianfu-tongban"]

[limits]
requests_per_second = 5.0
burst = 10
"#,
            a = org(1),
            b = org(2),
            c = org(3),
            d = org(4)
        )
    }

    fn caller(o: CreditCode, unit: &str) -> Caller {
        Caller::new(o, unit).unwrap()
    }

    #[test]
    fn grants_and_purpose_limitation() {
        let p = policy(&sample()).unwrap();
        let cat = Catalogue::embedded();
        let unemployment = cat.matter("unemployment-benefit").unwrap();
        let community = caller(org(1), "dongli-community");
        assert_eq!(
            p.authorize(&community, unemployment, "hrss.unemployment"),
            Ok(FieldRelease::All)
        );
        // Any unit of org 2, via the org pattern in the group.
        assert!(
            p.authorize(&caller(org(2), "anything"), unemployment, "police.identity")
                .is_ok()
        );
        // Another unit of org 1 is not granted.
        let denied = p
            .authorize(&caller(org(1), "other"), unemployment, "hrss.unemployment")
            .unwrap_err();
        assert_eq!(denied.reason(), "MATTER_NOT_GRANTED");
        // Evidence the matter does not need.
        let outside = p
            .authorize(&community, unemployment, "civil.marriage")
            .unwrap_err();
        assert_eq!(
            outside,
            Denial::EvidenceNotInMatter {
                matter: "unemployment-benefit".into(),
                evidence_type: "civil.marriage".into()
            }
        );
        // A matter not granted at all.
        let temp_id = cat.matter("temporary-id-card").unwrap();
        assert!(matches!(
            p.authorize(&community, temp_id, "police.identity"),
            Err(Denial::MatterNotGranted { .. })
        ));
        assert_eq!(p.limits().burst, 10);
        assert_eq!(p.limits().max_gather_evidence, 64);
    }

    #[test]
    fn version_and_permissions_follow_the_text() {
        let a = policy(&sample()).unwrap();
        assert_eq!(a.version().len(), 16);
        assert!(a.version().chars().all(|c| c.is_ascii_hexdigit()));
        // A comment changes the file, so the version, but not what it permits.
        let commented = policy(&format!("# reviewed\n{}", sample())).unwrap();
        assert_ne!(commented.version(), a.version());
        assert_eq!(commented.permissions(), a.permissions());
        let hotline = format!("org/{}/unit/hotline-96196", org(3));
        let lines = a.permissions();
        assert!(lines.contains(&format!("grant {hotline} unemployment-benefit")));
        assert!(lines.contains(&format!(
            "fields {hotline} unemployment-benefit hrss.unemployment eligible,reason"
        )));
        assert!(lines.contains(&format!(
            "grant org/{}/unit/* pension-qualification",
            org(2)
        )));
        assert!(lines.contains(&format!("admin org/{}/unit/admin", org(3))));
        // Dropping the hotline's grant removes exactly its lines.
        let without = policy(&sample().replace(
            &format!(
                "[[grant]]\ncallers = [\"org/{}/unit/hotline-96196\"]\nmatters = [\"unemployment-benefit\"]\nfields = {{ \"hrss.unemployment\" = [\"eligible\", \"reason\"] }}\n",
                org(3)
            ),
            "",
        ))
        .unwrap();
        let remaining = without.permissions();
        let removed: Vec<_> = lines.difference(&remaining).collect();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(removed.iter().all(|l| l.contains("hotline-96196")));
    }

    #[test]
    fn field_restriction() {
        let p = policy(&sample()).unwrap();
        let cat = Catalogue::embedded();
        let m = cat.matter("unemployment-benefit").unwrap();
        let hotline = caller(org(3), "hotline-96196");
        let release = p.authorize(&hotline, m, "hrss.unemployment").unwrap();
        assert!(release.allows("eligible"));
        assert!(!release.allows("insured_months"));
        assert_eq!(
            p.authorize(&hotline, m, "police.identity"),
            Ok(FieldRelease::All)
        );
    }

    #[test]
    fn discovery_and_admin() {
        let p = policy(&sample()).unwrap();
        let cat = Catalogue::embedded();
        let community = caller(org(1), "dongli-community");
        let codes: Vec<_> = p
            .granted_matters(&community, &cat)
            .iter()
            .map(|m| m.code.as_str())
            .collect();
        assert_eq!(codes, ["unemployment-benefit", "pension-qualification"]);
        assert!(
            p.evidence_release(&community, "civil.death", &cat)
                .is_some()
        );
        assert!(
            p.evidence_release(&community, "civil.marriage", &cat)
                .is_none()
        );
        assert!(p.require_admin(&caller(org(3), "admin")).is_ok());
        let hotline = caller(org(3), "hotline-96196");
        assert_eq!(
            p.evidence_release(&hotline, "hrss.unemployment", &cat),
            Some(FieldRelease::Only(
                ["eligible".to_owned(), "reason".to_owned()].into()
            ))
        );
        assert_eq!(
            p.evidence_release(&hotline, "police.identity", &cat),
            Some(FieldRelease::All)
        );
        assert_eq!(p.evidence_release(&hotline, "civil.death", &cat), None);
        assert_eq!(
            p.require_admin(&community).unwrap_err().reason(),
            "NOT_ADMINISTRATOR"
        );
    }

    #[test]
    fn empty_policy_denies_everything() {
        let p = policy("").unwrap();
        let cat = Catalogue::embedded();
        let m = cat.matter("temporary-id-card").unwrap();
        assert!(
            p.authorize(&caller(org(1), "x"), m, "police.identity")
                .is_err()
        );
        assert!(p.granted_matters(&caller(org(1), "x"), &cat).is_empty());
    }

    #[test]
    fn invalid_policies_name_the_line() {
        let bad_matter = sample().replace("\"pension-qualification\"]", "\"pension\"]");
        let e = policy(&bad_matter).unwrap_err();
        assert!(e.message.contains("unknown matter \"pension\""), "{e}");
        assert_eq!(e.line, 9);
        let bad_field = sample().replace("\"reason\"", "\"salary\"");
        assert!(
            policy(&bad_field)
                .unwrap_err()
                .message
                .contains("no field \"salary\"")
        );
        let bad_group = sample().replace("group:community-centres", "group:schools");
        assert!(
            policy(&bad_group)
                .unwrap_err()
                .message
                .contains("unknown group")
        );
        let bad_domain = sample().replace("spiffe://tongban.test/", "spiffe://elsewhere/");
        assert!(
            policy(&bad_domain)
                .unwrap_err()
                .message
                .contains("trust domain")
        );
        let bad_code = sample().replace(
            &format!("org/{}/unit/admin", org(3)),
            &format!("org/{COMMUNITY}X/unit/admin"),
        );
        assert!(policy(&bad_code).is_err());
        let outside = sample().replace("\"hrss.unemployment\" = [", "\"civil.marriage\" = [");
        assert!(
            policy(&outside)
                .unwrap_err()
                .message
                .contains("no matter of this grant needs")
        );
        let zero = sample().replace("burst = 10", "burst = 0");
        assert!(policy(&zero).unwrap_err().message.contains("positive"));
        // The refusal budget is checked like the request budget.
        for refusals in [
            "refusals_per_second = 0.0",
            "refusals_per_second = -1.0",
            "refusals_per_second = nan",
            "refusals_per_second = inf",
            "refusal_burst = 0",
        ] {
            let bad = sample().replace("burst = 10", &format!("burst = 10\n{refusals}"));
            assert!(
                policy(&bad).unwrap_err().message.contains("positive"),
                "{refusals}"
            );
        }
        let good = sample().replace(
            "burst = 10",
            "burst = 10\nrefusals_per_second = 2.5\nrefusal_burst = 7",
        );
        let good = policy(&good).unwrap();
        assert_eq!(good.limits().refusals_per_second, 2.5);
        assert_eq!(good.limits().refusal_burst, 7);
    }

    #[test]
    fn portals_are_named_like_admins_and_hold_no_other_right() {
        let p = policy(&sample()).unwrap();
        let cat = Catalogue::embedded();
        let portal = caller(org(4), "tianfu-tongban");
        assert!(p.is_portal(&portal));
        assert!(!p.is_portal(&caller(org(4), "other-unit")));
        assert!(!p.is_portal(&caller(org(3), "admin")));
        // A portal is not an administrator, and may handle no matter.
        assert_eq!(
            p.require_admin(&portal).unwrap_err().reason(),
            "NOT_ADMINISTRATOR"
        );
        assert!(p.granted_matters(&portal, &cat).is_empty());
        assert!(
            p.permissions()
                .contains(&format!("portal org/{}/unit/tianfu-tongban", org(4)))
        );
        // Without the table, nobody is a portal.
        assert!(!policy("").unwrap().is_portal(&portal));
        // Every unit of an organisation, through a group, as for admins.
        let org_wide = sample().replace(
            &format!("callers = [\"org/{}/unit/tianfu-tongban\"]", org(4)),
            &format!(
                "callers = [\"spiffe://tongban.test/org/{}/unit/*\", \"group:community-centres\"]",
                org(4)
            ),
        );
        let p = policy(&org_wide).unwrap();
        assert!(p.is_portal(&caller(org(4), "other-unit")));
        assert!(p.is_portal(&caller(org(1), "dongli-community")));
        assert!(!p.is_portal(&caller(org(3), "admin")));
    }

    #[test]
    fn bad_portal_tables_name_the_line() {
        let portal = format!("\"org/{}/unit/tianfu-tongban\"", org(4));
        for (bad, message) in [
            ("\"tianfu-tongban\"".to_owned(), "org/"),
            (
                "\"org/12345/unit/tianfu-tongban\"".to_owned(),
                "18 characters",
            ),
            (
                format!("\"spiffe://elsewhere/org/{}/unit/x\"", org(4)),
                "trust domain",
            ),
            ("\"group:schools\"".to_owned(), "unknown group"),
        ] {
            let e = policy(&sample().replace(&portal, &bad)).unwrap_err();
            assert_eq!(e.line, 20, "{bad}: {e}");
            assert!(e.message.contains(message), "{bad}: {e}");
        }
        let empty = policy(&sample().replace(&portal, "")).unwrap_err();
        assert!(empty.message.contains("names no caller"), "{empty}");
        let unknown_key = sample().replace(
            "[portal]\n",
            "[portal]\nmatters = [\"unemployment-benefit\"]\n",
        );
        let e = policy(&unknown_key).unwrap_err();
        assert!(e.message.contains("matters"), "{e}");
    }
}
