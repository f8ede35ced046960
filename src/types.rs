//! The static types of record values, for checking a topology before it runs.
//!
//! A [`Type`] describes the shape of the [`Value`](crate::value::Value)s that flow along an
//! edge of the plan: what a source's Avro schema promises, what an expression produces, what
//! an operator adds. The topology compiler uses it to find a field missing from a schema, an
//! expression comparing a string with a number, or a sink schema that cannot hold what flows
//! into it, before any record is read. Where nothing is known (JSON without a schema), the type
//! is [`Type::Any`] and checks give way to runtime errors.

use std::collections::BTreeMap;
use std::fmt;

use apache_avro::Schema;

use crate::format::AvroSchema;

/// The shape of a value.
#[derive(Clone, Debug, PartialEq)]
pub enum Type {
    /// Unknown: anything may be here (schemaless JSON). Checks accept it.
    Any,
    /// Only null.
    Null,
    /// A boolean.
    Bool,
    /// A 64-bit integer; also timestamps in milliseconds since the epoch.
    Int,
    /// A 64-bit float.
    Float,
    /// Text; also decimals as exact text, enums and UUIDs.
    String,
    /// Raw bytes.
    Bytes,
    /// A list of one element type.
    List(Box<Type>),
    /// A map from strings to one value type.
    Map(Box<Type>),
    /// Named fields with their types.
    Record(BTreeMap<String, Type>),
    /// The inner type, or null.
    Nullable(Box<Type>),
}

impl Type {
    /// The type of the values an Avro schema describes, as [`AvroSchema::decode`] produces them.
    pub fn of_avro(schema: &AvroSchema) -> Type {
        of_avro(schema.schema(), schema, &mut Vec::new())
    }

    /// A record type of `fields`.
    pub fn record<const N: usize>(fields: [(&str, Type); N]) -> Type {
        Type::Record(fields.into_iter().map(|(name, ty)| (name.to_owned(), ty)).collect())
    }

    /// `self`, or null.
    pub fn nullable(self) -> Type {
        match self {
            Type::Any | Type::Null | Type::Nullable(_) => self,
            other => Type::Nullable(Box::new(other)),
        }
    }

    /// The type without its null alternative.
    pub fn non_null(&self) -> &Type {
        match self {
            Type::Nullable(inner) => inner,
            other => other,
        }
    }

    /// Whether null is one of the values.
    pub fn is_nullable(&self) -> bool {
        matches!(self, Type::Any | Type::Null | Type::Nullable(_))
    }

    /// The type of field `name` of a record (nullable if the record itself is), `Any` for
    /// `Any`, and `None` when the type has no such field.
    pub fn field(&self, name: &str) -> Option<Type> {
        match self {
            Type::Any => Some(Type::Any),
            Type::Record(fields) => fields.get(name).cloned(),
            Type::Map(value) => Some(value.as_ref().clone().nullable()),
            Type::Nullable(inner) => inner.field(name).map(Type::nullable),
            _ => None,
        }
    }

    /// The field names of a record type, for "did you mean" hints.
    pub fn field_names(&self) -> Vec<&str> {
        match self.non_null() {
            Type::Record(fields) => fields.keys().map(String::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// Whether a slot of this type can hold every value of type `given`; if not, why, with
    /// the path of the first field that does not fit (`duration_ms: expected int, got string`).
    pub fn accepts(&self, given: &Type) -> Result<(), String> {
        self.accepts_at(given, "")
    }

    fn accepts_at(&self, given: &Type, path: &str) -> Result<(), String> {
        let at = |reason: String| {
            if path.is_empty() { reason } else { format!("{path}: {reason}") }
        };
        let child = |name: &str| {
            if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") }
        };
        match (self, given) {
            (Type::Any, _) | (_, Type::Any) => Ok(()),
            (Type::Nullable(slot), Type::Nullable(inner)) => slot.accepts_at(inner, path),
            (Type::Nullable(_), Type::Null) => Ok(()),
            (Type::Nullable(slot), other) => slot.accepts_at(other, path),
            (slot, Type::Nullable(_) | Type::Null) => {
                Err(at(format!("expected {slot}, got a value that may be null")))
            }
            (Type::Float, Type::Int) => Ok(()),
            (Type::List(slot), Type::List(item)) => slot.accepts_at(item, &format!("{path}[]")),
            (Type::Map(slot), Type::Map(value)) => slot.accepts_at(value, &child("*")),
            (Type::Record(slots), Type::Record(fields)) => {
                let mut unset = Vec::new();
                for (name, slot) in slots {
                    match fields.get(name) {
                        Some(field) => slot.accepts_at(field, &child(name))?,
                        None if slot.is_nullable() => {}
                        None => unset.push(format!("{name} ({slot})")),
                    }
                }
                let extra: Vec<&str> = fields
                    .keys()
                    .filter(|name| !slots.contains_key(*name))
                    .map(String::as_str)
                    .collect();
                let mut reasons = Vec::new();
                if !unset.is_empty() {
                    reasons.push(format!("never sets {}", unset.join(", ")));
                }
                if !extra.is_empty() {
                    reasons.push(format!("has no field for {}", extra.join(", ")));
                }
                if reasons.is_empty() { Ok(()) } else { Err(at(reasons.join("; "))) }
            }
            (slot, other) if slot == other => Ok(()),
            (slot, other) => Err(at(format!("expected {slot}, got {other}"))),
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Any => write!(f, "any"),
            Type::Null => write!(f, "null"),
            Type::Bool => write!(f, "bool"),
            Type::Int => write!(f, "int"),
            Type::Float => write!(f, "float"),
            Type::String => write!(f, "string"),
            Type::Bytes => write!(f, "bytes"),
            Type::List(item) => write!(f, "list<{item}>"),
            Type::Map(value) => write!(f, "map<string, {value}>"),
            Type::Record(fields) => {
                write!(f, "record{{")?;
                for (i, (name, ty)) in fields.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{name}: {ty}")?;
                }
                write!(f, "}}")
            }
            Type::Nullable(inner) => write!(f, "{inner}?"),
        }
    }
}

/// The type of `schema`, resolving named references through `root`. `open` holds the named
/// records being expanded: a recursive reference to one of them is `Any`, not an endless type.
fn of_avro(schema: &Schema, root: &AvroSchema, open: &mut Vec<String>) -> Type {
    match schema {
        Schema::Null => Type::Null,
        Schema::Boolean => Type::Bool,
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
        | Schema::LocalTimestampNanos => Type::Int,
        Schema::Float | Schema::Double => Type::Float,
        Schema::Bytes | Schema::Fixed(_) => Type::Bytes,
        Schema::String
        | Schema::Enum(_)
        | Schema::Uuid(_)
        | Schema::Decimal(_)
        | Schema::BigDecimal => Type::String,
        Schema::Array(array) => Type::List(Box::new(of_avro(&array.items, root, open))),
        Schema::Map(map) => Type::Map(Box::new(of_avro(&map.types, root, open))),
        Schema::Record(record) => {
            open.push(record.name.fullname(None));
            let fields = record
                .fields
                .iter()
                .map(|f| (f.name.clone(), of_avro(&f.schema, root, open)))
                .collect();
            open.pop();
            Type::Record(fields)
        }
        Schema::Duration(_) => {
            Type::record([("months", Type::Int), ("days", Type::Int), ("millis", Type::Int)])
        }
        Schema::Union(union) => {
            let variants = union.variants();
            let non_null: Vec<&Schema> =
                variants.iter().filter(|s| !matches!(s, Schema::Null)).collect();
            let nullable = non_null.len() < variants.len();
            let inner = match non_null.as_slice() {
                [] => Type::Null,
                [one] => of_avro(one, root, open),
                _ => Type::Any,
            };
            if nullable { inner.nullable() } else { inner }
        }
        Schema::Ref { name } => match root.named(name) {
            Some(named) if !open.contains(&name.fullname(None)) => of_avro(named, root, open),
            _ => Type::Any,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avro_schemas_map_to_types() {
        let schema = AvroSchema::parse(
            r#"{"type": "record", "name": "R", "fields": [
                {"name": "id", "type": "string"},
                {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                {"name": "price", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}]},
                {"name": "tags", "type": {"type": "array", "items": "string"}},
                {"name": "next", "type": ["null", "R"], "default": null}
            ]}"#,
        )
        .unwrap();
        let ty = Type::of_avro(&schema);
        assert_eq!(ty.field("id"), Some(Type::String));
        assert_eq!(ty.field("at"), Some(Type::Int));
        assert_eq!(ty.field("price"), Some(Type::String.nullable()));
        assert_eq!(ty.field("tags"), Some(Type::List(Box::new(Type::String))));
        assert_eq!(ty.field("next"), Some(Type::Any), "a recursive reference is not expanded");
        assert_eq!(ty.field("missing"), None);
    }

    #[test]
    fn accepts_names_the_first_misfit() {
        let slot = Type::record([("a", Type::Int), ("b", Type::String.nullable())]);
        assert_eq!(slot.accepts(&Type::record([("a", Type::Int)])), Ok(()));
        assert_eq!(
            slot.accepts(&Type::record([("a", Type::String)])),
            Err("a: expected int, got string".to_owned())
        );
        assert_eq!(
            slot.accepts(&Type::record([("b", Type::String)])),
            Err("never sets a (int)".to_owned())
        );
        assert_eq!(
            slot.accepts(&Type::record([("a", Type::Int.nullable())])),
            Err("a: expected int, got a value that may be null".to_owned())
        );
        assert_eq!(
            slot.accepts(&Type::record([("a", Type::Int), ("c", Type::Bool)])),
            Err("has no field for c".to_owned())
        );
        assert_eq!(Type::Float.accepts(&Type::Int), Ok(()));
        assert_eq!(slot.accepts(&Type::Any), Ok(()));
    }
}
