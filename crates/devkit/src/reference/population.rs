//! A deterministic synthetic population of Panzhihua: a few hundred adult
//! residents in households across the five districts and counties, with
//! their card, marriage, allowance, insurance and pension histories, plus
//! the fixed story residents. Everything is invented.
//!
//! Identities (names, birth dates, identity numbers, households) depend on
//! the seed only; dates of events are placed relative to `today`, each
//! person drawing from their own generator so identities never shift.

use std::collections::HashSet;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tongban_core::IdNumber;

use super::stories;

/// The seed of the reference population.
pub const SEED: u64 = 0x5A4E_5A48_4955_4121;

const HOUSEHOLDS: usize = 130;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardStatus {
    Valid,
    Lost,
    Cancelled,
}

impl CardStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Lost => "lost",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub card_no: String,
    pub issued_on: NaiveDate,
    /// None: long-term card.
    pub valid_until: Option<NaiveDate>,
    pub status: CardStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarriageKind {
    Marriage,
    Divorce,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarriageEvent {
    pub kind: MarriageKind,
    pub date: NaiveDate,
    pub spouse: Option<IdNumber>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowance {
    pub case_no: String,
    pub start: NaiveDate,
    pub end: Option<NaiveDate>,
    pub monthly_amount_yuan: i64,
    pub next_review: Option<NaiveDate>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unemployment {
    pub insured_months: i64,
    pub separation_date: Option<NaiveDate>,
    pub registered_unemployed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pension {
    pub retired_on: NaiveDate,
    pub receiving: bool,
    /// Qualification certifications, oldest first.
    pub certifications: Vec<NaiveDate>,
}

/// A spell of pension-insurance contributions; months are first days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spell {
    pub employer: String,
    pub first_month: NaiveDate,
    pub last_month: NaiveDate,
    pub months: i64,
    pub ongoing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Household {
    pub no: String,
    pub region_code: &'static str,
    pub address: String,
    pub head: IdNumber,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resident {
    pub id: IdNumber,
    pub name: String,
    pub household_no: String,
    pub death: Option<NaiveDate>,
    pub cards: Vec<Card>,
    pub marriages: Vec<MarriageEvent>,
    pub allowance: Option<Allowance>,
    pub unemployment: Option<Unemployment>,
    pub pension: Option<Pension>,
    pub spells: Vec<Spell>,
    /// When the person's register entry last changed.
    pub updated_at: DateTime<Utc>,
}

impl Resident {
    pub fn birth_date(&self) -> NaiveDate {
        self.id.birth_date()
    }

    pub fn male(&self) -> bool {
        self.id.sex() == tongban_core::Sex::Male
    }

    pub fn current_card(&self) -> Option<&Card> {
        self.cards.iter().max_by_key(|c| c.issued_on)
    }
}

/// The situations the reference data must exhibit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EdgeCase {
    Deceased,
    CardCancelled,
    CardLost,
    CardExpired,
    NeverInsured,
    InsuredUnder12Months,
    InsuredButNotRegisteredUnemployed,
    EligibleForUnemploymentBenefit,
    RetiredQualificationOverdue,
    ReceivingSubsistence,
    Divorced,
    Widowed,
}

impl EdgeCase {
    pub const ALL: [Self; 12] = [
        Self::Deceased,
        Self::CardCancelled,
        Self::CardLost,
        Self::CardExpired,
        Self::NeverInsured,
        Self::InsuredUnder12Months,
        Self::InsuredButNotRegisteredUnemployed,
        Self::EligibleForUnemploymentBenefit,
        Self::RetiredQualificationOverdue,
        Self::ReceivingSubsistence,
        Self::Divorced,
        Self::Widowed,
    ];
}

/// The reference population as of one day.
#[derive(Debug, Clone)]
pub struct Population {
    pub today: NaiveDate,
    pub households: Vec<Household>,
    pub residents: Vec<Resident>,
}

impl Population {
    /// The reference population (seed [`SEED`]) as of `today`.
    pub fn reference(today: NaiveDate) -> Self {
        Self::generate(SEED, today)
    }

    pub fn generate(seed: u64, today: NaiveDate) -> Self {
        let mut g = Generator {
            rng: StdRng::seed_from_u64(seed),
            seed,
            today,
            taken: stories::ALL
                .iter()
                .map(|s| s.id_number.to_owned())
                .chain([stories::UNKNOWN_PERSON_ID.to_owned()])
                .collect(),
            households: Vec::new(),
            residents: Vec::new(),
            next_card: 1,
        };
        g.stories();
        for i in 0..HOUSEHOLDS {
            g.random_household(i);
        }
        Self {
            today,
            households: g.households,
            residents: g.residents,
        }
    }

    pub fn resident(&self, id: &str) -> Option<&Resident> {
        self.residents.iter().find(|r| r.id.as_str() == id)
    }

    /// The edge cases `r` exhibits as of `self.today`.
    pub fn edge_cases(&self, r: &Resident) -> Vec<EdgeCase> {
        let today = self.today;
        let mut out = Vec::new();
        if r.death.is_some() {
            out.push(EdgeCase::Deceased);
        }
        if let Some(c) = r.current_card() {
            match c.status {
                CardStatus::Cancelled => out.push(EdgeCase::CardCancelled),
                CardStatus::Lost => out.push(EdgeCase::CardLost),
                CardStatus::Valid if c.valid_until.is_some_and(|v| v < today) => {
                    out.push(EdgeCase::CardExpired)
                }
                CardStatus::Valid => {}
            }
        }
        match (&r.unemployment, &r.pension) {
            (None, None) if r.spells.is_empty() => out.push(EdgeCase::NeverInsured),
            (Some(u), None) => {
                if u.insured_months < 12 {
                    out.push(EdgeCase::InsuredUnder12Months);
                } else if u.separation_date.is_some() && !u.registered_unemployed {
                    out.push(EdgeCase::InsuredButNotRegisteredUnemployed);
                } else if u.separation_date.is_some() {
                    out.push(EdgeCase::EligibleForUnemploymentBenefit);
                }
            }
            _ => {}
        }
        if let Some(p) = &r.pension
            && p.receiving
            && p.certifications
                .last()
                .is_none_or(|d| *d <= months_before(today, 12))
        {
            out.push(EdgeCase::RetiredQualificationOverdue);
        }
        if r.allowance
            .as_ref()
            .is_some_and(|a| a.start <= today && a.end.is_none_or(|e| e >= today))
        {
            out.push(EdgeCase::ReceivingSubsistence);
        }
        if let Some(last) = r.marriages.iter().max_by_key(|m| m.date) {
            match last.kind {
                MarriageKind::Divorce => out.push(EdgeCase::Divorced),
                MarriageKind::Marriage => {
                    let spouse_dead = last.spouse.as_ref().is_some_and(|s| {
                        self.resident(s.as_str()).is_some_and(|s| s.death.is_some())
                    });
                    if spouse_dead {
                        out.push(EdgeCase::Widowed);
                    }
                }
            }
        }
        out
    }
}

/// The same day `n` months earlier (clamped to the month's end).
pub fn months_before(d: NaiveDate, n: u32) -> NaiveDate {
    d.checked_sub_months(chrono::Months::new(n)).unwrap_or(d)
}

fn years_after(d: NaiveDate, n: u32) -> NaiveDate {
    d.checked_add_months(chrono::Months::new(12 * n))
        .unwrap_or(d)
}

fn first_of_month(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

pub(crate) fn age_on(birth: NaiveDate, day: NaiveDate) -> i32 {
    let mut age = day.year() - birth.year();
    if (day.month(), day.day()) < (birth.month(), birth.day()) {
        age -= 1;
    }
    age
}

/// 09:30 in Panzhihua (UTC+8) on `d`.
pub(crate) fn office_time(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(1, 30, 0).unwrap_or_default().and_utc()
}

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "高", "林", "罗", "郑", "梁", "谢", "宋", "唐", "许", "韩", "冯", "邓", "曹", "彭", "曾",
    "肖", "田", "董", "袁", "潘", "蒋", "蔡", "余", "杜", "叶", "程", "魏", "苏", "吕", "丁", "任",
    "沈", "姚", "卢", "钟", "谭", "廖", "雷", "龙", "熊", "向", "文", "付",
];
const MALE_GIVEN: &[&str] = &[
    "伟", "强", "军", "明", "建", "国", "华", "平", "勇", "杰", "涛", "斌", "超", "鹏", "宇", "浩",
    "俊", "志", "文", "刚", "永", "海", "林", "峰", "东", "雷", "波", "辉", "磊", "成", "德", "荣",
];
const FEMALE_GIVEN: &[&str] = &[
    "芳", "娟", "敏", "静", "丽", "艳", "霞", "燕", "玲", "桂", "英", "秀", "兰", "梅", "琴", "红",
    "萍", "婷", "雪", "慧", "丹", "莉", "凤", "洁", "春", "月", "琼", "蓉", "素", "淑", "珍", "莲",
];

/// Region code, county/district name, and its towns/streets with their
/// villages/communities.
type Places = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static [&'static str])],
);

const PLACES: &[Places] = &[
    (
        "510402",
        "东区",
        &[
            ("炳草岗街道", &["新华社区", "枣子坪社区", "健康路社区"]),
            ("弄弄坪街道", &["攀钢社区", "向阳村社区"]),
            ("大渡口街道", &["金沙社区", "滨江社区"]),
            ("银江镇", &["阿署达村", "沙坝村"]),
        ],
    ),
    (
        "510403",
        "西区",
        &[
            ("清香坪街道", &["动力站社区", "福德社区", "新桥社区"]),
            ("玉泉街道", &["玉泉社区", "瓷窑社区"]),
            ("格里坪镇", &["格里坪村", "庄上村"]),
        ],
    ),
    (
        "510411",
        "仁和区",
        &[
            ("仁和镇", &["仁和社区", "弯腰树村"]),
            ("大河中路街道", &["大河社区", "官房社区"]),
            ("总发乡", &["总发村", "平田村"]),
        ],
    ),
    (
        "510421",
        "米易县",
        &[
            ("攀莲镇", &["城东社区", "贤家村"]),
            ("撒莲镇", &["磨所村", "海塔村", "撒莲社区"]),
            ("丙谷镇", &["丙谷社区", "芭蕉箐村"]),
        ],
    ),
    (
        "510422",
        "盐边县",
        &[
            ("桐子林镇", &["新县城社区", "金河社区"]),
            ("红格镇", &["红格村", "昔格达村"]),
            ("渔门镇", &["渔门社区", "永兴村"]),
        ],
    ),
];

const EMPLOYERS: &[&str] = &[
    "攀枝花市东区金沙机械制造有限公司",
    "攀枝花市西区清香坪建材有限公司",
    "攀枝花市仁和区芒果种植专业合作社",
    "攀枝花市钒钛新材料科技有限公司",
    "米易县阳光农业开发有限公司",
    "盐边县桐子林水电服务有限公司",
    "攀枝花市炳草岗商贸有限公司",
    "攀枝花市大河物流有限公司",
    "攀枝花市中心医院后勤服务中心",
    "攀枝花市东区社区服务中心",
];

struct Generator {
    rng: StdRng,
    seed: u64,
    today: NaiveDate,
    taken: HashSet<String>,
    households: Vec<Household>,
    residents: Vec<Resident>,
    next_card: u32,
}

/// A person's identity as drawn before their history is.
struct Person {
    id: IdNumber,
    name: String,
}

impl Generator {
    fn person_rng(&self, id: &IdNumber) -> StdRng {
        let digits = id.as_str().bytes().fold(0u64, |acc, b| {
            acc.wrapping_mul(131).wrapping_add(u64::from(b))
        });
        StdRng::seed_from_u64(self.seed ^ digits)
    }

    fn day(&mut self, from: NaiveDate, to: NaiveDate) -> NaiveDate {
        let span = (to - from).num_days().max(0);
        from + Duration::days(self.rng.gen_range(0..=span))
    }

    fn new_person(
        &mut self,
        region: &str,
        birth: NaiveDate,
        male: bool,
        surname: Option<&str>,
    ) -> Person {
        let id = loop {
            let seq: u16 = self.rng.gen_range(0..500) * 2 + u16::from(male);
            if let Ok(id) = IdNumber::from_parts(region, birth, seq)
                && self.taken.insert(id.as_str().to_owned())
            {
                break id;
            }
        };
        let surname = surname
            .map(str::to_owned)
            .unwrap_or_else(|| SURNAMES[self.rng.gen_range(0..SURNAMES.len())].to_owned());
        let given = if male { MALE_GIVEN } else { FEMALE_GIVEN };
        let mut name = surname;
        for _ in 0..self.rng.gen_range(1..=2) {
            name.push_str(given[self.rng.gen_range(0..given.len())]);
        }
        Person { id, name }
    }

    fn card_no(&mut self) -> String {
        let n = self.next_card;
        self.next_card += 1;
        format!("PZH{n:07}")
    }

    fn household(&mut self, region: &'static str, address: String, head: &IdNumber) -> String {
        let no = format!("{region}-{:05}", self.households.len() + 1);
        self.households.push(Household {
            no: no.clone(),
            region_code: region,
            address,
            head: head.clone(),
        });
        no
    }

    fn random_household(&mut self, index: usize) {
        // More people live in the city districts than in the counties.
        let place = PLACES[[0, 0, 0, 1, 1, 1, 2, 2, 3, 4][self.rng.gen_range(0..10)]];
        let (region, county, towns) = place;
        let (town, villages) = towns[self.rng.gen_range(0..towns.len())];
        let village = villages[self.rng.gen_range(0..villages.len())];
        let address = if village.ends_with('村') {
            format!(
                "攀枝花市{county}{town}{village}{}组{}号",
                self.rng.gen_range(1..=9),
                self.rng.gen_range(1..=60)
            )
        } else {
            format!(
                "攀枝花市{county}{town}{village}{}栋{}单元{}号",
                self.rng.gen_range(1..=30),
                self.rng.gen_range(1..=4),
                self.rng.gen_range(1..=6) * 100 + self.rng.gen_range(1..=4)
            )
        };
        let head_male = self.rng.gen_bool(0.6);
        let head_birth = self.day(ymd(1936, 1, 1), ymd(2000, 12, 31));
        let head = self.new_person(region, head_birth, head_male, None);
        let hh = self.household(region, address, &head.id);
        let has_spouse = self.rng.gen_bool(0.65);
        let spouse = has_spouse.then(|| {
            let birth = head_birth + Duration::days(self.rng.gen_range(-1800..=1800));
            let birth = birth.min(ymd(2002, 12, 31));
            self.new_person(region, birth, !head_male, None)
        });
        let child_birth = years_after(head_birth, self.rng.gen_range(22..=34))
            + Duration::days(self.rng.gen_range(0..365));
        // Fixed cut-off (not `today`) so identities never shift; all are adults.
        let has_child = self.rng.gen_bool(0.4) && child_birth <= ymd(2006, 12, 31);
        let child = has_child.then(|| {
            let surname = head.name.chars().next().map(String::from);
            let male = self.rng.gen_bool(0.5);
            self.new_person(region, child_birth, male, surname.as_deref())
        });
        // Household-level events draw from their own generator so that
        // identities above never depend on `today`.
        let mut hrng = StdRng::seed_from_u64(self.seed.wrapping_add(index as u64 * 7919));
        let marriage_date = spouse.as_ref().map(|s| {
            let younger = head_birth.max(s.id.birth_date());
            years_after(younger, hrng.gen_range(21..=30)) + Duration::days(hrng.gen_range(0..365))
        });
        let divorced_single =
            spouse.is_none() && age_on(head_birth, self.today) >= 32 && hrng.gen_bool(0.25);
        let allowance_case = hrng.gen_bool(0.06);
        let allowance_start = self.today - Duration::days(hrng.gen_range(60..1500));
        let allowance_ended = hrng.gen_bool(0.25);
        let amount = hrng.gen_range(40..=95) * 10;
        let review = self.today + Duration::days(hrng.gen_range(5..300));

        let mut members = vec![(head, true)];
        if let Some(s) = spouse {
            members.push((s, false));
        }
        if let Some(c) = child {
            members.push((c, false));
        }
        let spouse_of = |i: usize, members: &[(Person, bool)]| -> Option<IdNumber> {
            match i {
                0 if has_spouse => Some(members[1].0.id.clone()),
                1 if has_spouse => Some(members[0].0.id.clone()),
                _ => None,
            }
        };
        for i in 0..members.len() {
            let spouse_id = spouse_of(i, &members);
            let (p, _) = &members[i];
            let mut r = self.history(&p.id, &p.name, &hh);
            if let (Some(date), Some(sp)) = (marriage_date, spouse_id) {
                r.marriages.push(MarriageEvent {
                    kind: MarriageKind::Marriage,
                    date,
                    spouse: Some(sp),
                });
            }
            if i == 0 && divorced_single {
                let married = years_after(head_birth, hrng.gen_range(22..=28));
                let divorced = married + Duration::days(hrng.gen_range(400..4000));
                if divorced < self.today {
                    r.marriages.push(MarriageEvent {
                        kind: MarriageKind::Marriage,
                        date: married,
                        spouse: None,
                    });
                    r.marriages.push(MarriageEvent {
                        kind: MarriageKind::Divorce,
                        date: divorced,
                        spouse: None,
                    });
                }
            }
            if allowance_case && r.death.is_none() {
                r.allowance = Some(Allowance {
                    case_no: format!("DB-{hh}"),
                    start: allowance_start,
                    end: allowance_ended.then(|| self.today - Duration::days(20)),
                    monthly_amount_yuan: amount,
                    next_review: (!allowance_ended).then_some(review),
                });
            }
            self.residents.push(r);
        }
    }

    /// Draws a person's card, death, insurance and pension history.
    fn history(&mut self, id: &IdNumber, name: &str, household_no: &str) -> Resident {
        let today = self.today;
        let mut rng = self.person_rng(id);
        let birth = id.birth_date();
        let age = age_on(birth, today);
        let male = id.sex() == tongban_core::Sex::Male;

        let death = (age >= 70 && rng.gen_bool(0.08))
            .then(|| today - Duration::days(rng.gen_range(15..900)));

        let sixteenth = years_after(birth, 16);
        let issued_on = {
            let earliest = sixteenth.max(today - Duration::days(7300));
            let span = (today - earliest).num_days().max(1);
            earliest + Duration::days(rng.gen_range(0..span))
        };
        let age_at_issue = age_on(birth, issued_on);
        let valid_until = match age_at_issue {
            ..26 => Some(years_after(issued_on, 10)),
            26..46 => Some(years_after(issued_on, 20)),
            _ => None,
        };
        let roll: f64 = rng.r#gen();
        let status = if death.is_some() || roll < 0.02 {
            CardStatus::Cancelled
        } else if roll < 0.06 {
            CardStatus::Lost
        } else {
            CardStatus::Valid
        };
        let card = Card {
            card_no: self.card_no(),
            issued_on,
            valid_until,
            status,
        };

        let retire_age = if male { 60 } else { 55 };
        let mut unemployment = None;
        let mut pension = None;
        let mut spells = Vec::new();
        let employer = |rng: &mut StdRng| EMPLOYERS[rng.gen_range(0..EMPLOYERS.len())].to_owned();
        if age >= retire_age {
            if rng.gen_bool(0.85) {
                let retired_on = years_after(birth, retire_age as u32);
                let career = rng.gen_range(120..=400);
                let last = first_of_month(months_before(retired_on, 1));
                spells.push(Spell {
                    employer: employer(&mut rng),
                    first_month: months_before(last, career as u32 - 1),
                    last_month: last,
                    months: career,
                    ongoing: false,
                });
                let mut certs = Vec::new();
                let mut c = today - Duration::days(rng.gen_range(10..560));
                while c > retired_on && certs.len() < 5 {
                    certs.push(c);
                    c = months_before(c, 12) - Duration::days(rng.gen_range(0..30));
                }
                certs.reverse();
                // The pension office stops payment some weeks after a death.
                let receiving = death.is_none_or(|d| (today - d).num_days() < 90);
                pension = Some(Pension {
                    retired_on,
                    receiving,
                    certifications: certs,
                });
            }
        } else if rng.gen_bool(0.8) {
            let max_months = ((age - 18).max(1) * 12).min(300) as i64;
            let months = rng.gen_range(1..=max_months);
            let separated = rng.gen_bool(0.25);
            let separation_date = separated.then(|| today - Duration::days(rng.gen_range(10..400)));
            let last = first_of_month(months_before(separation_date.unwrap_or(today), 1));
            spells.push(Spell {
                employer: employer(&mut rng),
                first_month: months_before(last, months as u32 - 1),
                last_month: last,
                months,
                ongoing: !separated,
            });
            unemployment = Some(Unemployment {
                insured_months: months,
                separation_date,
                registered_unemployed: separated && rng.gen_bool(0.6),
            });
        }
        Resident {
            id: id.clone(),
            name: name.to_owned(),
            household_no: household_no.to_owned(),
            death,
            cards: vec![card],
            marriages: Vec::new(),
            allowance: None,
            unemployment,
            pension,
            spells,
            updated_at: office_time(today - Duration::days(rng.gen_range(1..400))),
        }
    }

    /// A story resident with a plain valid card and no other history.
    fn story(
        &mut self,
        s: stories::Story,
        household_no: &str,
        card_issued_years_ago: u32,
    ) -> Resident {
        let id = IdNumber::parse(s.id_number).unwrap_or_else(|_| {
            // Story ids are checked by a unit test; unreachable.
            IdNumber::from_parts("510402", ymd(1980, 1, 1), 1).unwrap_or_else(|_| unreachable!())
        });
        let issued_on = months_before(self.today, 12 * card_issued_years_ago + 2);
        let age_at_issue = age_on(id.birth_date(), issued_on);
        let valid_until = match age_at_issue {
            ..26 => Some(years_after(issued_on, 10)),
            26..46 => Some(years_after(issued_on, 20)),
            _ => None,
        };
        Resident {
            id,
            name: s.name.to_owned(),
            household_no: household_no.to_owned(),
            death: None,
            cards: vec![Card {
                card_no: self.card_no(),
                issued_on,
                valid_until,
                status: CardStatus::Valid,
            }],
            marriages: Vec::new(),
            allowance: None,
            unemployment: None,
            pension: None,
            spells: Vec::new(),
            updated_at: office_time(self.today - Duration::days(30)),
        }
    }

    fn story_household(
        &mut self,
        s: stories::Story,
        region: &'static str,
        address: &str,
    ) -> String {
        let id = IdNumber::parse(s.id_number).unwrap_or_else(|_| unreachable!());
        self.household(region, address.to_owned(), &id)
    }

    fn stories(&mut self) {
        use stories::*;
        let today = self.today;
        let id = |s: Story| IdNumber::parse(s.id_number).unwrap_or_else(|_| unreachable!());
        let spell = |employer: &str, last: NaiveDate, months: i64, ongoing: bool| Spell {
            employer: employer.to_owned(),
            first_month: months_before(first_of_month(last), months as u32 - 1),
            last_month: first_of_month(last),
            months,
            ongoing,
        };

        // (a) Villager of Mosuo village: valid card; worked 24 months, left
        // that job, not registered unemployed (she is leaving for work).
        let hh = self.story_household(
            MOSUO_VILLAGER,
            "510421",
            "攀枝花市米易县撒莲镇磨所村4组17号",
        );
        let mut r = self.story(MOSUO_VILLAGER, &hh, 3);
        let sep = today - Duration::days(180);
        r.unemployment = Some(Unemployment {
            insured_months: 24,
            separation_date: Some(sep),
            registered_unemployed: false,
        });
        r.spells
            .push(spell(EMPLOYERS[4], months_before(sep, 1), 24, false));
        self.residents.push(r);

        // (b) Laid-off worker at Dongli-station community, formerly employed
        // in East District.
        let hh = self.story_household(
            LAID_OFF_WORKER,
            "510403",
            "攀枝花市西区清香坪街道动力站社区12栋2单元301号",
        );
        let mut r = self.story(LAID_OFF_WORKER, &hh, 6);
        let sep = today - Duration::days(45);
        r.unemployment = Some(Unemployment {
            insured_months: 86,
            separation_date: Some(sep),
            registered_unemployed: true,
        });
        r.spells
            .push(spell(EMPLOYERS[0], months_before(sep, 1), 86, false));
        r.marriages.push(MarriageEvent {
            kind: MarriageKind::Marriage,
            date: ymd(2010, 10, 2),
            spouse: None,
        });
        self.residents.push(r);

        // (c) Retiree certified two months ago.
        let hh = self.story_household(
            CERTIFIED_RETIREE,
            "510402",
            "攀枝花市东区炳草岗街道新华社区8栋1单元502号",
        );
        let mut r = self.story(CERTIFIED_RETIREE, &hh, 8);
        let retired_on = ymd(2018, 5, 9);
        r.pension = Some(Pension {
            retired_on,
            receiving: true,
            certifications: vec![
                months_before(today, 26),
                months_before(today, 14),
                months_before(today, 2),
            ],
        });
        r.spells.push(spell(
            EMPLOYERS[3],
            months_before(retired_on, 1),
            384,
            false,
        ));
        self.residents.push(r);

        // (d) Retiree whose certification is overdue.
        let hh = self.story_household(
            OVERDUE_RETIREE,
            "510422",
            "攀枝花市盐边县桐子林镇新县城社区3栋2单元201号",
        );
        let mut r = self.story(OVERDUE_RETIREE, &hh, 10);
        let retired_on = ymd(2010, 11, 30);
        r.pension = Some(Pension {
            retired_on,
            receiving: true,
            certifications: vec![months_before(today, 27), months_before(today, 15)],
        });
        r.spells.push(spell(
            EMPLOYERS[5],
            months_before(retired_on, 1),
            300,
            false,
        ));
        self.residents.push(r);

        // (e) Worker insured only 7 months.
        let hh = self.story_household(
            SHORT_INSURED_WORKER,
            "510411",
            "攀枝花市仁和区大河中路街道大河社区15栋3单元402号",
        );
        let mut r = self.story(SHORT_INSURED_WORKER, &hh, 4);
        let sep = today - Duration::days(30);
        r.unemployment = Some(Unemployment {
            insured_months: 7,
            separation_date: Some(sep),
            registered_unemployed: true,
        });
        r.spells
            .push(spell(EMPLOYERS[7], months_before(sep, 1), 7, false));
        self.residents.push(r);

        // (f) Deceased pensioner and (f') his widow, one household.
        let hh = self.story_household(
            DECEASED_PENSIONER,
            "510402",
            "攀枝花市东区大渡口街道金沙社区2栋1单元101号",
        );
        let died = today - Duration::days(40);
        let married = ymd(1970, 5, 1);
        let mut r = self.story(DECEASED_PENSIONER, &hh, 15);
        r.death = Some(died);
        r.updated_at = office_time(died + Duration::days(5));
        if let Some(c) = r.cards.first_mut() {
            c.status = CardStatus::Cancelled;
        }
        r.marriages.push(MarriageEvent {
            kind: MarriageKind::Marriage,
            date: married,
            spouse: Some(id(WIDOW)),
        });
        let retired_on = ymd(2006, 9, 2);
        r.pension = Some(Pension {
            retired_on,
            // The pension office has not yet been told of the death.
            receiving: true,
            certifications: vec![months_before(today, 25), months_before(today, 13)],
        });
        r.spells.push(spell(
            EMPLOYERS[3],
            months_before(retired_on, 1),
            396,
            false,
        ));
        self.residents.push(r);
        let mut r = self.story(WIDOW, &hh, 12);
        r.marriages.push(MarriageEvent {
            kind: MarriageKind::Marriage,
            date: married,
            spouse: Some(id(DECEASED_PENSIONER)),
        });
        let retired_on = ymd(2003, 3, 15);
        r.pension = Some(Pension {
            retired_on,
            receiving: true,
            certifications: vec![months_before(today, 15), months_before(today, 3)],
        });
        r.spells.push(spell(
            EMPLOYERS[8],
            months_before(retired_on, 1),
            312,
            false,
        ));
        self.residents.push(r);

        // (g) Cancelled card, alive, employed.
        let hh = self.story_household(
            CANCELLED_CARD,
            "510403",
            "攀枝花市西区玉泉街道玉泉社区6栋2单元602号",
        );
        let mut r = self.story(CANCELLED_CARD, &hh, 5);
        if let Some(c) = r.cards.first_mut() {
            c.status = CardStatus::Cancelled;
        }
        r.unemployment = Some(Unemployment {
            insured_months: 120,
            separation_date: None,
            registered_unemployed: false,
        });
        r.spells
            .push(spell(EMPLOYERS[1], months_before(today, 1), 120, true));
        self.residents.push(r);

        // (h) Divorced household head receiving the subsistence allowance,
        // with her adult son in the same household and case.
        let hh = self.story_household(
            SUBSISTENCE_RECIPIENT,
            "510411",
            "攀枝花市仁和区仁和镇仁和社区21栋1单元103号",
        );
        let allowance = Allowance {
            case_no: format!("DB-{hh}"),
            start: today - Duration::days(400),
            end: None,
            monthly_amount_yuan: 720,
            next_review: Some(today + Duration::days(80)),
        };
        let mut r = self.story(SUBSISTENCE_RECIPIENT, &hh, 7);
        r.marriages = vec![
            MarriageEvent {
                kind: MarriageKind::Marriage,
                date: ymd(2003, 10, 1),
                spouse: None,
            },
            MarriageEvent {
                kind: MarriageKind::Divorce,
                date: ymd(2015, 6, 20),
                spouse: None,
            },
        ];
        r.allowance = Some(allowance.clone());
        r.unemployment = Some(Unemployment {
            insured_months: 20,
            separation_date: Some(ymd(2016, 3, 31)),
            registered_unemployed: false,
        });
        r.spells
            .push(spell(EMPLOYERS[6], ymd(2016, 3, 1), 20, false));
        self.residents.push(r);
        let son = self.new_person("510411", ymd(2004, 9, 12), true, Some("黄"));
        let mut r = self.history(&son.id, &son.name, &hh);
        r.allowance = Some(allowance);
        r.death = None;
        self.residents.push(r);

        // (i) Never insured.
        let hh = self.story_household(NEVER_INSURED, "510422", "攀枝花市盐边县红格镇红格村2组8号");
        let r = self.story(NEVER_INSURED, &hh, 2);
        self.residents.push(r);

        // (j), (k) Two more members of the subsistence recipient's
        // household (story residents draw nothing from the generator, so
        // the random population is unchanged): her daughter, in work again
        // for two months, and her mother, never insured.
        let hh = self
            .residents
            .iter()
            .find(|r| r.id.as_str() == SUBSISTENCE_RECIPIENT.id_number)
            .map(|r| r.household_no.clone())
            .unwrap_or_default();
        let mut r = self.story(DIBAO_DAUGHTER, &hh, 4);
        let hired = first_of_month(months_before(today, 1));
        r.unemployment = Some(Unemployment {
            insured_months: 2,
            separation_date: None,
            registered_unemployed: false,
        });
        r.spells.push(Spell {
            employer: EMPLOYERS[2].to_owned(),
            first_month: hired,
            last_month: first_of_month(today),
            months: 2,
            ongoing: true,
        });
        self.residents.push(r);
        let r = self.story(DIBAO_MOTHER, &hh, 12);
        self.residents.push(r);

        // (l) The Salian entrepreneur: valid card, contributing since 2019.
        let hh = self.story_household(
            SALIAN_ENTREPRENEUR,
            "510421",
            "攀枝花市米易县撒莲镇海塔村3组6号",
        );
        let mut r = self.story(SALIAN_ENTREPRENEUR, &hh, 5);
        r.spells
            .push(spell("米易县撒莲芒果种植有限公司", today, 70, true));
        self.residents.push(r);
    }
}

fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
    }

    #[test]
    fn deterministic_with_stable_identities() {
        let a = Population::reference(today());
        let b = Population::reference(today());
        assert_eq!(a.residents, b.residents);
        let later = Population::reference(today() + Duration::days(400));
        let ids = |p: &Population| p.residents.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&later), "identities must not depend on today");
        assert!(
            (250..=450).contains(&a.residents.len()),
            "{}",
            a.residents.len()
        );
    }

    #[test]
    fn only_valid_unique_adult_panzhihua_ids() {
        let p = Population::reference(today());
        let mut seen = HashSet::new();
        for r in &p.residents {
            let parsed = IdNumber::parse_at(r.id.as_str(), today()).unwrap();
            assert_eq!(&parsed, &r.id);
            assert!(seen.insert(r.id.clone()));
            assert!(tongban_core::id::panzhihua_region_name(r.id.region_code()).is_some());
            assert!(age_on(r.birth_date(), today()) >= 18, "{}", r.id);
            assert!(!r.name.is_empty() && r.name.chars().count() <= 3);
            assert!(p.households.iter().any(|h| h.no == r.household_no));
        }
        assert!(!seen.contains(&IdNumber::parse(stories::UNKNOWN_PERSON_ID).unwrap()));
        for h in &p.households {
            assert!(
                p.resident(h.head.as_str())
                    .is_some_and(|r| r.household_no == h.no)
            );
        }
        let regions: HashSet<_> = p.households.iter().map(|h| h.region_code).collect();
        assert_eq!(regions.len(), 5);
    }

    #[test]
    fn covers_every_edge_case_in_random_part_and_stories() {
        for day in [
            today(),
            today() + Duration::days(200),
            today() + Duration::days(800),
        ] {
            let p = Population::reference(day);
            let story_ids: HashSet<&str> = stories::ALL.iter().map(|s| s.id_number).collect();
            let mut random = HashSet::new();
            let mut all = HashSet::new();
            for r in &p.residents {
                for e in p.edge_cases(r) {
                    all.insert(e);
                    if !story_ids.contains(r.id.as_str()) {
                        random.insert(e);
                    }
                }
            }
            for e in EdgeCase::ALL {
                assert!(all.contains(&e), "{e:?} missing on {day}");
                assert!(
                    random.contains(&e),
                    "{e:?} missing from random residents on {day}"
                );
            }
        }
    }

    #[test]
    fn stories_have_their_situations() {
        let p = Population::reference(today());
        let cases = |s: stories::Story| p.edge_cases(p.resident(s.id_number).unwrap());
        use EdgeCase::*;
        assert_eq!(
            cases(stories::LAID_OFF_WORKER),
            [EligibleForUnemploymentBenefit]
        );
        assert_eq!(cases(stories::SHORT_INSURED_WORKER), [InsuredUnder12Months]);
        assert_eq!(
            cases(stories::OVERDUE_RETIREE),
            [RetiredQualificationOverdue]
        );
        assert!(cases(stories::CERTIFIED_RETIREE).is_empty());
        assert_eq!(
            cases(stories::DECEASED_PENSIONER),
            [Deceased, CardCancelled, RetiredQualificationOverdue]
        );
        assert_eq!(cases(stories::WIDOW), [Widowed]);
        assert_eq!(cases(stories::CANCELLED_CARD), [CardCancelled]);
        assert_eq!(
            cases(stories::SUBSISTENCE_RECIPIENT),
            [
                InsuredButNotRegisteredUnemployed,
                ReceivingSubsistence,
                Divorced
            ]
        );
        assert_eq!(cases(stories::NEVER_INSURED), [NeverInsured]);
        assert_eq!(
            cases(stories::MOSUO_VILLAGER),
            [InsuredButNotRegisteredUnemployed]
        );
        let villager = p.resident(stories::MOSUO_VILLAGER.id_number).unwrap();
        let hh = p
            .households
            .iter()
            .find(|h| h.no == villager.household_no)
            .unwrap();
        assert!(hh.address.contains("撒莲镇磨所村"));
    }
}
