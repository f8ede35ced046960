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

    /// The name of this value's type, for error messages, in the words of
    /// [`Type`](crate::types::Type)'s display.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Array(_) => "list",
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

/// A stored value that does not decode: the store or changelog holds bytes Eddy did not write.
#[derive(Debug, thiserror::Error)]
#[error("stored value does not decode: {0}")]
pub struct DecodeError(&'static str);

impl DecodeError {
    /// A decode error saying `what` was wrong; for operators decoding their own state layouts.
    pub(crate) fn new(what: &'static str) -> Self {
        DecodeError(what)
    }
}

/// Tags of the binary encoding.
const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INT: u8 = 3;
const FLOAT: u8 = 4;
const STRING: u8 = 5;
const BYTES: u8 = 6;
const ARRAY: u8 = 7;
const MAP: u8 = 8;

impl Value {
    /// Appends the compact binary encoding of this value (for stores and changelogs): a tag
    /// byte, then zigzag varints for integers and lengths, little-endian floats, raw bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.push(NULL),
            Value::Bool(false) => out.push(FALSE),
            Value::Bool(true) => out.push(TRUE),
            Value::Int(i) => {
                out.push(INT);
                put_varint(out, ((i << 1) ^ (i >> 63)) as u64);
            }
            Value::Float(f) => {
                out.push(FLOAT);
                out.extend_from_slice(&f.to_le_bytes());
            }
            Value::String(s) => {
                out.push(STRING);
                put_bytes(out, s.as_bytes());
            }
            Value::Bytes(b) => {
                out.push(BYTES);
                put_bytes(out, b);
            }
            Value::Array(items) => {
                out.push(ARRAY);
                put_varint(out, items.len() as u64);
                for item in items {
                    item.encode(out);
                }
            }
            Value::Map(fields) => {
                out.push(MAP);
                put_varint(out, fields.len() as u64);
                for (name, value) in fields {
                    put_bytes(out, name.as_bytes());
                    value.encode(out);
                }
            }
        }
    }

    /// The binary encoding of this value.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes a value written by [`Value::encode`], refusing trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Value, DecodeError> {
        let mut input = bytes;
        let value = decode(&mut input)?;
        if input.is_empty() { Ok(value) } else { Err(DecodeError("trailing bytes")) }
    }
}

/// Appends `n` as an unsigned LEB128 varint: the integer layout of this encoding, shared by
/// operators that lay out their own state.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The next `n` bytes of `input`, consumed.
pub(crate) fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    if input.len() < n {
        return Err(DecodeError("truncated"));
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

/// The next varint of `input` (see [`put_varint`]), consumed.
pub(crate) fn varint(input: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = take(input, 1)?[0];
        n |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(n);
        }
    }
    Err(DecodeError("varint too long"))
}

fn length(input: &mut &[u8]) -> Result<usize, DecodeError> {
    let n = usize::try_from(varint(input)?).map_err(|_| DecodeError("length too large"))?;
    if n > input.len() {
        return Err(DecodeError("truncated"));
    }
    Ok(n)
}

fn text(input: &mut &[u8]) -> Result<String, DecodeError> {
    let n = length(input)?;
    String::from_utf8(take(input, n)?.to_vec()).map_err(|_| DecodeError("text is not UTF-8"))
}

fn decode(input: &mut &[u8]) -> Result<Value, DecodeError> {
    Ok(match take(input, 1)?[0] {
        NULL => Value::Null,
        FALSE => Value::Bool(false),
        TRUE => Value::Bool(true),
        INT => {
            let n = varint(input)?;
            Value::Int(((n >> 1) as i64) ^ -((n & 1) as i64))
        }
        FLOAT => {
            let bytes: [u8; 8] =
                take(input, 8)?.try_into().map_err(|_| DecodeError("truncated"))?;
            Value::Float(f64::from_le_bytes(bytes))
        }
        STRING => Value::String(text(input)?),
        BYTES => {
            let n = length(input)?;
            Value::Bytes(take(input, n)?.to_vec())
        }
        ARRAY => {
            let n = length(input)?;
            (0..n).map(|_| decode(input)).collect::<Result<_, _>>().map(Value::Array)?
        }
        MAP => {
            let n = length(input)?;
            let mut fields = BTreeMap::new();
            for _ in 0..n {
                let name = text(input)?;
                fields.insert(name, decode(input)?);
            }
            Value::Map(fields)
        }
        _ => return Err(DecodeError("unknown tag")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_encoding_round_trips_every_kind() {
        let value = Value::from([
            ("null", Value::Null),
            ("yes", Value::Bool(true)),
            ("no", Value::Bool(false)),
            ("min", Value::Int(i64::MIN)),
            ("max", Value::Int(i64::MAX)),
            ("neg", Value::Int(-1)),
            ("pi", Value::Float(3.25)),
            ("text", Value::from("héllo")),
            ("raw", Value::Bytes(vec![0, 255])),
            ("list", Value::Array(vec![Value::Int(1), Value::from("two")])),
            ("nested", Value::from([("a", Value::Int(300))])),
        ]);
        let bytes = value.to_bytes();
        assert_eq!(Value::from_bytes(&bytes).unwrap(), value);
        // A length pointing past the end, a bad tag, a truncation: errors, never panics.
        assert!(Value::from_bytes(&[STRING, 0x7f]).is_err());
        assert!(Value::from_bytes(&[99]).is_err());
        for cut in 0..bytes.len() {
            assert!(Value::from_bytes(&bytes[..cut]).is_err());
        }
        assert!(Value::from_bytes(&[NULL, NULL]).is_err());
    }
}
