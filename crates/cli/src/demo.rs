//! `tongban demo`: a throwaway deployment on this machine, then the stories
//! of Panzhihua's service points, played over real gRPC with mutual TLS.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use clap::Args;
use tongban_audit::transparency::{CheckOptions, TrustAnchors, VerifiedHistory};
use tongban_audit::{AuditStore, SqliteStore, SubjectPseudonymizer};
use tongban_core::{Catalogue, IdNumber, Role};
use tongban_devkit::pki::PORTAL_PARTY;
use tongban_devkit::reference::Dept;
use tongban_devkit::reference::stories::{self, Story};
use tongban_proto::v1::audit_client::AuditClient;
use tongban_proto::v1::{
    self as pb, CaseContext, GatherRequest, GatherResponse, LookupRequest, Subject, gather_item,
};
use tonic::Code;

use crate::audit;
use crate::render;
use crate::transparency;
use tongban_devkit::local::{CALL_TIMEOUT, LocalDeployment, NODE, WITNESS_NAME};

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Keep everything running after the stories and print how to connect.
    #[arg(long)]
    pub serve: bool,
    /// Keep the PKI, configs, databases and audit log here (default: a
    /// temporary directory removed at exit).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let temp;
    let state_dir = match &args.state_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new().prefix("tongban-demo-").tempdir()?;
            temp.path().to_owned()
        }
    };
    println!("通办 tongban — handled anywhere in Panzhihua");
    println!("════════════════════════════════════════════");
    println!("Starting a local deployment in {}", state_dir.display());
    let mut local = LocalDeployment::start(&state_dir).await?;
    println!(
        "  · development PKI: a CA and {} certificates, trust domain {}",
        local.pki().identities.len(),
        local.pki().trust_domain
    );
    for dept in tongban_devkit::local::DEPARTMENTS {
        let title = Catalogue::embedded()
            .department(dept.id())
            .map(|d| d.title_zh.clone())
            .unwrap_or_default();
        println!(
            "  · {:<6} adapter  {}  {title}",
            dept.id(),
            local.adapter_url(dept).unwrap_or_default()
        );
    }
    println!(
        "  · exchange        {}  mutual TLS on every hop, audit log in audit.db",
        local.exchange_url()
    );

    let result = play(&mut local).await;
    if let Err(e) = &result {
        println!("\nThe demo failed: {e:#}");
    }
    if args.serve && result.is_ok() {
        serve_until_interrupted(&local).await?;
    }
    local.shutdown().await?;
    result
}

fn case(matter: &str, case_number: &str, operator: &str) -> Option<CaseContext> {
    Some(CaseContext {
        matter: matter.into(),
        case_number: case_number.into(),
        operator_id: operator.into(),
    })
}

fn subject(story: &Story) -> Option<Subject> {
    Some(Subject {
        id_number: story.id_number.into(),
        name: story.name.into(),
        ..Default::default()
    })
}

async fn gather(
    local: &LocalDeployment,
    party: &str,
    case: Option<CaseContext>,
    story: &Story,
) -> anyhow::Result<GatherResponse> {
    let response = gather_quietly(local, party, case, story).await?;
    print!("{}", render::gather_text(&response, &Catalogue::embedded()));
    Ok(response)
}

async fn gather_quietly(
    local: &LocalDeployment,
    party: &str,
    case: Option<CaseContext>,
    story: &Story,
) -> anyhow::Result<GatherResponse> {
    send_gather(
        local,
        party,
        GatherRequest {
            case,
            subject: subject(story),
            ..Default::default()
        },
    )
    .await
}

/// Sends one Gather as `party`, within the demo's call timeout.
async fn send_gather(
    local: &LocalDeployment,
    party: &str,
    gather: GatherRequest,
) -> anyhow::Result<GatherResponse> {
    let mut client = local.client(party).await?;
    let mut request = tonic::Request::new(gather);
    request.set_timeout(CALL_TIMEOUT);
    let response = client
        .gather(request)
        .await
        .map_err(|s| anyhow::anyhow!("{}", render::status_text(&s)))?
        .into_inner();
    Ok(response)
}

fn field<'a>(
    response: &'a GatherResponse,
    evidence_type: &str,
    name: &str,
) -> Option<&'a pb::field::Value> {
    response
        .items
        .iter()
        .find(|i| i.evidence_type == evidence_type)
        .and_then(|i| match &i.result {
            Some(gather_item::Result::Evidence(e)) => e
                .fields
                .iter()
                .find(|f| f.name == name)
                .and_then(|f| f.value.as_ref()),
            _ => None,
        })
}

fn flag(response: &GatherResponse, evidence_type: &str, name: &str) -> anyhow::Result<bool> {
    match field(response, evidence_type, name) {
        Some(pb::field::Value::BoolValue(b)) => Ok(*b),
        other => bail!("{evidence_type}.{name} missing or not a flag: {other:?}"),
    }
}

fn text(response: &GatherResponse, evidence_type: &str, name: &str) -> String {
    match field(response, evidence_type, name) {
        Some(pb::field::Value::TextValue(t) | pb::field::Value::DateValue(t)) => t.clone(),
        Some(pb::field::Value::IntValue(i)) => i.to_string(),
        Some(pb::field::Value::BoolValue(b)) => b.to_string(),
        None => "—".into(),
    }
}

fn scene(number: u32, place: &str, title: &str, story: &str) {
    println!("\nScene {number} · {place}\n  {title}");
    println!("  {story}");
}

async fn play(local: &mut LocalDeployment) -> anyhow::Result<()> {
    let mut receipts = 0usize;
    let mut count =
        |r: &GatherResponse| receipts += r.items.iter().filter(|i| i.receipt.is_some()).count();

    // 1. Temporary identity card at the Salian police station.
    let v = stories::MOSUO_VILLAGER;
    scene(
        1,
        "Salian police station, Miyi County (撒莲派出所)",
        "Temporary resident identity card · 临时居民身份证",
        &format!(
            "{} from Mosuo village leaves for work tomorrow and her card is at the county office for renewal.",
            v.name
        ),
    );
    println!("  The clerk asks the exchange for what the matter needs; she brings no papers.");
    let r = gather(
        local,
        "salian-police-station",
        case("temporary-id-card", "MY-2026-11-0042", "clerk-yang"),
        &v,
    )
    .await?;
    count(&r);
    let card_ok =
        flag(&r, "police.identity", "name_matches")? && flag(&r, "police.identity", "alive")?;
    println!(
        "  {} Identity confirmed, registered in {}: the temporary card is printed while she waits.",
        if card_ok { "✓" } else { "✗" },
        text(&r, "police.household", "district")
    );

    // 2. Unemployment benefit at the Dongli-station community centre.
    let w = stories::LAID_OFF_WORKER;
    scene(
        2,
        "Dongli-station community centre, West District (动力站社区)",
        "Unemployment benefit claim · 失业保险金申领",
        &format!(
            "{} was laid off by an East District employer; she applies where she lives.",
            w.name
        ),
    );
    let r = gather(
        local,
        "dongli-community",
        case("unemployment-benefit", "XQ-DL-2026-0317", "clerk-he"),
        &w,
    )
    .await?;
    count(&r);
    let proof_receipt = r.items.iter().find_map(|i| i.receipt.clone());
    let eligible = flag(&r, "hrss.unemployment", "eligible")?;
    println!(
        "  {} {} — the claim is {} in about ten minutes.",
        if eligible { "✓" } else { "✗" },
        text(&r, "hrss.unemployment", "reason"),
        if eligible { "accepted" } else { "declined" }
    );

    // 3. Pension qualification certification.
    let p = stories::CERTIFIED_RETIREE;
    scene(
        3,
        "Dongli-station community centre",
        "Pension qualification certification · 养老金领取资格认证",
        &format!("{} comes in for his yearly certification.", p.name),
    );
    let r = gather(
        local,
        "dongli-community",
        case("pension-qualification", "XQ-DL-2026-0318", "clerk-he"),
        &p,
    )
    .await?;
    count(&r);
    let alive = flag(&r, "police.identity", "alive")? && !flag(&r, "civil.death", "deceased")?;
    println!(
        "  {} Alive per police and civil affairs; pension receiving: {}; last certified {}.",
        if alive { "✓" } else { "✗" },
        if flag(&r, "hrss.pension", "receiving")? {
            "yes"
        } else {
            "no"
        },
        text(&r, "hrss.pension", "last_qualification_date")
    );

    // 4. Social-insurance inquiry by phone: the hotline's grant releases less.
    let s = stories::LAID_OFF_WORKER;
    scene(
        4,
        "96196 service hotline",
        "Social-insurance record inquiry · 社会保险个人权益记录查询",
        &format!(
            "{} phones to ask how many months she has contributed.",
            s.name
        ),
    );
    println!("  The hotline's grant releases only a summary, so that is all it receives:");
    let r = gather(
        local,
        "hotline-96196",
        case("social-insurance-record", "96196-20261126-88", "agent-07"),
        &s,
    )
    .await?;
    count(&r);
    println!(
        "  ✓ {} months contributed; contributing now: {}.",
        text(&r, "hrss.contributions", "total_months"),
        if flag(&r, "hrss.contributions", "contributing")? {
            "yes"
        } else {
            "no"
        }
    );

    // 5. Refusal on the merits.
    let short = stories::SHORT_INSURED_WORKER;
    scene(
        5,
        "Salian township hall (撒莲镇便民服务中心)",
        "Unemployment benefit claim · 失业保险金申领",
        &format!("{} worked seven months before the job ended.", short.name),
    );
    let r = gather(
        local,
        "salian-township",
        case("unemployment-benefit", "MY-SL-2026-0101", "clerk-luo"),
        &short,
    )
    .await?;
    count(&r);
    let eligible = flag(&r, "hrss.unemployment", "eligible")?;
    println!(
        "  {} {} The clerk explains the rule and refers him to employment services.",
        if eligible { "✓" } else { "✗" },
        text(&r, "hrss.unemployment", "reason")
    );
    if eligible {
        bail!("a worker with 7 insured months came out eligible");
    }

    // 6. Refusal for lack of rights.
    scene(
        6,
        "96196 service hotline",
        "A request outside the hotline's grant",
        "An agent tries to look up a caller's household registration for a temporary ID card.",
    );
    let mut client = local.client("hotline-96196").await?;
    let mut request = tonic::Request::new(LookupRequest {
        case: case("temporary-id-card", "96196-20261126-89", "agent-07"),
        subject: subject(&v),
        evidence_type: "police.household".into(),
        fields: None,
    });
    request.set_timeout(CALL_TIMEOUT);
    match client.lookup(request).await {
        Ok(_) => bail!("the hotline was given evidence it holds no grant for"),
        Err(status) if status.code() == Code::PermissionDenied => {
            println!("  ✗ Refused, nothing released:");
            for line in render::status_text(&status).lines() {
                println!("    {line}");
            }
        }
        Err(status) => bail!(
            "expected PERMISSION_DENIED, got {}",
            render::status_text(&status)
        ),
    }
    // What the hotline may do for her: say where the matter is handled
    // near her (its discover grant: no evidence, only the catalogue and
    // the service points).
    println!(
        "  What the hotline can do is tell the caller where to go (FindServicePoints, 米易县 510421):"
    );
    let mut request = tonic::Request::new(pb::FindServicePointsRequest {
        matter: "temporary-id-card".into(),
        region_code: "510421".into(),
    });
    request.set_timeout(CALL_TIMEOUT);
    let found = client
        .find_service_points(request)
        .await
        .map_err(|s| anyhow::anyhow!("FindServicePoints: {}", render::status_text(&s)))?
        .into_inner();
    let level = tongban_core::Level::parse(&found.level)
        .map_or(found.level.clone(), |l| format!("{} {}", l.title_zh(), l));
    println!(
        "  ▸ handled at {level} level{}",
        if found.city_wide {
            ", at any such service point in the city (同城通办)"
        } else {
            ""
        }
    );
    for point in &found.service_points {
        println!(
            "    · {} ({}, {})",
            point.name, point.level, point.region_name
        );
    }
    if found.service_points.is_empty() {
        bail!("no service point handles temporary-id-card in the demo's policy");
    }

    // 7. A department outage during a Gather.
    let d = stories::SUBSISTENCE_RECIPIENT;
    scene(
        7,
        "Salian township hall",
        "Subsistence allowance review · 最低生活保障",
        &format!(
            "{}'s yearly review — and the social-security bureau's adapter is down for maintenance.",
            d.name
        ),
    );
    local.stop_department(Dept::Hrss).await?;
    let r = gather(
        local,
        "salian-township",
        case("subsistence-allowance", "MY-SL-2026-0102", "clerk-luo"),
        &d,
    )
    .await?;
    count(&r);
    let failed: Vec<&str> = r
        .items
        .iter()
        .filter(|i| matches!(i.result, Some(gather_item::Result::Error(_))))
        .map(|i| i.evidence_type.as_str())
        .collect();
    let answered = r.items.len() - failed.len();
    println!(
        "  ◐ {answered} of {} answers arrived; {} unavailable. The clerk keeps what arrived and asks again later.",
        r.items.len(),
        failed.join(", ")
    );
    if failed.iter().any(|e| !e.starts_with("hrss.")) {
        bail!("an outage of hrss affected other departments: {failed:?}");
    }
    local.restart_department(Dept::Hrss).await?;
    let r = gather_quietly(
        local,
        "salian-township",
        case("subsistence-allowance", "MY-SL-2026-0102", "clerk-luo"),
        &d,
    )
    .await?;
    count(&r);
    let complete = r
        .items
        .iter()
        .all(|i| matches!(i.result, Some(gather_item::Result::Evidence(_))));
    if !complete {
        bail!("after the bureau came back the Gather was still incomplete");
    }
    println!(
        "  ✓ The bureau is back; asked again, all {} answers arrive — nothing was restarted but the bureau.",
        r.items.len()
    );

    // 8. An enterprise registers its employees for social insurance.
    receipts += enterprise_scene(local).await?;

    // 9. A household's subsistence-allowance review over three members.
    receipts += household_scene(local).await?;

    // 10. A sealed access: the police look her up for an investigation.
    police_lookup(local).await?;

    // Accountability. The log is verified whole here, before scene 12
    // tampers with it behind the exchange's back.
    println!("\nAudit · 审计");
    audit_section(local, receipts, proof_receipt).await?;

    // 11 and 12. Citizens can check.
    println!("\nCitizens can check · 公民可查");
    citizen_section(local).await?;
    println!("\nThe demo ran to the end.");
    Ok(())
}

/// The matter whose accesses the person learns of only later.
const SEALED_MATTER: &str = "criminal-investigation-assist";

/// A Gather about several subjects, each in its role, printed grouped by
/// subject under the names the clerk typed.
async fn gather_subjects(
    local: &LocalDeployment,
    party: &str,
    case: Option<CaseContext>,
    subjects: Vec<(Subject, String)>,
) -> anyhow::Result<GatherResponse> {
    let labels: Vec<String> = subjects.iter().map(|(_, l)| l.clone()).collect();
    let response = gather_subjects_quietly(local, party, case, subjects).await?;
    print!(
        "{}",
        render::gather_text_with_subjects(&response, &Catalogue::embedded(), &labels)
    );
    Ok(response)
}

async fn gather_subjects_quietly(
    local: &LocalDeployment,
    party: &str,
    case: Option<CaseContext>,
    subjects: Vec<(Subject, String)>,
) -> anyhow::Result<GatherResponse> {
    let subjects: Vec<Subject> = subjects.into_iter().map(|(s, _)| s).collect();
    send_gather(
        local,
        party,
        GatherRequest {
            case,
            subjects,
            ..Default::default()
        },
    )
    .await
}

fn person_in(story: &Story, role: Role) -> (Subject, String) {
    (
        Subject {
            id_number: story.id_number.into(),
            name: story.name.into(),
            role: role.name().into(),
            ..Default::default()
        },
        story.name.to_owned(),
    )
}

/// The value of one field of the item about subject `index`.
fn subject_field<'a>(
    response: &'a GatherResponse,
    index: u32,
    evidence_type: &str,
    name: &str,
) -> Option<&'a pb::field::Value> {
    response
        .items
        .iter()
        .find(|i| i.subject_index == index && i.evidence_type == evidence_type)
        .and_then(|i| match &i.result {
            Some(gather_item::Result::Evidence(e)) => e
                .fields
                .iter()
                .find(|f| f.name == name)
                .and_then(|f| f.value.as_ref()),
            _ => None,
        })
}

fn subject_flag(r: &GatherResponse, index: u32, evidence_type: &str, name: &str) -> Option<bool> {
    match subject_field(r, index, evidence_type, name) {
        Some(pb::field::Value::BoolValue(b)) => Some(*b),
        _ => None,
    }
}

/// Scene 8: a Salian company registers its employees for social insurance
/// at the township hall; market regulation answers about the company, the
/// police about its legal representative. Returns the receipts received.
async fn enterprise_scene(local: &LocalDeployment) -> anyhow::Result<usize> {
    let company = stories::SALIAN_MANGO;
    let boss = company.legal_representative;
    scene(
        8,
        "Salian township hall (撒莲镇便民服务中心)",
        "Employer social insurance registration · 单位参保登记",
        &format!(
            "{}, legal representative of {}, hires three pickers for the mango season and registers them for social insurance.",
            boss.name, company.name
        ),
    );
    println!(
        "  No business licence copy, no ID photocopy: the clerk names the company by its credit code and {} by his ID number.",
        boss.name
    );
    let r = gather_subjects(
        local,
        "salian-township",
        case(
            "enterprise-social-insurance-registration",
            "MY-SL-2026-0103",
            "clerk-luo",
        ),
        vec![
            (
                Subject {
                    credit_code: company.credit_code.into(),
                    name: company.name.into(),
                    role: Role::Enterprise.name().into(),
                    ..Default::default()
                },
                format!("{} ({})", company.name, company.credit_code),
            ),
            person_in(&boss, Role::LegalRepresentative),
        ],
    )
    .await?;
    let status = match subject_field(&r, 0, "market.registration", "status") {
        Some(pb::field::Value::TextValue(t)) => t.clone(),
        _ => bail!("market regulation gave no status for {}", company.name),
    };
    let representative = subject_flag(&r, 0, "market.registration", "legal_representative_matches");
    let listed = subject_flag(&r, 0, "market.abnormal", "listed");
    let alive = subject_flag(&r, 1, "police.identity", "alive");
    let ok = status == "in-operation"
        && representative == Some(true)
        && listed == Some(false)
        && alive == Some(true);
    if !ok {
        bail!(
            "the Salian company did not check out: status {status}, representative {representative:?}, listed {listed:?}, alive {alive:?}"
        );
    }
    println!(
        "  ✓ Licence in operation, not on the abnormal operations list, {} is the registered legal representative: the company is registered as an employer.",
        boss.name
    );
    Ok(r.items.iter().filter(|i| i.receipt.is_some()).count())
}

/// Scene 9: a household's yearly subsistence-allowance review over three
/// members at the community centre; one member's answer refers the case.
async fn household_scene(local: &LocalDeployment) -> anyhow::Result<usize> {
    let head = stories::SUBSISTENCE_RECIPIENT;
    let daughter = stories::DIBAO_DAUGHTER;
    let mother = stories::DIBAO_MOTHER;
    scene(
        9,
        "Dongli-station community centre",
        "Subsistence allowance annual review · 最低生活保障年度复核",
        &format!(
            "{}'s household comes up for its yearly review: she, her daughter {} and her mother {}.",
            head.name, daughter.name, mother.name
        ),
    );
    println!(
        "  One Gather asks about every member; each answer is logged against that member alone."
    );
    let members = [head, daughter, mother];
    let r = gather_subjects_quietly(
        local,
        "dongli-community",
        case(
            "subsistence-allowance-review",
            "XQ-DL-2026-0319",
            "clerk-he",
        ),
        vec![
            person_in(&head, Role::Applicant),
            person_in(&daughter, Role::HouseholdMember),
            person_in(&mother, Role::HouseholdMember),
        ],
    )
    .await?;
    let all_answered = r
        .items
        .iter()
        .all(|i| matches!(i.result, Some(gather_item::Result::Evidence(_))));
    if !all_answered {
        bail!("the household review came back incomplete");
    }
    // One line per member: what the clerk reads off the answers.
    for (index, member) in (0u32..).zip(members) {
        let role = r
            .items
            .iter()
            .find(|i| i.subject_index == index)
            .and_then(|i| Role::parse(&i.role))
            .map(|role| format!("{} {}", role.name(), role.title_zh()))
            .unwrap_or_default();
        let yes = |b: Option<bool>| match b {
            Some(true) => "yes",
            Some(false) => "no",
            None => "—",
        };
        let value = |evidence: &str, name: &str| match subject_field(&r, index, evidence, name) {
            Some(pb::field::Value::TextValue(t) | pb::field::Value::DateValue(t)) => t.clone(),
            Some(pb::field::Value::IntValue(i)) => i.to_string(),
            Some(pb::field::Value::BoolValue(b)) => yes(Some(*b)).to_owned(),
            None => "—".into(),
        };
        println!("  ● {} · {role}", member.name);
        println!(
            "      identity confirmed: {} · registered in {} · insured months {} · registered unemployed {} · pension {}",
            yes(subject_flag(&r, index, "police.identity", "name_matches")
                .zip(subject_flag(&r, index, "police.identity", "alive"))
                .map(|(a, b)| a && b)),
            value("police.household", "district"),
            value("hrss.unemployment", "insured_months"),
            value("hrss.unemployment", "registered_unemployed"),
            value("hrss.pension", "receiving"),
        );
        if let (0, Some(pb::field::Value::IntValue(amount))) = (
            index,
            subject_field(&r, 0, "civil.subsistence", "monthly_amount_yuan"),
        ) {
            println!(
                "      allowance: {amount} yuan a month, receiving since {}",
                {
                    match subject_field(&r, 0, "civil.subsistence", "since") {
                        Some(pb::field::Value::DateValue(d)) => d.clone(),
                        _ => "—".into(),
                    }
                }
            );
        }
    }
    // Registered unemployed at the last review; now insured and not
    // registered: in work again.
    let working = subject_flag(&r, 1, "hrss.unemployment", "registered_unemployed") == Some(false)
        && subject_field(&r, 1, "hrss.unemployment", "separation_date").is_none();
    if !working {
        bail!(
            "{}'s new job did not show in her unemployment record",
            daughter.name
        );
    }
    let months = match subject_field(&r, 1, "hrss.unemployment", "insured_months") {
        Some(pb::field::Value::IntValue(m)) => *m,
        _ => 0,
    };
    println!(
        "  ◐ {} members checked, {} answers. {} is in work again ({months} insured months, no longer registered unemployed):",
        members.len(),
        r.items.len(),
        daughter.name
    );
    println!(
        "    the household's income has changed, so the clerk refers the review to the street office's civil-affairs desk (转街道审核)."
    );
    Ok(r.items.iter().filter(|i| i.receipt.is_some()).count())
}

/// Scene 10: the Salian police station establishes where 陈晓燕 is
/// registered during an investigation, a matter sealed in the catalogue.
async fn police_lookup(local: &LocalDeployment) -> anyhow::Result<()> {
    let w = stories::LAID_OFF_WORKER;
    let catalogue = Catalogue::embedded();
    let days = catalogue
        .matter(SEALED_MATTER)
        .and_then(|m| m.disclosure_delay())
        .map(|d| d.num_days())
        .context("the catalogue does not seal criminal investigations")?;
    scene(
        10,
        "Salian police station, Miyi County (撒莲派出所)",
        "Criminal investigation assistance · 刑事案件侦查协查",
        &format!(
            "An investigator needs to know where {} is registered: she may have witnessed a theft.",
            w.name
        ),
    );
    println!(
        "  The matter is sealed in the catalogue: she will learn of this access only after {days} days."
    );
    let mut client = local.client("salian-police-station").await?;
    let mut request = tonic::Request::new(LookupRequest {
        case: case(SEALED_MATTER, "MY-XZ-2026-0093", "officer-wang"),
        subject: subject(&w),
        evidence_type: "police.household".into(),
        fields: None,
    });
    request.set_timeout(CALL_TIMEOUT);
    let answer = client
        .lookup(request)
        .await
        .map_err(|s| anyhow::anyhow!("{}", render::status_text(&s)))?
        .into_inner();
    let district = answer
        .evidence
        .iter()
        .flat_map(|e| &e.fields)
        .find(|f| f.name == "district")
        .and_then(|f| match &f.value {
            Some(pb::field::Value::TextValue(t)) => Some(t.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "—".into());
    println!("  ✓ Registered in {district}. The access is logged like any other, and sealed.");
    Ok(())
}

/// Scenes 11 and 12: 陈晓燕 reads her history on the citizens' portal,
/// verified complete against a witnessed checkpoint; then an operator
/// deletes an entry about her behind the exchange's back, and the portal's
/// check fails, naming what is missing.
async fn citizen_section(local: &LocalDeployment) -> anyhow::Result<()> {
    let w = stories::LAID_OFF_WORKER;
    let id = IdNumber::parse(w.id_number).map_err(|e| anyhow::anyhow!("{}: {e}", w.name))?;
    let store = SqliteStore::open(&local.state_dir().join("audit.db")).await?;
    let log_key = local.log_key()?;
    let witness_key = local
        .witness_key()
        .context("the local deployment runs no witness")?;
    // The portal pins the node's key and the witness's, out of band.
    let anchors = transparency::anchors_of(&[log_key], &[witness_key], Some(1))?;

    scene(
        11,
        "天府通办 Tianfu Tongban, Sichuan's citizens' portal",
        &format!("{} opens 天府通办 · who looked at my data?", w.name),
        "The portal fetches her history from the exchange and checks it offline: against the node's pinned log key, \
         and a checkpoint the city's supervision commission has witnessed.",
    );
    wait_until_witnessed(&store).await?;
    let options = CheckOptions {
        now: Some(Utc::now()),
        ..CheckOptions::default()
    };
    let (verified, labels) = portal_check(local, &id, &anchors, &options)
        .await?
        .map_err(|failure| anyhow::anyhow!("{}", transparency::failure_text(&failure)))?;
    if verified.nodes.iter().any(|n| n.witnessed_by.is_empty()) {
        bail!("the portal accepted a checkpoint no witness cosigned");
    }
    for node in &verified.nodes {
        println!(
            "  ✓ Verified complete against checkpoint {} of {}, cosigned by the witness {}.",
            node.checkpoint_size,
            node.node,
            node.witnessed_by.join(", ")
        );
    }
    for line in transparency::history_text(&verified, &labels, &id).lines() {
        if line.is_empty() {
            println!();
        } else {
            println!("    {line}");
        }
    }

    scene(
        12,
        "Behind the exchange's back",
        "An operator deletes one entry about her directly in the audit database",
        "Someone with write access to audit.db — but not the node's signing key — wants her unemployment-benefit lookup gone.",
    );
    // Her portal read just now is an entry too: let it settle under a
    // witnessed checkpoint, so the deletion is the only change.
    wait_until_witnessed(&store).await?;
    let (node, index) = her_benefit_entry(local, &store).await?;
    let deletion = local.delete_entry_behind_the_exchange(&node, index).await?;
    println!(
        "  DELETE FROM audit_entries WHERE node = '{node}' AND idx = {index}   — 1 row gone (her {BENEFIT_MATTER} lookup, {BENEFIT_EVIDENCE})."
    );
    println!("  {} opens 天府通办 again:", w.name);
    let options = CheckOptions {
        now: Some(Utc::now()),
        // The portal remembers what it verified last time.
        seen: Some(verified.seen()),
        ..CheckOptions::default()
    };
    match portal_check(local, &id, &anchors, &options).await? {
        Ok(_) => bail!("the portal verified a history with an entry deleted"),
        Err(failure) => {
            println!("    {}", transparency::failure_text(&failure));
            println!(
                "  ✗ The portal shows her no list it cannot prove complete — only the failure, naming what is missing."
            );
        }
    }

    // The monitors' check finds it too.
    let keyring = audit::read_keyring(&[local.state_dir().join("audit-signing.pub")])?;
    let report = tongban_audit::verify(
        &store,
        &keyring,
        &tongban_audit::VerifyOptions::default(),
        &mut |_| {},
    )
    .await?;
    if report.is_ok() {
        bail!("`tongban audit verify` did not notice the deleted entry");
    }
    println!(
        "  ✗ `tongban audit verify`, run by the administrators or an inspector, now fails too:"
    );
    for finding in report.errors() {
        println!("    {finding}");
    }

    // Leave the state directory as it was, so the demo can run on it again
    // (`--state-dir`, `--serve`).
    deletion.undo().await?;
    let Some(log) = local.exchange().audit_log() else {
        bail!("the exchange writes no audit log");
    };
    log.flush().await?;
    let report = tongban_audit::verify(
        &store,
        &keyring,
        &tongban_audit::VerifyOptions::default(),
        &mut |_| {},
    )
    .await?;
    if !report.is_ok() {
        bail!("the audit log does not verify with the entry put back");
    }
    println!(
        "  The demo puts the row back from its copy: the log verifies again, and the state directory is as it was."
    );
    Ok(())
}

const BENEFIT_MATTER: &str = "unemployment-benefit";
const BENEFIT_EVIDENCE: &str = "hrss.unemployment";

/// The portal's fetch and check, as `tongban transparency history` does
/// it: connected as the Tianfu Tongban portal with its certificate. The
/// outer error is the demo's own (it could not connect); the inner result
/// is the portal's verdict.
async fn portal_check(
    local: &LocalDeployment,
    id: &IdNumber,
    anchors: &TrustAnchors,
    options: &CheckOptions,
) -> anyhow::Result<Result<(VerifiedHistory, transparency::Labels), transparency::Failure>> {
    let channel = local.channel(PORTAL_PARTY).await?;
    Ok(transparency::fetch_and_verify(channel, id, anchors, options, CALL_TIMEOUT).await)
}

/// How long the demo waits for the witness to cosign the log's latest
/// checkpoint (it is offered one every 200 ms).
const WITNESS_WAIT: Duration = Duration::from_secs(20);

/// Waits until the whole log is under a checkpoint the witness cosigned,
/// polling the store, at most [`WITNESS_WAIT`].
async fn wait_until_witnessed(store: &SqliteStore) -> anyhow::Result<()> {
    let until = tokio::time::Instant::now() + WITNESS_WAIT;
    loop {
        let size = store.log_state(NODE).await?.size;
        if let Some(cp) = store.latest_checkpoint(NODE).await?
            && cp.tree_size == size
            && cp.note.contains(WITNESS_NAME)
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= until {
            bail!(
                "the witness did not cosign a checkpoint of the whole log within {}s",
                WITNESS_WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The (node, index) of her unemployment-benefit lookup, found as an
/// operator holding the pseudonym key would: by her subject key.
async fn her_benefit_entry(
    local: &LocalDeployment,
    store: &SqliteStore,
) -> anyhow::Result<(String, u64)> {
    let key_path = local.state_dir().join("subject-pseudonym.key");
    let key = std::fs::read_to_string(&key_path)
        .with_context(|| format!("reading {}", key_path.display()))?;
    let subject =
        SubjectPseudonymizer::from_hex(key.trim())?.pseudonym(stories::LAID_OFF_WORKER.id_number);
    let size = store.log_state(NODE).await?.size;
    let entries = store.subject_entries(NODE, &subject, 0, size, 1000).await?;
    let entry = entries
        .iter()
        .find(|e| e.entry.matter == BENEFIT_MATTER && e.entry.evidence_type == BENEFIT_EVIDENCE)
        .context("no unemployment-benefit lookup about her in the log")?;
    Ok((NODE.to_owned(), entry.index))
}

/// Shows accountability working: an administrator's subject report (itself
/// logged), a clerk proving a receipt offline, and a full verification of
/// the log in its store against the node's pinned key.
async fn audit_section(
    local: &LocalDeployment,
    receipts: usize,
    receipt: Option<pb::AuditReceipt>,
) -> anyhow::Result<()> {
    let Some(log) = local.exchange().audit_log() else {
        bail!("the exchange writes no audit log");
    };
    let status = |s: tonic::Status| anyhow::anyhow!("{}", render::status_text(&s));

    // 1. Who looked at one resident's data.
    let w = stories::LAID_OFF_WORKER;
    println!(
        "  {} asks who has looked at her data. An administrator runs `tongban audit subject` (the question is logged too):",
        w.name
    );
    let mut audit = AuditClient::new(local.channel("admin").await?);
    let mut request = tonic::Request::new(pb::SubjectReportRequest {
        admin: Some(pb::AdminContext {
            operator_id: "auditor-zhao".into(),
            reason: "citizen request by phone, ticket 96196-20261126-90".into(),
        }),
        id_number: w.id_number.into(),
        max_accesses: 100,
    });
    request.set_timeout(CALL_TIMEOUT);
    let report = audit
        .subject_report(request)
        .await
        .map_err(status)?
        .into_inner();
    println!(
        "    {:<8}  {:<21} {:<12} {:<29} {:<19} result",
        "time", "service point", "clerk", "matter", "evidence"
    );
    for r in report
        .accesses
        .iter()
        .rev()
        .filter(|r| r.kind != "AdminAction")
    {
        println!(
            "    {}  {:<21} {:<12} {:<29} {:<19} {}",
            r.time
                .as_ref()
                .and_then(tongban_proto::convert::time_of)
                .map(|t| t.format("%H:%M:%S").to_string())
                .unwrap_or_default(),
            r.caller_unit,
            r.operator_id,
            r.matter,
            r.evidence_type,
            if r.outcome_code == 0 {
                "released".to_owned()
            } else {
                format!("{} {}", audit::code_name(r.outcome_code), r.outcome_reason)
            }
        );
    }

    // 2. A clerk proves one of her receipts, offline, with the pinned key.
    log.flush().await?;
    let key_path = local.state_dir().join("audit-signing.pub");
    let keyring = audit::read_keyring(std::slice::from_ref(&key_path))?;
    if let Some(receipt) = receipt {
        let mut client = local.client("dongli-community").await?;
        let mut request = tonic::Request::new(pb::ProveReceiptRequest {
            receipt: Some(receipt.clone()),
        });
        request.set_timeout(CALL_TIMEOUT);
        let proof = client
            .prove_receipt(request)
            .await
            .map_err(status)?
            .into_inner();
        let (text, ok) = audit::check_proof(&proof, &keyring);
        if !ok {
            bail!("{text}");
        }
        println!(
            "  ✓ The Dongli clerk proves her receipt {}#{}: {} hashes lead to the root signed at size {}, checked offline.",
            receipt.node,
            receipt.index,
            proof.proof.len(),
            proof.tree_size
        );
    }

    // 3. Verify everything in the store, trusting nothing but the key.
    log.flush().await?;
    let store = tongban_audit::SqliteStore::open(&local.state_dir().join("audit.db")).await?;
    let verified = tongban_audit::verify(
        &store,
        &keyring,
        &tongban_audit::VerifyOptions::default(),
        &mut |_| {},
    )
    .await?;
    for finding in &verified.findings {
        println!("    {finding}");
    }
    if !verified.is_ok() {
        bail!("the audit log does not verify");
    }
    let (entries, checkpoints) = verified.nodes.iter().fold((0, 0), |(e, c), n| {
        (e + n.entries_checked, c + n.checkpoints_checked)
    });
    let stats = log.stats();
    println!(
        "  ✓ `tongban audit verify`: {entries} entries and {checkpoints} signed checkpoint(s) recomputed against the pinned key — intact."
    );
    println!(
        "  Every request above — answered, refused or failed — is in the log ({} batches); {receipts} receipts were handed out.",
        stats.batches
    );
    Ok(())
}

async fn serve_until_interrupted(local: &LocalDeployment) -> anyhow::Result<()> {
    let pki = local.pki();
    let sp = pki.get("dongli-community")?;
    println!("\nServing until Ctrl-C. Connect as the Dongli-station community centre:");
    println!("  exchange:    {}", local.exchange_url());
    println!("  certificate: {}", sp.cert.display());
    println!("  key:         {}", sp.key.display());
    println!("  CA:          {}", pki.ca_cert.display());
    println!(
        "\n  tongban lookup --exchange {} --cert {} --key {} --ca {} \\\n    --matter unemployment-benefit --case XQ-DL-1 --operator me --id {} --evidence hrss.unemployment",
        local.exchange_url(),
        sp.cert.display(),
        sp.key.display(),
        pki.ca_cert.display(),
        stories::LAID_OFF_WORKER.id_number
    );
    // The same exchange answers HTTP/JSON on the same port, for any HTTP
    // client that presents the certificate.
    println!("\n  http/json: {}", local.exchange_url());
    println!(
        "  curl --cert {} --key {} --cacert {} \\\n    -H 'content-type: application/json' \\\n    -d '{{\"case\": {{\"matter\": \"unemployment-benefit\", \"caseNumber\": \"XQ-DL-1\", \"operatorId\": \"me\"}}, \"subject\": {{\"idNumber\": \"{}\"}}, \"evidenceType\": \"hrss.unemployment\"}}' \\\n    {}/v1/lookup",
        sp.cert.display(),
        sp.key.display(),
        pki.ca_cert.display(),
        stories::LAID_OFF_WORKER.id_number,
        local.exchange_url()
    );
    let (console, password) = crate::console::serve_for_local(local).await?;
    println!(
        "\n  Administrators' console 审计控制台: http://{}/  (user admin, password {password})",
        console.local_addr()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    println!("\nStopping.");
    console.shutdown().await;
    Ok(())
}
