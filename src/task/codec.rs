//! Bytes to records and back, as each source, table and sink of a plan declares.
//!
//! A source's codec decodes the record value (Avro through the registry, or JSON), takes the
//! key from a value field or decodes the record key, and takes event time from a value field
//! or the record timestamp. Every failure is a [`FormatError`] that blames the record, so the
//! caller dead-letters it with [`FormatError::kind`] as the reason.

use std::sync::Arc;

use crate::format::{AvroDecoder, AvroEncoder, AvroSchema, FormatError, SchemaRegistry, json};
use crate::operator::Record;
use crate::plan::Plan;
use crate::spec::{Feed, Format, KeyFormat};
use crate::value::Value;

/// Decodes record values of one topic.
enum ValueDecoder {
    Avro(AvroDecoder),
    Json,
    Debezium,
}

impl ValueDecoder {
    fn new(
        format: Format,
        schema: Option<&AvroSchema>,
        registry: &Arc<dyn SchemaRegistry>,
    ) -> Self {
        match format {
            Format::Avro => ValueDecoder::Avro(AvroDecoder::new(registry.clone(), schema.cloned())),
            Format::Json => ValueDecoder::Json,
            Format::Debezium => ValueDecoder::Debezium,
        }
    }

    fn decode(&self, bytes: &[u8]) -> Result<Value, FormatError> {
        match self {
            ValueDecoder::Avro(decoder) => decoder.decode(bytes),
            ValueDecoder::Json | ValueDecoder::Debezium => json::decode(bytes),
        }
    }
}

/// Decodes a record key in `format`.
fn decode_key(format: KeyFormat, bytes: Option<&[u8]>) -> Result<Value, FormatError> {
    match (format, bytes) {
        (_, None) => Ok(Value::Null),
        (KeyFormat::String, Some(bytes)) => String::from_utf8(bytes.to_vec())
            .map(Value::String)
            .map_err(|_| FormatError::Mismatch {
                path: "(key)".into(),
                reason: "key is not UTF-8 text".into(),
            }),
        (KeyFormat::Json, Some(bytes)) => json::decode(bytes),
    }
}

/// Encodes a record key in `format`: text as is; other values as JSON text.
fn encode_key(format: KeyFormat, key: &Value) -> Result<Option<Vec<u8>>, FormatError> {
    Ok(match (format, key) {
        (_, Value::Null) => None,
        (KeyFormat::String, Value::String(s)) => Some(s.as_bytes().to_vec()),
        (KeyFormat::String | KeyFormat::Json, other) => Some(json::encode(other)?),
    })
}

/// The field `field` of a decoded value, as a mismatch error when absent.
fn required<'v>(value: &'v Value, field: &str, what: &str) -> Result<&'v Value, FormatError> {
    match value.get(field) {
        Some(found) if !found.is_null() => Ok(found),
        _ => {
            Err(FormatError::Mismatch { path: field.to_owned(), reason: format!("missing {what}") })
        }
    }
}

/// Decodes values and keys as one feed (a source's or table's topic) declares them.
struct FeedDecoder {
    value: ValueDecoder,
    key_field: Option<String>,
    key_format: KeyFormat,
}

impl FeedDecoder {
    fn new(feed: &Feed, schema: Option<&AvroSchema>, registry: &Arc<dyn SchemaRegistry>) -> Self {
        FeedDecoder {
            value: ValueDecoder::new(feed.format, schema, registry),
            key_field: feed.key.clone(),
            key_format: feed.key_format,
        }
    }

    /// The key: field `key` of the decoded `value`, or the decoded record key.
    fn key(&self, key: Option<&[u8]>, value: &Value) -> Result<Value, FormatError> {
        match &self.key_field {
            Some(field) => Ok(required(value, field, "key field")?.clone()),
            None => decode_key(self.key_format, key),
        }
    }
}

/// Decodes the records of one source.
pub struct SourceCodec {
    feed: FeedDecoder,
    timestamp_field: Option<String>,
}

impl SourceCodec {
    /// The codec of source `index` of `plan`, looking writer schemas up in `registry`.
    pub fn new(plan: &Plan, index: usize, registry: &Arc<dyn SchemaRegistry>) -> Self {
        let source = &plan.sources[index];
        SourceCodec {
            feed: FeedDecoder::new(&source.spec.feed, source.schema.as_ref(), registry),
            timestamp_field: source.spec.timestamp.clone(),
        }
    }

    /// Decodes one record; `timestamp` is the Kafka record timestamp.
    pub fn decode(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
    ) -> Result<Record, FormatError> {
        let value = match value {
            Some(bytes) => self.feed.value.decode(bytes)?,
            None => {
                return Err(FormatError::Mismatch {
                    path: "(value)".into(),
                    reason: "a stream record has no value".into(),
                });
            }
        };
        let key = self.feed.key(key, &value)?;
        let timestamp = match &self.timestamp_field {
            Some(field) => {
                required(&value, field, "timestamp field")?.as_i64().ok_or_else(|| {
                    FormatError::Mismatch {
                        path: field.clone(),
                        reason: "timestamp field is not an integer (milliseconds)".into(),
                    }
                })?
            }
            None => timestamp,
        };
        Ok(Record { key, value, timestamp })
    }
}

/// A decoded table record: the row's key, and the row or `None` for a delete.
#[derive(Debug, PartialEq)]
pub struct TableChange {
    /// The row's key.
    pub key: Value,
    /// The new row, or `None` when the row is deleted.
    pub row: Option<Value>,
}

/// Decodes the records of one table topic.
pub struct TableCodec {
    feed: FeedDecoder,
}

impl TableCodec {
    /// The codec of table `index` of `plan`.
    pub fn new(plan: &Plan, index: usize, registry: &Arc<dyn SchemaRegistry>) -> Self {
        let table = &plan.tables[index];
        TableCodec { feed: FeedDecoder::new(&table.spec.feed, table.schema.as_ref(), registry) }
    }

    /// Decodes one table record: a row, or a delete (a tombstone, or a Debezium `d` event).
    pub fn decode(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<TableChange, FormatError> {
        let Some(bytes) = value else {
            // A tombstone deletes the row its record key names.
            let key = decode_key(self.feed.key_format, key)?;
            let key = match (&self.feed.key_field, key) {
                (Some(field), Value::Map(mut fields)) => {
                    // A JSON converter with schemas wraps the key struct in `payload`.
                    let mut key_struct = match fields.remove("payload") {
                        Some(Value::Map(payload)) if fields.contains_key("schema") => payload,
                        Some(other) => {
                            fields.insert("payload".to_owned(), other);
                            fields
                        }
                        None => fields,
                    };
                    key_struct.remove(field).unwrap_or(Value::Null)
                }
                (_, key) => key,
            };
            return Ok(TableChange { key, row: None });
        };
        let decoded = self.feed.value.decode(bytes)?;
        let (row, deleted) = match self.feed.value {
            ValueDecoder::Debezium => debezium_row(decoded)?,
            _ => (decoded, false),
        };
        let key = self.feed.key(key, &row)?;
        Ok(TableChange { key, row: (!deleted).then_some(row) })
    }
}

/// The row a Debezium change event carries (`after`, or `before` for a delete), and whether
/// the event deletes it. Accepts the envelope with or without the JSON converter's `payload`.
fn debezium_row(event: Value) -> Result<(Value, bool), FormatError> {
    let envelope = match event {
        Value::Map(mut fields)
            if fields.contains_key("payload") && fields.contains_key("schema") =>
        {
            fields.remove("payload").unwrap_or(Value::Null)
        }
        other => other,
    };
    let bad = |reason: &str| FormatError::Mismatch { path: "op".into(), reason: reason.to_owned() };
    let Value::Map(mut fields) = envelope else { return Err(bad("not a Debezium change event")) };
    let op = fields.get("op").and_then(Value::as_str).ok_or_else(|| bad("missing op"))?.to_owned();
    match op.as_str() {
        "c" | "u" | "r" => Ok((fields.remove("after").unwrap_or(Value::Null), false)),
        "d" => Ok((fields.remove("before").unwrap_or(Value::Null), true)),
        other => Err(bad(&format!("unsupported op '{other}'"))),
    }
}

/// Encodes record values in one topic's format.
enum ValueEncoder {
    Avro(Box<AvroEncoder>),
    Json,
}

impl ValueEncoder {
    /// An encoder for `topic`'s values: Avro with `schema` (registered or looked up under the
    /// topic's value subject, once), else JSON.
    fn new(
        format: Format,
        schema: Option<&AvroSchema>,
        topic: &str,
        registry: &dyn SchemaRegistry,
    ) -> Result<Self, FormatError> {
        Ok(match (format, schema) {
            (Format::Avro, Some(schema)) => ValueEncoder::Avro(Box::new(AvroEncoder::new(
                registry,
                &format!("{topic}-value"),
                schema.clone(),
            )?)),
            _ => ValueEncoder::Json,
        })
    }

    fn encode(&self, value: &Value) -> Result<Vec<u8>, FormatError> {
        match self {
            ValueEncoder::Avro(encoder) => encoder.encode(value),
            ValueEncoder::Json => json::encode(value),
        }
    }
}

/// Encodes and decodes the records of one sink.
pub struct SinkCodec {
    value: ValueEncoder,
    /// Reads back what `value` wrote (the test driver's output).
    reader: ValueDecoder,
    key_format: KeyFormat,
}

impl SinkCodec {
    /// The codec of sink `index` of `plan`, registering (or looking up) its schema under the
    /// topic's value subject.
    pub fn new(
        plan: &Plan,
        index: usize,
        registry: &Arc<dyn SchemaRegistry>,
    ) -> Result<Self, FormatError> {
        let sink = &plan.sinks[index];
        let format = sink.spec.format;
        Ok(SinkCodec {
            value: ValueEncoder::new(
                format,
                sink.schema.as_ref(),
                &sink.spec.topic,
                registry.as_ref(),
            )?,
            reader: ValueDecoder::new(format, None, registry),
            key_format: sink.spec.key_format,
        })
    }

    /// Encodes a record's key and value.
    pub fn encode(&self, record: &Record) -> Result<(Option<Vec<u8>>, Vec<u8>), FormatError> {
        Ok((encode_key(self.key_format, &record.key)?, self.value.encode(&record.value)?))
    }

    /// Decodes what [`SinkCodec::encode`] wrote, for the test driver's output.
    pub fn decode(&self, key: Option<&[u8]>, value: &[u8]) -> Result<(Value, Value), FormatError> {
        Ok((decode_key(self.key_format, key)?, self.reader.decode(value)?))
    }
}

/// Encodes keys and values the way one source or table topic carries them — what a producer
/// upstream of Eddy does — to feed topologies in tests and tools.
pub struct InputEncoder {
    value: ValueEncoder,
    key_format: KeyFormat,
    /// For a Debezium table: the primary key column, named in delete events.
    debezium_key: Option<String>,
}

impl InputEncoder {
    /// The encoder of source `index` of `plan`.
    pub fn for_source(
        plan: &Plan,
        index: usize,
        registry: &dyn SchemaRegistry,
    ) -> Result<Self, FormatError> {
        let source = &plan.sources[index];
        Self::new(&source.spec.feed, source.schema.as_ref(), registry)
    }

    /// The encoder of table `index` of `plan`.
    pub fn for_table(
        plan: &Plan,
        index: usize,
        registry: &dyn SchemaRegistry,
    ) -> Result<Self, FormatError> {
        let table = &plan.tables[index];
        Self::new(&table.spec.feed, table.schema.as_ref(), registry)
    }

    fn new(
        feed: &Feed,
        schema: Option<&AvroSchema>,
        registry: &dyn SchemaRegistry,
    ) -> Result<Self, FormatError> {
        let debezium_key = (feed.format == Format::Debezium)
            .then(|| feed.key.clone().unwrap_or_else(|| "id".to_owned()));
        Ok(InputEncoder {
            value: ValueEncoder::new(feed.format, schema, &feed.topic, registry)?,
            key_format: feed.key_format,
            debezium_key,
        })
    }

    /// Encodes a record key.
    pub fn key(&self, key: &Value) -> Result<Option<Vec<u8>>, FormatError> {
        encode_key(self.key_format, key)
    }

    /// Encodes a record value.
    pub fn value(&self, value: &Value) -> Result<Vec<u8>, FormatError> {
        self.value.encode(value)
    }

    /// Encodes a table row change: the row, or (`None`) a delete of the row with `key`. A
    /// Debezium table gets a change event (`op` `r`, or `d` naming the key); other formats get
    /// the row, and a delete is a tombstone (`None`).
    pub fn change(&self, key: &Value, row: Option<&Value>) -> Result<Option<Vec<u8>>, FormatError> {
        match (&self.debezium_key, row) {
            (Some(_), Some(row)) => {
                json::encode(&Value::from([("op", Value::from("r")), ("after", row.clone())]))
                    .map(Some)
            }
            (Some(field), None) => {
                let before = Value::Map([(field.clone(), key.clone())].into_iter().collect());
                json::encode(&Value::from([("op", Value::from("d")), ("before", before)])).map(Some)
            }
            (None, Some(row)) => self.value.encode(row).map(Some),
            (None, None) => Ok(None),
        }
    }
}
