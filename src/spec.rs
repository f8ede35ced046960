//! The serde mirror of a topology file: what the YAML says, faithfully, before any checking.
//!
//! Only the parts that the Kafka layer needs today are typed here (the application id, and the
//! topics of sources and sinks); operators and embedded tests are kept as raw YAML until the
//! topology compiler types them. Unknown keys are refused so a typo never goes unnoticed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// A topology file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySpec {
    /// The consumer group, and the prefix of every internal topic.
    pub application_id: String,
    /// Input topics, by name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceSpec>,
    /// Processing steps, by name (typed by the topology compiler).
    #[serde(default)]
    pub operators: BTreeMap<String, serde_yaml_ng::Value>,
    /// Output topics, by name.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkSpec>,
    /// Embedded test cases (run by the test driver).
    #[serde(default)]
    pub tests: Vec<serde_yaml_ng::Value>,
}

/// An input topic.
#[derive(Clone, Debug, Deserialize)]
pub struct SourceSpec {
    /// The topic to read.
    pub topic: String,
    /// Partitions to create the topic with when Eddy creates it (demo and tests).
    #[serde(default)]
    pub partitions: Option<i32>,
    /// Every other source setting, typed by the topology compiler.
    #[serde(flatten)]
    pub rest: BTreeMap<String, serde_yaml_ng::Value>,
}

/// An output topic.
#[derive(Clone, Debug, Deserialize)]
pub struct SinkSpec {
    /// The topic to write.
    pub topic: String,
    /// Partitions to create the topic with when Eddy creates it.
    #[serde(default)]
    pub partitions: Option<i32>,
    /// Every other sink setting, typed by the topology compiler.
    #[serde(flatten)]
    pub rest: BTreeMap<String, serde_yaml_ng::Value>,
}

/// A topology file that could not be read or parsed, naming the file and where in it.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SpecError {
    /// The file.
    pub path: String,
    /// What is wrong, with the YAML location when the parser knows it.
    pub message: String,
}

impl TopologySpec {
    /// Reads and parses a topology file.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let error = |message: String| SpecError { path: path.display().to_string(), message };
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
        serde_yaml_ng::from_str(&text).map_err(|e| error(e.to_string()))
    }

    /// Every topic the topology reads or writes, with the partitions it asks for, sorted by name.
    pub fn external_topics(&self) -> BTreeMap<&str, Option<i32>> {
        let sources = self.sources.values().map(|s| (s.topic.as_str(), s.partitions));
        let sinks = self.sinks.values().map(|s| (s.topic.as_str(), s.partitions));
        let mut topics = BTreeMap::new();
        for (topic, partitions) in sources.chain(sinks) {
            let entry = topics.entry(topic).or_insert(partitions);
            *entry = (*entry).max(partitions);
        }
        topics
    }
}
