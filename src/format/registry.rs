//! Where Avro writer schemas come from: one small trait, [`SchemaRegistry`], and its two
//! implementations.
//!
//! - [`ConfluentRegistry`] asks a Confluent schema registry over HTTP and caches every schema
//!   by id, so a record costs no HTTP call once its schema has been seen.
//! - [`OfflineRegistry`] serves a directory of `.avsc` files with locally assigned ids, so that
//!   `eddy validate` and the broker-free test driver work without any registry.
//!
//! This is the only place that names `schema_registry_converter`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use schema_registry_converter::blocking::schema_registry::{
    SrSettings, get_referenced_schema, get_schema_by_id, perform_sr_call, post_schema,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    RawError, RegisteredReference, SchemaType, SrCall, SuppliedSchema,
};

use super::FormatError;
use super::avro::{AvroSchema, load_dir};

/// Schema lookup by Confluent schema id, for decoding, and by subject, for encoding.
pub trait SchemaRegistry: Send + Sync {
    /// The schema registered under `id`; [`FormatError::UnknownSchemaId`] if there is none.
    fn schema(&self, id: u32) -> Result<Arc<AvroSchema>, FormatError>;

    /// The id of `schema` under `subject`, registering it first if this registry may.
    fn id(&self, subject: &str, schema: &AvroSchema) -> Result<u32, FormatError>;
}

/// Serves schemas without a registry: ids are assigned locally, 1, 2, … in the order given.
///
/// Subjects are ignored: a schema has one id whatever subject it is used under, and a schema
/// not served yet is added with the next id (as a registry that registers would).
#[derive(Debug, Default)]
pub struct OfflineRegistry {
    /// The schema with id `n` is at position `n - 1`.
    schemas: RwLock<Vec<Arc<AvroSchema>>>,
}

impl OfflineRegistry {
    /// Serves `schemas` with ids 1, 2, … in order.
    pub fn new(schemas: impl IntoIterator<Item = AvroSchema>) -> Self {
        OfflineRegistry { schemas: RwLock::new(schemas.into_iter().map(Arc::new).collect()) }
    }

    /// Serves every `.avsc` file of `dir` (see [`load_dir`]), with ids 1, 2, … in file name
    /// order.
    pub fn open(dir: &Path) -> Result<Self, FormatError> {
        Ok(Self::new(load_dir(dir)?.into_values()))
    }
}

impl SchemaRegistry for OfflineRegistry {
    fn schema(&self, id: u32) -> Result<Arc<AvroSchema>, FormatError> {
        let position = usize::try_from(id).ok().and_then(|id| id.checked_sub(1));
        position
            .and_then(|position| read(&self.schemas).get(position).cloned())
            .ok_or(FormatError::UnknownSchemaId { id })
    }

    fn id(&self, _subject: &str, schema: &AvroSchema) -> Result<u32, FormatError> {
        let mut schemas = write(&self.schemas);
        let position = match schemas.iter().position(|known| known.json() == schema.json()) {
            Some(position) => position,
            None => {
                schemas.push(Arc::new(schema.clone()));
                schemas.len() - 1
            }
        };
        u32::try_from(position + 1).map_err(|_| FormatError::Registry {
            reason: "the offline registry ran out of schema ids".to_owned(),
            retriable: false,
        })
    }
}

/// A Confluent schema registry client that caches every schema it sees by id.
///
/// It makes blocking HTTP calls (reqwest's blocking client), which suits Eddy's processing
/// threads. Create and use it on plain threads, never inside an async runtime (there, use
/// `tokio::task::spawn_blocking`): reqwest's blocking client panics in an async context.
pub struct ConfluentRegistry {
    /// URLs, authentication and the HTTP client.
    settings: SrSettings,
    /// Whether [`SchemaRegistry::id`] registers a schema the subject does not have yet
    /// (Confluent's `auto.register.schemas`), or only looks it up.
    register: bool,
    /// Every schema fetched or registered, by id. Ids are immutable in a registry.
    schemas: RwLock<HashMap<u32, Arc<AvroSchema>>>,
    /// Ids by subject and schema JSON.
    ids: RwLock<HashMap<(String, String), u32>>,
}

impl ConfluentRegistry {
    /// A client for the registry at `urls` (comma-separated, tried in order), e.g.
    /// `http://localhost:8081`. With `register`, encoding registers schemas the subject does not
    /// have yet; without it, they must have been registered beforehand.
    pub fn new(urls: &str, register: bool) -> Result<Self, FormatError> {
        let mut urls = urls.split(',').map(str::trim).filter(|url| !url.is_empty());
        let first = urls.next().ok_or_else(|| FormatError::Registry {
            reason: "no schema registry URL given".to_owned(),
            retriable: false,
        })?;
        let mut builder = SrSettings::new_builder(first.to_owned());
        for url in urls {
            builder.add_url(url.to_owned());
        }
        let settings = builder.build().map_err(registry_error)?;
        Ok(Self::with_settings(settings, register))
    }

    /// A client with settings built by the caller (authentication, headers, proxy, timeout).
    pub fn with_settings(settings: SrSettings, register: bool) -> Self {
        ConfluentRegistry {
            settings,
            register,
            schemas: RwLock::new(HashMap::new()),
            ids: RwLock::new(HashMap::new()),
        }
    }

    /// Fetches and parses the schema registered under `id`, with the schemas it references.
    fn fetch(&self, id: u32) -> Result<AvroSchema, FormatError> {
        let registered = get_schema_by_id(id, &self.settings).map_err(|error| {
            if is_not_found(&error) {
                FormatError::UnknownSchemaId { id }
            } else {
                registry_error(error)
            }
        })?;
        // A record naming a schema Eddy cannot use is that record's problem: dead-letter it.
        let unusable = |reason: String| FormatError::InvalidAvro {
            reason: format!("schema id {id}: {reason}"),
        };
        if registered.schema_type != SchemaType::Avro {
            let kind = &registered.schema_type;
            return Err(unusable(format!("the writer schema is {kind:?}, not Avro")));
        }
        let mut references = Vec::new();
        self.fetch_references(&registered.references, &mut HashSet::new(), &mut references)?;
        AvroSchema::parse_with_references(&registered.schema, &references, &format!("id {id}"))
            .map_err(|error| unusable(error.to_string()))
    }

    /// Appends the JSON of `references`, and of theirs, dependencies first.
    fn fetch_references(
        &self,
        references: &[RegisteredReference],
        seen: &mut HashSet<(String, u32)>,
        out: &mut Vec<String>,
    ) -> Result<(), FormatError> {
        for reference in references {
            if !seen.insert((reference.subject.clone(), reference.version)) {
                continue;
            }
            let registered =
                get_referenced_schema(&self.settings, reference).map_err(registry_error)?;
            self.fetch_references(&registered.references, seen, out)?;
            out.push(registered.schema);
        }
        Ok(())
    }
}

impl SchemaRegistry for ConfluentRegistry {
    fn schema(&self, id: u32) -> Result<Arc<AvroSchema>, FormatError> {
        if let Some(schema) = read(&self.schemas).get(&id) {
            return Ok(schema.clone());
        }
        // Fetched without holding the lock; two threads may both fetch an id once, harmlessly.
        let schema = Arc::new(self.fetch(id)?);
        write(&self.schemas).insert(id, schema.clone());
        Ok(schema)
    }

    fn id(&self, subject: &str, schema: &AvroSchema) -> Result<u32, FormatError> {
        let key = (subject.to_owned(), schema.json().to_owned());
        if let Some(id) = read(&self.ids).get(&key) {
            return Ok(*id);
        }
        let id = if self.register {
            let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.json().to_owned());
            post_schema(&self.settings, subject.to_owned(), supplied).map_err(registry_error)?.id
        } else {
            let body = serde_json::json!({ "schema": schema.json(), "schemaType": "AVRO" });
            let body = body.to_string();
            let found = perform_sr_call(&self.settings, SrCall::PostForVersion(subject, &body))
                .map_err(|error| {
                    if is_not_found(&error) {
                        FormatError::Registry {
                            reason: format!(
                                "schema {} is not registered under subject {subject}",
                                schema.name()
                            ),
                            retriable: false,
                        }
                    } else {
                        registry_error(error)
                    }
                })?;
            found.id.ok_or_else(|| FormatError::Registry {
                reason: format!("the registry's answer for subject {subject} has no id"),
                retriable: false,
            })?
        };
        write(&self.ids).insert(key, id);
        write(&self.schemas).entry(id).or_insert_with(|| Arc::new(schema.clone()));
        Ok(id)
    }
}

/// Whether the registry answered 404 (Confluent error codes 404xx: no such schema or subject).
fn is_not_found(error: &SRCError) -> bool {
    let code = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<RawError>())
        .map(|raw| raw.error_code);
    code.is_some_and(|code| code / 100 == 404) || error.error.contains("status 404")
}

/// The [`FormatError`] of a registry call that failed.
fn registry_error(error: SRCError) -> FormatError {
    let reason = match &error.cause {
        Some(cause) => format!("{}: {cause}", error.error),
        None => error.error.clone(),
    };
    FormatError::Registry { reason, retriable: error.retriable }
}

/// Reads a lock; a panic elsewhere while holding it leaves the cache itself consistent.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Writes a lock; see [`read`].
fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{AvroDecoder, AvroEncoder, dir_with_files};
    use crate::tempdir::TempDir;
    use crate::value::Value;

    const ADDRESS: &str = r#"{"type": "record", "name": "Address", "namespace": "eddy.test",
      "fields": [{"name": "city", "type": "string"}]}"#;

    /// Uses `Address` from another file, by short and by full name.
    const CUSTOMER: &str = r#"{"type": "record", "name": "Customer", "namespace": "eddy.test",
      "fields": [
        {"name": "name", "type": "string"},
        {"name": "home", "type": "Address"},
        {"name": "work", "type": ["null", "eddy.test.Address"], "default": null}
      ]}"#;

    fn directory() -> TempDir {
        dir_with_files(&[
            ("address.avsc", ADDRESS),
            ("customer.avsc", CUSTOMER),
            ("key.avsc", r#""string""#),
            ("notes.txt", "not a schema"),
        ])
    }

    fn customer() -> Value {
        Value::from([
            ("name", Value::from("Ada")),
            ("home", Value::from([("city", Value::from("London"))])),
            ("work", Value::from([("city", Value::from("Cambridge"))])),
        ])
    }

    #[test]
    fn offline_registry_serves_a_directory_with_cross_file_types() {
        let dir = directory();
        let registry = Arc::new(OfflineRegistry::open(dir.path()).unwrap());

        // Ids follow file name order; other extensions are ignored.
        assert_eq!(registry.schema(1).unwrap().name(), "eddy.test.Address");
        let customer_schema = registry.schema(2).unwrap();
        assert_eq!(customer_schema.name(), "eddy.test.Customer");
        assert_eq!(registry.schema(3).unwrap().name(), "string");
        assert!(matches!(registry.schema(0), Err(FormatError::UnknownSchemaId { id: 0 })));
        assert!(matches!(registry.schema(4), Err(FormatError::UnknownSchemaId { id: 4 })));

        // The customer schema carries Address inline, so it stands alone.
        assert!(customer_schema.json().contains("\"city\""), "{}", customer_schema.json());
        AvroSchema::parse(customer_schema.json()).unwrap();

        let encoder =
            AvroEncoder::new(registry.as_ref(), "customers-value", (*customer_schema).clone())
                .unwrap();
        assert_eq!(encoder.id(), 2);
        let bytes = encoder.encode(&customer()).unwrap();
        assert_eq!(bytes[..5], [0, 0, 0, 0, 2]);
        let decoder = AvroDecoder::new(registry.clone(), None);
        assert_eq!(decoder.decode(&bytes).unwrap(), customer());

        let key = AvroEncoder::new(
            registry.as_ref(),
            "customers-key",
            (*registry.schema(3).unwrap()).clone(),
        )
        .unwrap();
        assert_eq!(
            decoder.decode(&key.encode(&Value::from("c-1")).unwrap()).unwrap(),
            Value::from("c-1")
        );
    }

    #[test]
    fn offline_registry_adds_unknown_schemas_once() {
        let registry = OfflineRegistry::open(directory().path()).unwrap();
        let extra =
            AvroSchema::parse(r#"{"type": "enum", "name": "E", "symbols": ["A"]}"#).unwrap();
        assert_eq!(registry.id("any", &extra).unwrap(), 4);
        assert_eq!(registry.id("other", &extra).unwrap(), 4);
        assert_eq!(registry.schema(4).unwrap().name(), "E");
        let address = AvroSchema::parse(ADDRESS).unwrap();
        assert_eq!(registry.id("addresses-value", &address).unwrap(), 1);
    }

    #[test]
    fn load_dir_reports_bad_files() {
        let missing = std::env::temp_dir().join("eddy-format-no-such-dir");
        let error = OfflineRegistry::open(&missing).unwrap_err();
        assert!(matches!(error, FormatError::Io { .. }), "{error}");
        assert!(!error.is_bad_record());

        let not_json = dir_with_files(&[("broken.avsc", "{ not json")]);
        let error = load_dir(not_json.path()).unwrap_err();
        assert!(
            matches!(&error, FormatError::InvalidSchema { source_name, .. } if source_name == "broken.avsc"),
            "{error}"
        );

        let unknown_type = dir_with_files(&[(
            "a.avsc",
            r#"{"type": "record", "name": "A", "fields": [{"name": "b", "type": "Missing"}]}"#,
        )]);
        let error = load_dir(unknown_type.path()).unwrap_err();
        assert_eq!(error.kind(), "invalid-schema");
        assert!(!error.is_bad_record());
    }

    #[test]
    fn the_repository_schemas_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("avro");
        let schemas = load_dir(&dir).unwrap();
        assert!(!schemas.is_empty());
        for (file, schema) in &schemas {
            assert!(file.ends_with(".avsc"));
            AvroSchema::parse(schema.json()).unwrap();
        }
    }

    #[test]
    fn an_unreachable_registry_is_a_retriable_error_not_a_panic() {
        // Nothing listens on the discard port; the call fails fast with "connection refused".
        let registry = ConfluentRegistry::new("http://127.0.0.1:9", true).unwrap();
        let error = registry.schema(1).unwrap_err();
        assert!(matches!(error, FormatError::Registry { retriable: true, .. }), "{error}");
        assert_eq!(error.kind(), "registry");
        assert!(!error.is_bad_record());

        let error = ConfluentRegistry::new(" , ", true).err().unwrap();
        assert!(matches!(error, FormatError::Registry { retriable: false, .. }), "{error}");
    }

    #[test]
    fn registry_404_means_not_found() {
        let not_found = SRCError::new(
            "HTTP request to schema registry failed with status 404 Not Found",
            None,
            false,
        );
        assert!(is_not_found(&not_found));
        let refused = SRCError::new("http call to schema registry failed", None, true);
        assert!(!is_not_found(&refused));
        assert!(matches!(registry_error(refused), FormatError::Registry { retriable: true, .. }));
    }
}
