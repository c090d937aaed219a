//! Service points: the units where people and enterprises handle matters
//! (community centres, township halls, county and city service centres,
//! police stations), each at a level and in a region. The policy names them
//! (`[service_points."org/…/unit/…"]`); `Exchange.FindServicePoints` answers
//! "where can this be done" from them and the grants.

use std::fmt;

use crate::caller::Caller;
use crate::catalogue::Level;

/// Why a string is not an administrative region code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionCodeError {
    #[error("must be 6 digits, got {0} characters")]
    WrongLength(usize),
    #[error("must be 6 digits (0-9)")]
    NonDigit,
    #[error("{0} names no province (the first two digits must be 11 to 82)")]
    UnknownProvince(String),
    #[error("{0} is a whole province; name a city (…00) or a county or district")]
    Province(String),
}

/// A six-digit administrative region code (GB/T 2260), of a city
/// (prefecture, `5104 00`) or of a county or district (`5104 21`). Whole
/// provinces (`51 0000`) are refused: no service point serves one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionCode(String);

impl RegionCode {
    pub fn parse(input: &str) -> Result<Self, RegionCodeError> {
        if input.chars().count() != 6 {
            return Err(RegionCodeError::WrongLength(input.chars().count()));
        }
        if !input.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RegionCodeError::NonDigit);
        }
        let province: u32 = input[..2].parse().unwrap_or(0);
        if !(11..=82).contains(&province) {
            return Err(RegionCodeError::UnknownProvince(input.to_owned()));
        }
        if input.ends_with("0000") {
            return Err(RegionCodeError::Province(input.to_owned()));
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A city's (prefecture's) own code, ending in `00`.
    pub fn is_city(&self) -> bool {
        self.0.ends_with("00")
    }

    /// Whether a service point in this region serves people of `other`: the
    /// same region, or this is the city that contains it.
    pub fn covers(&self, other: &Self) -> bool {
        self == other || (self.is_city() && self.0[..4] == other.0[..4])
    }
}

impl fmt::Display for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest service point name, in characters.
pub const MAX_SERVICE_POINT_NAME_CHARS: usize = 100;

/// A unit where matters are handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePoint {
    pub unit: Caller,
    /// What people call it, e.g. 撒莲镇便民服务中心.
    pub name: String,
    /// The kind of service point: the level it stands at.
    pub level: Level,
    /// The county or district it serves (a city-level point: the city).
    pub region: RegionCode,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_codes() {
        let miyi = RegionCode::parse("510421").unwrap();
        let city = RegionCode::parse("510400").unwrap();
        let east = RegionCode::parse("510402").unwrap();
        assert!(!miyi.is_city());
        assert!(city.is_city());
        assert!(city.covers(&miyi) && city.covers(&east) && miyi.covers(&miyi));
        assert!(!miyi.covers(&east) && !miyi.covers(&city));
        // Another city does not cover Panzhihua's counties.
        assert!(!RegionCode::parse("510100").unwrap().covers(&miyi));
        for (bad, err) in [
            ("51042", RegionCodeError::WrongLength(5)),
            ("5104211", RegionCodeError::WrongLength(7)),
            ("51042a", RegionCodeError::NonDigit),
            ("５１０４２１", RegionCodeError::NonDigit),
            ("", RegionCodeError::WrongLength(0)),
            ("990421", RegionCodeError::UnknownProvince("990421".into())),
            ("000000", RegionCodeError::UnknownProvince("000000".into())),
            ("510000", RegionCodeError::Province("510000".into())),
        ] {
            assert_eq!(RegionCode::parse(bad), Err(err), "{bad:?}");
        }
    }
}
