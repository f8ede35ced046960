//! Topic administration: create topics with partitions and configs, describe them, delete them.
//!
//! librdkafka's admin calls return futures driven by its own background thread, so blocking on
//! them here needs no async runtime and keeps callers synchronous.

use std::collections::BTreeMap;

use futures::executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::{Error, KafkaSettings, REQUEST_TIMEOUT, Result};

/// A topic to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    /// The topic's name.
    pub name: String,
    /// How many partitions it has.
    pub partitions: i32,
    /// How many replicas each partition has.
    pub replication: i32,
    /// Topic configs such as `cleanup.policy=compact`.
    pub configs: BTreeMap<String, String>,
}

impl TopicSpec {
    /// A topic with `partitions` partitions, one replica and no configs.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self { name: name.into(), partitions, replication: 1, configs: BTreeMap::new() }
    }

    /// Adds a topic config.
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.configs.insert(key.to_owned(), value.to_owned());
        self
    }
}

/// What `create_topics` did with one topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The topic did not exist and now does.
    Created,
    /// The topic already existed; it was left as it was.
    AlreadyExists,
}

/// A topic as the cluster reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicDescription {
    /// The topic's name.
    pub name: String,
    /// How many partitions it has.
    pub partitions: i32,
    /// Every config the broker reports for it, defaults included.
    pub configs: BTreeMap<String, String>,
}

/// A Kafka admin client.
pub struct Admin {
    client: AdminClient<DefaultClientContext>,
}

impl Admin {
    /// Connects an admin client (connection happens lazily, on the first request).
    pub fn new(settings: &KafkaSettings) -> Result<Self> {
        let client = settings
            .client_config(&[])
            .create()
            .map_err(Error::kafka("cannot create the Kafka admin client"))?;
        Ok(Self { client })
    }

    fn options() -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(REQUEST_TIMEOUT))
            .operation_timeout(Some(REQUEST_TIMEOUT))
    }

    /// Creates every topic that does not exist yet; existing topics are reported, not changed.
    pub fn create_topics(&self, specs: &[TopicSpec]) -> Result<Vec<(String, CreateOutcome)>> {
        let new_topics: Vec<NewTopic<'_>> = specs
            .iter()
            .map(|spec| {
                spec.configs.iter().fold(
                    NewTopic::new(
                        &spec.name,
                        spec.partitions,
                        TopicReplication::Fixed(spec.replication),
                    ),
                    |topic, (key, value)| topic.set(key, value),
                )
            })
            .collect();
        let results = block_on(self.client.create_topics(&new_topics, &Self::options()))
            .map_err(Error::kafka("cannot create topics"))?;
        results
            .into_iter()
            .map(|result| match result {
                Ok(name) => Ok((name, CreateOutcome::Created)),
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    Ok((name, CreateOutcome::AlreadyExists))
                }
                Err((name, code)) => Err(Error::Refused {
                    context: format!("cannot create topic '{name}'"),
                    code: code.to_string(),
                }),
            })
            .collect()
    }

    /// Describes a topic: its partition count from metadata and its configs.
    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let context = || format!("cannot describe topic '{name}'");
        let metadata = self
            .client
            .inner()
            .fetch_metadata(Some(name), REQUEST_TIMEOUT)
            .map_err(Error::kafka(context()))?;
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| Error::Refused { context: context(), code: "no such topic".into() })?;
        if let Some(code) = topic.error() {
            return Err(Error::Refused {
                context: context(),
                code: RDKafkaErrorCode::from(code).to_string(),
            });
        }
        let partitions = topic.partitions().len() as i32;
        let resources = [ResourceSpecifier::Topic(name)];
        let results = block_on(self.client.describe_configs(&resources, &Self::options()))
            .map_err(Error::kafka(context()))?;
        let mut configs = BTreeMap::new();
        for result in results {
            let resource = result
                .map_err(|code| Error::Refused { context: context(), code: code.to_string() })?;
            for entry in resource.entries {
                if let Some(value) = entry.value {
                    configs.insert(entry.name, value);
                }
            }
        }
        Ok(TopicDescription { name: name.to_owned(), partitions, configs })
    }

    /// Deletes topics; a topic that does not exist is not an error.
    pub fn delete_topics(&self, names: &[&str]) -> Result<()> {
        let results = block_on(self.client.delete_topics(names, &Self::options()))
            .map_err(Error::kafka("cannot delete topics"))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((name, code)) => {
                    return Err(Error::Refused {
                        context: format!("cannot delete topic '{name}'"),
                        code: code.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Checks that the cluster answers a metadata request within `timeout`.
    pub fn ping(&self, timeout: std::time::Duration) -> Result<usize> {
        let metadata = self
            .client
            .inner()
            .fetch_metadata(None, timeout)
            .map_err(Error::kafka("the Kafka cluster did not answer a metadata request"))?;
        Ok(metadata.brokers().len())
    }
}
