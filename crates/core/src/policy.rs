//! The access policy: deny by default, grants bound to purpose.
//!
//! A grant names callers (a unit, every unit of an organisation, or a group)
//! and the matters they may handle. The catalogue then implies the evidence
//! they may request: evidence E only within a matter that needs E. A grant may
//! restrict the fields released per evidence type. Everything else is denied.
//!
//! A grant names its matters one by one (`matters`), by level
//! (`up_to_level = "township"`: every matter handled at township level or
//! below), or both. Its `access` is `evidence` (the default: request evidence
//! and discover the matters) or `discover` (ListMatters, DescribeMatter and
//! FindServicePoints only — what the 96196 hotline needs to tell callers where
//! to go; it never releases evidence). `[service_points]` names the units
//! where matters are handled, with their level and region.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::caller::Caller;
use crate::catalogue::{Catalogue, CatalogueError, Level, Matter, line_column};
use crate::id::CreditCode;
use crate::service_point::{MAX_SERVICE_POINT_NAME_CHARS, RegionCode, ServicePoint};

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

/// What a grant lets its callers do with its matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Handle the matters: request their evidence (Lookup, Gather), and
    /// discover them.
    Evidence,
    /// Discover the matters only (ListMatters, DescribeMatter,
    /// FindServicePoints); never any evidence.
    Discover,
}

impl Access {
    pub fn name(self) -> &'static str {
        match self {
            Self::Evidence => "evidence",
            Self::Discover => "discover",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [Self::Evidence, Self::Discover]
            .into_iter()
            .find(|a| a.name() == name)
    }
}

#[derive(Debug, Clone)]
struct Grant {
    callers: Vec<CallerPattern>,
    /// For each of `callers`, the group it was named through, if any.
    via_group: Vec<Option<String>>,
    /// Every matter the grant covers: those it names and, with
    /// `up_to_level`, those of the catalogue at that level or below.
    matters: BTreeSet<String>,
    /// Evidence type -> released fields; absent evidence types release all.
    fields: BTreeMap<String, BTreeSet<String>>,
    access: Access,
    /// Where the grant is in the policy's source (1-based line).
    line: usize,
}

/// One grant that applies to a decision, as [`Policy::explain`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantUse {
    /// 1-based position among the policy's `[[grant]]` tables.
    pub position: usize,
    /// Line of the grant in the policy's source.
    pub line: usize,
    /// The caller pattern of the grant that names the caller
    /// (`org/<code>/unit/<unit>` or `org/<code>/unit/*`).
    pub matched: String,
    /// The group the pattern was named through (`group:<name>`), if any.
    pub via_group: Option<String>,
    /// Per evidence type explained: the fields this grant releases
    /// (`None`: every field, the grant restricts none).
    pub releases: BTreeMap<String, Option<BTreeSet<String>>>,
}

/// The decision on one evidence type, with the grants' parts in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceDecision {
    pub evidence_type: String,
    /// Exactly what [`Policy::authorize`] answers for it.
    pub outcome: Result<FieldRelease, Denial>,
}

/// Why the policy decides as it does for a caller and a matter (and one
/// evidence type, or every evidence type the matter needs). Made by the
/// same code as [`Policy::authorize`] and [`Policy::may_handle`], so an
/// explanation cannot say other than the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub caller: Caller,
    pub matter: String,
    /// The grants naming the caller and the matter, in file order; empty
    /// when the matter is not granted.
    pub grants: Vec<GrantUse>,
    /// `None` when the caller may handle the matter ([`Policy::may_handle`]).
    pub matter_denial: Option<Denial>,
    /// The evidence type asked about, or every one the matter needs, in the
    /// catalogue's order.
    pub evidence: Vec<EvidenceDecision>,
    /// Context for a denial: the matters the caller may handle (in policy
    /// order), and its roles.
    pub other_matters: Vec<String>,
    pub is_admin: bool,
    pub is_portal: bool,
}

impl Explanation {
    /// Allowed: the matter is granted and every evidence decision released
    /// something.
    pub fn allowed(&self) -> bool {
        self.matter_denial.is_none() && self.evidence.iter().all(|e| e.outcome.is_ok())
    }

    /// The first reason for refusal, if refused.
    pub fn denial(&self) -> Option<&Denial> {
        self.matter_denial
            .as_ref()
            .or_else(|| self.evidence.iter().find_map(|e| e.outcome.as_ref().err()))
    }
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
    /// `[service_points]`: where matters are handled, by unit.
    service_points: BTreeMap<Caller, ServicePoint>,
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
    /// Unit (`org/<code>/unit/<unit>`) → the service point it is.
    #[serde(default)]
    service_points: BTreeMap<Spanned<String>, Spanned<RawServicePoint>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    callers: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    matters: Option<Spanned<Vec<Spanned<String>>>>,
    /// Every matter at this level or below.
    #[serde(default)]
    up_to_level: Option<Spanned<String>>,
    /// "evidence" (the default) or "discover".
    #[serde(default)]
    access: Option<Spanned<String>>,
    #[serde(default)]
    fields: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServicePoint {
    name: Spanned<String>,
    level: Spanned<String>,
    region: Spanned<String>,
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
        // Each pattern with the group it was named through, if any.
        type Resolved = Vec<(CallerPattern, Option<String>)>;
        let resolve = |refs: &Spanned<Vec<Spanned<String>>>| -> Result<Resolved, CatalogueError> {
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
                            .map(|p| (p.clone(), Some(g.to_owned()))),
                    ),
                    None => out.push((
                        parse_pattern(r.get_ref(), trust_domain.as_deref())
                            .map_err(|e| at(r.span(), e.to_string()))?,
                        None,
                    )),
                }
            }
            Ok(out)
        };

        let mut grants = Vec::new();
        for spanned in &raw.grant {
            let line = line_column(text, spanned.span().start).0;
            let g = spanned.get_ref();
            let (callers, via_group) = resolve(&g.callers)?.into_iter().unzip();
            let access = match &g.access {
                None => Access::Evidence,
                Some(a) => Access::parse(a.get_ref()).ok_or_else(|| {
                    at(
                        a.span(),
                        format!(
                            "access must be \"evidence\" or \"discover\", got {:?}",
                            a.get_ref()
                        ),
                    )
                })?,
            };
            let mut matters = BTreeSet::new();
            match &g.matters {
                None if g.up_to_level.is_none() => {
                    return Err(at(
                        spanned.span(),
                        "grant names no matter: give matters = [...], up_to_level = \"<level>\" or both"
                            .to_owned(),
                    ));
                }
                None => {}
                Some(list) => {
                    if list.get_ref().is_empty() {
                        return Err(at(list.span(), "grant names no matter".to_owned()));
                    }
                    for m in list.get_ref() {
                        if catalogue.matter(m.get_ref()).is_none() {
                            return Err(at(m.span(), format!("unknown matter {:?}", m.get_ref())));
                        }
                        matters.insert(m.get_ref().clone());
                    }
                }
            }
            if let Some(level) = &g.up_to_level {
                let up_to = Level::parse(level.get_ref()).ok_or_else(|| {
                    at(
                        level.span(),
                        format!(
                            "unknown level {:?} (known: {})",
                            level.get_ref(),
                            Level::names()
                        ),
                    )
                })?;
                let mut any = false;
                for m in catalogue.matters().iter().filter(|m| m.level <= up_to) {
                    any = true;
                    matters.insert(m.code.clone());
                }
                if !any {
                    return Err(at(
                        level.span(),
                        format!("the catalogue has no matter at level {up_to} or below"),
                    ));
                }
            }
            if access == Access::Discover && !g.fields.is_empty() {
                let span = g
                    .fields
                    .values()
                    .next()
                    .map_or(spanned.span(), |f| f.span());
                return Err(at(
                    span,
                    "a discover grant releases no evidence: fields apply only to access = \"evidence\""
                        .to_owned(),
                ));
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
                via_group,
                matters,
                fields,
                access,
                line,
            });
        }
        let service_points = service_points(&raw.service_points, trust_domain.as_deref(), &at)?;
        let admins = match &raw.admin {
            Some(a) => resolve(&a.callers)?.into_iter().map(|(p, _)| p).collect(),
            None => Vec::new(),
        };
        let portals = match &raw.portal {
            Some(p) => resolve(&p.callers)?.into_iter().map(|(p, _)| p).collect(),
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
            service_points,
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
    /// <evidence type> <field,…>`, `discover <caller pattern> <matter>`,
    /// `admin <caller pattern>`, `portal <caller pattern>`,
    /// `service_point <unit> level=… region=… name=…`, `trust_domain …`,
    /// `limits …`). Level grants are expanded to their matters. Two policies' lines differ exactly where what they permit
    /// differs, so a reload can record what was added and removed.
    pub fn permissions(&self) -> BTreeSet<String> {
        let mut lines = BTreeSet::new();
        for g in &self.grants {
            for caller in &g.callers {
                for matter in &g.matters {
                    if g.access == Access::Discover {
                        lines.insert(format!("discover {caller} {matter}"));
                        continue;
                    }
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
        for point in self.service_points.values() {
            lines.insert(format!(
                "service_point {} level={} region={} name={}",
                point.unit, point.level, point.region, point.name
            ));
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
        self.decide(caller, matter, evidence_type, |_, _| {})
    }

    /// The one decision behind [`authorize`](Self::authorize) and
    /// [`explain`](Self::explain): `visit` sees each grant that takes part
    /// (its index) and what it releases of `evidence_type` (`None`: all).
    /// Every grant naming the caller and the matter is visited, so an
    /// explanation lists them all; the outcome is the union of their
    /// releases (all fields as soon as one grant restricts none).
    fn decide(
        &self,
        caller: &Caller,
        matter: &Matter,
        evidence_type: &str,
        mut visit: impl FnMut(usize, Option<&BTreeSet<String>>),
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
        let mut union = Some(BTreeSet::new());
        for (index, g) in grants {
            let released = g.fields.get(evidence_type);
            visit(index, released);
            match (released, union.as_mut()) {
                (None, _) => union = None,
                (Some(f), Some(u)) => u.extend(f.iter().cloned()),
                (Some(_), None) => {}
            }
        }
        Ok(union.map_or(FieldRelease::All, FieldRelease::Only))
    }

    /// May `caller` handle matter `code` at all?
    pub fn may_handle(&self, caller: &Caller, code: &str) -> bool {
        self.grants_for(caller, code).next().is_some()
    }

    /// Why `caller` may or may not handle `matter`, and receive
    /// `evidence_type` (or, when `None`, each evidence type the matter
    /// needs) with which fields: through which grants, or why not. Built
    /// from [`may_handle`](Self::may_handle) and the decision behind
    /// [`authorize`](Self::authorize) itself.
    pub fn explain(
        &self,
        caller: &Caller,
        matter: &Matter,
        evidence_type: Option<&str>,
    ) -> Explanation {
        let mut grants: Vec<GrantUse> = self
            .grants_for(caller, &matter.code)
            .map(|(index, g)| {
                // `grants_for` yields only grants with a matching pattern.
                let at = g.callers.iter().position(|p| p.matches(caller));
                GrantUse {
                    position: index + 1,
                    line: g.line,
                    matched: at.map(|i| g.callers[i].to_string()).unwrap_or_default(),
                    via_group: at.and_then(|i| g.via_group[i].clone()),
                    releases: BTreeMap::new(),
                }
            })
            .collect();
        let matter_denial =
            (!self.may_handle(caller, &matter.code)).then(|| Denial::MatterNotGranted {
                caller: caller.to_string(),
                matter: matter.code.clone(),
            });
        let asked: Vec<&str> = match evidence_type {
            Some(e) => vec![e],
            None => matter.evidence.iter().map(String::as_str).collect(),
        };
        let mut evidence = Vec::new();
        for e in asked {
            let outcome = self.decide(caller, matter, e, |index, released| {
                if let Some(g) = grants.iter_mut().find(|g| g.position == index + 1) {
                    g.releases.insert(e.to_owned(), released.cloned());
                }
            });
            evidence.push(EvidenceDecision {
                evidence_type: e.to_owned(),
                outcome,
            });
        }
        let mut other_matters: Vec<String> = Vec::new();
        for g in &self.grants {
            if g.callers.iter().any(|p| p.matches(caller)) {
                for m in &g.matters {
                    if *m != matter.code && !other_matters.contains(m) {
                        other_matters.push(m.clone());
                    }
                }
            }
        }
        Explanation {
            caller: caller.clone(),
            matter: matter.code.clone(),
            grants,
            matter_denial,
            evidence,
            other_matters,
            is_admin: self.require_admin(caller).is_ok(),
            is_portal: self.is_portal(caller),
        }
    }

    /// How many `[[grant]]` tables, caller groups, administrator and portal
    /// patterns and organisation names the policy holds (for `tongban config
    /// check`).
    pub fn summary(&self) -> PolicySummary {
        let mut callers = BTreeSet::new();
        for g in &self.grants {
            callers.extend(g.callers.iter().map(ToString::to_string));
        }
        PolicySummary {
            grants: self.grants.len(),
            discover_grants: self
                .grants
                .iter()
                .filter(|g| g.access == Access::Discover)
                .count(),
            grant_callers: callers.len(),
            service_points: self.service_points.len(),
            admins: self.admins.len(),
            portals: self.portals.len(),
            organisations: self.organisations.len(),
        }
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

    /// The grants (with their indexes) naming `caller` and `matter`.
    fn grants_for<'a>(
        &'a self,
        caller: &'a Caller,
        matter: &'a str,
    ) -> impl Iterator<Item = (usize, &'a Grant)> {
        self.grants.iter().enumerate().filter(move |(_, g)| {
            g.access == Access::Evidence
                && g.matters.contains(matter)
                && g.callers.iter().any(|p| p.matches(caller))
        })
    }

    /// May `caller` see matter `code` in discovery (ListMatters,
    /// DescribeMatter, FindServicePoints)? Any grant of it, of either
    /// access, allows that; only an evidence grant releases evidence
    /// ([`may_handle`](Self::may_handle)).
    pub fn may_discover(&self, caller: &Caller, code: &str) -> bool {
        self.grants
            .iter()
            .any(|g| g.matters.contains(code) && g.callers.iter().any(|p| p.matches(caller)))
    }

    /// Matters `caller` may see in discovery, in catalogue order.
    pub fn discoverable_matters<'c>(
        &self,
        caller: &Caller,
        catalogue: &'c Catalogue,
    ) -> Vec<&'c Matter> {
        catalogue
            .matters()
            .iter()
            .filter(|m| self.may_discover(caller, &m.code))
            .collect()
    }

    /// Every service point the policy names, by unit.
    pub fn service_points(&self) -> impl Iterator<Item = &ServicePoint> {
        self.service_points.values()
    }

    /// The service point `caller` is, if the policy names it one.
    pub fn service_point(&self, caller: &Caller) -> Option<&ServicePoint> {
        self.service_points.get(caller)
    }

    /// Where `matter` can be handled: the service points whose units hold an
    /// evidence grant for it. For a matter that is not handled city-wide,
    /// and an applicant whose household is registered in `region`, only
    /// the points serving that region (in it, or a city point containing
    /// it); a city-wide matter is handled anywhere, the points in `region`
    /// listed first. Then by level, region and unit.
    pub fn service_points_for(
        &self,
        matter: &Matter,
        region: Option<&RegionCode>,
    ) -> Vec<&ServicePoint> {
        let mut points: Vec<&ServicePoint> = self
            .service_points
            .values()
            .filter(|p| self.may_handle(&p.unit, &matter.code))
            .filter(|p| matter.city_wide || region.is_none_or(|r| p.region.covers(r)))
            .collect();
        points.sort_by_key(|p| {
            (
                region.is_some_and(|r| !p.region.covers(r)),
                p.level,
                p.region.clone(),
                p.unit.clone(),
            )
        });
        points
    }
}

/// `[service_points]`: each key a unit, each value its name, level and
/// region; errors at the offending key or value.
fn service_points(
    raw: &BTreeMap<Spanned<String>, Spanned<RawServicePoint>>,
    trust_domain: Option<&str>,
    at: &impl Fn(Range<usize>, String) -> CatalogueError,
) -> Result<BTreeMap<Caller, ServicePoint>, CatalogueError> {
    let mut points = BTreeMap::new();
    for (key, value) in raw {
        let unit = match parse_pattern(key.get_ref(), trust_domain) {
            Ok(CallerPattern::Unit(unit)) => unit,
            Ok(CallerPattern::Org(_)) => {
                return Err(at(
                    key.span(),
                    format!(
                        "service point {:?} must be one unit, not every unit of an organisation",
                        key.get_ref()
                    ),
                ));
            }
            Err(e) => {
                return Err(at(
                    key.span(),
                    format!("service point {:?}: {e}", key.get_ref()),
                ));
            }
        };
        let v = value.get_ref();
        let name = v.name.get_ref().trim();
        if name.is_empty()
            || name.chars().count() > MAX_SERVICE_POINT_NAME_CHARS
            || name.chars().any(char::is_control)
        {
            return Err(at(
                v.name.span(),
                format!(
                    "service point name must be 1 to {MAX_SERVICE_POINT_NAME_CHARS} characters without control characters"
                ),
            ));
        }
        let level = Level::parse(v.level.get_ref()).ok_or_else(|| {
            at(
                v.level.span(),
                format!(
                    "unknown level {:?} (known: {})",
                    v.level.get_ref(),
                    Level::names()
                ),
            )
        })?;
        let region = RegionCode::parse(v.region.get_ref()).map_err(|e| {
            at(
                v.region.span(),
                format!("region {:?}: {e}", v.region.get_ref()),
            )
        })?;
        // A city-level point serves the whole city, so it stands in the
        // city's own region; any other in the county or district it serves.
        if (level == Level::City) != region.is_city() {
            return Err(at(
                v.region.span(),
                if level == Level::City {
                    format!(
                        "a city-level service point's region is the city's code (…00), not {region}"
                    )
                } else {
                    format!(
                        "a {level}-level service point's region is its county or district, not the city code {region}"
                    )
                },
            ));
        }
        if points.contains_key(&unit) {
            return Err(at(
                key.span(),
                format!("service point {unit} is named twice"),
            ));
        }
        points.insert(
            unit.clone(),
            ServicePoint {
                unit,
                name: name.to_owned(),
                level,
                region,
            },
        );
    }
    Ok(points)
}

/// What a policy holds, counted (see [`Policy::summary`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicySummary {
    /// `[[grant]]` tables.
    pub grants: usize,
    /// Of those, `access = "discover"` grants (discovery only).
    pub discover_grants: usize,
    /// `[service_points]` units.
    pub service_points: usize,
    /// Distinct caller patterns named by grants (groups resolved).
    pub grant_callers: usize,
    /// `[admin]` caller patterns.
    pub admins: usize,
    /// `[portal]` caller patterns.
    pub portals: usize,
    /// `[organisations]` names.
    pub organisations: usize,
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
    fn explanations_name_the_grants_and_agree_with_the_decision() {
        let text = format!(
            "{}\n[[grant]]\ncallers = [\"org/{}/unit/*\"]\nmatters = [\"unemployment-benefit\"]\nfields = {{ \"hrss.unemployment\" = [\"insured_months\"] }}\n",
            sample(),
            org(3)
        );
        let p = policy(&text).unwrap();
        let cat = Catalogue::embedded();
        let unemployment = cat.matter("unemployment-benefit").unwrap();

        // Through a group, every field.
        let community = caller(org(1), "dongli-community");
        let e = p.explain(&community, unemployment, None);
        assert!(e.allowed(), "{e:?}");
        assert_eq!(e.grants.len(), 1);
        let g = &e.grants[0];
        assert_eq!((g.position, g.line), (1, 7), "{g:?}");
        assert_eq!(g.matched, format!("org/{}/unit/dongli-community", org(1)));
        assert_eq!(g.via_group.as_deref(), Some("community-centres"));
        let needed: Vec<_> = e
            .evidence
            .iter()
            .map(|d| d.evidence_type.as_str())
            .collect();
        assert_eq!(needed, unemployment.evidence);
        assert!(
            e.evidence
                .iter()
                .all(|d| d.outcome == Ok(FieldRelease::All))
        );
        assert!(g.releases.values().all(Option::is_none));

        // Two grants restricting one evidence type: the union, both named.
        let hotline = caller(org(3), "hotline-96196");
        let e = p.explain(&hotline, unemployment, Some("hrss.unemployment"));
        assert!(e.allowed());
        let positions: Vec<_> = e.grants.iter().map(|g| g.position).collect();
        assert_eq!(positions, [2, 3]);
        assert_eq!(e.grants[1].matched, format!("org/{}/unit/*", org(3)));
        assert_eq!(e.grants[1].via_group, None);
        assert_eq!(
            e.evidence[0].outcome,
            Ok(FieldRelease::Only(
                ["eligible", "insured_months", "reason"]
                    .map(String::from)
                    .into()
            ))
        );
        assert_eq!(
            e.grants[0].releases["hrss.unemployment"],
            Some(["eligible", "reason"].map(String::from).into())
        );

        // Refusals: a matter not granted (with what the caller may do), a
        // caller no grant names, evidence the matter does not need.
        let temp_id = cat.matter("temporary-id-card").unwrap();
        let e = p.explain(&community, temp_id, None);
        assert!(!e.allowed());
        assert!(e.grants.is_empty());
        assert_eq!(e.denial().unwrap().reason(), "MATTER_NOT_GRANTED");
        assert_eq!(
            e.other_matters,
            ["pension-qualification", "unemployment-benefit"]
        );
        let stranger = p.explain(&caller(org(5), "nobody"), unemployment, None);
        assert!(stranger.other_matters.is_empty() && !stranger.is_admin);
        assert_eq!(stranger.denial().unwrap().reason(), "MATTER_NOT_GRANTED");
        let e = p.explain(&community, unemployment, Some("civil.marriage"));
        assert!(e.matter_denial.is_none());
        assert_eq!(e.denial().unwrap().reason(), "EVIDENCE_NOT_IN_MATTER");
        assert!(p.explain(&caller(org(3), "admin"), temp_id, None).is_admin);

        // The explanation is the decision, for every caller, matter and
        // evidence type.
        let callers = [
            community,
            hotline,
            caller(org(2), "any"),
            caller(org(3), "admin"),
            caller(org(5), "nobody"),
        ];
        for c in &callers {
            for m in cat.matters() {
                let e = p.explain(c, m, None);
                assert_eq!(e.matter_denial.is_none(), p.may_handle(c, &m.code));
                for def in cat.evidence_types() {
                    let one = p.explain(c, m, Some(&def.id));
                    assert_eq!(one.evidence[0].outcome, p.authorize(c, m, &def.id));
                    assert_eq!(one.allowed(), p.authorize(c, m, &def.id).is_ok());
                }
            }
        }
        let summary = p.summary();
        assert_eq!((summary.grants, summary.admins, summary.portals), (3, 1, 1));
        // dongli-community, org 2's units, the hotline, org 3's units.
        assert_eq!(summary.grant_callers, 4);
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

    /// A policy with a township hall granted by level, a community centre
    /// by level plus one named matter, the hotline's discover grant, and
    /// their service points.
    fn levelled() -> String {
        format!(
            r#"trust_domain = "tongban.test"

[[grant]]
callers = ["org/{a}/unit/salian-township"]
up_to_level = "township"

[[grant]]
callers = ["org/{b}/unit/dongli-community"]
up_to_level = "community"
matters = ["temporary-assistance"]
fields = {{ "civil.subsistence" = ["receiving"] }}

[[grant]]
callers = ["org/{c}/unit/hotline-96196"]
access = "discover"
up_to_level = "city"

[[grant]]
callers = ["org/{d}/unit/miyi-hall"]
up_to_level = "county"

[service_points."org/{a}/unit/salian-township"]
name = "撒莲镇便民服务中心"
level = "township"
region = "510421"

[service_points."spiffe://tongban.test/org/{b}/unit/dongli-community"]
name = "动力站社区党群服务中心"
level = "community"
region = "510403"

[service_points."org/{d}/unit/miyi-hall"]
name = "米易县政务服务中心"
level = "county"
region = "510421"
"#,
            a = org(11),
            b = org(12),
            c = org(13),
            d = org(14)
        )
    }

    #[test]
    fn level_grants_cover_their_level_and_below() {
        let p = policy(&levelled()).unwrap();
        let cat = Catalogue::embedded();
        let township = caller(org(11), "salian-township");
        let granted = p.granted_matters(&township, &cat);
        assert!(!granted.is_empty());
        assert!(granted.iter().all(|m| m.level <= Level::Township));
        let expected: Vec<_> = cat
            .matters()
            .iter()
            .filter(|m| m.level <= Level::Township)
            .map(|m| m.code.as_str())
            .collect();
        assert_eq!(
            granted.iter().map(|m| m.code.as_str()).collect::<Vec<_>>(),
            expected
        );
        // A county matter is not granted to the township hall.
        let county = cat.matter("marriage-record-inquiry").unwrap();
        assert_eq!(county.level, Level::County);
        assert!(!p.may_handle(&township, &county.code));
        assert!(p.may_handle(&caller(org(14), "miyi-hall"), &county.code));
        // The community centre: community matters, plus one named township
        // matter, with the field restriction validated against it.
        let community = caller(org(12), "dongli-community");
        assert!(p.may_handle(&community, "pension-qualification"));
        assert!(p.may_handle(&community, "temporary-assistance"));
        assert!(!p.may_handle(&community, "unemployment-benefit"));
        let assistance = cat.matter("temporary-assistance").unwrap();
        assert_eq!(
            p.authorize(&community, assistance, "civil.subsistence"),
            Ok(FieldRelease::Only(["receiving".to_owned()].into()))
        );
        // Permissions expand the level, so a catalogue or policy change that
        // widens it shows as added lines.
        let lines = p.permissions();
        for m in &expected {
            assert!(
                lines.contains(&format!("grant org/{}/unit/salian-township {m}", org(11))),
                "{m}"
            );
        }
        let narrower = policy(&levelled().replacen(
            "up_to_level = \"township\"",
            "up_to_level = \"community\"",
            1,
        ))
        .unwrap();
        let narrower = narrower.permissions();
        let removed: Vec<_> = lines.difference(&narrower).collect();
        let township_only = cat
            .matters()
            .iter()
            .filter(|m| m.level == Level::Township)
            .count();
        assert_eq!(removed.len(), township_only, "{removed:?}");
        assert!(removed.iter().all(|l| l.contains("salian-township")));
    }

    #[test]
    fn discover_grants_never_release_evidence() {
        let p = policy(&levelled()).unwrap();
        let cat = Catalogue::embedded();
        let hotline = caller(org(13), "hotline-96196");
        // Sees every matter in discovery...
        assert_eq!(
            p.discoverable_matters(&hotline, &cat).len(),
            cat.matters().len()
        );
        // ...and may handle none: no evidence under any matter.
        assert!(p.granted_matters(&hotline, &cat).is_empty());
        for m in cat.matters() {
            assert!(p.may_discover(&hotline, &m.code));
            assert!(!p.may_handle(&hotline, &m.code));
            for e in &m.evidence {
                assert_eq!(
                    p.authorize(&hotline, m, e).unwrap_err().reason(),
                    "MATTER_NOT_GRANTED",
                    "{} {e}",
                    m.code
                );
            }
        }
        for e in cat.evidence_types() {
            assert_eq!(p.evidence_release(&hotline, &e.id, &cat), None);
        }
        // Evidence grants are discoverable too; nothing else is.
        let township = caller(org(11), "salian-township");
        assert!(p.may_discover(&township, "temporary-id-card"));
        assert!(!p.may_discover(&township, "pension-transfer"));
        assert!(!p.may_discover(&caller(org(13), "other"), "temporary-id-card"));
        let lines = p.permissions();
        assert!(lines.contains(&format!(
            "discover org/{}/unit/hotline-96196 pension-transfer",
            org(13)
        )));
        assert!(
            !lines
                .iter()
                .any(|l| l.starts_with("grant") && l.contains("hotline"))
        );
        // Same text, evidence access: now it releases.
        let evidence =
            policy(&levelled().replace("access = \"discover\"", "access = \"evidence\"")).unwrap();
        assert!(evidence.may_handle(&hotline, "pension-transfer"));
    }

    #[test]
    fn service_points_by_matter_and_region() {
        let p = policy(&levelled()).unwrap();
        let cat = Catalogue::embedded();
        let names = |m: &str, region: Option<&str>| -> Vec<String> {
            let region = region.map(|r| RegionCode::parse(r).unwrap());
            p.service_points_for(cat.matter(m).unwrap(), region.as_ref())
                .iter()
                .map(|s| s.name.clone())
                .collect()
        };
        // A community, city-wide matter: every point granted it, lowest
        // level first.
        assert_eq!(
            names("pension-qualification", None),
            [
                "动力站社区党群服务中心",
                "撒莲镇便民服务中心",
                "米易县政务服务中心"
            ]
        );
        // City-wide: a region only orders, those serving it first.
        assert_eq!(
            names("pension-qualification", Some("510421")),
            [
                "撒莲镇便民服务中心",
                "米易县政务服务中心",
                "动力站社区党群服务中心"
            ]
        );
        // Not city-wide (subsistence allowance, community level): only in
        // the household's region.
        assert!(!cat.matter("subsistence-allowance").unwrap().city_wide);
        assert_eq!(
            names("subsistence-allowance", Some("510403")),
            ["动力站社区党群服务中心"]
        );
        assert_eq!(
            names("subsistence-allowance", Some("510421")),
            ["撒莲镇便民服务中心", "米易县政务服务中心"]
        );
        assert!(names("subsistence-allowance", Some("510411")).is_empty());
        // A county matter: only the county hall.
        assert_eq!(names("household-move-spouse", None), ["米易县政务服务中心"]);
        // The hotline is no service point and holds no evidence grant.
        assert!(p.service_point(&caller(org(13), "hotline-96196")).is_none());
        assert_eq!(
            p.service_point(&caller(org(11), "salian-township"))
                .map(|s| s.level),
            Some(Level::Township)
        );
        assert!(p.permissions().contains(&format!(
            "service_point org/{}/unit/salian-township level=township region=510421 name=撒莲镇便民服务中心",
            org(11)
        )));
    }

    #[test]
    fn city_points_serve_every_district() {
        let text = format!(
            "[[grant]]\ncallers = [\"org/{a}/unit/city-centre\"]\nup_to_level = \"city\"\n\n[service_points.\"org/{a}/unit/city-centre\"]\nname = \"攀枝花市政务服务中心\"\nlevel = \"city\"\nregion = \"510400\"\n",
            a = org(15)
        );
        let p = policy(&text).unwrap();
        let cat = Catalogue::embedded();
        let m = cat.matter("subsistence-allowance").unwrap();
        for region in ["510402", "510421", "510400"] {
            let r = RegionCode::parse(region).unwrap();
            assert_eq!(p.service_points_for(m, Some(&r)).len(), 1, "{region}");
        }
        let elsewhere = RegionCode::parse("510104").unwrap();
        assert!(p.service_points_for(m, Some(&elsewhere)).is_empty());
    }

    #[test]
    fn bad_level_discover_and_service_point_tables_name_the_line() {
        let text = levelled();
        for (from, to, line_needle, message) in [
            (
                "up_to_level = \"township\"",
                "up_to_level = \"province\"",
                "up_to_level = \"province\"",
                "unknown level \"province\" (known: community, township, county, city)",
            ),
            (
                "access = \"discover\"",
                "access = \"read\"",
                "access = \"read\"",
                "access must be \"evidence\" or \"discover\"",
            ),
            (
                "access = \"discover\"",
                "access = \"discover\"\nfields = { \"police.identity\" = [\"alive\"] }",
                "fields = { \"police.identity\"",
                "a discover grant releases no evidence",
            ),
            (
                "fields = { \"civil.subsistence\" = [\"receiving\"] }",
                "fields = { \"hrss.pension\" = [\"retired\"], \"civil.death\" = [\"deceased\"], \"market.registration\" = [\"status\"] }",
                "fields = { \"hrss.pension\"",
                "no matter of this grant needs \"market.registration\"",
            ),
            (
                "level = \"township\"\nregion = \"510421\"",
                "level = \"township\"\nregion = \"5104\"",
                "region = \"5104\"",
                "must be 6 digits",
            ),
            (
                "level = \"township\"\nregion = \"510421\"",
                "level = \"township\"\nregion = \"510400\"",
                "region = \"510400\"",
                "county or district, not the city code",
            ),
            (
                "level = \"county\"\nregion = \"510421\"",
                "level = \"city\"\nregion = \"510421\"",
                "name = \"米易县政务服务中心\"",
                "city-level service point's region",
            ),
            (
                "level = \"community\"",
                "level = \"village\"",
                "level = \"village\"",
                "unknown level \"village\"",
            ),
            (
                "name = \"撒莲镇便民服务中心\"",
                "name = \"  \"",
                "name = \"  \"",
                "service point name must be 1 to 100",
            ),
            (
                "name = \"撒莲镇便民服务中心\"",
                "name = \"a\\u001b[31mb\"",
                "name = \"a\\u001b",
                "without control characters",
            ),
            (
                "level = \"community\"\nregion = \"510403\"",
                "level = \"community\"\nregion = \"510403\"\nmatters = [\"x\"]",
                "matters = [\"x\"]",
                "unknown field `matters`",
            ),
        ] {
            assert!(text.contains(from), "{from}");
            let bad = text.replacen(from, to, 1);
            let e = policy(&bad).unwrap_err();
            let expected_line = bad.lines().position(|l| l.contains(line_needle)).unwrap() + 1;
            // The region/level errors point at the value's line.
            let expected_line = if message.contains("city-level") {
                expected_line + 2
            } else {
                expected_line
            };
            assert_eq!(e.line, expected_line, "{to}: {e}");
            assert!(e.message.contains(message), "{to}: {e}");
            assert_eq!(e.source_name, "policy.toml");
        }
        // A grant with neither matters nor a level, at the grant.
        let e = policy(&format!(
            "\n[[grant]]\ncallers = [\"org/{}/unit/x\"]\naccess = \"discover\"\n",
            org(1)
        ))
        .unwrap_err();
        assert!(e.message.contains("grant names no matter"), "{e}");
        assert!(e.line <= 3, "{e}");
        let e = policy(&format!(
            "[[grant]]\ncallers = [\"org/{}/unit/x\"]\nup_to_level = \"city\"\nmatters = []\n",
            org(1)
        ))
        .unwrap_err();
        assert_eq!((e.line, e.message.as_str()), (4, "grant names no matter"));
        // Service point keys: one unit, in the trust domain, named once.
        for (key, message) in [
            (format!("org/{}/unit/*", org(11)), "must be one unit"),
            ("group:halls".to_owned(), "service point \"group:halls\""),
            (
                format!("spiffe://elsewhere/org/{}/unit/x", org(11)),
                "trust domain",
            ),
            (
                format!("spiffe://tongban.test/org/{}/unit/salian-township", org(11)),
                "named twice",
            ),
        ] {
            let bad = format!(
                "{text}\n[service_points.\"{key}\"]\nname = \"x\"\nlevel = \"township\"\nregion = \"510421\"\n"
            );
            let e = policy(&bad).unwrap_err();
            assert!(e.message.contains(message), "{key}: {e}");
            if !message.contains("twice") {
                assert_eq!(e.line, bad.lines().count() - 3, "{key}: {e}");
            }
        }
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
