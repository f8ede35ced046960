//! The decoded form of a record's key or value, shared by formats, operators and stores.
//!
//! Every input format (Avro, JSON, Debezium) decodes to [`Value`], and every output format
//! encodes from it, so operators are written once and never see wire formats. Timestamps are
//! carried as milliseconds since the epoch in [`Value::Int`]; decimals as their exact decimal
//! text in [`Value::String`], so no precision is lost on the way through.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A dynamically typed value: the shape of JSON, plus integers, bytes and exact numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(untagged)]
pub enum Value {
    /// No value (JSON `null`, Avro `null`, an absent optional field).
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer; also timestamps (ms since the epoch) and Avro `int`/`long`.
    Int(i64),
    /// A 64-bit float; also Avro `float`/`double`.
    Float(f64),
    /// Text; also decimals, as their exact decimal representation.
    String(String),
    /// Raw bytes (Avro `bytes`/`fixed`).
    Bytes(Vec<u8>),
    /// An ordered list.
    Array(Vec<Value>),
    /// Named fields (an Avro record, a JSON object, an Avro map).
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// The field `name` of a map, or `None` when this is not a map or has no such field.
    pub fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Map(fields) => fields.get(name),
            _ => None,
        }
    }

    /// The text of a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer of an integer value.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// True for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The name of this value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl<const N: usize> From<[(&str, Value); N]> for Value {
    fn from(fields: [(&str, Value); N]) -> Self {
        Value::Map(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
}
