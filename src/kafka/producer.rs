//! Sending records: an idempotent producer whose every delivery failure is counted and reported
//! by the next [`Producer::flush`], so a caller never believes a batch landed when part of it
//! did not.

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
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.failed.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut first) = self.first.lock() {
                first.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// An idempotent Kafka producer (`enable.idempotence=true`, `acks=all`).
pub struct Producer {
    inner: ThreadedProducer<DeliveryContext>,
}

impl Producer {
    /// Creates a producer; `client_id` names it in broker logs and metrics.
    pub fn new(settings: &KafkaSettings, client_id: &str) -> Result<Self> {
        let inner = settings
            .client_config(&[
                ("client.id", client_id),
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("linger.ms", "5"),
                ("compression.type", "lz4"),
            ])
            .create_with_context(DeliveryContext::default())
            .map_err(Error::kafka("cannot create the Kafka producer"))?;
        Ok(Self { inner })
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
