//! JSON ⇄ [`Value`]: the schemaless format of sources and sinks with `format: json`.
//!
//! Integers that fit an `i64` decode as [`Value::Int`] and every other number as
//! [`Value::Float`], so counts and ids stay exact. JSON has no bytes: [`Value::Bytes`] encodes as
//! a base64 string (as Kafka Connect's JSON converter does) and so decodes back as a string.
//! Non-finite floats have no JSON form and are an error, never a silent `null`.

use serde_json::Value as Json;

use super::{FormatError, Misfit};
use crate::value::Value;

/// Decodes JSON bytes into a [`Value`].
pub fn decode(bytes: &[u8]) -> Result<Value, FormatError> {
    let json: Json = serde_json::from_slice(bytes)
        .map_err(|error| FormatError::InvalidJson { reason: error.to_string() })?;
    Ok(from_json(json))
}

/// Encodes a [`Value`] as JSON bytes.
pub fn encode(value: &Value) -> Result<Vec<u8>, FormatError> {
    let json = to_json(value)?;
    serde_json::to_vec(&json).map_err(|error| Misfit::new(error.to_string()).into())
}

/// The [`Value`] of a parsed JSON document (also used for Avro field defaults).
pub(crate) fn from_json(json: Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            // Only u64 beyond i64 and non-integers land here; both are finite f64s.
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(s),
        Json::Array(items) => Value::Array(items.into_iter().map(from_json).collect()),
        Json::Object(fields) => {
            Value::Map(fields.into_iter().map(|(k, v)| (k, from_json(v))).collect())
        }
    }
}

/// The JSON document of a [`Value`].
fn to_json(value: &Value) -> Result<Json, Misfit> {
    Ok(match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .ok_or_else(|| Misfit::new(format!("{f} has no JSON form")))?,
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(bytes) => Json::String(base64(bytes)),
        Value::Array(items) => Json::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| to_json(item).map_err(|misfit| misfit.in_item(i)))
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), to_json(v).map_err(|misfit| misfit.in_field(k))?)))
                .collect::<Result<_, Misfit>>()?,
        ),
    })
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map<const N: usize>(fields: [(&str, Value); N]) -> Value {
        Value::from(fields)
    }

    #[test]
    fn integers_stay_exact_and_other_numbers_are_floats() {
        let value =
            decode(br#"{"n": 9007199254740993, "neg": -12, "x": 1.5, "big": 1e300}"#).unwrap();
        assert_eq!(value.get("n"), Some(&Value::Int(9_007_199_254_740_993)));
        assert_eq!(value.get("neg"), Some(&Value::Int(-12)));
        assert_eq!(value.get("x"), Some(&Value::Float(1.5)));
        assert_eq!(value.get("big"), Some(&Value::Float(1e300)));
        // Beyond i64: a float, not an error.
        assert_eq!(decode(b"18446744073709551615").unwrap(), Value::Float(18446744073709551615.0));
    }

    #[test]
    fn round_trip_keeps_every_json_shape() {
        let value = map([
            ("null", Value::Null),
            ("yes", Value::Bool(true)),
            ("int", Value::Int(i64::MIN)),
            ("float", Value::Float(-0.25)),
            ("text", Value::from("héllo \"quoted\"")),
            ("list", Value::Array(vec![Value::Int(1), Value::from("two"), Value::Null])),
            ("nested", map([("deeper", map([("x", Value::Int(i64::MAX))]))])),
        ]);
        let bytes = encode(&value).unwrap();
        assert_eq!(decode(&bytes).unwrap(), value);
    }

    #[test]
    fn bytes_encode_as_base64() {
        for (bytes, text) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foobar", "Zm9vYmFy"),
            (&[0xff, 0xfe, 0x00][..], "//4A"),
        ] {
            let json = encode(&Value::Bytes(bytes.to_vec())).unwrap();
            assert_eq!(json, format!("\"{text}\"").into_bytes());
        }
    }

    #[test]
    fn invalid_json_is_an_error_not_a_panic() {
        for bad in [&b"{\"a\": "[..], b"", b"\xff\xfe", b"{\"a\" 1}", b"[1, 2,]", b"nul"] {
            let error = decode(bad).unwrap_err();
            assert!(matches!(error, FormatError::InvalidJson { .. }), "{bad:?}: {error}");
            assert_eq!(error.kind(), "invalid-json");
        }
    }

    #[test]
    fn non_finite_floats_are_an_error_naming_the_path() {
        let value = map([("stats", Value::Array(vec![Value::Float(1.0), Value::Float(f64::NAN)]))]);
        let error = encode(&value).unwrap_err();
        assert_eq!(error.to_string(), "stats[1]: NaN has no JSON form");
    }
}
