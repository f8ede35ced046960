//! Wire formats: turning record bytes into [`Value`](crate::value::Value)s and back.
//!
//! This module owns every byte-level format Eddy reads or writes, so that operators, stores and
//! the runtime only ever see `Value`s, and so that `apache-avro` and `schema_registry_converter`
//! are named nowhere else:
//!
//! - [`avro`]: Avro schemas (loaded from a directory of `.avsc` files), Avro datums ⇄ `Value`,
//!   and the Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro datum).
//! - [`registry`]: where writer schemas come from, by id: a Confluent schema registry, or an
//!   offline registry serving a directory (for `eddy validate` and the broker-free test driver).
//! - [`json`]: JSON ⇄ `Value`.
//!
//! Every failure is one [`FormatError`]. Decoding errors are specific on purpose: the runtime
//! sends a record it cannot decode to a dead-letter topic, with [`FormatError::kind`] as the
//! reason header and metric label, and [`FormatError::is_bad_record`] tells it whether the
//! record is to blame (dead-letter it) or the environment is (retry or stop).

pub mod avro;
pub mod json;
pub mod registry;

use std::path::PathBuf;

pub use avro::{AvroDecoder, AvroEncoder, AvroSchema};
pub use registry::{ConfluentRegistry, OfflineRegistry, SchemaRegistry};

/// Why bytes could not be decoded, or a value could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Fewer than the 5 bytes of the Confluent wire format's magic byte and schema id.
    #[error("record is {len} bytes, shorter than the 5-byte Confluent wire format prefix")]
    TooShort {
        /// The record's length in bytes.
        len: usize,
    },
    /// The first byte is not the Confluent wire format's magic byte 0.
    #[error("first byte is {found:#04x}, not the Confluent wire format magic byte 0x00")]
    WrongMagicByte {
        /// The first byte found.
        found: u8,
    },
    /// The schema registry has no schema with this id.
    #[error("schema id {id} is not in the schema registry")]
    UnknownSchemaId {
        /// The id the record names.
        id: u32,
    },
    /// The bytes are not a datum of the writer schema (truncated, trailing bytes, bad data).
    #[error("payload is not valid Avro for its writer schema: {reason}")]
    InvalidAvro {
        /// What the Avro decoder found wrong.
        reason: String,
    },
    /// The writer schema's datum cannot be read as the reader schema (Avro schema resolution).
    #[error("writer schema cannot be read with the reader schema: {reason}")]
    IncompatibleSchema {
        /// What schema resolution found wrong.
        reason: String,
    },
    /// The bytes are not JSON.
    #[error("invalid JSON: {reason}")]
    InvalidJson {
        /// What the JSON parser found wrong, with line and column.
        reason: String,
    },
    /// A value the target format or schema cannot hold.
    #[error("{path}: {reason}")]
    Mismatch {
        /// Where in the value, e.g. `session.pages[3]`, or `(root)`.
        path: String,
        /// What does not fit, e.g. `expected long, got string`.
        reason: String,
    },
    /// An Avro schema that does not parse.
    #[error("invalid Avro schema {source_name}: {reason}")]
    InvalidSchema {
        /// The file or registry entry the schema came from.
        source_name: String,
        /// What the schema parser found wrong.
        reason: String,
    },
    /// A schema file or directory that cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The schema registry could not answer (unreachable, refused, or rejected a schema).
    #[error("schema registry: {reason}")]
    Registry {
        /// What went wrong.
        reason: String,
        /// Whether the same call may succeed later (a network error or a 502/503).
        retriable: bool,
    },
}

impl FormatError {
    /// A short, stable name for this kind of error, for a dead-letter header or a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            FormatError::TooShort { .. } => "too-short",
            FormatError::WrongMagicByte { .. } => "wrong-magic-byte",
            FormatError::UnknownSchemaId { .. } => "unknown-schema-id",
            FormatError::InvalidAvro { .. } => "invalid-avro",
            FormatError::IncompatibleSchema { .. } => "incompatible-schema",
            FormatError::InvalidJson { .. } => "invalid-json",
            FormatError::Mismatch { .. } => "mismatch",
            FormatError::InvalidSchema { .. } => "invalid-schema",
            FormatError::Io { .. } => "io",
            FormatError::Registry { .. } => "registry",
        }
    }

    /// True when this one record (or value) is to blame and others may still succeed: send it to
    /// the dead-letter topic. False when the environment is (a schema file, the registry).
    pub fn is_bad_record(&self) -> bool {
        match self {
            FormatError::TooShort { .. }
            | FormatError::WrongMagicByte { .. }
            | FormatError::UnknownSchemaId { .. }
            | FormatError::InvalidAvro { .. }
            | FormatError::IncompatibleSchema { .. }
            | FormatError::InvalidJson { .. }
            | FormatError::Mismatch { .. } => true,
            FormatError::InvalidSchema { .. }
            | FormatError::Io { .. }
            | FormatError::Registry { .. } => false,
        }
    }
}

/// Where in a value an encoding problem is, built innermost first as the error travels up, so
/// that the success path allocates nothing for it.
#[derive(Debug)]
pub(crate) struct Misfit {
    /// Path segments, innermost first.
    segments: Vec<Segment>,
    /// What does not fit.
    reason: String,
}

/// One step into a value.
#[derive(Debug)]
enum Segment {
    /// A record field or map key.
    Field(String),
    /// An array position.
    Index(usize),
}

impl Misfit {
    /// A problem with the value at the current position.
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Misfit { segments: Vec::new(), reason: reason.into() }
    }

    /// The same problem, seen from the enclosing record or map.
    pub(crate) fn in_field(mut self, name: &str) -> Self {
        self.segments.push(Segment::Field(name.to_owned()));
        self
    }

    /// The same problem, seen from the enclosing array.
    pub(crate) fn in_item(mut self, index: usize) -> Self {
        self.segments.push(Segment::Index(index));
        self
    }
}

impl From<Misfit> for FormatError {
    fn from(misfit: Misfit) -> Self {
        let mut path = String::new();
        for segment in misfit.segments.iter().rev() {
            match segment {
                Segment::Field(name) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(name);
                }
                Segment::Index(index) => path.push_str(&format!("[{index}]")),
            }
        }
        if path.is_empty() {
            path.push_str("(root)");
        }
        FormatError::Mismatch { path, reason: misfit.reason }
    }
}

/// A temporary directory holding `files` (name, content), for tests.
#[cfg(test)]
pub(crate) fn dir_with_files(files: &[(&str, &str)]) -> crate::tempdir::TempDir {
    let dir = crate::tempdir::TempDir::new("format").unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misfit_paths_read_outermost_first() {
        let error: FormatError = Misfit::new("expected long, got string")
            .in_field("start")
            .in_item(2)
            .in_field("sessions")
            .into();
        assert_eq!(error.to_string(), "sessions[2].start: expected long, got string");
        assert_eq!(error.kind(), "mismatch");
        assert!(error.is_bad_record());

        let root: FormatError = Misfit::new("NaN has no JSON form").into();
        assert_eq!(root.to_string(), "(root): NaN has no JSON form");
    }
}
