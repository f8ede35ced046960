//! Reading as a consumer-group member: cooperative-sticky rebalancing, offsets committed only
//! when the caller says so, and rebalance callbacks delivered on the polling thread.
//!
//! Callbacks run inside [`GroupConsumer::poll`], on the caller's thread, before librdkafka
//! applies the change. That is what lets the runtime finish and commit a task's work before its
//! partition moves, with no locking between a poll loop and a callback thread.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{ConsumerRecord, Error, KafkaSettings, Result, TopicPartition, owned_headers};

/// Told of partitions that this member gains or loses. Both run on the polling thread, inside
/// [`GroupConsumer::poll`]; they must return promptly (well within the session timeout).
pub trait RebalanceListener: Send + Sync {
    /// Partitions newly assigned to this member (with cooperative rebalancing: only the new ones).
    fn assigned(&self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }
    /// Partitions about to be taken from this member, or already lost to another one.
    fn revoked(&self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }
}

/// A listener that ignores rebalances.
struct NoListener;
impl RebalanceListener for NoListener {}

struct GroupContext {
    listener: Arc<dyn RebalanceListener>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            self.listener.revoked(&partitions_of(list));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => self.listener.assigned(&partitions_of(list)),
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => {
                tracing::warn!(%error, "Rebalance failed; the group will retry.");
            }
        }
    }
}

fn partitions_of(list: &TopicPartitionList) -> Vec<TopicPartition> {
    list.elements().iter().map(|e| TopicPartition::new(e.topic(), e.partition())).collect()
}

fn offset_list(offsets: &[(TopicPartition, i64)]) -> Result<TopicPartitionList> {
    let mut list = TopicPartitionList::new();
    for (tp, offset) in offsets {
        list.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset))
            .map_err(Error::kafka(format!("bad offset {offset} for {tp}")))?;
    }
    Ok(list)
}

/// How a group member reads.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    /// The consumer group (Eddy uses the application id).
    pub group_id: String,
    /// Names this member in broker logs.
    pub client_id: String,
    /// Read only committed transactional records (`isolation.level=read_committed`).
    pub read_committed: bool,
    /// How long the group waits for a silent member before moving its partitions.
    pub session_timeout: Duration,
}

impl ConsumerOptions {
    /// Options for `group_id`, reading committed records, with a 10 s session timeout.
    pub fn new(group_id: impl Into<String>) -> Self {
        let group_id = group_id.into();
        Self {
            client_id: group_id.clone(),
            group_id,
            read_committed: true,
            session_timeout: Duration::from_secs(10),
        }
    }
}

/// A member of a consumer group. Offsets are never committed automatically.
pub struct GroupConsumer {
    inner: BaseConsumer<GroupContext>,
}

impl GroupConsumer {
    /// Creates a member that tells `listener` of rebalances.
    pub fn new(
        settings: &KafkaSettings,
        options: &ConsumerOptions,
        listener: Option<Arc<dyn RebalanceListener>>,
    ) -> Result<Self> {
        let session_ms = options.session_timeout.as_millis().to_string();
        let heartbeat_ms = (options.session_timeout.as_millis() / 5).max(100).to_string();
        let isolation = if options.read_committed { "read_committed" } else { "read_uncommitted" };
        let context = GroupContext { listener: listener.unwrap_or_else(|| Arc::new(NoListener)) };
        let inner = settings
            .client_config(&[
                ("group.id", &options.group_id),
                ("client.id", &options.client_id),
                ("partition.assignment.strategy", "cooperative-sticky"),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("isolation.level", isolation),
                ("session.timeout.ms", &session_ms),
                ("heartbeat.interval.ms", &heartbeat_ms),
            ])
            .create_with_context(context)
            .map_err(Error::kafka("cannot create the Kafka consumer"))?;
        Ok(Self { inner })
    }

    /// Joins the group for these topics; partitions arrive through later polls.
    pub fn subscribe(&self, topics: &[&str]) -> Result<()> {
        self.inner
            .subscribe(topics)
            .map_err(Error::kafka(format!("cannot subscribe to {topics:?}")))
    }

    /// Waits up to `timeout` for the next record. Rebalance callbacks run inside this call.
    pub fn poll(&self, timeout: Duration) -> Result<Option<ConsumerRecord>> {
        match self.inner.poll(timeout) {
            None => Ok(None),
            Some(Err(source)) => {
                Err(Error::Kafka { context: "cannot read from Kafka".into(), source })
            }
            Some(Ok(message)) => Ok(Some(ConsumerRecord {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().map(<[u8]>::to_vec),
                headers: owned_headers(message.headers()),
                timestamp: message.timestamp().to_millis(),
            })),
        }
    }

    /// Reads these partitions from these offsets, outside group management (no rebalancing).
    /// Used to read a changelog or check a topic from a known position.
    pub fn assign(&self, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        let list = offset_list(offsets)?;
        self.inner.assign(&list).map_err(Error::kafka("cannot assign partitions"))
    }

    /// The low and high watermarks of a partition: the first offset still held and the offset
    /// the next record will get.
    pub fn watermarks(&self, tp: &TopicPartition) -> Result<(i64, i64)> {
        self.inner
            .fetch_watermarks(&tp.topic, tp.partition, super::REQUEST_TIMEOUT)
            .map_err(Error::kafka(format!("cannot read the watermarks of {tp}")))
    }

    /// The partitions this member holds now.
    pub fn assignment(&self) -> Result<Vec<TopicPartition>> {
        let list = self.inner.assignment().map_err(Error::kafka("cannot read the assignment"))?;
        let mut partitions = partitions_of(&list);
        partitions.sort();
        Ok(partitions)
    }

    /// Commits, synchronously, the offset of the next record to read for each partition.
    pub fn commit(&self, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        let list = offset_list(offsets)?;
        self.inner.commit(&list, CommitMode::Sync).map_err(Error::kafka("cannot commit offsets"))
    }

    /// The group's committed offsets for these partitions (`None` where nothing is committed).
    pub fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, Option<i64>)>> {
        let mut list = TopicPartitionList::new();
        for tp in partitions {
            list.add_partition(&tp.topic, tp.partition);
        }
        let committed = self
            .inner
            .committed_offsets(list, super::REQUEST_TIMEOUT)
            .map_err(Error::kafka("cannot read committed offsets"))?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                };
                (TopicPartition::new(e.topic(), e.partition()), offset)
            })
            .collect())
    }

    /// Leaves the group: revocation callbacks run, and the group moves this member's partitions
    /// at once instead of waiting out the session timeout.
    pub fn close(self) {
        self.inner.unsubscribe();
        drop(self.inner);
    }
}
