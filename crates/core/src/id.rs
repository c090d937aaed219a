//! National identifiers: the resident identity number (GB 11643-1999) and the
//! unified social credit code (GB 32100-2015).
//!
//! Identity numbers are personal data: `Debug` and `Display` mask them, so a
//! stray `{}` or `?` in a log line cannot leak one. Use [`IdNumber::as_str`]
//! where the full number is genuinely needed (a department query).

use std::fmt;

use chrono::{Datelike, NaiveDate};

/// Weights of GB 11643-1999 over the first 17 digits.
const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// Check characters indexed by the weighted sum mod 11.
const ID_CHECK: &[u8; 11] = b"10X98765432";

/// Why a string is not a valid resident identity number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdNumberError {
    #[error("must be 18 characters, got {0}")]
    WrongLength(usize),
    #[error("character {position} must be a digit")]
    NonDigit { position: usize },
    #[error("check character (position 18) must be a digit or X")]
    BadCheckCharacter,
    #[error("region code {0} names no province")]
    UnknownRegion(String),
    #[error("birth date {0} does not exist")]
    ImpossibleBirthDate(String),
    #[error("birth date {0} is in the future")]
    FutureBirthDate(String),
    #[error("check character is {found}, expected {expected}")]
    WrongCheckCharacter { expected: char, found: char },
}

impl IdNumberError {
    /// A stable, machine-readable name for the failed check.
    pub fn check(&self) -> &'static str {
        match self {
            Self::WrongLength(_) => "length",
            Self::NonDigit { .. } => "digits",
            Self::BadCheckCharacter => "check_character_format",
            Self::UnknownRegion(_) => "region",
            Self::ImpossibleBirthDate(_) => "birth_date",
            Self::FutureBirthDate(_) => "birth_date_future",
            Self::WrongCheckCharacter { .. } => "checksum",
        }
    }
}

/// Sex as encoded in the sequence digits (odd = male, even = female).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sex {
    Male,
    Female,
}

/// A validated 18-character resident identity number, upper-case check char.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdNumber(String);

impl IdNumber {
    /// Parses and validates against today's date (UTC+8, the date in China).
    pub fn parse(input: &str) -> Result<Self, IdNumberError> {
        let today = (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive();
        Self::parse_at(input, today)
    }

    /// Parses and validates; birth dates after `today` are rejected.
    pub fn parse_at(input: &str, today: NaiveDate) -> Result<Self, IdNumberError> {
        let chars: Vec<char> = input.chars().collect();
        if chars.len() != 18 {
            return Err(IdNumberError::WrongLength(chars.len()));
        }
        let mut digits = [0u32; 17];
        for (i, c) in chars[..17].iter().enumerate() {
            digits[i] = c
                .to_digit(10)
                .filter(|_| c.is_ascii_digit())
                .ok_or(IdNumberError::NonDigit { position: i + 1 })?;
        }
        let found = chars[17].to_ascii_uppercase();
        if !(found.is_ascii_digit() || found == 'X') {
            return Err(IdNumberError::BadCheckCharacter);
        }
        let province = digits[0] * 10 + digits[1];
        if !(11..=82).contains(&province) {
            return Err(IdNumberError::UnknownRegion(input[..6].to_owned()));
        }
        let birth = &input[6..14];
        let date = NaiveDate::parse_from_str(birth, "%Y%m%d")
            .ok()
            .filter(|d| d.year() >= 1850)
            .ok_or_else(|| IdNumberError::ImpossibleBirthDate(birth.to_owned()))?;
        if date > today {
            return Err(IdNumberError::FutureBirthDate(birth.to_owned()));
        }
        let expected = id_check_char(&digits);
        if found != expected {
            return Err(IdNumberError::WrongCheckCharacter { expected, found });
        }
        let mut normalised = input[..17].to_owned();
        normalised.push(found);
        Ok(Self(normalised))
    }

    /// Builds a valid number from its parts by computing the check character.
    /// Used to make synthetic residents.
    pub fn from_parts(
        region: &str,
        birth: NaiveDate,
        sequence: u16,
    ) -> Result<Self, IdNumberError> {
        let body = format!("{region}{}{sequence:03}", birth.format("%Y%m%d"));
        let digits: Vec<u32> = body.chars().filter_map(|c| c.to_digit(10)).collect();
        let digits: [u32; 17] = digits
            .try_into()
            .map_err(|d: Vec<u32>| IdNumberError::WrongLength(d.len() + 1))?;
        let mut s = body;
        s.push(id_check_char(&digits));
        Self::parse_at(&s, NaiveDate::MAX)
    }

    /// The full number. Personal data: never log it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The six-digit administrative region code of registration.
    pub fn region_code(&self) -> &str {
        &self.0[..6]
    }

    pub fn birth_date(&self) -> NaiveDate {
        // Validated in `parse_at`; the fallback is unreachable.
        NaiveDate::parse_from_str(&self.0[6..14], "%Y%m%d").unwrap_or_default()
    }

    pub fn sex(&self) -> Sex {
        let seq = self.0.as_bytes()[16] - b'0';
        if seq % 2 == 1 { Sex::Male } else { Sex::Female }
    }

    /// A masked rendering safe for logs: region and check character only.
    pub fn masked(&self) -> String {
        format!("{}***********{}", &self.0[..6], &self.0[17..])
    }
}

impl fmt::Debug for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdNumber({})", self.masked())
    }
}

impl fmt::Display for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

fn id_check_char(digits: &[u32; 17]) -> char {
    let sum: u32 = digits.iter().zip(ID_WEIGHTS).map(|(d, w)| d * w).sum();
    char::from(ID_CHECK[(sum % 11) as usize])
}

/// Name of a Panzhihua region code, for readable output.
pub fn panzhihua_region_name(code: &str) -> Option<(&'static str, &'static str)> {
    Some(match code {
        "510402" => ("East District", "东区"),
        "510403" => ("West District", "西区"),
        "510411" => ("Renhe District", "仁和区"),
        "510421" => ("Miyi County", "米易县"),
        "510422" => ("Yanbian County", "盐边县"),
        _ => return None,
    })
}

const CREDIT_ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const CREDIT_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// Why a string is not a valid unified social credit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreditCodeError {
    #[error("must be 18 characters, got {0}")]
    WrongLength(usize),
    #[error(
        "character {position} ({found:?}) is not in the code alphabet 0-9A-Y without I, O, S, V, Z"
    )]
    BadCharacter { position: usize, found: char },
    #[error("check character is {found}, expected {expected}")]
    WrongCheckCharacter { expected: char, found: char },
}

impl CreditCodeError {
    /// A stable, machine-readable name for the failed check.
    pub fn check(&self) -> &'static str {
        match self {
            Self::WrongLength(_) => "length",
            Self::BadCharacter { .. } => "alphabet",
            Self::WrongCheckCharacter { .. } => "checksum",
        }
    }
}

/// A validated unified social credit code (GB 32100-2015), which identifies
/// organisations, government agencies included. Not personal data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CreditCode(String);

impl CreditCode {
    pub fn parse(input: &str) -> Result<Self, CreditCodeError> {
        let chars: Vec<char> = input.chars().collect();
        if chars.len() != 18 {
            return Err(CreditCodeError::WrongLength(chars.len()));
        }
        let mut values = [0u32; 18];
        for (i, c) in chars.iter().enumerate() {
            values[i] = credit_value(*c).ok_or(CreditCodeError::BadCharacter {
                position: i + 1,
                found: *c,
            })?;
        }
        let expected = credit_check_char(values[..17].try_into().unwrap_or([0; 17]));
        if chars[17] != expected {
            return Err(CreditCodeError::WrongCheckCharacter {
                expected,
                found: chars[17],
            });
        }
        Ok(Self(input.to_owned()))
    }

    /// Completes a 17-character body with its check character.
    pub fn with_check(body: &str) -> Result<Self, CreditCodeError> {
        let chars: Vec<char> = body.chars().collect();
        if chars.len() != 17 {
            return Err(CreditCodeError::WrongLength(chars.len() + 1));
        }
        let mut values = [0u32; 17];
        for (i, c) in chars.iter().enumerate() {
            values[i] = credit_value(*c).ok_or(CreditCodeError::BadCharacter {
                position: i + 1,
                found: *c,
            })?;
        }
        let mut code = body.to_owned();
        code.push(credit_check_char(values));
        Ok(Self(code))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CreditCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn credit_value(c: char) -> Option<u32> {
    CREDIT_ALPHABET
        .iter()
        .position(|&a| char::from(a) == c)
        .map(|p| p as u32)
}

fn credit_check_char(values: [u32; 17]) -> char {
    let sum: u32 = values.iter().zip(CREDIT_WEIGHTS).map(|(v, w)| v * w).sum();
    char::from(CREDIT_ALPHABET[((31 - sum % 31) % 31) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
    }

    #[test]
    fn accepts_known_valid_numbers() {
        // The GB 11643 worked example and a synthetic Panzhihua resident.
        let id = IdNumber::parse_at("11010519491231002X", today()).unwrap();
        assert_eq!(id.as_str(), "11010519491231002X");
        assert_eq!(id.sex(), Sex::Female);
        assert_eq!(
            id.birth_date(),
            NaiveDate::from_ymd_opt(1949, 12, 31).unwrap()
        );
        let made =
            IdNumber::from_parts("510421", NaiveDate::from_ymd_opt(1990, 3, 7).unwrap(), 123)
                .unwrap();
        assert_eq!(IdNumber::parse_at(made.as_str(), today()).unwrap(), made);
        assert_eq!(made.region_code(), "510421");
        assert_eq!(made.sex(), Sex::Male);
    }

    #[test]
    fn lower_case_x_is_accepted_and_stored_upper_case() {
        let id = IdNumber::parse_at("11010519491231002x", today()).unwrap();
        assert_eq!(id.as_str(), "11010519491231002X");
    }

    #[test]
    fn wrong_check_character_is_named() {
        let err = IdNumber::parse_at("110105194912310021", today()).unwrap_err();
        assert_eq!(
            err,
            IdNumberError::WrongCheckCharacter {
                expected: 'X',
                found: '1'
            }
        );
        assert_eq!(err.check(), "checksum");
    }

    #[test]
    fn wrong_length() {
        assert_eq!(
            IdNumber::parse_at("1101051949123100", today()),
            Err(IdNumberError::WrongLength(16))
        );
        assert_eq!(
            IdNumber::parse_at("", today()),
            Err(IdNumberError::WrongLength(0))
        );
        // 15-digit first-generation numbers are not accepted.
        assert_eq!(
            IdNumber::parse_at("110105491231002", today()),
            Err(IdNumberError::WrongLength(15))
        );
    }

    #[test]
    fn non_digit() {
        assert_eq!(
            IdNumber::parse_at("1101051949A231002X", today()),
            Err(IdNumberError::NonDigit { position: 11 })
        );
        // Full-width digits are not ASCII digits.
        assert_eq!(
            IdNumber::parse_at("１10105194912310021", today()),
            Err(IdNumberError::NonDigit { position: 1 })
        );
        assert_eq!(
            IdNumber::parse_at("11010519491231002Y", today()),
            Err(IdNumberError::BadCheckCharacter)
        );
    }

    #[test]
    fn impossible_birth_date() {
        // 30 February.
        let err = IdNumber::parse_at("510402199002300011", today()).unwrap_err();
        assert_eq!(err, IdNumberError::ImpossibleBirthDate("19900230".into()));
        // 29 February of a non-leap year.
        assert!(matches!(
            IdNumber::parse_at("510402190002290011", today()),
            Err(IdNumberError::ImpossibleBirthDate(_))
        ));
    }

    #[test]
    fn future_birth_date() {
        let id = IdNumber::from_parts("510402", NaiveDate::from_ymd_opt(2027, 1, 1).unwrap(), 1)
            .unwrap();
        assert_eq!(
            IdNumber::parse_at(id.as_str(), today()),
            Err(IdNumberError::FutureBirthDate("20270101".into()))
        );
    }

    #[test]
    fn unknown_province() {
        assert!(matches!(
            IdNumber::parse_at("990402199001010011", today()),
            Err(IdNumberError::UnknownRegion(_))
        ));
    }

    #[test]
    fn masking_hides_birth_date_and_sequence() {
        let id = IdNumber::parse_at("11010519491231002X", today()).unwrap();
        assert_eq!(id.to_string(), "110105***********X");
        assert_eq!(format!("{id:?}"), "IdNumber(110105***********X)");
    }

    #[test]
    fn credit_code_valid_and_invalid() {
        // A widely published valid code.
        assert!(CreditCode::parse("91350100M000100Y43").is_ok());
        let made = CreditCode::with_check("11510400MB0000001").unwrap();
        assert_eq!(CreditCode::parse(made.as_str()).unwrap(), made);
        assert_eq!(
            CreditCode::parse("91350100M000100Y4"),
            Err(CreditCodeError::WrongLength(17))
        );
        assert!(matches!(
            CreditCode::parse("91350100M000100Y44"),
            Err(CreditCodeError::WrongCheckCharacter {
                expected: '3',
                found: '4'
            })
        ));
        assert_eq!(
            CreditCode::parse("91350100I000100Y43"),
            Err(CreditCodeError::BadCharacter {
                position: 9,
                found: 'I'
            })
        );
    }
}
