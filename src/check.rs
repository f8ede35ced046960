//! `eddy check`: proves a cluster is usable for a topology before anything runs on it.
//!
//! It creates the topics the topology reads and writes (when missing), sends a few records with
//! keys, headers and timestamps to every partition of each, and reads them back from the offsets
//! they were written at. A mismatch or a missing record is an error, not a warning: a cluster
//! that cannot round-trip a record cannot run a pipeline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::kafka::{
    Admin, ConsumerOptions, ConsumerRecord, CreateOutcome, GroupConsumer, KafkaSettings, Producer,
    ProducerRecord, TopicPartition, TopicSpec,
};

/// The header that marks a check record, carrying the run's id.
pub const CHECK_HEADER: &str = "eddy-check-run";

/// What the check found for one topic.
#[derive(Clone, Debug)]
pub struct TopicCheck {
    /// The topic.
    pub topic: String,
    /// Whether the check created it.
    pub outcome: CreateOutcome,
    /// Its partition count as the cluster reports it.
    pub partitions: i32,
    /// Records sent and read back identical.
    pub round_tripped: usize,
}

/// A failed check.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The cluster refused or failed an operation.
    #[error(transparent)]
    Kafka(#[from] crate::kafka::Error),
    /// Records were sent but did not come back, or came back changed.
    #[error("topic '{topic}': {problem}")]
    Mismatch {
        /// The topic.
        topic: String,
        /// What went wrong.
        problem: String,
    },
}

/// Creates `topics` where missing and round-trips `per_partition` records through every
/// partition of each. `run_id` tells this run's records from any earlier run's.
pub fn check_topics(
    settings: &KafkaSettings,
    topics: &[TopicSpec],
    per_partition: usize,
    run_id: &str,
) -> Result<Vec<TopicCheck>, CheckError> {
    let admin = Admin::new(settings)?;
    let outcomes: BTreeMap<String, CreateOutcome> =
        admin.create_topics(topics)?.into_iter().collect();
    // The check's records are not transactional, so reading uncommitted changes nothing for
    // them; it also avoids the read_committed "latest offset" query that Nisshi's PostgreSQL
    // storage cannot answer on PostgreSQL 15.
    let options = ConsumerOptions {
        read_committed: false,
        ..ConsumerOptions::new(format!("eddy-check-{run_id}"))
    };
    let reader = GroupConsumer::new(settings, &options, None)?;
    let producer = Producer::new(settings, &format!("eddy-check-{run_id}"))?;

    let mut expected: BTreeMap<TopicPartition, Vec<ProducerRecord>> = BTreeMap::new();
    let mut start = Vec::new();
    let mut checks = Vec::new();
    for spec in topics {
        let partitions = admin.describe_topic(&spec.name)?.partitions;
        for partition in 0..partitions {
            let tp = TopicPartition::new(&spec.name, partition);
            start.push((tp.clone(), reader.watermarks(&tp)?.1));
            let records = (0..per_partition)
                .map(|n| check_record(&spec.name, partition, n, run_id))
                .collect::<Vec<_>>();
            for record in &records {
                producer.send(record)?;
            }
            expected.insert(tp, records);
        }
        let outcome = outcomes.get(&spec.name).copied().unwrap_or(CreateOutcome::AlreadyExists);
        checks.push(TopicCheck { topic: spec.name.clone(), outcome, partitions, round_tripped: 0 });
    }
    producer.flush(Duration::from_secs(30))?;

    reader.assign(&start)?;
    let mut received: BTreeMap<TopicPartition, Vec<ConsumerRecord>> = BTreeMap::new();
    let wanted: usize = expected.values().map(Vec::len).sum();
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got < wanted && Instant::now() < deadline {
        let Some(record) = reader.poll(Duration::from_millis(200))? else { continue };
        let ours = record
            .headers
            .iter()
            .any(|(k, v)| k == CHECK_HEADER && v.as_deref() == Some(run_id.as_bytes()));
        if ours {
            got += 1;
            received
                .entry(TopicPartition::new(&record.topic, record.partition))
                .or_default()
                .push(record);
        }
    }

    for check in &mut checks {
        for (tp, sent) in expected.iter().filter(|(tp, _)| tp.topic == check.topic) {
            let back = received.remove(tp).unwrap_or_default();
            compare(tp, sent, &back)?;
            check.round_tripped += back.len();
        }
    }
    Ok(checks)
}

fn check_record(topic: &str, partition: i32, n: usize, run_id: &str) -> ProducerRecord {
    ProducerRecord {
        topic: topic.to_owned(),
        partition: Some(partition),
        key: Some(format!("check-{partition}-{n}").into_bytes()),
        value: Some(format!("{{\"check\":{n}}}").into_bytes()),
        headers: vec![(CHECK_HEADER.to_owned(), Some(run_id.as_bytes().to_vec()))],
        timestamp: Some(1_700_000_000_000 + n as i64),
    }
}

fn compare(
    tp: &TopicPartition,
    sent: &[ProducerRecord],
    back: &[ConsumerRecord],
) -> Result<(), CheckError> {
    let mismatch = |problem: String| CheckError::Mismatch { topic: tp.topic.clone(), problem };
    if back.len() != sent.len() {
        return Err(mismatch(format!(
            "partition {}: sent {} records, read back {} within 30 s",
            tp.partition,
            sent.len(),
            back.len()
        )));
    }
    for (s, b) in sent.iter().zip(back) {
        if s.key != b.key
            || s.value != b.value
            || s.headers != b.headers
            || s.timestamp != b.timestamp
        {
            return Err(mismatch(format!(
                "partition {} offset {}: the record read back differs from the one sent",
                tp.partition, b.offset
            )));
        }
    }
    Ok(())
}
