//! `tongban matters`: the matter catalogue for people — what can be done,
//! at which level, whether anywhere in the city (同城通办), and the evidence
//! the exchange gathers for it (so nobody need bring papers). `--json` for
//! machines; `--markdown` is the README's matter table.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use tongban_core::{Catalogue, Level, Matter};

use crate::render::printable;

#[derive(Debug, Args)]
pub struct MattersArgs {
    /// The catalogue to list (default: the embedded one the exchange ships with).
    #[arg(long, value_name = "FILE")]
    pub catalogue: Option<PathBuf>,
    /// Only matters handled at this level: community, township, county or city.
    #[arg(long, value_name = "LEVEL", value_parser = parse_level)]
    pub level: Option<Level>,
    /// Only matters that need evidence from this department (e.g. police).
    #[arg(long, value_name = "DEPARTMENT")]
    pub department: Option<String>,
    /// Machine-readable output: one JSON document.
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// The README's matter table (Markdown), for every matter listed.
    #[arg(long)]
    pub markdown: bool,
}

fn parse_level(s: &str) -> Result<Level, String> {
    Level::parse(s).ok_or_else(|| format!("unknown level {s:?} (known: {})", Level::names()))
}

/// Runs `tongban matters`: prints the listing.
pub fn run(args: MattersArgs) -> anyhow::Result<()> {
    print!("{}", render(&args)?);
    Ok(())
}

/// The listing `args` asks for.
pub fn render(args: &MattersArgs) -> anyhow::Result<String> {
    let catalogue = match &args.catalogue {
        None => Catalogue::embedded(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Catalogue::from_toml(&text, &path.display().to_string())?
        }
    };
    if let Some(dept) = &args.department
        && !catalogue.departments().iter().any(|d| &d.id == dept)
    {
        let known: Vec<_> = catalogue
            .departments()
            .iter()
            .map(|d| d.id.as_str())
            .collect();
        bail!(
            "unknown department \"{}\" (known: {})",
            printable(dept),
            known.join(", ")
        );
    }
    let matters: Vec<&Matter> = catalogue
        .matters()
        .iter()
        .filter(|m| args.level.is_none_or(|l| m.level == l))
        .filter(|m| {
            args.department
                .as_ref()
                .is_none_or(|d| departments(&catalogue, m).contains(&d.as_str()))
        })
        .collect();
    Ok(if args.json {
        let mut text = serde_json::to_string_pretty(&matters_json(&catalogue, &matters))?;
        text.push('\n');
        text
    } else if args.markdown {
        markdown_table(&catalogue, &matters)
    } else {
        matters_text(&catalogue, &matters)
    })
}

/// The departments whose evidence a matter needs, in catalogue order.
fn departments<'c>(catalogue: &'c Catalogue, matter: &Matter) -> Vec<&'c str> {
    let needed: BTreeSet<&str> = matter
        .evidence
        .iter()
        .filter_map(|e| catalogue.evidence(e))
        .map(|e| e.department.as_str())
        .collect();
    catalogue
        .departments()
        .iter()
        .map(|d| d.id.as_str())
        .filter(|d| needed.contains(d))
        .collect()
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes 是" } else { "no 否" }
}

/// For people: each matter with its titles, level, 同城通办, and the roles
/// with the evidence about each.
fn matters_text(catalogue: &Catalogue, matters: &[&Matter]) -> String {
    let mut out = String::new();
    for m in matters {
        let _ = writeln!(
            out,
            "{}  {} · {}",
            printable(&m.code),
            printable(&m.title_zh),
            printable(&m.title)
        );
        let _ = writeln!(
            out,
            "  Level 办理层级     {} {}",
            m.level,
            m.level.title_zh()
        );
        let _ = writeln!(out, "  City-wide 同城通办 {}", yes_no(m.city_wide));
        let _ = writeln!(
            out,
            "  Departments 部门   {}",
            departments(catalogue, m).join(", ")
        );
        for role in &m.roles {
            let count = if role.min == role.max {
                role.min.to_string()
            } else {
                format!("{}–{}", role.min, role.max)
            };
            let _ = writeln!(out, "  {} ({count}):", role.role);
            for e in &role.evidence {
                let title = catalogue
                    .evidence(e)
                    .map(|d| format!("{} · {}", printable(&d.title_zh), printable(&d.title)))
                    .unwrap_or_default();
                let _ = writeln!(out, "    {}  {title}", printable(e));
            }
        }
        out.push('\n');
    }
    let _ = writeln!(out, "{} matters.", matters.len());
    out
}

/// Stable machine output: `{"matters": [...]}`, each with its code,
/// titles, description, level, city_wide, departments and roles (each with
/// its subject kind, bounds and evidence types).
fn matters_json(catalogue: &Catalogue, matters: &[&Matter]) -> Value {
    let list: Vec<Value> = matters
        .iter()
        .map(|m| {
            json!({
                "code": m.code,
                "title": m.title,
                "title_zh": m.title_zh,
                "description": m.description,
                "level": m.level.name(),
                "level_zh": m.level.title_zh(),
                "city_wide": m.city_wide,
                "departments": departments(catalogue, m),
                "roles": m.roles.iter().map(|r| json!({
                    "role": r.role.name(),
                    "subject_kind": r.role.kind().name(),
                    "min": r.min,
                    "max": r.max,
                    "evidence": r.evidence.iter().map(|e| {
                        let def = catalogue.evidence(e);
                        json!({
                            "id": e,
                            "department": def.map(|d| d.department.as_str()),
                            "title": def.map(|d| d.title.as_str()),
                            "title_zh": def.map(|d| d.title_zh.as_str()),
                        })
                    }).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "matters": list })
}

/// Markdown table cells hold no `|` and no line break.
fn cell(s: &str) -> String {
    printable(s).replace('|', "\\|")
}

/// The README's matter table: every matter with its level, 同城通办 and the
/// departments behind each role.
pub fn markdown_table(catalogue: &Catalogue, matters: &[&Matter]) -> String {
    let mut out = String::from(
        "| Code | 事项 | Matter | Level 层级 | 同城通办 | Roles: departments |\n|---|---|---|---|---|---|\n",
    );
    for m in matters {
        let roles: Vec<String> = m
            .roles
            .iter()
            .map(|r| {
                let mut depts: Vec<&str> = Vec::new();
                for e in &r.evidence {
                    if let Some(d) = catalogue.evidence(e)
                        && !depts.contains(&d.department.as_str())
                    {
                        depts.push(d.department.as_str());
                    }
                }
                format!("{}: {}", r.role, depts.join(", "))
            })
            .collect();
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} {} | {} | {} |",
            cell(&m.code),
            cell(&m.title_zh),
            cell(&m.title),
            m.level,
            m.level.title_zh(),
            if m.city_wide { "yes 是" } else { "no 否" },
            cell(&roles.join("; "))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> MattersArgs {
        MattersArgs {
            catalogue: None,
            level: None,
            department: None,
            json: false,
            markdown: false,
        }
    }

    const BEGIN: &str = "<!-- matters:begin (generated by `tongban matters --markdown`) -->\n";
    const END: &str = "<!-- matters:end -->";

    /// The README's matter table is the catalogue's: regenerate with
    /// `TONGBAN_BLESS=1 cargo test -p tongban-cli --lib matters::`.
    #[test]
    fn the_readme_lists_every_matter_of_the_catalogue() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let table = render(&MattersArgs {
            markdown: true,
            ..args()
        })
        .unwrap();
        let start = readme
            .find(BEGIN)
            .expect("README has the matters:begin marker")
            + BEGIN.len();
        let end = start
            + readme[start..]
                .find(END)
                .expect("README has the matters:end marker");
        if std::env::var_os("TONGBAN_BLESS").is_some() {
            let blessed = format!("{}{table}{}", &readme[..start], &readme[end..]);
            std::fs::write(&path, blessed).unwrap();
            return;
        }
        assert_eq!(
            &readme[start..end],
            table,
            "the README's matter table differs from the catalogue; regenerate with TONGBAN_BLESS=1 cargo test -p tongban-cli --lib matters::"
        );
        // Every matter, each with its level.
        let catalogue = Catalogue::embedded();
        assert!(catalogue.matters().len() >= 20);
        for m in catalogue.matters() {
            let row = readme[start..end]
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", m.code)))
                .unwrap_or_else(|| panic!("no README row for {}", m.code));
            assert!(
                row.contains(&format!("| {} {} |", m.level, m.level.title_zh())),
                "{row}"
            );
        }
    }

    #[test]
    fn text_lists_titles_levels_city_wide_and_roles() {
        let text = render(&args()).unwrap();
        let n = Catalogue::embedded().matters().len();
        assert!(text.ends_with(&format!("{n} matters.\n")), "{text}");
        let spouse = text
            .split("\n\n")
            .find(|b| b.starts_with("household-move-spouse"))
            .unwrap();
        assert!(spouse.contains("夫妻投靠户口迁入 · Household registration move to join a spouse"));
        assert!(spouse.contains("Level 办理层级     county 县（区）"));
        assert!(spouse.contains("City-wide 同城通办 no 否"));
        assert!(spouse.contains("Departments 部门   police, civil"));
        assert!(
            spouse.contains("  spouse (1):\n    police.identity  身份核验 · Identity verification")
        );
        let household = text
            .split("\n\n")
            .find(|b| b.starts_with("subsistence-allowance\u{20}"))
            .unwrap();
        assert!(
            household.contains("  household-member (0–9):"),
            "{household}"
        );
    }

    #[test]
    fn filters_by_level_and_department() {
        let county = render(&MattersArgs {
            level: Some(Level::County),
            json: true,
            ..args()
        })
        .unwrap();
        let v: Value = serde_json::from_str(&county).unwrap();
        let list = v["matters"].as_array().unwrap();
        let expected = Catalogue::embedded()
            .matters()
            .iter()
            .filter(|m| m.level == Level::County)
            .count();
        assert_eq!(list.len(), expected);
        assert!(list.iter().all(|m| m["level"] == "county"));
        let medins = render(&MattersArgs {
            department: Some("medins".into()),
            json: true,
            ..args()
        })
        .unwrap();
        let v: Value = serde_json::from_str(&medins).unwrap();
        let codes: Vec<_> = v["matters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["code"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            codes,
            [
                "medical-insurance-enrolment",
                "medical-assistance-enrolment",
                "medical-insurance-transfer"
            ]
        );
        let e = render(&MattersArgs {
            department: Some("tax\u{1b}[31m".into()),
            ..args()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown department \"tax\\u{1b}[31m\""), "{e}");
        assert!(!e.contains('\u{1b}'));
        assert!(e.contains("police, civil, hrss, market, medins"), "{e}");
    }

    #[test]
    fn json_is_stable_and_complete() {
        let v: Value = serde_json::from_str(
            &render(&MattersArgs {
                json: true,
                ..args()
            })
            .unwrap(),
        )
        .unwrap();
        let list = v["matters"].as_array().unwrap();
        assert_eq!(list.len(), Catalogue::embedded().matters().len());
        let enterprise = list
            .iter()
            .find(|m| m["code"] == "enterprise-abnormal-removal")
            .unwrap();
        assert_eq!(enterprise["level"], "county");
        assert_eq!(enterprise["level_zh"], "县（区）");
        assert_eq!(enterprise["city_wide"], false);
        assert_eq!(enterprise["departments"], json!(["police", "market"]));
        assert_eq!(enterprise["roles"][0]["role"], "enterprise");
        assert_eq!(enterprise["roles"][0]["subject_kind"], "organisation");
        assert_eq!(
            enterprise["roles"][0]["evidence"][1],
            json!({"id": "market.abnormal", "department": "market", "title": "Abnormal operations list", "title_zh": "经营异常名录"})
        );
        assert_eq!(enterprise["roles"][1]["role"], "legal-representative");
    }

    #[test]
    fn a_catalogue_file_is_listed_and_a_broken_one_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalogue.toml");
        std::fs::write(
            &path,
            tongban_core::catalogue::DEFAULT_CATALOGUE_TOML.replacen(
                "level = \"county\"",
                "level = \"province\"",
                1,
            ),
        )
        .unwrap();
        let e = render(&MattersArgs {
            catalogue: Some(path.clone()),
            ..args()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("catalogue.toml:") && e.contains("unknown level \"province\""),
            "{e}"
        );
        std::fs::write(&path, tongban_core::catalogue::DEFAULT_CATALOGUE_TOML).unwrap();
        assert_eq!(
            render(&MattersArgs {
                catalogue: Some(path),
                ..args()
            })
            .unwrap(),
            render(&args()).unwrap()
        );
    }
}
