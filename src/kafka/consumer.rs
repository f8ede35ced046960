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

/// Told of partitions that this member gains or loses. All run on the polling thread, inside
/// [`GroupConsumer::poll`]; they must return promptly (well within the session timeout).
pub trait RebalanceListener: Send + Sync {
    /// Partitions newly assigned to this member (with cooperative rebalancing: only the new ones).
    /// With [`ConsumerOptions::pause_assigned`] they arrive paused.
    fn assigned(&self, member: &Member<'_>, partitions: &[TopicPartition]) {
        let _ = (member, partitions);
    }
    /// Partitions about to be taken from this member: it still owns them until this returns,
    /// so this is the moment to commit their work.
    fn revoked(&self, member: &Member<'_>, partitions: &[TopicPartition]) {
        let _ = (member, partitions);
    }
    /// Partitions already lost (the group moved them while this member was unreachable):
    /// another member may own them now, so their uncommitted work must be dropped, not
    /// committed. By default treated as [`RebalanceListener::revoked`].
    fn lost(&self, member: &Member<'_>, partitions: &[TopicPartition]) {
        self.revoked(member, partitions);
    }
}

/// A listener that ignores rebalances.
struct NoListener;
impl RebalanceListener for NoListener {}

struct GroupContext {
    listener: Arc<dyn RebalanceListener>,
    pause_assigned: bool,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let member = Member { inner: consumer };
            if consumer.assignment_lost() {
                self.listener.lost(&member, &partitions_of(list));
            } else {
                self.listener.revoked(&member, &partitions_of(list));
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                if self.pause_assigned
                    && let Err(error) = consumer.pause(list)
                {
                    tracing::warn!(%error, "Cannot pause newly assigned partitions.");
                }
                self.listener.assigned(&Member { inner: consumer }, &partitions_of(list));
            }
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

/// An owned copy of a record read from Kafka.
fn record_of(message: &rdkafka::message::BorrowedMessage<'_>) -> ConsumerRecord {
    ConsumerRecord {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers: owned_headers(message.headers()),
        timestamp: message.timestamp().to_millis(),
    }
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
    /// Deliver newly assigned partitions paused, so that nothing is read from them until the
    /// caller has prepared (restored) them and called [`GroupConsumer::resume_at`].
    pub pause_assigned: bool,
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
            pause_assigned: false,
        }
    }
}

/// A group member's identity in the group, as a transactional producer needs it
/// ([`super::Producer::send_offsets`]).
pub struct GroupMetadata(pub(super) rdkafka::consumer::ConsumerGroupMetadata);

/// What a member can do to its assignment, from the polling loop or inside a rebalance callback.
pub struct Member<'a> {
    inner: &'a BaseConsumer<GroupContext>,
}

impl Member<'_> {
    /// Starts reading an assigned (paused) partition at `offset`, or where the group's committed
    /// offset (else the earliest record) says when `offset` is `None`.
    pub fn resume_at(&self, tp: &TopicPartition, offset: Option<i64>) -> Result<()> {
        if let Some(offset) = offset {
            self.inner
                .seek(&tp.topic, tp.partition, Offset::Offset(offset), super::REQUEST_TIMEOUT)
                .map_err(Error::kafka(format!("cannot move {tp} to offset {offset}")))?;
        }
        let mut list = TopicPartitionList::new();
        list.add_partition(&tp.topic, tp.partition);
        self.inner.resume(&list).map_err(Error::kafka(format!("cannot resume {tp}")))
    }

    /// Stops reading an assigned partition until [`GroupConsumer::resume_at`].
    pub fn pause(&self, tp: &TopicPartition) -> Result<()> {
        let mut list = TopicPartitionList::new();
        list.add_partition(&tp.topic, tp.partition);
        self.inner.pause(&list).map_err(Error::kafka(format!("cannot pause {tp}")))
    }

    /// The member's group metadata, which a transactional producer sends with its offsets so
    /// that the broker fences zombies of this member.
    pub fn group_metadata(&self) -> Option<GroupMetadata> {
        self.inner.group_metadata().map(GroupMetadata)
    }

    /// Commits, synchronously, the offset of the next record to read for each partition.
    pub fn commit(&self, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        let list = offset_list(offsets)?;
        self.inner.commit(&list, CommitMode::Sync).map_err(Error::kafka("cannot commit offsets"))
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
        let context = GroupContext {
            listener: listener.unwrap_or_else(|| Arc::new(NoListener)),
            pause_assigned: options.pause_assigned,
        };
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
            Some(Ok(message)) => Ok(Some(record_of(&message))),
        }
    }

    /// The member, for the calls a rebalance listener may also make.
    pub fn member(&self) -> Member<'_> {
        Member { inner: &self.inner }
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
        self.member().commit(offsets)
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

/// Reads single partitions from a known offset to their end, outside any group: how a task
/// restores its stores from changelog topics.
pub struct PartitionReader {
    inner: BaseConsumer<ReaderContext>,
    reading: Option<TopicPartition>,
}

/// Reaching a partition's end is what a reader waits for, not an error worth logging.
struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let eof = rdkafka::error::RDKafkaErrorCode::PartitionEOF;
        if error.rdkafka_error_code() != Some(eof) {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for ReaderContext {}

/// What [`PartitionReader::next_chunk`] read.
pub struct Chunk {
    /// Records, in offset order.
    pub records: Vec<ConsumerRecord>,
    /// Whether the partition's end (as of now) was reached.
    pub end: bool,
}

impl PartitionReader {
    /// A reader; `read_committed` hides records of open and aborted transactions (on brokers
    /// that isolate transactions).
    pub fn new(settings: &KafkaSettings, client_id: &str, read_committed: bool) -> Result<Self> {
        let isolation = if read_committed { "read_committed" } else { "read_uncommitted" };
        let inner = settings
            .client_config(&[
                ("group.id", client_id),
                ("client.id", client_id),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("enable.partition.eof", "true"),
                ("isolation.level", isolation),
                // The end of a partition is found by an empty fetch, so the broker should not
                // hold one long; but below ~50 ms some brokers (Nisshi) answer 50× slower.
                ("fetch.wait.max.ms", "100"),
            ])
            .create_with_context(ReaderContext)
            .map_err(Error::kafka("cannot create the Kafka reader"))?;
        Ok(Self { inner, reading: None })
    }

    /// Starts reading `tp` at `from` (the earliest record still held, if `from` is older),
    /// instead of whatever was read before.
    pub fn start(&mut self, tp: &TopicPartition, from: i64) -> Result<()> {
        let list = offset_list(&[(tp.clone(), from)])?;
        self.inner.assign(&list).map_err(Error::kafka(format!("cannot read {tp}")))?;
        self.reading = Some(tp.clone());
        Ok(())
    }

    /// Up to `max` records of the partition being read, waiting at most `timeout` for each.
    pub fn next_chunk(&mut self, max: usize, timeout: Duration) -> Result<Chunk> {
        let mut records = Vec::new();
        while records.len() < max {
            match self.inner.poll(timeout) {
                None => break,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {
                    return Ok(Chunk { records, end: true });
                }
                Some(Err(source)) => {
                    let tp = self.reading.as_ref().map(ToString::to_string).unwrap_or_default();
                    return Err(Error::Kafka { context: format!("cannot read {tp}"), source });
                }
                Some(Ok(message)) => records.push(record_of(&message)),
            }
        }
        Ok(Chunk { records, end: false })
    }

    /// The partition being read.
    pub fn reading(&self) -> Option<&TopicPartition> {
        self.reading.as_ref()
    }
}
