//! Conversions between domain types (`tongban-core`) and their wire form.
//! The one place that knows both, so every service converts the same way.

use chrono::{DateTime, Utc};
use tongban_core::{EvidenceAnswer, EvidenceTypeDef, FieldType, FieldValue, Matter};

use crate::v1 as pb;

/// A UTC time in its wire form.
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        // At most 999_999_999 (leap seconds aside), so it fits.
        nanos: i32::try_from(t.timestamp_subsec_nanos().min(999_999_999)).unwrap_or(0),
    }
}

/// A wire time as UTC; `None` when it is outside what chrono represents
/// or its nanoseconds are out of range.
pub fn time_of(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

/// The gRPC status codes by their canonical names, in code order.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The canonical upper-case name of a gRPC status code (`PERMISSION_DENIED`).
pub fn code_name(code: tonic::Code) -> &'static str {
    code_name_of(code as i32)
}

/// The canonical name of a status code as carried in a message or an audit
/// entry; `"?"` for a number that is no code.
pub fn code_name_of(code: i32) -> &'static str {
    usize::try_from(code)
        .ok()
        .and_then(|i| CODE_NAMES.get(i))
        .copied()
        .unwrap_or("?")
}

/// A status code by its name (any case, `-` for `_`) or number.
pub fn parse_code(text: &str) -> Option<tonic::Code> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i32>() {
        return usize::try_from(n)
            .is_ok_and(|i| i < CODE_NAMES.len())
            .then(|| tonic::Code::from_i32(n));
    }
    let upper = text.to_ascii_uppercase().replace('-', "_");
    CODE_NAMES
        .iter()
        .position(|n| *n == upper)
        .and_then(|i| i32::try_from(i).ok())
        .map(tonic::Code::from_i32)
}

impl From<EvidenceAnswer> for pb::Evidence {
    fn from(answer: EvidenceAnswer) -> Self {
        Self {
            evidence_type: answer.evidence_type,
            department: answer.department,
            current_as_of: Some(timestamp(answer.current_as_of)),
            fields: answer
                .fields
                .into_iter()
                .map(|f| pb::Field {
                    name: f.name,
                    value: f.value.map(|v| match v {
                        FieldValue::Bool(b) => pb::field::Value::BoolValue(b),
                        FieldValue::Int(i) => pb::field::Value::IntValue(i),
                        FieldValue::Text(t) => pb::field::Value::TextValue(t),
                        FieldValue::Date(d) => {
                            pb::field::Value::DateValue(d.format("%Y-%m-%d").to_string())
                        }
                    }),
                })
                .collect(),
        }
    }
}

impl From<FieldType> for pb::FieldType {
    fn from(t: FieldType) -> Self {
        match t {
            FieldType::Bool => Self::Bool,
            FieldType::Int => Self::Int,
            FieldType::Text => Self::Text,
            FieldType::Date => Self::Date,
        }
    }
}

impl From<&EvidenceTypeDef> for pb::EvidenceTypeInfo {
    fn from(def: &EvidenceTypeDef) -> Self {
        Self {
            id: def.id.clone(),
            department: def.department.clone(),
            title: def.title.clone(),
            title_zh: def.title_zh.clone(),
            description: def.description.clone(),
            fields: def
                .fields
                .iter()
                .map(|f| pb::FieldSpec {
                    name: f.name.clone(),
                    r#type: pb::FieldType::from(f.field_type) as i32,
                    description: f.description.clone(),
                    optional: f.optional,
                })
                .collect(),
            subject_kind: def.subject.name().to_owned(),
        }
    }
}

impl From<&Matter> for pb::Matter {
    fn from(m: &Matter) -> Self {
        Self {
            code: m.code.clone(),
            title: m.title.clone(),
            title_zh: m.title_zh.clone(),
            description: m.description.clone(),
            evidence_types: m.evidence.clone(),
            level: m.level.name().to_owned(),
            city_wide: m.city_wide,
            roles: m
                .roles
                .iter()
                .map(|r| pb::MatterRole {
                    role: r.role.name().to_owned(),
                    subject_kind: r.role.kind().name().to_owned(),
                    evidence_types: r.evidence.clone(),
                    min_subjects: r.min,
                    max_subjects: r.max,
                })
                .collect(),
        }
    }
}

impl From<&tongban_core::ServicePoint> for pb::ServicePoint {
    fn from(p: &tongban_core::ServicePoint) -> Self {
        let region = p.region.as_str();
        let region_name = match tongban_core::id::panzhihua_region_name(region) {
            Some((_, zh)) => zh,
            None if region == "510400" => "攀枝花市",
            None => "",
        };
        Self {
            unit: p.unit.to_string(),
            name: p.name.clone(),
            level: p.level.name().to_owned(),
            region_code: region.to_owned(),
            region_name: region_name.to_owned(),
        }
    }
}

/// A field's value as text ("" when it has none), as hashed into the audit
/// log's released-fields digest.
pub fn field_value_text(field: &pb::Field) -> String {
    use pb::field::Value;
    match &field.value {
        None => String::new(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::TextValue(t) | Value::DateValue(t)) => t.clone(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn code_names_round_trip_and_refuse_what_is_no_code() {
        for n in 0..17 {
            let code = tonic::Code::from_i32(n);
            assert_eq!(parse_code(code_name(code)), Some(code));
            assert_eq!(parse_code(&n.to_string()), Some(code));
        }
        assert_eq!(
            code_name(tonic::Code::PermissionDenied),
            "PERMISSION_DENIED"
        );
        assert_eq!(
            parse_code("permission-denied"),
            Some(tonic::Code::PermissionDenied)
        );
        assert_eq!(parse_code("17"), None);
        assert_eq!(parse_code("-1"), None);
        assert_eq!(parse_code("DENIED"), None);
        assert_eq!(code_name_of(99), "?");
    }

    #[test]
    fn times_round_trip_and_refuse_bad_nanos() {
        let t = DateTime::from_timestamp(1_764_633_600, 123_456_789).unwrap();
        assert_eq!(time_of(&timestamp(t)), Some(t));
        let bad = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert_eq!(time_of(&bad), None);
    }

    use super::*;
    use chrono::{NaiveDate, TimeZone, Utc};
    use tongban_core::{Catalogue, Field};

    #[test]
    fn evidence_round_trips_to_wire() {
        let answer = EvidenceAnswer {
            evidence_type: "hrss.unemployment".into(),
            department: "hrss".into(),
            current_as_of: Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap(),
            fields: vec![
                Field {
                    name: "eligible".into(),
                    value: Some(FieldValue::Bool(true)),
                },
                Field {
                    name: "insured_months".into(),
                    value: Some(FieldValue::Int(14)),
                },
                Field {
                    name: "separation_date".into(),
                    value: Some(FieldValue::Date(
                        NaiveDate::from_ymd_opt(2026, 9, 30).unwrap(),
                    )),
                },
                Field {
                    name: "reason".into(),
                    value: None,
                },
            ],
        };
        let wire = pb::Evidence::from(answer);
        assert_eq!(wire.current_as_of.unwrap().seconds, 1_793_520_000);
        assert_eq!(
            wire.fields[2].value,
            Some(pb::field::Value::DateValue("2026-09-30".into()))
        );
        let texts: Vec<String> = wire.fields.iter().map(field_value_text).collect();
        assert_eq!(texts, ["true", "14", "2026-09-30", ""]);
    }

    #[test]
    fn catalogue_entries_convert() {
        let cat = Catalogue::embedded();
        let info = pb::EvidenceTypeInfo::from(cat.evidence("police.identity").unwrap());
        assert_eq!(info.fields[0].name, "name_matches");
        assert_eq!(info.fields[0].r#type, pb::FieldType::Bool as i32);
        assert!(info.fields[0].optional);
        let m = pb::Matter::from(cat.matter("pension-qualification").unwrap());
        assert_eq!(
            m.evidence_types,
            ["police.identity", "civil.death", "hrss.pension"]
        );
    }
}
