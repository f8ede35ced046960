//! Avro: schemas, Avro datums ⇄ [`Value`], and the Confluent wire format.
//!
//! Schemas come from `.avsc` files ([`load_dir`]) or a schema registry; either way each becomes
//! one self-contained [`AvroSchema`] (types it names from other files are inlined), so a schema
//! can be used and registered on its own.
//!
//! How Avro maps to [`Value`] (decoding, and encoding back):
//!
//! | Avro | `Value` |
//! | --- | --- |
//! | `null` | `Null` |
//! | `boolean` | `Bool` |
//! | `int`, `long` | `Int` |
//! | `float`, `double` | `Float` (encoding also accepts an `Int`) |
//! | `bytes`, `fixed` | `Bytes` |
//! | `string`, `enum` (its symbol), `uuid` (hyphenated, lower case) | `String` |
//! | `array` | `Array` |
//! | `map`, `record` | `Map` |
//! | union | the value of its branch (`null` → `Null`) |
//! | `decimal`, `big-decimal` | `String`: the exact decimal text, e.g. `"12.30"` for unscaled 1230 at scale 2 (encoding also accepts an `Int`) |
//! | `timestamp-millis`, `local-timestamp-millis` | `Int`: milliseconds since the epoch |
//! | `timestamp-micros`, `-nanos` (and `local-`) | `Int`: micro- or nanoseconds since the epoch, unconverted |
//! | `date` | `Int`: days since the epoch |
//! | `time-millis`, `time-micros` | `Int`: milli- or microseconds after midnight |
//! | `duration` | `Map` of `months`, `days`, `millis` |
//!
//! Logical types keep their own unit so that a value survives a round trip unchanged; only
//! `timestamp-millis` matches the milliseconds [`Value`] uses for record time.
//!
//! Encoding picks the first union branch that holds the value exactly, else the first that holds
//! it after widening an `Int` to a float. A record field missing from the map takes its default,
//! else `null` if the field allows it. A map key that is not a field of the record is an error,
//! like every value the schema cannot hold; the error names the path (`session.start: expected
//! long (timestamp-millis), got string`).
//!
//! Decoding is strict where `apache-avro` is lenient: a payload that ends before the datum does
//! (the decoder would fill missing trailing fields with nulls) or that has bytes left over is
//! [`FormatError::InvalidAvro`].

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{Name, RecordSchema, ResolvedSchema, UnionSchema};
use apache_avro::types::{Value as Avro, ValueKind};
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{BigDecimal, Days, Duration, Millis, Months, Schema, Uuid};
use serde_json::Value as Json;

use super::json::from_json;
use super::registry::SchemaRegistry;
use super::{FormatError, Misfit};
use crate::value::Value;

/// The first byte of every Confluent wire format record.
pub const MAGIC_BYTE: u8 = 0;

/// Named types inside one schema, for resolving its references.
type Names = HashMap<Name, Schema>;

/// A parsed, self-contained Avro schema.
#[derive(Clone, Debug)]
pub struct AvroSchema {
    /// The schema, with every type it names from elsewhere inlined.
    schema: Schema,
    /// The named types defined inside `schema`.
    names: Names,
    /// `schema` as JSON: what is registered, and the identity of the schema.
    json: String,
}

impl AvroSchema {
    /// Parses a schema that names no types defined elsewhere.
    pub fn parse(json: &str) -> Result<Self, FormatError> {
        Self::parse_with_references(json, &[], "schema")
    }

    /// Parses `json`, which may name types defined in `references` (schemas as JSON text).
    /// `source` names where it came from, for errors.
    pub(crate) fn parse_with_references(
        json: &str,
        references: &[String],
        source: &str,
    ) -> Result<Self, FormatError> {
        let (schema, schemata) = Schema::parse_str_with_list(json, references)
            .map_err(|error| invalid_schema(source, error))?;
        Self::complete(schema, &schemata, source)
    }

    /// Inlines the types `schema` takes from `schemata` and indexes its named types.
    fn complete(
        mut schema: Schema,
        schemata: &[Schema],
        source: &str,
    ) -> Result<Self, FormatError> {
        schema.denormalize(schemata).map_err(|error| invalid_schema(source, error))?;
        let names = ResolvedSchema::new(&schema)
            .map_err(|error| invalid_schema(source, error))?
            .get_names()
            .iter()
            .map(|(name, schema)| (name.clone(), (*schema).clone()))
            .collect();
        let json = serde_json::to_string(&schema).map_err(|error| invalid_schema(source, error))?;
        Ok(AvroSchema { schema, names, json })
    }

    /// The full name of a named schema (`eddy.clickstream.Session`), else its type (`string`).
    pub fn name(&self) -> String {
        match self.schema.name() {
            Some(name) => name.fullname(None),
            None => describe(&self.schema),
        }
    }

    /// The schema as self-contained JSON, as it is registered.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The named type `name` defined inside this schema, for following a [`Schema::Ref`].
    pub fn named(&self, name: &Name) -> Option<&Schema> {
        self.names.get(name)
    }

    /// The `apache-avro` schema, for inspecting fields and types.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Decodes an Avro datum written with this schema. With a `reader` schema the datum is
    /// resolved to it (Avro schema resolution: defaults fill new fields, removed fields are
    /// dropped), so the result has the reader's shape whatever the writer's version.
    pub fn decode(&self, datum: &[u8], reader: Option<&AvroSchema>) -> Result<Value, FormatError> {
        let invalid = |reason: String| FormatError::InvalidAvro { reason };
        let mut input = Tracked { rest: datum, overrun: false };
        let decoded = GenericDatumReader::builder(&self.schema)
            .build()
            .and_then(|datum_reader| datum_reader.read_value(&mut input));
        if input.overrun {
            return Err(invalid("the payload ends before the datum does".to_owned()));
        }
        let decoded = decoded.map_err(|error| invalid(error.to_string()))?;
        if !input.rest.is_empty() {
            return Err(invalid(format!("{} bytes left over after the datum", input.rest.len())));
        }
        match reader {
            Some(reader) if reader.json != self.json => {
                let incompatible = |reason: String| FormatError::IncompatibleSchema { reason };
                let resolved = decoded
                    .resolve_with_names(&reader.schema, &reader.names)
                    .map_err(|error| incompatible(error.to_string()))?;
                to_value(resolved, &reader.schema, &reader.names).map_err(incompatible)
            }
            _ => to_value(decoded, &self.schema, &self.names).map_err(invalid),
        }
    }

    /// Encodes `value` as an Avro datum of this schema.
    pub fn encode(&self, value: &Value) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::new();
        self.write(value, &mut out)?;
        Ok(out)
    }

    /// Appends the Avro datum of `value` to `out`.
    fn write(&self, value: &Value, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let avro = to_avro(value, &self.schema, &self.names, false)?;
        GenericDatumWriter::builder(&self.schema)
            .build()
            .and_then(|writer| writer.write_value_ref(out, &avro))
            .map_err(|error| Misfit::new(error.to_string()))?;
        Ok(())
    }
}

/// Loads every `*.avsc` file of `dir`, keyed by file name (`session.avsc`).
///
/// Named types (records, enums, fixed) may use named types defined at the top level of other
/// files in the directory; each returned schema has them inlined. A file may also hold an
/// unnamed schema such as `"string"` (a key schema).
pub fn load_dir(dir: &Path) -> Result<BTreeMap<String, AvroSchema>, FormatError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| FormatError::Io { path, source }
    };
    let mut named = Vec::new();
    let mut unnamed = Vec::new();
    let mut entries = fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io(dir))?;
    entries.sort();
    for path in entries {
        if path.extension().is_none_or(|extension| extension != "avsc") {
            continue;
        }
        let file = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        let json: Json =
            serde_json::from_str(&text).map_err(|error| invalid_schema(&file, error))?;
        if json.get("name").is_some() {
            named.push((file, text));
        } else {
            unnamed.push((file, text));
        }
    }
    let texts: Vec<&str> = named.iter().map(|(_, text)| text.as_str()).collect();
    let schemata = Schema::parse_list(&texts)
        .map_err(|error| invalid_schema(&dir.display().to_string(), error))?;
    let mut schemas = BTreeMap::new();
    for ((file, _), schema) in named.iter().zip(&schemata) {
        let schema = AvroSchema::complete(schema.clone(), &schemata, file)?;
        schemas.insert(file.clone(), schema);
    }
    for (file, text) in unnamed {
        let (schema, schemata) = Schema::parse_str_with_list(&text, &texts)
            .map_err(|error| invalid_schema(&file, error))?;
        let schema = AvroSchema::complete(schema, &schemata, &file)?;
        schemas.insert(file, schema);
    }
    Ok(schemas)
}

/// Splits a Confluent wire format record into its schema id and its Avro datum.
pub fn split_wire(bytes: &[u8]) -> Result<(u32, &[u8]), FormatError> {
    match bytes {
        [MAGIC_BYTE, a, b, c, d, datum @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        [found, ..] if bytes.len() >= 5 => Err(FormatError::WrongMagicByte { found: *found }),
        _ => Err(FormatError::TooShort { len: bytes.len() }),
    }
}

/// Decodes Confluent wire format records, looking each writer schema up by its id.
#[derive(Clone)]
pub struct AvroDecoder {
    /// Where writer schemas come from.
    registry: Arc<dyn SchemaRegistry>,
    /// The shape the topology expects, if any.
    reader: Option<Arc<AvroSchema>>,
}

impl AvroDecoder {
    /// A decoder resolving every record to `reader` (the schema the topology was written
    /// against), so producers may evolve their schema compatibly. With `None`, records decode
    /// in their writer schema's shape.
    pub fn new(registry: Arc<dyn SchemaRegistry>, reader: Option<AvroSchema>) -> Self {
        AvroDecoder { registry, reader: reader.map(Arc::new) }
    }

    /// Decodes one record's key or value bytes.
    pub fn decode(&self, bytes: &[u8]) -> Result<Value, FormatError> {
        let (id, datum) = split_wire(bytes)?;
        let writer = self.registry.schema(id)?;
        writer.decode(datum, self.reader.as_deref()).map_err(|error| match error {
            FormatError::InvalidAvro { reason } => {
                FormatError::InvalidAvro { reason: format!("schema id {id}: {reason}") }
            }
            FormatError::IncompatibleSchema { reason } => {
                FormatError::IncompatibleSchema { reason: format!("schema id {id}: {reason}") }
            }
            other => other,
        })
    }
}

/// Encodes values as Confluent wire format records of one schema.
#[derive(Clone, Debug)]
pub struct AvroEncoder {
    /// The schema every value is written with.
    schema: AvroSchema,
    /// Its id in the registry.
    id: u32,
}

impl AvroEncoder {
    /// An encoder for `schema`, which is looked up (or registered) under `subject` once, here;
    /// encoding costs no registry call. Confluent's default subject for a topic's values is
    /// `<topic>-value` (`<topic>-key` for keys).
    pub fn new(
        registry: &dyn SchemaRegistry,
        subject: &str,
        schema: AvroSchema,
    ) -> Result<Self, FormatError> {
        let id = registry.id(subject, &schema)?;
        Ok(AvroEncoder { schema, id })
    }

    /// The schema id written into every record.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Encodes `value` as magic byte, schema id and Avro datum.
    pub fn encode(&self, value: &Value) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::with_capacity(64);
        out.push(MAGIC_BYTE);
        out.extend_from_slice(&self.id.to_be_bytes());
        self.schema.write(value, &mut out)?;
        Ok(out)
    }
}

/// A datum's bytes, remembering whether the decoder tried to read past their end.
struct Tracked<'a> {
    /// The bytes not yet read.
    rest: &'a [u8],
    /// Whether a read found no bytes left.
    overrun: bool,
}

impl Read for Tracked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.rest.is_empty() && !buf.is_empty() {
            self.overrun = true;
        }
        self.rest.read(buf)
    }
}

/// An [`FormatError::InvalidSchema`] for the schema from `source`.
fn invalid_schema(source: &str, error: impl ToString) -> FormatError {
    FormatError::InvalidSchema { source_name: source.to_owned(), reason: error.to_string() }
}

/// The schema a reference names, or the schema itself.
fn resolve<'s>(schema: &'s Schema, names: &'s Names) -> Result<&'s Schema, String> {
    match schema {
        Schema::Ref { name } => {
            names.get(name).ok_or_else(|| format!("unknown type {}", name.fullname(None)))
        }
        schema => Ok(schema),
    }
}

/// How a schema is named in error messages: `long`, `record eddy.Session`, `one of [null, long]`.
fn describe(schema: &Schema) -> String {
    let logical = |base: &str, logical: &str| format!("{base} ({logical})");
    match schema {
        Schema::Null => "null".to_owned(),
        Schema::Boolean => "boolean".to_owned(),
        Schema::Int => "int".to_owned(),
        Schema::Long => "long".to_owned(),
        Schema::Float => "float".to_owned(),
        Schema::Double => "double".to_owned(),
        Schema::Bytes => "bytes".to_owned(),
        Schema::String => "string".to_owned(),
        Schema::Array(_) => "array".to_owned(),
        Schema::Map(_) => "map".to_owned(),
        Schema::Union(union) => {
            let variants: Vec<String> = union.variants().iter().map(describe).collect();
            format!("one of [{}]", variants.join(", "))
        }
        Schema::Record(record) => format!("record {}", record.name.fullname(None)),
        Schema::Enum(schema) => format!("enum {}", schema.name.fullname(None)),
        Schema::Fixed(fixed) => {
            format!("fixed {} ({} bytes)", fixed.name.fullname(None), fixed.size)
        }
        Schema::Decimal(_) => "decimal".to_owned(),
        Schema::BigDecimal => "big-decimal".to_owned(),
        Schema::Uuid(_) => "uuid".to_owned(),
        Schema::Date => logical("int", "date"),
        Schema::TimeMillis => logical("int", "time-millis"),
        Schema::TimeMicros => logical("long", "time-micros"),
        Schema::TimestampMillis => logical("long", "timestamp-millis"),
        Schema::TimestampMicros => logical("long", "timestamp-micros"),
        Schema::TimestampNanos => logical("long", "timestamp-nanos"),
        Schema::LocalTimestampMillis => logical("long", "local-timestamp-millis"),
        Schema::LocalTimestampMicros => logical("long", "local-timestamp-micros"),
        Schema::LocalTimestampNanos => logical("long", "local-timestamp-nanos"),
        Schema::Duration(_) => "duration".to_owned(),
        Schema::Ref { name } => name.fullname(None),
    }
}

/// The [`Value`] of a decoded Avro value of `schema`.
fn to_value(avro: Avro, schema: &Schema, names: &Names) -> Result<Value, String> {
    let schema = resolve(schema, names)?;
    Ok(match (avro, schema) {
        (Avro::Union(index, inner), Schema::Union(union)) => {
            let variant = union
                .variants()
                .get(index as usize)
                .ok_or_else(|| format!("union branch {index} does not exist"))?;
            to_value(*inner, variant, names)?
        }
        (Avro::Null, _) => Value::Null,
        (Avro::Boolean(b), _) => Value::Bool(b),
        (Avro::Int(i) | Avro::Date(i) | Avro::TimeMillis(i), _) => Value::Int(i.into()),
        (
            Avro::Long(i)
            | Avro::TimeMicros(i)
            | Avro::TimestampMillis(i)
            | Avro::TimestampMicros(i)
            | Avro::TimestampNanos(i)
            | Avro::LocalTimestampMillis(i)
            | Avro::LocalTimestampMicros(i)
            | Avro::LocalTimestampNanos(i),
            _,
        ) => Value::Int(i),
        (Avro::Float(f), _) => Value::Float(f.into()),
        (Avro::Double(f), _) => Value::Float(f),
        (Avro::Bytes(bytes) | Avro::Fixed(_, bytes), _) => Value::Bytes(bytes),
        (Avro::String(s) | Avro::Enum(_, s), _) => Value::String(s),
        (Avro::Uuid(uuid), _) => Value::String(uuid.to_string()),
        (Avro::Decimal(decimal), Schema::Decimal(schema)) => {
            let bytes = Vec::<u8>::try_from(&decimal).map_err(|error| error.to_string())?;
            Value::String(decimal_text(&bytes, schema.scale))
        }
        (Avro::BigDecimal(decimal), _) => Value::String(decimal.to_plain_string()),
        (Avro::Duration(duration), _) => Value::from([
            ("months", Value::Int(u32::from(duration.months()).into())),
            ("days", Value::Int(u32::from(duration.days()).into())),
            ("millis", Value::Int(u32::from(duration.millis()).into())),
        ]),
        (Avro::Array(items), Schema::Array(array)) => Value::Array(
            items
                .into_iter()
                .map(|item| to_value(item, &array.items, names))
                .collect::<Result<_, _>>()?,
        ),
        (Avro::Map(entries), Schema::Map(map)) => Value::Map(
            entries
                .into_iter()
                .map(|(key, value)| Ok((key, to_value(value, &map.types, names)?)))
                .collect::<Result<_, String>>()?,
        ),
        (Avro::Record(fields), Schema::Record(record)) => Value::Map(
            fields
                .into_iter()
                .map(|(name, value)| {
                    let field = record
                        .lookup
                        .get(&name)
                        .and_then(|&position| record.fields.get(position))
                        .ok_or_else(|| format!("decoded field {name} is not in the schema"))?;
                    Ok((name, to_value(value, &field.schema, names)?))
                })
                .collect::<Result<_, String>>()?,
        ),
        (avro, schema) => {
            let kind = ValueKind::from(&avro);
            return Err(format!("decoded {kind:?} where the schema has {}", describe(schema)));
        }
    })
}

/// The Avro value of `value` for `schema`. `strict` refuses widening an `Int` to a float, which
/// union branch selection tries only after every branch failed without it.
fn to_avro(value: &Value, schema: &Schema, names: &Names, strict: bool) -> Result<Avro, Misfit> {
    let schema = resolve(schema, names).map_err(Misfit::new)?;
    let int = |i: i64| {
        i32::try_from(i)
            .map_err(|_| Misfit::new(format!("{i} is out of range for {}", describe(schema))))
    };
    Ok(match (schema, value) {
        (Schema::Union(union), _) => return to_branch(union, value, names, strict),
        (Schema::Null, Value::Null) => Avro::Null,
        (Schema::Boolean, Value::Bool(b)) => Avro::Boolean(*b),
        (Schema::Int, Value::Int(i)) => Avro::Int(int(*i)?),
        (Schema::Date, Value::Int(i)) => Avro::Date(int(*i)?),
        (Schema::TimeMillis, Value::Int(i)) => Avro::TimeMillis(int(*i)?),
        (Schema::Long, Value::Int(i)) => Avro::Long(*i),
        (Schema::TimeMicros, Value::Int(i)) => Avro::TimeMicros(*i),
        (Schema::TimestampMillis, Value::Int(i)) => Avro::TimestampMillis(*i),
        (Schema::TimestampMicros, Value::Int(i)) => Avro::TimestampMicros(*i),
        (Schema::TimestampNanos, Value::Int(i)) => Avro::TimestampNanos(*i),
        (Schema::LocalTimestampMillis, Value::Int(i)) => Avro::LocalTimestampMillis(*i),
        (Schema::LocalTimestampMicros, Value::Int(i)) => Avro::LocalTimestampMicros(*i),
        (Schema::LocalTimestampNanos, Value::Int(i)) => Avro::LocalTimestampNanos(*i),
        (Schema::Float, Value::Float(f)) => Avro::Float(*f as f32),
        (Schema::Float, Value::Int(i)) if !strict => Avro::Float(*i as f32),
        (Schema::Double, Value::Float(f)) => Avro::Double(*f),
        (Schema::Double, Value::Int(i)) if !strict => Avro::Double(*i as f64),
        (Schema::Bytes, Value::Bytes(bytes)) => Avro::Bytes(bytes.clone()),
        (Schema::Fixed(fixed), Value::Bytes(bytes)) if bytes.len() == fixed.size => {
            Avro::Fixed(fixed.size, bytes.clone())
        }
        (Schema::Fixed(_), Value::Bytes(bytes)) => {
            let expected = describe(schema);
            return Err(Misfit::new(format!("expected {expected}, got {} bytes", bytes.len())));
        }
        (Schema::String, Value::String(s)) => Avro::String(s.clone()),
        (Schema::Enum(schema), Value::String(s)) => {
            match schema.symbols.iter().position(|symbol| symbol == s) {
                Some(index) => Avro::Enum(index as u32, s.clone()),
                None => {
                    let name = schema.name.fullname(None);
                    return Err(Misfit::new(format!("'{s}' is not a symbol of enum {name}")));
                }
            }
        }
        (Schema::Uuid(_), Value::String(s)) => Avro::Uuid(
            Uuid::parse_str(s)
                .map_err(|error| Misfit::new(format!("'{s}' is not a UUID: {error}")))?,
        ),
        (Schema::Decimal(decimal), Value::String(s)) => {
            Avro::Decimal(decimal_bytes(s, decimal.precision, decimal.scale)?.into())
        }
        (Schema::Decimal(decimal), Value::Int(i)) => {
            Avro::Decimal(decimal_bytes(&i.to_string(), decimal.precision, decimal.scale)?.into())
        }
        (Schema::BigDecimal, Value::String(s)) => Avro::BigDecimal(
            BigDecimal::from_str(s)
                .map_err(|_| Misfit::new(format!("'{s}' is not a decimal number")))?,
        ),
        (Schema::BigDecimal, Value::Int(i)) => Avro::BigDecimal(BigDecimal::from(*i)),
        (Schema::Duration(_), Value::Map(parts)) => to_duration(parts)?,
        (Schema::Array(array), Value::Array(items)) => Avro::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    to_avro(item, &array.items, names, strict).map_err(|misfit| misfit.in_item(i))
                })
                .collect::<Result<_, _>>()?,
        ),
        (Schema::Map(map), Value::Map(entries)) => Avro::Map(
            entries
                .iter()
                .map(|(key, value)| {
                    let avro = to_avro(value, &map.types, names, strict)
                        .map_err(|misfit| misfit.in_field(key))?;
                    Ok((key.clone(), avro))
                })
                .collect::<Result<_, Misfit>>()?,
        ),
        (Schema::Record(record), Value::Map(fields)) => to_record(record, fields, names, strict)?,
        (schema, value) => {
            let expected = describe(schema);
            return Err(Misfit::new(format!("expected {expected}, got {}", value.type_name())));
        }
    })
}

/// The union branch holding `value`: the first that holds it exactly, else (unless `strict`)
/// the first that holds it after widening an `Int` to a float.
fn to_branch(
    union: &UnionSchema,
    value: &Value,
    names: &Names,
    strict: bool,
) -> Result<Avro, Misfit> {
    let passes: &[bool] = if strict { &[true] } else { &[true, false] };
    let mut first_misfit = None;
    for &strict in passes {
        for (index, variant) in union.variants().iter().enumerate() {
            if !fits(variant, value, names, strict) {
                continue;
            }
            match to_avro(value, variant, names, strict) {
                Ok(avro) => return Ok(Avro::Union(index as u32, Box::new(avro))),
                Err(misfit) => {
                    first_misfit.get_or_insert(misfit);
                }
            }
        }
    }
    Err(first_misfit.unwrap_or_else(|| {
        let expected = describe(&Schema::Union(union.clone()));
        Misfit::new(format!("expected {expected}, got {}", value.type_name()))
    }))
}

/// Whether `value` has the right kind for `schema`, before looking inside it: a cheap filter
/// so union branch selection only tries plausible branches, and reports their errors.
fn fits(schema: &Schema, value: &Value, names: &Names, strict: bool) -> bool {
    let Ok(schema) = resolve(schema, names) else {
        return false;
    };
    match (schema, value) {
        (Schema::Float | Schema::Double, Value::Int(_)) => !strict,
        (Schema::Null, Value::Null)
        | (Schema::Boolean, Value::Bool(_))
        | (
            Schema::Int
            | Schema::Long
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos,
            Value::Int(_),
        )
        | (Schema::Float | Schema::Double, Value::Float(_))
        | (Schema::Bytes | Schema::Fixed(_), Value::Bytes(_))
        | (Schema::String | Schema::Enum(_) | Schema::Uuid(_), Value::String(_))
        | (Schema::Decimal(_) | Schema::BigDecimal, Value::String(_) | Value::Int(_))
        | (Schema::Array(_), Value::Array(_))
        | (Schema::Map(_) | Schema::Duration(_), Value::Map(_)) => true,
        // A record fits only a map whose every key is one of its fields, so that among union
        // branches the record the value was meant for is the one whose error is reported.
        (Schema::Record(record), Value::Map(fields)) => {
            fields.keys().all(|key| record.lookup.contains_key(key))
        }
        _ => false,
    }
}

/// The Avro record of `fields`: missing fields take their default (or null), unknown ones are
/// an error.
fn to_record(
    record: &RecordSchema,
    fields: &BTreeMap<String, Value>,
    names: &Names,
    strict: bool,
) -> Result<Avro, Misfit> {
    if let Some(unknown) = fields.keys().find(|key| !record.lookup.contains_key(*key)) {
        let name = record.name.fullname(None);
        return Err(Misfit::new(format!("not a field of record {name}")).in_field(unknown));
    }
    let mut out = Vec::with_capacity(record.fields.len());
    for field in &record.fields {
        let given = fields
            .get(&field.name)
            .or_else(|| field.aliases.iter().find_map(|alias| fields.get(alias)));
        let avro = match (given, &field.default) {
            (Some(value), _) => to_avro(value, &field.schema, names, strict),
            (None, Some(default)) => to_default(default, &field.schema, names),
            (None, None) => to_avro(&Value::Null, &field.schema, names, strict)
                .map_err(|_| Misfit::new("missing, and the field has no default")),
        };
        out.push((field.name.clone(), avro.map_err(|misfit| misfit.in_field(&field.name))?));
    }
    Ok(Avro::Record(out))
}

/// The Avro value of a field's JSON default.
fn to_default(default: &Json, schema: &Schema, names: &Names) -> Result<Avro, Misfit> {
    let value = match (resolve(schema, names).map_err(Misfit::new)?, default) {
        // The Avro spec writes a bytes default as a string of code points 0–255.
        (Schema::Bytes | Schema::Fixed(_), Json::String(s)) => Value::Bytes(
            s.chars()
                .map(u8::try_from)
                .collect::<Result<_, _>>()
                .map_err(|_| Misfit::new("bytes default has a code point above 255"))?,
        ),
        _ => from_json(default.clone()),
    };
    to_avro(&value, schema, names, false)
}

/// The Avro duration of a map of `months`, `days` and `millis`.
fn to_duration(parts: &BTreeMap<String, Value>) -> Result<Avro, Misfit> {
    let part = |name: &str| -> Result<u32, Misfit> {
        let value = parts.get(name).and_then(Value::as_i64).unwrap_or(0);
        u32::try_from(value)
            .map_err(|_| Misfit::new(format!("{value} is out of range")).in_field(name))
    };
    if let Some(unknown) =
        parts.keys().find(|key| !["months", "days", "millis"].contains(&key.as_str()))
    {
        return Err(
            Misfit::new("not a part of a duration (months, days, millis)").in_field(unknown)
        );
    }
    Ok(Avro::Duration(Duration::new(
        Months::new(part("months")?),
        Days::new(part("days")?),
        Millis::new(part("millis")?),
    )))
}

/// The exact decimal text of an unscaled two's complement big-endian integer with `scale`
/// digits after the point: `[0x04, 0xCE]` at scale 2 is `"12.30"`.
fn decimal_text(bytes: &[u8], scale: usize) -> String {
    let negative = bytes.first().is_some_and(|byte| byte & 0x80 != 0);
    let mut magnitude = if negative { negate(bytes) } else { bytes.to_vec() };
    // Base-10⁹ limbs, least significant first, by repeated long division.
    let mut limbs = Vec::new();
    while magnitude.iter().any(|&byte| byte != 0) {
        let mut remainder = 0u64;
        for byte in magnitude.iter_mut() {
            let current = remainder << 8 | u64::from(*byte);
            *byte = (current / 1_000_000_000) as u8;
            remainder = current % 1_000_000_000;
        }
        limbs.push(remainder);
    }
    let mut digits = match limbs.split_last() {
        None => "0".to_owned(),
        Some((top, rest)) => {
            let mut digits = top.to_string();
            for limb in rest.iter().rev() {
                digits.push_str(&format!("{limb:09}"));
            }
            digits
        }
    };
    if digits.len() <= scale {
        digits.insert_str(0, &"0".repeat(scale + 1 - digits.len()));
    }
    let (int, fraction) = digits.split_at(digits.len() - scale);
    let sign = if negative { "-" } else { "" };
    if scale == 0 { format!("{sign}{int}") } else { format!("{sign}{int}.{fraction}") }
}

/// The unscaled two's complement big-endian bytes of decimal `text` at `scale`, refusing text
/// that would need rounding or more than `precision` digits.
fn decimal_bytes(text: &str, precision: usize, scale: usize) -> Result<Vec<u8>, Misfit> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if (int.is_empty() && fraction.is_empty())
        || !int.bytes().chain(fraction.bytes()).all(|byte| byte.is_ascii_digit())
    {
        return Err(Misfit::new(format!("'{text}' is not a decimal number")));
    }
    let kept = match fraction.split_at_checked(scale) {
        Some((kept, dropped)) if dropped.bytes().all(|byte| byte == b'0') => kept,
        Some(_) => {
            return Err(Misfit::new(format!("'{text}' has more than {scale} decimal places")));
        }
        None => fraction,
    };
    let padding = scale - kept.len();
    let unscaled: String =
        int.chars().chain(kept.chars()).chain(std::iter::repeat_n('0', padding)).collect();
    let digits = unscaled.trim_start_matches('0');
    if digits.len() > precision {
        let count = digits.len();
        return Err(Misfit::new(format!(
            "'{text}' needs {count} digits, more than the decimal's precision {precision}"
        )));
    }
    // Little-endian base-256 magnitude, by repeated multiply-add.
    let mut magnitude: Vec<u8> = Vec::new();
    for digit in digits.bytes() {
        let mut carry = u32::from(digit - b'0');
        for byte in magnitude.iter_mut() {
            let current = u32::from(*byte) * 10 + carry;
            *byte = current as u8;
            carry = current >> 8;
        }
        if carry > 0 {
            magnitude.push(carry as u8);
        }
    }
    magnitude.push(0);
    magnitude.reverse();
    let mut bytes = if negative { negate(&magnitude) } else { magnitude };
    // The shortest two's complement form, as Java's BigInteger.toByteArray writes it.
    while let [first, second, ..] = bytes[..]
        && ((first == 0 && second & 0x80 == 0) || (first == 0xff && second & 0x80 != 0))
    {
        bytes.remove(0);
    }
    Ok(bytes)
}

/// The two's complement negation of big-endian `bytes`.
fn negate(bytes: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = bytes.iter().map(|byte| !byte).collect();
    for byte in out.iter_mut().rev() {
        let (sum, overflow) = byte.overflowing_add(1);
        *byte = sum;
        if !overflow {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::OfflineRegistry;

    /// Every Avro type Eddy maps, nested records and unions included.
    const EVERYTHING: &str = r#"{
      "type": "record", "name": "Everything", "namespace": "eddy.test",
      "fields": [
        {"name": "nothing", "type": "null"},
        {"name": "flag", "type": "boolean"},
        {"name": "small", "type": "int"},
        {"name": "big", "type": "long"},
        {"name": "ratio", "type": "float"},
        {"name": "precise", "type": "double"},
        {"name": "blob", "type": "bytes"},
        {"name": "text", "type": "string"},
        {"name": "hash", "type": {"type": "fixed", "name": "Hash", "size": 4}},
        {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "GREEN"]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "counts", "type": {"type": "map", "values": "long"}},
        {"name": "maybe", "type": ["null", "string"]},
        {"name": "either", "type": ["null", "double", "long"]},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "at_micros", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "time_ms", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "time_us", "type": {"type": "long", "logicalType": "time-micros"}},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal",
                                   "precision": 10, "scale": 2}},
        {"name": "wide", "type": {"type": "fixed", "name": "Wide", "size": 16,
                                  "logicalType": "decimal", "precision": 38, "scale": 4}},
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "session", "type": {"type": "record", "name": "Inner", "fields": [
          {"name": "start", "type": {"type": "long", "logicalType": "timestamp-millis"}},
          {"name": "pages", "type": {"type": "array", "items": "string"}},
          {"name": "check", "type": "Hash"}
        ]}},
        {"name": "history", "type": {"type": "array", "items": "Inner"}},
        {"name": "shape", "type": ["null",
          {"type": "record", "name": "Circle", "fields": [{"name": "radius", "type": "double"}]},
          {"type": "record", "name": "Square", "fields": [{"name": "side", "type": "long"}]}
        ]}
      ]
    }"#;

    fn inner(start: i64, pages: &[&str]) -> Value {
        Value::from([
            ("start", Value::Int(start)),
            ("pages", Value::Array(pages.iter().map(|&page| Value::from(page)).collect())),
            ("check", Value::Bytes(vec![9, 8, 7, 6])),
        ])
    }

    fn everything() -> Value {
        Value::from([
            ("nothing", Value::Null),
            ("flag", Value::Bool(true)),
            ("small", Value::Int(i32::MIN.into())),
            ("big", Value::Int(i64::MAX)),
            ("ratio", Value::Float(1.5)),
            ("precise", Value::Float(-1e-300)),
            ("blob", Value::Bytes(vec![0, 255, 7])),
            ("text", Value::from("héllo")),
            ("hash", Value::Bytes(vec![1, 2, 3, 4])),
            ("colour", Value::from("GREEN")),
            ("tags", Value::Array(vec![Value::from("a"), Value::from("b")])),
            ("counts", Value::from([("x", Value::Int(-1)), ("y", Value::Int(i64::MIN))])),
            ("maybe", Value::from("present")),
            ("either", Value::Int(-7)),
            ("at", Value::Int(1_700_000_000_123)),
            ("at_micros", Value::Int(1_700_000_000_123_456)),
            ("day", Value::Int(19_700)),
            ("time_ms", Value::Int(45_296_789)),
            ("time_us", Value::Int(45_296_789_012)),
            ("price", Value::from("12.30")),
            ("wide", Value::from("-1234567890123456789012345678901234.5678")),
            ("id", Value::from("6ba7b810-9dad-11d1-80b4-00c04fd430c8")),
            ("session", inner(1_700_000_000_000, &["/a", "/b"])),
            ("history", Value::Array(vec![inner(-1, &[]), inner(i64::MAX, &["/c"])])),
            ("shape", Value::from([("side", Value::Int(3))])),
        ])
    }

    fn with(mut value: Value, changes: Vec<(&str, Value)>) -> Value {
        if let Value::Map(fields) = &mut value {
            for (name, change) in changes {
                fields.insert(name.to_owned(), change);
            }
        }
        value
    }

    fn round_trip(schema: &AvroSchema, value: &Value) -> Value {
        let datum = schema.encode(value).unwrap();
        schema.decode(&datum, None).unwrap()
    }

    #[test]
    fn every_type_round_trips() {
        let schema = AvroSchema::parse(EVERYTHING).unwrap();
        assert_eq!(schema.name(), "eddy.test.Everything");
        let value = everything();
        assert_eq!(round_trip(&schema, &value), value);

        // The other union branches, negative and boundary values.
        let other = with(
            everything(),
            vec![
                ("small", Value::Int(i32::MAX.into())),
                ("big", Value::Int(i64::MIN)),
                ("maybe", Value::Null),
                ("either", Value::Float(2.5)),
                ("at", Value::Int(-86_400_000)),
                ("day", Value::Int(-1)),
                ("price", Value::from("-0.05")),
                ("wide", Value::from("99999999999999999999999999999999.9999")),
                ("shape", Value::from([("radius", Value::Float(0.5))])),
                ("tags", Value::Array(vec![])),
                ("counts", Value::Map(BTreeMap::new())),
            ],
        );
        assert_eq!(round_trip(&schema, &other), other);
        let no_shape = with(everything(), vec![("shape", Value::Null)]);
        assert_eq!(round_trip(&schema, &no_shape), no_shape);
    }

    #[test]
    fn union_takes_the_exact_branch_before_widening() {
        let union = AvroSchema::parse(r#"["null", "double", "long"]"#).unwrap();
        // Branch index and value are zigzag varints: branch 2, long 1.
        assert_eq!(union.encode(&Value::Int(1)).unwrap(), [0x04, 0x02]);
        assert_eq!(union.encode(&Value::Null).unwrap(), [0x00]);
        let float = union.encode(&Value::Float(1.0)).unwrap();
        assert_eq!(float[0], 0x02);
        assert_eq!(union.decode(&float, None).unwrap(), Value::Float(1.0));

        // Without an exact branch an Int widens to a double.
        let double = AvroSchema::parse(r#"["null", "double"]"#).unwrap();
        assert_eq!(round_trip(&double, &Value::Int(3)), Value::Float(3.0));

        // A string that is not an enum symbol falls through to the string branch.
        let symbol_or_text =
            AvroSchema::parse(r#"[{"type": "enum", "name": "Kind", "symbols": ["A"]}, "string"]"#)
                .unwrap();
        assert_eq!(symbol_or_text.encode(&Value::from("A")).unwrap(), [0x00, 0x00]);
        assert_eq!(round_trip(&symbol_or_text, &Value::from("B")), Value::from("B"));
    }

    #[test]
    fn decimals_are_exact_text_at_the_schema_scale() {
        let price = AvroSchema::parse(
            r#"{"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}"#,
        )
        .unwrap();
        // Length 2, then unscaled 1230 = 0x04CE.
        assert_eq!(price.encode(&Value::from("12.30")).unwrap(), [0x04, 0x04, 0xCE]);
        assert_eq!(price.encode(&Value::from("12.3")).unwrap(), [0x04, 0x04, 0xCE]);
        assert_eq!(price.encode(&Value::from("12.300")).unwrap(), [0x04, 0x04, 0xCE]);
        assert_eq!(price.encode(&Value::from("-0.05")).unwrap(), [0x02, 0xFB]);
        assert_eq!(round_trip(&price, &Value::from("12.3")), Value::from("12.30"));
        assert_eq!(round_trip(&price, &Value::Int(12)), Value::from("12.00"));
        assert_eq!(round_trip(&price, &Value::from("-.5")), Value::from("-0.50"));
        assert_eq!(round_trip(&price, &Value::from("+0")), Value::from("0.00"));
        assert_eq!(round_trip(&price, &Value::from("-0.00")), Value::from("0.00"));
        assert_eq!(round_trip(&price, &Value::from("99999999.99")), Value::from("99999999.99"));

        for (text, reason) in [
            ("1.234", "'1.234' has more than 2 decimal places"),
            (
                "123456789.00",
                "'123456789.00' needs 11 digits, more than the decimal's precision 10",
            ),
            ("12,30", "'12,30' is not a decimal number"),
            ("1e3", "'1e3' is not a decimal number"),
            ("-", "'-' is not a decimal number"),
        ] {
            let error = price.encode(&Value::from(text)).unwrap_err();
            assert_eq!(error.to_string(), format!("(root): {reason}"));
        }

        assert_eq!(decimal_text(&[], 0), "0");
        assert_eq!(decimal_text(&[0x00], 3), "0.000");
        assert_eq!(decimal_text(&[0x80], 0), "-128");
        assert_eq!(decimal_text(&[0xFF], 2), "-0.01");
        assert_eq!(decimal_text(&[0x00, 0x80], 1), "12.8");
        let mut power = vec![0x01];
        power.extend([0x00; 19]);
        assert_eq!(decimal_text(&power, 0), "5708990770823839524233143877797980545530986496");
        let wide = [246, 182, 79, 9, 15, 253, 204, 236, 59, 182, 111, 175, 33, 199, 12, 178];
        assert_eq!(decimal_text(&wide, 0), "-12345678901234567890123456789012345678");
        assert_eq!(decimal_bytes("-12345678901234567890123456789012345678", 38, 0).unwrap(), wide);
        for text in [
            "0",
            "1",
            "-1",
            "127",
            "128",
            "-128",
            "-129",
            "255",
            "256",
            "-32768",
            "1000000000",
            "-18446744073709551616",
        ] {
            let bytes = decimal_bytes(text, 60, 0).unwrap();
            assert_eq!(decimal_text(&bytes, 0), text, "{bytes:?}");
        }
        assert_eq!(decimal_bytes("127", 3, 0).unwrap(), [0x7F]);
        assert_eq!(decimal_bytes("128", 3, 0).unwrap(), [0x00, 0x80]);
        assert_eq!(decimal_bytes("-128", 3, 0).unwrap(), [0x80]);
        assert_eq!(decimal_bytes("-129", 3, 0).unwrap(), [0xFF, 0x7F]);
    }

    #[test]
    fn missing_fields_take_defaults_or_null() {
        let schema = AvroSchema::parse(
            r#"{"type": "record", "name": "Click", "fields": [
              {"name": "url", "type": "string"},
              {"name": "kind", "type": "string", "default": "page_view"},
              {"name": "product", "type": ["null", "long"], "default": null},
              {"name": "score", "type": ["long", "null"], "default": 5},
              {"name": "raw", "type": "bytes", "default": "\u00ff\u0001"},
              {"name": "referrer", "type": ["null", "string"]}
            ]}"#,
        )
        .unwrap();
        let decoded = round_trip(&schema, &Value::from([("url", Value::from("/a"))]));
        assert_eq!(
            decoded,
            Value::from([
                ("url", Value::from("/a")),
                ("kind", Value::from("page_view")),
                ("product", Value::Null),
                ("score", Value::Int(5)),
                ("raw", Value::Bytes(vec![0xFF, 0x01])),
                ("referrer", Value::Null),
            ])
        );
        let error = schema.encode(&Value::from([("kind", Value::from("x"))])).unwrap_err();
        assert_eq!(error.to_string(), "url: missing, and the field has no default");
    }

    #[test]
    fn values_the_schema_cannot_hold_name_their_path() {
        let schema = AvroSchema::parse(EVERYTHING).unwrap();
        let cases = [
            (
                with(everything(), vec![("session", Value::from([("start", Value::from("x"))]))]),
                "session.start: expected long (timestamp-millis), got string",
            ),
            (
                with(
                    everything(),
                    vec![(
                        "history",
                        Value::Array(vec![
                            inner(1, &[]),
                            with(inner(2, &[]), vec![("pages", Value::Array(vec![Value::Int(1)]))]),
                        ]),
                    )],
                ),
                "history[1].pages[0]: expected string, got int",
            ),
            (
                with(everything(), vec![("flag", Value::from("yes"))]),
                "flag: expected boolean, got string",
            ),
            (
                with(everything(), vec![("bogus", Value::Null)]),
                "bogus: not a field of record eddy.test.Everything",
            ),
            (
                with(everything(), vec![("small", Value::Int(1 << 31))]),
                "small: 2147483648 is out of range for int",
            ),
            (
                with(everything(), vec![("colour", Value::from("BLUE"))]),
                "colour: 'BLUE' is not a symbol of enum eddy.test.Colour",
            ),
            (
                with(everything(), vec![("maybe", Value::Int(1))]),
                "maybe: expected one of [null, string], got int",
            ),
            (
                with(everything(), vec![("hash", Value::Bytes(vec![1, 2, 3]))]),
                "hash: expected fixed eddy.test.Hash (4 bytes), got 3 bytes",
            ),
            (
                with(everything(), vec![("shape", Value::from([("side", Value::from("x"))]))]),
                "shape.side: expected long, got string",
            ),
            (
                with(everything(), vec![("counts", Value::from([("k", Value::Float(1.5))]))]),
                "counts.k: expected long, got float",
            ),
            (
                with(everything(), vec![("id", Value::from("not-a-uuid"))]),
                "id: 'not-a-uuid' is not a UUID",
            ),
            (Value::from("just text"), "(root): expected record eddy.test.Everything, got string"),
        ];
        for (value, message) in cases {
            let error = schema.encode(&value).unwrap_err();
            assert!(error.to_string().starts_with(message), "{error} ≠ {message}");
            assert_eq!(error.kind(), "mismatch");
        }
    }

    const USER_V1: &str = r#"{"type": "record", "name": "User", "namespace": "eddy.test", "fields": [
      {"name": "id", "type": "int"},
      {"name": "name", "type": "string"},
      {"name": "legacy", "type": "string"}
    ]}"#;

    const USER_V2: &str = r#"{"type": "record", "name": "User", "namespace": "eddy.test", "fields": [
      {"name": "id", "type": "long"},
      {"name": "name", "type": "string"},
      {"name": "country", "type": "string", "default": "unknown"}
    ]}"#;

    fn user_v1() -> Value {
        Value::from([
            ("id", Value::Int(7)),
            ("name", Value::from("Ada")),
            ("legacy", Value::from("dropped")),
        ])
    }

    #[test]
    fn wire_format_resolves_evolved_writers_to_the_reader_schema() {
        let writer = AvroSchema::parse(USER_V1).unwrap();
        let reader = AvroSchema::parse(USER_V2).unwrap();
        let registry = Arc::new(OfflineRegistry::new([]));
        let encoder = AvroEncoder::new(registry.as_ref(), "users-value", writer.clone()).unwrap();
        assert_eq!(encoder.id(), 1);
        let bytes = encoder.encode(&user_v1()).unwrap();
        assert_eq!(bytes[..5], [0, 0, 0, 0, 1]);
        assert_eq!(split_wire(&bytes).unwrap(), (1, &bytes[5..]));

        let evolved = AvroDecoder::new(registry.clone(), Some(reader));
        assert_eq!(
            evolved.decode(&bytes).unwrap(),
            Value::from([
                ("id", Value::Int(7)),
                ("name", Value::from("Ada")),
                ("country", Value::from("unknown")),
            ])
        );
        let as_written = AvroDecoder::new(registry.clone(), None);
        assert_eq!(as_written.decode(&bytes).unwrap(), user_v1());

        // A reader needing a field the writer lacks, with no default, cannot read it.
        let strict = AvroSchema::parse(
            r#"{"type": "record", "name": "User", "namespace": "eddy.test", "fields": [
              {"name": "id", "type": "long"}, {"name": "email", "type": "string"}
            ]}"#,
        )
        .unwrap();
        let error = AvroDecoder::new(registry, Some(strict)).decode(&bytes).unwrap_err();
        assert!(matches!(error, FormatError::IncompatibleSchema { .. }), "{error}");
        assert_eq!(error.kind(), "incompatible-schema");
        assert!(error.to_string().contains("schema id 1"), "{error}");
        assert!(error.is_bad_record());
    }

    /// A small deterministic pseudo-random generator, so failures reproduce.
    struct Lcg(u64);

    impl Lcg {
        fn byte(&mut self) -> u8 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) as u8
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.byte()).collect()
        }
    }

    #[test]
    fn every_poison_pill_gets_its_own_error() {
        let writer = AvroSchema::parse(USER_V1).unwrap();
        let registry = Arc::new(OfflineRegistry::new([writer.clone()]));
        let decoder = AvroDecoder::new(registry.clone(), None);
        let good = AvroEncoder::new(registry.as_ref(), "users-value", writer)
            .unwrap()
            .encode(&user_v1())
            .unwrap();
        assert_eq!(decoder.decode(&good).unwrap(), user_v1());

        let kind = |bytes: &[u8]| decoder.decode(bytes).unwrap_err().kind();

        let random = Lcg(42).bytes(64);
        assert_ne!(random[0], MAGIC_BYTE);
        assert!(matches!(
            decoder.decode(&random),
            Err(FormatError::WrongMagicByte { found }) if found == random[0]
        ));
        assert!(matches!(
            decoder.decode(&[1, 0, 0, 0, 1, 14, 2]),
            Err(FormatError::WrongMagicByte { found: 1 })
        ));
        assert_eq!(kind(&[1, 0, 0, 0, 1]), "wrong-magic-byte");
        assert!(matches!(decoder.decode(&[0, 0, 0, 1]), Err(FormatError::TooShort { len: 4 })));
        assert!(matches!(decoder.decode(&[]), Err(FormatError::TooShort { len: 0 })));
        assert_eq!(kind(b"{}"), "too-short");

        let mut unknown = good.clone();
        unknown[1..5].copy_from_slice(&42u32.to_be_bytes());
        assert!(matches!(decoder.decode(&unknown), Err(FormatError::UnknownSchemaId { id: 42 })));
        assert_eq!(kind(&unknown), "unknown-schema-id");

        // Every truncation is caught, though apache-avro alone reads some as trailing nulls.
        for len in 5..good.len() {
            let error = decoder.decode(&good[..len]).unwrap_err();
            assert!(matches!(error, FormatError::InvalidAvro { .. }), "{len}: {error}");
            assert!(error.to_string().contains("schema id 1"), "{error}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        let error = decoder.decode(&trailing).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "payload is not valid Avro for its writer schema: schema id 1: 1 bytes left over after the datum"
            )
        );
        // A string claiming to be 2 GB long.
        assert_eq!(kind(&[0, 0, 0, 0, 1, 14, 0xFE, 0xFF, 0xFF, 0xFF, 0x0F]), "invalid-avro");
        // A negative string length.
        assert_eq!(kind(&[0, 0, 0, 0, 1, 14, 0x01]), "invalid-avro");

        // Random payloads behind a valid prefix: errors, never panics.
        let mut lcg = Lcg(7);
        for round in 0..2000 {
            let len = usize::from(lcg.byte() % 40);
            let mut bytes = if round % 2 == 0 { vec![0, 0, 0, 0, 1] } else { Vec::new() };
            bytes.extend(lcg.bytes(len));
            if let Err(error) = decoder.decode(&bytes) {
                assert!(error.is_bad_record(), "{bytes:?}: {error}");
            }
        }
    }

    #[test]
    fn logical_types_keep_their_units() {
        let schema = AvroSchema::parse(
            r#"{"type": "record", "name": "Times", "fields": [
              {"name": "ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
              {"name": "us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
              {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
              {"name": "span", "type": {"type": "fixed", "name": "Span", "size": 12,
                                        "logicalType": "duration"}},
              {"name": "amount", "type": {"type": "bytes", "logicalType": "big-decimal"}}
            ]}"#,
        )
        .unwrap();
        let value = Value::from([
            ("ms", Value::Int(1_700_000_000_123)),
            ("us", Value::Int(1_700_000_000_123_456)),
            ("local", Value::Int(-5)),
            (
                "span",
                Value::from([
                    ("months", Value::Int(1)),
                    ("days", Value::Int(2)),
                    ("millis", Value::Int(3)),
                ]),
            ),
            ("amount", Value::from("-1234.5678")),
        ]);
        assert_eq!(round_trip(&schema, &value), value);
    }

    #[test]
    fn self_contained_json_reparses_alone() {
        let schema = AvroSchema::parse(EVERYTHING).unwrap();
        let again = AvroSchema::parse(schema.json()).unwrap();
        assert_eq!(again.json(), schema.json());
        assert_eq!(round_trip(&again, &everything()), everything());
        let error = AvroSchema::parse(
            r#"{"type": "record", "name": "X", "fields": [
          {"name": "a", "type": "Nope"}]}"#,
        )
        .unwrap_err();
        assert_eq!(error.kind(), "invalid-schema");
    }
}
