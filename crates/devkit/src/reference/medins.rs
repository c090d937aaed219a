//! The healthcare security administration (医疗保障局): who is enrolled in
//! basic medical insurance, in which scheme, and whether medical assistance
//! pays. Derived from the reference population so it agrees with the other
//! departments' stories: the employed and retirees in the employee scheme
//! (职工医保), a worker laid off suspended there since the separation,
//! people receiving the subsistence allowance in the resident scheme with
//! assisted contributions (困难群众参保资助), the dead terminated, everyone
//! else in the resident scheme (some suspended for an unpaid year), and a
//! few never enrolled — the resident never insured among them.

use chrono::{Datelike, NaiveDate};

use super::population::{Population, Resident};
use super::stories;
use super::{Row, V, insert, text};

/// A basic medical insurance scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// 职工基本医疗保险: through an employer, kept on retirement.
    Employee,
    /// 城乡居民基本医疗保险: everyone else, paid yearly.
    Resident,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Employee => "employee",
            Self::Resident => "resident",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    /// Contributions stopped (laid off, or the year's not paid).
    Suspended,
    /// Ended (death).
    Terminated,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Terminated => "terminated",
        }
    }
}

/// One person's enrolment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolment {
    pub scheme: Scheme,
    pub enrolled_on: NaiveDate,
    pub status: Status,
    pub status_since: NaiveDate,
    pub assisted: bool,
}

/// The sequence digits of the identity number: a stable per-person draw
/// that does not depend on the order residents were generated in.
fn draw(r: &Resident) -> u32 {
    r.id.as_str()[14..17].parse().unwrap_or(0)
}

fn first_of_year(year: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, 1, 1).unwrap_or(NaiveDate::MIN)
}

/// The enrolment of `r` as of `today`; `None`: never enrolled.
pub fn enrolment(r: &Resident, today: NaiveDate) -> Option<Enrolment> {
    if r.id.as_str() == stories::NEVER_INSURED.id_number {
        return None;
    }
    let receiving_allowance = r
        .allowance
        .as_ref()
        .is_some_and(|a| a.start <= today && a.end.is_none_or(|end| end >= today));
    let employed_since = r
        .spells
        .iter()
        .filter(|s| s.ongoing)
        .map(|s| s.first_month)
        .min();
    let employee = r.pension.is_some() || employed_since.is_some();
    // A few residents who are neither employed, retired nor assisted have
    // never enrolled.
    if !employee && !receiving_allowance && r.death.is_none() && draw(r) % 19 == 7 {
        return None;
    }
    // The resident scheme is open from the year a person turns 18, and
    // started here in 2009.
    let adult = first_of_year((r.birth_date().year() + 18).max(2009));
    let mut e = if let Some(p) = &r.pension {
        Enrolment {
            scheme: Scheme::Employee,
            enrolled_on: r
                .spells
                .iter()
                .map(|s| s.first_month)
                .min()
                .unwrap_or(p.retired_on),
            status: Status::Active,
            status_since: p.retired_on,
            assisted: false,
        }
    } else if receiving_allowance {
        let since = r.allowance.as_ref().map_or(adult, |a| a.start);
        Enrolment {
            scheme: Scheme::Resident,
            enrolled_on: adult.min(since),
            status: Status::Active,
            status_since: since,
            assisted: true,
        }
    } else if let Some(since) = employed_since {
        Enrolment {
            scheme: Scheme::Employee,
            enrolled_on: since,
            status: Status::Active,
            status_since: since,
            assisted: false,
        }
    } else if let Some(separated) = r
        .unemployment
        .as_ref()
        .and_then(|u| u.separation_date)
        .filter(|d| *d <= today)
    {
        // Laid off: the employee enrolment is suspended from the separation.
        Enrolment {
            scheme: Scheme::Employee,
            enrolled_on: r
                .spells
                .iter()
                .map(|s| s.first_month)
                .min()
                .unwrap_or(separated),
            status: Status::Suspended,
            status_since: separated,
            assisted: false,
        }
    } else if draw(r) % 7 == 3 {
        // This year's resident contribution is not paid.
        Enrolment {
            scheme: Scheme::Resident,
            enrolled_on: adult,
            status: Status::Suspended,
            status_since: first_of_year(today.year()),
            assisted: false,
        }
    } else {
        Enrolment {
            scheme: Scheme::Resident,
            enrolled_on: adult,
            status: Status::Active,
            status_since: adult,
            assisted: false,
        }
    };
    if let Some(died) = r.death {
        e.status = Status::Terminated;
        e.status_since = died;
        e.assisted = false;
    }
    e.enrolled_on = e.enrolled_on.min(today);
    Some(e)
}

/// The department's rows: one per person ever enrolled.
pub(super) fn rows(p: &Population) -> Vec<Row> {
    p.residents
        .iter()
        .filter_map(|r| Some((r, enrolment(r, p.today)?)))
        .map(|(r, e)| {
            insert(
                "medical_enrolments",
                &[
                    "id_number",
                    "scheme",
                    "enrolled_on",
                    "status",
                    "status_since",
                    "assisted",
                    "updated_at",
                ],
                vec![
                    text(r.id.as_str()),
                    text(e.scheme.as_str()),
                    V::Date(e.enrolled_on),
                    text(e.status.as_str()),
                    V::Date(e.status_since),
                    V::Bool(e.assisted),
                    V::Ts(
                        e.status_since
                            .and_hms_opt(2, 0, 0)
                            .unwrap_or_default()
                            .and_utc(),
                    ),
                ],
            )
        })
        .collect()
}
