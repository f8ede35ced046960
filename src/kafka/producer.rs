//! Sending records: an idempotent (optionally transactional) producer whose every delivery
//! failure is counted and reported by the next [`Producer::flush`], so a caller never believes a
//! batch landed when part of it did not. It also remembers the offset of the last record
//! delivered to each partition, which is how a task knows where its changelog ends.
//!
//! Keys are partitioned with murmur2, like the Java clients, so that a key's partition is the
//! same whichever producer (Eddy, Kafka Streams, a Java service) wrote it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as RdHeader, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};

use super::{Error, KafkaSettings, ProducerRecord, Result};

/// Counts delivery failures between flushes and keeps the first one's description.
#[derive(Default)]
struct DeliveryContext {
    failed: AtomicU64,
    first: Mutex<Option<String>>,
    /// The offset of the last record delivered, per (topic, partition), since the last take.
    delivered: Mutex<HashMap<(String, i32), i64>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(message) = result {
            use rdkafka::message::Message;
            if let Ok(mut delivered) = self.delivered.lock() {
                let offset = delivered
                    .entry((message.topic().to_owned(), message.partition()))
                    .or_insert(message.offset());
                *offset = (*offset).max(message.offset());
            }
        }
        if let Err((error, _)) = result {
            self.failed.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut first) = self.first.lock() {
                first.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// An idempotent Kafka producer (`enable.idempotence=true`, `acks=all`), transactional when
/// created with [`Producer::transactional`].
pub struct Producer {
    inner: ThreadedProducer<DeliveryContext>,
}

/// How a transaction call failed, by what the caller must do about it.
#[derive(Debug, thiserror::Error)]
pub enum TransactionError {
    /// The transaction must be aborted, then the work retried.
    #[error("{0} (the transaction must be aborted)")]
    Abortable(Error),
    /// The outcome is not known (e.g. a commit timed out): treat it as failed, never as done.
    #[error("{0} (outcome unknown)")]
    Unknown(Error),
    /// The producer is fenced or broken: it must be closed and a new one created.
    #[error("{0} (the producer is unusable)")]
    Fatal(Error),
}

impl Producer {
    /// Creates a producer; `client_id` names it in broker logs and metrics.
    pub fn new(settings: &KafkaSettings, client_id: &str) -> Result<Self> {
        Self::create(settings, client_id, &[])
    }

    fn create(settings: &KafkaSettings, client_id: &str, extra: &[(&str, &str)]) -> Result<Self> {
        let mut defaults = vec![
            ("client.id", client_id),
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
            ("compression.type", "lz4"),
            ("partitioner", "murmur2_random"),
        ];
        defaults.extend_from_slice(extra);
        let inner = settings
            .client_config(&defaults)
            .create_with_context(DeliveryContext::default())
            .map_err(Error::kafka("cannot create the Kafka producer"))?;
        Ok(Self { inner })
    }

    /// Creates a producer with `transactional_id` and a short delivery timeout (so a record
    /// cannot land long after its sender gave up on it), and initialises transactions, which
    /// fences any earlier producer with the same id.
    pub fn transactional(
        settings: &KafkaSettings,
        client_id: &str,
        transactional_id: Option<&str>,
        delivery_timeout: Duration,
    ) -> Result<Self> {
        let timeout = delivery_timeout.as_millis().to_string();
        let mut extra = vec![("message.timeout.ms", timeout.as_str())];
        if let Some(id) = transactional_id {
            extra.push(("transactional.id", id));
            extra.push(("transaction.timeout.ms", "60000"));
        }
        let producer = Self::create(settings, client_id, &extra)?;
        if transactional_id.is_some() {
            producer
                .inner
                .init_transactions(super::REQUEST_TIMEOUT)
                .map_err(Error::kafka("cannot initialise transactions"))?;
        }
        Ok(producer)
    }

    /// Begins a transaction.
    pub fn begin(&self) -> Result<(), TransactionError> {
        self.inner.begin_transaction().map_err(transaction_error("cannot begin a transaction"))
    }

    /// Adds the consumer offsets to the open transaction.
    pub fn send_offsets(
        &self,
        offsets: &[(super::TopicPartition, i64)],
        group: &super::GroupMetadata,
    ) -> Result<(), TransactionError> {
        let mut list = rdkafka::TopicPartitionList::new();
        for (tp, offset) in offsets {
            list.add_partition_offset(&tp.topic, tp.partition, rdkafka::Offset::Offset(*offset))
                .map_err(|source| {
                    TransactionError::Fatal(Error::Kafka {
                        context: format!("bad offset {offset} for {tp}"),
                        source,
                    })
                })?;
        }
        self.inner
            .send_offsets_to_transaction(&list, &group.0, super::REQUEST_TIMEOUT)
            .map_err(transaction_error("cannot add offsets to the transaction"))
    }

    /// Commits the open transaction.
    pub fn commit(&self) -> Result<(), TransactionError> {
        self.inner
            .commit_transaction(super::REQUEST_TIMEOUT)
            .map_err(transaction_error("cannot commit the transaction"))
    }

    /// Aborts the open transaction.
    pub fn abort(&self) -> Result<(), TransactionError> {
        self.inner
            .abort_transaction(super::REQUEST_TIMEOUT)
            .map_err(transaction_error("cannot abort the transaction"))
    }

    /// The offset of the last record delivered to each partition since the previous call.
    pub fn take_delivered(&self) -> HashMap<super::TopicPartition, i64> {
        let delivered = match self.inner.context().delivered.lock() {
            Ok(mut delivered) => std::mem::take(&mut *delivered),
            Err(_) => HashMap::new(),
        };
        delivered
            .into_iter()
            .map(|((topic, partition), offset)| {
                (super::TopicPartition { topic, partition }, offset)
            })
            .collect()
    }

    /// Queues one record for sending. When librdkafka's queue is full this waits for room
    /// rather than dropping the record.
    pub fn send(&self, record: &ProducerRecord) -> Result<()> {
        let headers = record.headers.iter().fold(OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(RdHeader { key, value: value.as_deref() })
        });
        let mut base: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&record.topic).headers(headers);
        if let Some(key) = &record.key {
            base = base.key(key.as_slice());
        }
        if let Some(value) = &record.value {
            base = base.payload(value.as_slice());
        }
        if let Some(partition) = record.partition {
            base = base.partition(partition);
        }
        if let Some(timestamp) = record.timestamp {
            base = base.timestamp(timestamp);
        }
        loop {
            match self.inner.send(base) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    base = returned;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((source, _)) => {
                    return Err(Error::Kafka {
                        context: format!("cannot send a record to '{}'", record.topic),
                        source,
                    });
                }
            }
        }
    }

    /// Waits until every queued record is acknowledged, then reports any that failed since the
    /// previous flush.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.inner.flush(timeout).map_err(Error::kafka("the producer did not drain in time"))?;
        let failed = self.inner.context().failed.swap(0, Ordering::SeqCst);
        if failed > 0 {
            let first = self
                .inner
                .context()
                .first
                .lock()
                .ok()
                .and_then(|mut first| first.take())
                .unwrap_or_default();
            return Err(Error::Delivery { failed, first });
        }
        Ok(())
    }
}

/// Classifies a transaction call's failure by what the caller must do.
fn transaction_error(context: &'static str) -> impl FnOnce(KafkaError) -> TransactionError {
    move |source| {
        let fatal = matches!(&source, KafkaError::Transaction(e) if e.is_fatal());
        let abortable = matches!(&source, KafkaError::Transaction(e) if e.txn_requires_abort());
        let error = Error::Kafka { context: context.to_owned(), source };
        if fatal {
            TransactionError::Fatal(error)
        } else if abortable {
            TransactionError::Abortable(error)
        } else {
            TransactionError::Unknown(error)
        }
    }
}
