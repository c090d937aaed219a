//! `tongban policy explain`: whether a policy lets a caller handle a matter
//! (and receive an evidence type), through which grant, with which fields —
//! or why not. The answer comes from `tongban_core::Policy::explain`, built
//! on the decision the exchange itself makes.
//!
//! Exit status: 0 allowed, 1 denied, 2 the question could not be answered
//! (unreadable or invalid files, unknown matter or evidence type, a caller
//! that is not `org/<credit code>/unit/<unit>`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use tongban_core::{Caller, Catalogue, Explanation, FieldRelease, Policy};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Whether the policy lets a caller handle a matter (and receive an
    /// evidence type), through which grant, with which fields — or why not.
    /// Exit status: 0 allowed, 1 denied, 2 error.
    Explain(ExplainArgs),
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["policy", "config"])))]
pub struct ExplainArgs {
    /// The caller: `org/<credit code>/unit/<unit>`, optionally behind
    /// `spiffe://<trust-domain>/` (as its certificate names it).
    #[arg(long)]
    pub caller: String,
    /// The matter (purpose) of the case, e.g. `unemployment-benefit`.
    #[arg(long)]
    pub matter: String,
    /// One evidence type; without it, every evidence type the matter needs.
    #[arg(long)]
    pub evidence: Option<String>,
    /// The policy file.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// An exchange configuration: the policy and catalogue it names (with
    /// `TONGBAN_*` environment overrides), i.e. what that node enforces.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The matter catalogue (default: the exchange configuration's, else the
    /// embedded one).
    #[arg(long)]
    pub catalogue: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Which catalogue a check used, for the reader.
#[derive(Debug, Clone)]
pub enum CatalogueSource {
    Embedded,
    File(PathBuf),
}

impl std::fmt::Display for CatalogueSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded => f.write_str("the embedded catalogue"),
            Self::File(path) => write!(f, "catalogue {}", path.display()),
        }
    }
}

/// Reads and validates a catalogue file with the loader the servers use.
pub fn load_catalogue(path: Option<&Path>) -> anyhow::Result<(Catalogue, CatalogueSource)> {
    match path {
        None => Ok((Catalogue::embedded(), CatalogueSource::Embedded)),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let catalogue = Catalogue::from_toml(&text, &path.display().to_string())?;
            Ok((catalogue, CatalogueSource::File(path.to_owned())))
        }
    }
}

/// The policy and catalogue an explanation is made against.
#[derive(Debug)]
pub struct Loaded {
    pub policy: Policy,
    pub policy_path: PathBuf,
    pub catalogue: Catalogue,
    pub catalogue_source: CatalogueSource,
}

fn load(args: &ExplainArgs) -> anyhow::Result<Loaded> {
    let (policy_path, configured_catalogue) = match (&args.policy, &args.config) {
        (Some(policy), _) => (policy.clone(), None),
        (None, Some(config)) => {
            let (node, _) = crate::node::NodeConfig::load_with_env(config, std::env::vars())?;
            (
                node.exchange.policy.clone(),
                node.exchange.catalogue.clone(),
            )
        }
        (None, None) => anyhow::bail!("name a policy (--policy) or an exchange config (--config)"),
    };
    let (catalogue, catalogue_source) = load_catalogue(
        args.catalogue
            .as_deref()
            .or(configured_catalogue.as_deref()),
    )?;
    let policy = tongban_exchange::reload::load_policy(&policy_path, &catalogue)?;
    Ok(Loaded {
        policy,
        policy_path,
        catalogue,
        catalogue_source,
    })
}

/// The answer: text or JSON, and whether it allows.
#[derive(Debug)]
pub struct Answer {
    pub allowed: bool,
    pub text: String,
    pub json: serde_json::Value,
}

/// Explains one question against a loaded policy. `Err` when the question
/// itself is wrong (caller, matter or evidence type unknown to the
/// catalogue).
pub fn explain(loaded: &Loaded, args: &ExplainArgs) -> anyhow::Result<Answer> {
    let (domain, caller) = Caller::parse_reference(&args.caller)?;
    let matter = loaded.catalogue.matter(&args.matter).with_context(|| {
        let known: Vec<&str> = loaded
            .catalogue
            .matters()
            .iter()
            .map(|m| m.code.as_str())
            .collect();
        format!(
            "unknown matter {:?} ({} has {})",
            args.matter,
            loaded.catalogue_source,
            known.join(", ")
        )
    })?;
    if let Some(e) = &args.evidence
        && loaded.catalogue.evidence(e).is_none()
    {
        anyhow::bail!(
            "unknown evidence type {e:?} (not in {})",
            loaded.catalogue_source
        );
    }
    let head = json!({
        "caller": caller.to_string(),
        "matter": matter.code,
        "policy": loaded.policy_path.display().to_string(),
        "policy_version": loaded.policy.version(),
        "catalogue": loaded.catalogue_source.to_string(),
    });
    // The exchange refuses a certificate outside the pinned trust domain
    // before the policy is asked anything.
    if let (Some(domain), Some(pinned)) = (domain.as_deref(), loaded.policy.trust_domain())
        && domain != pinned
    {
        let message = format!(
            "the caller's trust domain {domain:?} is not the policy's {pinned:?}; the exchange refuses its certificate"
        );
        let mut json = head;
        json["allowed"] = json!(false);
        json["reason"] = json!("OUTSIDE_TRUST_DOMAIN");
        json["message"] = json!(message);
        return Ok(Answer {
            allowed: false,
            text: format!(
                "DENIED  {caller}  {}\nreason: OUTSIDE_TRUST_DOMAIN: {message}\n",
                matter.code
            ),
            json,
        });
    }
    let explanation = loaded
        .policy
        .explain(&caller, matter, args.evidence.as_deref());
    Ok(render(loaded, &explanation, head))
}

/// Fields of an evidence type a release lets out, in catalogue order, and
/// those it withholds.
fn split_fields(
    catalogue: &Catalogue,
    evidence: &str,
    release: &FieldRelease,
) -> (Vec<String>, Vec<String>) {
    let Some(def) = catalogue.evidence(evidence) else {
        return (Vec::new(), Vec::new());
    };
    def.fields
        .iter()
        .map(|f| f.name.clone())
        .partition(|name| release.allows(name))
}

fn render(loaded: &Loaded, e: &Explanation, mut json: serde_json::Value) -> Answer {
    let mut text = String::new();
    let mut allowed = e.allowed();
    let mut evidence_json = Vec::new();
    let mut evidence_lines = Vec::new();
    for d in &e.evidence {
        match &d.outcome {
            Ok(release) => {
                let (released, withheld) =
                    split_fields(&loaded.catalogue, &d.evidence_type, release);
                // As the exchange: a release that lets no field out answers
                // FIELDS_NOT_GRANTED.
                let none = released.is_empty();
                if none {
                    allowed = false;
                }
                evidence_lines.push(format!(
                    "  {}{}: {}{}",
                    d.evidence_type,
                    if none {
                        " DENIED (FIELDS_NOT_GRANTED)"
                    } else {
                        ""
                    },
                    if withheld.is_empty() {
                        format!("all fields ({})", released.join(", "))
                    } else if none {
                        "no field released".to_owned()
                    } else {
                        format!("fields {}", released.join(", "))
                    },
                    if withheld.is_empty() {
                        String::new()
                    } else {
                        format!("; withheld: {}", withheld.join(", "))
                    }
                ));
                evidence_json.push(json!({
                    "evidence_type": d.evidence_type,
                    "allowed": !none,
                    "released": released,
                    "withheld": withheld,
                }));
            }
            Err(denial) => {
                evidence_lines.push(format!(
                    "  {} DENIED ({}): {denial}",
                    d.evidence_type,
                    denial.reason()
                ));
                evidence_json.push(json!({
                    "evidence_type": d.evidence_type,
                    "allowed": false,
                    "reason": denial.reason(),
                    "message": denial.to_string(),
                }));
            }
        }
    }
    let verdict = if allowed { "ALLOWED" } else { "DENIED" };
    text.push_str(&format!("{verdict}  {}  {}", e.caller, e.matter));
    if let Some(d) = e.evidence.first().filter(|_| e.evidence.len() == 1) {
        text.push_str(&format!("  {}", d.evidence_type));
    }
    text.push('\n');
    text.push_str(&format!(
        "policy {} (version {}), against {}\n",
        loaded.policy_path.display(),
        loaded.policy.version(),
        loaded.catalogue_source
    ));
    let mut grants_json = Vec::new();
    for g in &e.grants {
        text.push_str(&format!(
            "through grant #{} (line {}): {}{}\n",
            g.position,
            g.line,
            g.matched,
            g.via_group
                .as_ref()
                .map(|group| format!(" via group:{group}"))
                .unwrap_or_default()
        ));
        for (evidence, fields) in &g.releases {
            if let Some(fields) = fields {
                let list: Vec<&str> = fields.iter().map(String::as_str).collect();
                text.push_str(&format!("  restricts {evidence} to {}\n", list.join(", ")));
            }
        }
        grants_json.push(json!({
            "position": g.position,
            "line": g.line,
            "matched": g.matched,
            "via_group": g.via_group,
            "releases": g.releases,
        }));
    }
    if let Some(denial) = &e.matter_denial {
        text.push_str(&format!("reason: {}: {denial}\n", denial.reason()));
        if e.other_matters.is_empty() {
            text.push_str("  no grant of this policy names this caller");
            let roles: Vec<&str> = [
                (e.is_admin, "an administrator"),
                (e.is_portal, "a citizen portal"),
            ]
            .iter()
            .filter(|(has, _)| *has)
            .map(|(_, role)| *role)
            .collect();
            if !roles.is_empty() {
                text.push_str(&format!(
                    " (it is {}, which grants no matter)",
                    roles.join(" and ")
                ));
            }
            text.push('\n');
        } else {
            text.push_str(&format!(
                "  the caller may handle: {}\n",
                e.other_matters.join(", ")
            ));
        }
    } else {
        text.push_str("evidence:\n");
        for line in &evidence_lines {
            text.push_str(line);
            text.push('\n');
        }
        if let Some(denial) = e.denial() {
            text.push_str(&format!("reason: {}: {denial}\n", denial.reason()));
            if let Some(matter) = loaded.catalogue.matter(&e.matter) {
                text.push_str(&format!(
                    "  {} needs: {}\n",
                    e.matter,
                    matter.evidence.join(", ")
                ));
            }
        } else if !allowed {
            text.push_str("reason: FIELDS_NOT_GRANTED: the grants release no field of it\n");
        }
    }
    json["allowed"] = json!(allowed);
    json["grants"] = json!(grants_json);
    json["evidence"] = json!(evidence_json);
    json["other_matters"] = json!(e.other_matters);
    json["is_admin"] = json!(e.is_admin);
    json["is_portal"] = json!(e.is_portal);
    if let Some(denial) = e.denial() {
        json["reason"] = json!(denial.reason());
        json["message"] = json!(denial.to_string());
    } else if !allowed {
        json["reason"] = json!("FIELDS_NOT_GRANTED");
    }
    Answer {
        allowed,
        text,
        json,
    }
}

/// Loads the files `args` name and explains its question.
pub fn answer(args: &ExplainArgs) -> anyhow::Result<Answer> {
    explain(&load(args)?, args)
}

pub fn run(command: PolicyCommand) -> ExitCode {
    match command {
        PolicyCommand::Explain(args) => match answer(&args) {
            Ok(answer) => {
                if args.json {
                    println!("{}", answer.json);
                } else {
                    print!("{}", answer.text);
                }
                if answer.allowed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(file: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/config")
            .join(file)
    }

    const COMMUNITY: &str = "org/12510403TB0000060J/unit/dongli-community";
    const HOTLINE: &str = "org/12510400TB0000087Y/unit/hotline-96196";
    const STATION: &str = "org/11510421TB0000052W/unit/salian-police-station";

    fn ask(caller: &str, matter: &str, evidence: Option<&str>) -> anyhow::Result<Answer> {
        answer(&ExplainArgs {
            caller: caller.into(),
            matter: matter.into(),
            evidence: evidence.map(String::from),
            policy: Some(deploy("policy.toml")),
            config: None,
            catalogue: Some(deploy("catalogue.toml")),
            json: false,
        })
    }

    #[test]
    fn allowed_through_a_group_with_every_field() {
        let a = ask(COMMUNITY, "unemployment-benefit", None).unwrap();
        assert!(a.allowed, "{}", a.text);
        assert!(a.text.starts_with("ALLOWED  "), "{}", a.text);
        assert!(a.text.contains("through grant #2 (line 18)"), "{}", a.text);
        assert!(a.text.contains("via group:community-centres"), "{}", a.text);
        assert!(
            a.text.contains("hrss.unemployment: all fields"),
            "{}",
            a.text
        );
        assert_eq!(a.json["allowed"], true);
        assert_eq!(a.json["grants"][0]["position"], 2);
        // A SPIFFE id inside the pinned trust domain is the same caller.
        let spiffe = format!("spiffe://panzhihua.tongban.test/{COMMUNITY}");
        assert!(ask(&spiffe, "unemployment-benefit", None).unwrap().allowed);
    }

    #[test]
    fn restricted_fields_are_named_and_the_rest_withheld() {
        let a = ask(HOTLINE, "social-insurance-record", Some("police.identity")).unwrap();
        assert!(a.allowed, "{}", a.text);
        assert!(
            a.text.contains("police.identity: fields name_matches, alive; withheld: card_status, card_valid_until"),
            "{}",
            a.text
        );
        assert!(
            a.text
                .contains("restricts police.identity to alive, name_matches"),
            "{}",
            a.text
        );
        assert_eq!(
            a.json["evidence"][0]["released"],
            json!(["name_matches", "alive"])
        );
    }

    #[test]
    fn denials_say_why() {
        // A matter not granted, with what the caller may do instead.
        let a = ask(STATION, "unemployment-benefit", None).unwrap();
        assert!(!a.allowed);
        assert!(a.text.starts_with("DENIED  "), "{}", a.text);
        assert!(a.text.contains("MATTER_NOT_GRANTED"), "{}", a.text);
        assert!(
            a.text.contains(
                "the caller may handle: household-registration-certificate, temporary-id-card"
            ),
            "{}",
            a.text
        );
        assert_eq!(a.json["reason"], "MATTER_NOT_GRANTED");
        // A caller no grant names.
        let a = ask(
            "org/12510400TB000001XU/unit/admin",
            "unemployment-benefit",
            None,
        )
        .unwrap();
        assert!(!a.allowed);
        assert!(
            a.text
                .contains("no grant of this policy names this caller (it is an administrator"),
            "{}",
            a.text
        );
        // Evidence the matter does not need.
        let a = ask(COMMUNITY, "unemployment-benefit", Some("civil.marriage")).unwrap();
        assert!(!a.allowed);
        assert!(a.text.contains("EVIDENCE_NOT_IN_MATTER"), "{}", a.text);
        assert!(
            a.text.contains("unemployment-benefit needs: "),
            "{}",
            a.text
        );
        // Outside the pinned trust domain.
        let a = ask(
            &format!("spiffe://elsewhere.test/{COMMUNITY}"),
            "unemployment-benefit",
            None,
        )
        .unwrap();
        assert!(!a.allowed);
        assert_eq!(a.json["reason"], "OUTSIDE_TRUST_DOMAIN");
    }

    #[test]
    fn a_grant_releasing_no_field_is_a_denial() {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.toml");
        std::fs::write(
            &policy,
            format!("[[grant]]\ncallers = [\"{HOTLINE}\"]\nmatters = [\"social-insurance-record\"]\nfields = {{ \"police.identity\" = [] }}\n"),
        )
        .unwrap();
        let a = answer(&ExplainArgs {
            caller: HOTLINE.into(),
            matter: "social-insurance-record".into(),
            evidence: Some("police.identity".into()),
            policy: Some(policy),
            config: None,
            catalogue: None,
            json: true,
        })
        .unwrap();
        assert!(!a.allowed, "{}", a.text);
        assert_eq!(a.json["reason"], "FIELDS_NOT_GRANTED");
        assert!(a.text.contains("the embedded catalogue"), "{}", a.text);
    }

    #[test]
    fn bad_questions_are_errors_not_denials() {
        for (caller, matter, evidence, want) in [
            ("dongli-community", "unemployment-benefit", None, "expected"),
            (
                "org/12510403TB0000060X/unit/dongli-community",
                "unemployment-benefit",
                None,
                "organisation code",
            ),
            (COMMUNITY, "pension", None, "unknown matter \"pension\""),
            (
                COMMUNITY,
                "unemployment-benefit",
                Some("hrss.salary"),
                "unknown evidence type",
            ),
        ] {
            let e = ask(caller, matter, evidence).unwrap_err();
            assert!(format!("{e:#}").contains(want), "{e:#}");
        }
        let e = answer(&ExplainArgs {
            caller: COMMUNITY.into(),
            matter: "unemployment-benefit".into(),
            evidence: None,
            policy: Some(deploy("catalogue.toml")),
            config: None,
            catalogue: None,
            json: false,
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("catalogue.toml:"), "{e:#}");
    }

    #[test]
    fn an_exchange_configuration_names_the_policy_in_force() {
        let a = answer(&ExplainArgs {
            caller: COMMUNITY.into(),
            matter: "temporary-id-card".into(),
            evidence: None,
            policy: None,
            config: Some(deploy("exchange.toml")),
            catalogue: None,
            json: false,
        })
        .unwrap();
        assert!(!a.allowed);
        assert!(a.text.contains("policy.toml"), "{}", a.text);
        assert!(a.text.contains("catalogue.toml"), "{}", a.text);
    }
}
