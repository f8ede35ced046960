//! The Kafka layer: the only module that names `rdkafka`.
//!
//! Everything Eddy does with a broker goes through the four types here: [`Admin`] (create and
//! describe topics), [`Producer`] (send records and learn of every delivery failure),
//! [`GroupConsumer`] (a consumer-group member with cooperative-sticky rebalancing and rebalance
//! callbacks) and [`KafkaSettings`] (how to reach the cluster). Keeping librdkafka behind this
//! boundary keeps its configuration keys, error codes and threading rules out of the runtime,
//! and lets the runtime stay synchronous: every call here blocks, none needs an async executor.

mod admin;
mod consumer;
mod producer;

pub use admin::{Admin, CreateOutcome, TopicDescription, TopicSpec};
pub use consumer::{
    Chunk, ConsumerOptions, GroupConsumer, GroupMetadata, Member, PartitionReader,
    RebalanceListener,
};
pub use producer::{Producer, TransactionError};

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

/// How long a metadata or admin request may take before it is reported as a failure.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A failure in the Kafka layer, with what Eddy was doing when it happened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A librdkafka call failed.
    #[error("{context}: {source}")]
    Kafka {
        /// What Eddy was doing.
        context: String,
        /// The client's error.
        #[source]
        source: KafkaError,
    },
    /// The broker answered, but refused the operation for one resource.
    #[error("{context}: the broker answered {code}")]
    Refused {
        /// What Eddy was doing, naming the resource.
        context: String,
        /// The broker's error code, as librdkafka names it.
        code: String,
    },
    /// Records were handed to the producer but the broker never acknowledged them.
    #[error("{failed} record(s) were not delivered; the first failure: {first}")]
    Delivery {
        /// How many records failed since the last flush.
        failed: u64,
        /// The first failure, as librdkafka described it.
        first: String,
    },
    /// A Kafka client setting is malformed.
    #[error("{0}")]
    Settings(String),
}

impl Error {
    fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> Error {
        let context = context.into();
        move |source| Error::Kafka { context, source }
    }
}

/// Result of a Kafka-layer call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A partition of a topic: the unit that a task owns and a consumer is assigned.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// The topic's name.
    pub topic: String,
    /// The partition number, from 0.
    pub partition: i32,
}

impl TopicPartition {
    /// A partition of `topic`.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self { topic: topic.into(), partition }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// One record header: a name and an optional value (Kafka allows a null value).
pub type Header = (String, Option<Vec<u8>>);

/// A record to send. `partition: None` lets the producer's partitioner choose from the key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// The topic to send to.
    pub topic: String,
    /// A fixed partition, or `None` to partition by key.
    pub partition: Option<i32>,
    /// The key bytes; `None` is a null key.
    pub key: Option<Vec<u8>>,
    /// The value bytes; `None` is a null value (a tombstone on a compacted topic).
    pub value: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// The record timestamp in milliseconds since the epoch; `None` lets the producer stamp it.
    pub timestamp: Option<i64>,
}

/// A record read from a partition, with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic it was read from.
    pub topic: String,
    /// The partition it was read from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
    /// The key bytes; `None` is a null key.
    pub key: Option<Vec<u8>>,
    /// The value bytes; `None` is a null value.
    pub value: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// The record timestamp in milliseconds since the epoch, when the broker carried one.
    pub timestamp: Option<i64>,
}

/// How to reach the Kafka cluster: bootstrap servers plus any librdkafka client property
/// (`security.protocol`, `sasl.mechanism`, `sasl.username`, `ssl.ca.location`, …).
///
/// The properties are passed through unchanged to every client Eddy creates, so whatever
/// librdkafka supports for authentication and encryption works without Eddy knowing of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSettings {
    /// `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    /// Extra librdkafka properties, applied after Eddy's defaults so that they win.
    pub properties: BTreeMap<String, String>,
}

impl KafkaSettings {
    /// Settings with only the bootstrap servers.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self { bootstrap_servers: bootstrap_servers.into(), properties: BTreeMap::new() }
    }

    /// Adds one `key=value` property, as given on a command line.
    pub fn with_property_arg(mut self, arg: &str) -> Result<Self> {
        let (key, value) = arg.split_once('=').ok_or_else(|| {
            Error::Settings(format!(
                "Kafka property '{arg}' has no '=': write it as key=value, e.g. security.protocol=SASL_SSL"
            ))
        })?;
        self.properties.insert(key.trim().to_owned(), value.trim().to_owned());
        Ok(self)
    }

    /// Adds the properties of a Java-style `.properties` file (`key=value` lines, `#` comments),
    /// the format Kafka's own tools read, so one client file serves both.
    pub fn with_properties_file(mut self, path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Settings(format!("cannot read Kafka properties file {}: {e}", path.display()))
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let (key, value) = line.split_once(['=', ':']).ok_or_else(|| {
                Error::Settings(format!("{}:{}: '{line}' is not key=value", path.display(), n + 1))
            })?;
            self.properties.insert(key.trim().to_owned(), value.trim().to_owned());
        }
        Ok(self)
    }

    /// A client configuration with the bootstrap servers, `defaults`, then the user's properties.
    fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

/// Maps librdkafka headers to owned [`Header`]s.
fn owned_headers<H: rdkafka::message::Headers>(headers: Option<&H>) -> Vec<Header> {
    headers
        .map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect())
        .unwrap_or_default()
}
