//! Market regulation's (市场监督管理局) register: enterprises, their
//! registration status and legal representatives, and the abnormal
//! operations list (经营异常名录). The story enterprises
//! ([`stories::ENTERPRISES`]) play the demo's and the tests' scenes; a few
//! dozen more are drawn from their own seeded generator, with legal
//! representatives from the reference population, so the register has
//! ordinary entries around the stories.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tongban_core::{CreditCode, IdNumber};

use super::population::{Population, age_on, office_time};
use super::stories::{self, StoryEnterprise};

/// Generated enterprises besides the stories.
const GENERATED: usize = 40;

/// The characters of a credit code (GB 32100-2015).
const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";

const TRADES: &[&str] = &[
    "建材经营部",
    "农业专业合作社",
    "餐饮管理有限公司",
    "钒钛科技有限公司",
    "物流有限公司",
    "商贸有限公司",
    "果蔬种植有限公司",
    "汽车修理厂",
];

const ABNORMAL_REASONS: &[&str] = &[
    "未按规定期限公示年度报告",
    "通过登记的住所或者经营场所无法联系",
    "未在责令的期限内公示有关企业信息",
];

/// Registration status of an enterprise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    InOperation,
    /// Business licence revoked (吊销).
    Revoked,
    /// Deregistered (注销).
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InOperation => "in-operation",
            Self::Revoked => "revoked",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One listing on the abnormal operations list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub listed_on: NaiveDate,
    pub reason: &'static str,
    /// When the enterprise was removed from the list; None while listed.
    pub removed_on: Option<NaiveDate>,
}

/// One registered enterprise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enterprise {
    pub credit_code: CreditCode,
    pub name: String,
    pub status: Status,
    pub legal_representative: IdNumber,
    pub legal_representative_name: String,
    pub established_on: NaiveDate,
    pub registered_capital_yuan: i64,
    pub listings: Vec<Listing>,
    pub updated_at: DateTime<Utc>,
}

/// The register as of `p.today`: the story enterprises, then the generated ones.
pub fn enterprises(p: &Population) -> Vec<Enterprise> {
    let today = p.today;
    let mut out: Vec<Enterprise> = stories::ENTERPRISES
        .iter()
        .filter_map(|s| story(p, s))
        .collect();
    // Its own generator: the population's draws are not disturbed.
    let mut rng = StdRng::seed_from_u64(super::population::SEED ^ 0x4D41_524B_4554);
    let adults: Vec<_> = p
        .residents
        .iter()
        .filter(|r| r.death.is_none() && age_on(r.birth_date(), today) >= 22)
        .filter(|r| !stories::ALL.iter().any(|s| s.id_number == r.id.as_str()))
        .collect();
    let mut tries = 0;
    while out.len() < stories::ENTERPRISES.len() + GENERATED && !adults.is_empty() && tries < 1000 {
        tries += 1;
        let rep = adults[rng.gen_range(0..adults.len())];
        let mut body = format!("91{}TB", rep.id.region_code());
        for _ in 0..9 {
            body.push(char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]));
        }
        body.truncate(17);
        let Ok(code) = CreditCode::with_check(&body) else {
            continue;
        };
        if out.iter().any(|e| e.credit_code == code) {
            continue;
        }
        let established_on = today - Duration::days(rng.gen_range(200..6000));
        let roll: f64 = rng.r#gen();
        let status = if roll < 0.08 {
            Status::Revoked
        } else if roll < 0.16 {
            Status::Cancelled
        } else {
            Status::InOperation
        };
        let mut listings = Vec::new();
        if rng.gen_bool(0.2) {
            let listed_on = today - Duration::days(rng.gen_range(30..900));
            let removed = status == Status::InOperation && rng.gen_bool(0.4);
            listings.push(Listing {
                listed_on,
                reason: ABNORMAL_REASONS[rng.gen_range(0..ABNORMAL_REASONS.len())],
                removed_on: removed.then(|| listed_on + Duration::days(rng.gen_range(10..25))),
            });
        }
        let surname: String = rep.name.chars().take(1).collect();
        out.push(Enterprise {
            credit_code: code,
            name: format!(
                "攀枝花市{surname}氏{}",
                TRADES[rng.gen_range(0..TRADES.len())]
            ),
            status,
            legal_representative: rep.id.clone(),
            legal_representative_name: rep.name.clone(),
            established_on,
            registered_capital_yuan: rng.gen_range(1..=500) * 10_000,
            listings,
            updated_at: office_time(today - Duration::days(rng.gen_range(1..200))),
        });
    }
    out
}

/// A story enterprise as registered, its legal representative taken from
/// the population (None only if a story's representative were missing, a
/// defect the tests catch).
fn story(p: &Population, s: &StoryEnterprise) -> Option<Enterprise> {
    let today = p.today;
    let rep = p.resident(s.legal_representative.id_number)?;
    let code = CreditCode::parse(s.credit_code).ok()?;
    let (status, established_on, capital, listings) = match s.credit_code {
        c if c == stories::SALIAN_MANGO.credit_code => (
            Status::InOperation,
            today - Duration::days(2400),
            500_000,
            Vec::new(),
        ),
        c if c == stories::REVOKED_LICENCE.credit_code => (
            Status::Revoked,
            today - Duration::days(3650),
            100_000,
            vec![Listing {
                listed_on: today - Duration::days(900),
                reason: ABNORMAL_REASONS[1],
                removed_on: None,
            }],
        ),
        c if c == stories::CANCELLED_ENTERPRISE.credit_code => (
            Status::Cancelled,
            today - Duration::days(2900),
            300_000,
            Vec::new(),
        ),
        c if c == stories::ABNORMAL_ENTERPRISE.credit_code => (
            Status::InOperation,
            today - Duration::days(1500),
            2_000_000,
            vec![
                Listing {
                    listed_on: today - Duration::days(700),
                    reason: ABNORMAL_REASONS[0],
                    removed_on: Some(today - Duration::days(650)),
                },
                Listing {
                    listed_on: today - Duration::days(120),
                    reason: ABNORMAL_REASONS[0],
                    removed_on: None,
                },
            ],
        ),
        _ => (
            Status::InOperation,
            today - Duration::days(5000),
            800_000,
            Vec::new(),
        ),
    };
    Some(Enterprise {
        credit_code: code,
        name: s.name.to_owned(),
        status,
        legal_representative: rep.id.clone(),
        legal_representative_name: rep.name.clone(),
        established_on,
        registered_capital_yuan: capital,
        listings,
        updated_at: office_time(today - Duration::days(60)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_has_every_story_and_valid_codes() {
        let p = Population::reference(NaiveDate::from_ymd_opt(2026, 12, 2).unwrap());
        let all = enterprises(&p);
        assert_eq!(all.len(), stories::ENTERPRISES.len() + GENERATED);
        for s in stories::ENTERPRISES {
            let e = all
                .iter()
                .find(|e| e.credit_code.as_str() == s.credit_code)
                .unwrap_or_else(|| panic!("story enterprise {} missing", s.name));
            assert_eq!(
                e.legal_representative.as_str(),
                s.legal_representative.id_number
            );
        }
        let codes: std::collections::HashSet<_> = all.iter().map(|e| &e.credit_code).collect();
        assert_eq!(codes.len(), all.len());
        for e in &all {
            // Every legal representative is a person the police hold.
            assert!(p.resident(e.legal_representative.as_str()).is_some());
            assert!(e.listings.iter().filter(|l| l.removed_on.is_none()).count() <= 1);
            CreditCode::parse(e.credit_code.as_str()).unwrap();
        }
        let deceased = all
            .iter()
            .find(|e| e.credit_code.as_str() == stories::DECEASED_REPRESENTATIVE.credit_code)
            .unwrap();
        assert!(
            p.resident(deceased.legal_representative.as_str())
                .unwrap()
                .death
                .is_some()
        );
    }
}
