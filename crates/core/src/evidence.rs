//! Evidence: what a department can state about a person, as typed fields.
//!
//! Answers are predicates plus the few facts behind them, never whole
//! records; an answer carries only the fields asked for and released.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// The value type of an evidence field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Bool,
    Int,
    Text,
    /// A calendar date.
    Date,
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bool => "bool",
            Self::Int => "int",
            Self::Text => "text",
            Self::Date => "date",
        })
    }
}

/// One field value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue {
    Bool(bool),
    Int(i64),
    Text(String),
    Date(NaiveDate),
}

impl FieldValue {
    pub fn field_type(&self) -> FieldType {
        match self {
            Self::Bool(_) => FieldType::Bool,
            Self::Int(_) => FieldType::Int,
            Self::Text(_) => FieldType::Text,
            Self::Date(_) => FieldType::Date,
        }
    }
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool(v) => write!(f, "{}", if *v { "yes" } else { "no" }),
            Self::Int(v) => write!(f, "{v}"),
            Self::Text(v) => f.write_str(v),
            Self::Date(v) => write!(f, "{}", v.format("%Y-%m-%d")),
        }
    }
}

/// A released field; `value: None` is a known "not applicable".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub value: Option<FieldValue>,
}

/// Declares one field an evidence type can release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    #[serde(default)]
    pub description: String,
    /// The field may carry no value.
    #[serde(default)]
    pub optional: bool,
}

/// A department's answer to one evidence request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceAnswer {
    pub evidence_type: String,
    pub department: String,
    /// When the data behind the answer was last current.
    pub current_as_of: DateTime<Utc>,
    pub fields: Vec<Field>,
}

impl EvidenceAnswer {
    /// Keeps only the fields for which `keep` holds, preserving order.
    pub fn retain_fields(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.fields.retain(|f| keep(&f.name));
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}
