//! The records that make task state exactly-once on any Kafka-protocol broker, and the rule
//! that decides which changelog records a restore may apply.
//!
//! A task writes in *incarnations*: each time it starts (on assignment, after a restart, after
//! any failed commit) it takes the next incarnation number and writes a **fence** to its
//! partition of the sub-topology's commits topic, naming the last valid batch it continues
//! from (its *base*). Within an incarnation, batches are numbered 1, 2, … without gaps: every
//! changelog record carries its batch id (incarnation, number) in a header, and each batch is
//! closed by a **marker** (key `marker/<incarnation>`, so compaction keeps the latest per
//! incarnation) carrying the input offsets and stream time the batch ends at.
//!
//! The valid history is a chain read backwards from the newest fence: incarnation J is valid up
//! to its latest marker, and its fence's base says up to which batch the incarnation before it
//! is valid, and so on. Whatever else is in the changelog — records of a batch that crashed
//! before its marker, or of a zombie that kept writing after a newer incarnation fenced it — is
//! not in the chain and is never applied, wherever it sits in the log and whatever compaction
//! kept. Because any failure ends an incarnation, a batch number is never reused, so a marker
//! closing batch n also closes every batch before it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// Header carrying a changelog record's batch id (16 bytes: incarnation, number, big-endian).
pub const BATCH_HEADER: &str = "eddy.batch";

/// One batch of one task: its incarnation and its number within it (from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BatchId {
    /// The incarnation that wrote it.
    pub incarnation: u64,
    /// Its number in the incarnation (0 = before the first batch).
    pub number: u64,
}

impl BatchId {
    /// The header value for this batch.
    pub fn to_header(self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(16);
        bytes.extend_from_slice(&self.incarnation.to_be_bytes());
        bytes.extend_from_slice(&self.number.to_be_bytes());
        bytes
    }

    /// A batch id from its header value.
    pub fn from_header(bytes: &[u8]) -> Option<BatchId> {
        let incarnation = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let number = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
        (bytes.len() == 16).then_some(BatchId { incarnation, number })
    }
}

/// Where a task stands after a batch: what it has read and its stream time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The batch this position is the end of (`None` before the task's first batch ever).
    pub batch: Option<BatchId>,
    /// The next offset to read, per input topic (the task's partition of each).
    pub inputs: BTreeMap<String, i64>,
    /// Stream time after the batch.
    pub stream_time: i64,
}

/// A commit record: a fence opening an incarnation, or a marker closing a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CommitRecord {
    /// Incarnation `incarnation` starts from `base`, written by `instance`.
    Fence {
        /// The new incarnation.
        incarnation: u64,
        /// The last valid batch it continues from, and the position after it.
        base: Position,
        /// The instance that opened it (for people reading the topic).
        instance: String,
    },
    /// `position.batch` is complete.
    Marker {
        /// The position after the batch.
        position: Position,
    },
}

impl CommitRecord {
    /// The record's key in the commits topic: one per fence, one per incarnation's markers.
    pub fn key(&self) -> Vec<u8> {
        match self {
            CommitRecord::Fence { incarnation, .. } => format!("fence/{incarnation:020}"),
            CommitRecord::Marker { position } => {
                let incarnation = position.batch.map_or(0, |b| b.incarnation);
                format!("marker/{incarnation:020}")
            }
        }
        .into_bytes()
    }

    /// The record's value.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain data to JSON cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A record from its value; `None` for anything else (a foreign record is ignored).
    pub fn from_bytes(bytes: &[u8]) -> Option<CommitRecord> {
        serde_json::from_slice(bytes).ok()
    }
}

/// What a task records in RocksDB with each commit, in the same atomic write as its state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalMeta {
    /// The position the local state is at.
    pub position: Position,
    /// The next offset of each changelog partition after the last batch written (topic → next
    /// offset), where a restart on this instance starts reading.
    pub changelogs: BTreeMap<String, i64>,
}

impl LocalMeta {
    /// The meta's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Meta from its bytes; `None` when absent or unreadable (the state is then not trusted).
    pub fn from_bytes(bytes: &[u8]) -> Option<LocalMeta> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The commit records of one task partition, as read from the commits topic.
#[derive(Debug, Default)]
pub struct Commits {
    fences: BTreeMap<u64, Position>,
    /// The latest marker per incarnation.
    markers: HashMap<u64, Position>,
}

impl Commits {
    /// Adds a record read from the commits topic (in log order).
    pub fn add(&mut self, record: CommitRecord) {
        match record {
            CommitRecord::Fence { incarnation, base, .. } => {
                self.fences.insert(incarnation, base);
            }
            CommitRecord::Marker { position } => {
                if let Some(batch) = position.batch {
                    let latest = self.markers.entry(batch.incarnation).or_default();
                    if latest.batch.is_none_or(|b| b.number < batch.number) {
                        *latest = position;
                    }
                }
            }
        }
    }

    /// The valid history: see the module docs.
    pub fn chain(&self) -> Chain {
        let newest = self.fences.keys().chain(self.markers.keys()).max().copied().unwrap_or(0);
        let mut limits = BTreeMap::new();
        let mut end = Position::default();
        if let Some((&last, base)) = self.fences.iter().next_back() {
            end = match self.markers.get(&last) {
                Some(marker) => marker.clone(),
                None => base.clone(),
            };
            if let Some(batch) = end.batch {
                limits.insert(batch.incarnation, batch.number);
            }
            let (mut current, mut base) = (last, Some(base));
            while let Some(Position { batch: Some(batch), .. }) = base {
                // A base names an older incarnation; anything else is not a history of ours.
                if batch.incarnation >= current {
                    break;
                }
                limits.entry(batch.incarnation).or_insert(batch.number);
                current = batch.incarnation;
                base = self.fences.get(&batch.incarnation);
            }
        }
        Chain { limits, end, next_incarnation: newest + 1 }
    }
}

/// The valid history of a task partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// The last valid batch number per incarnation.
    limits: BTreeMap<u64, u64>,
    /// Where the history ends: the position a task resumes from.
    pub end: Position,
    /// The incarnation a task starting now takes.
    pub next_incarnation: u64,
}

impl Chain {
    /// Whether records of `batch` belong to the valid history.
    pub fn contains(&self, batch: BatchId) -> bool {
        batch.number >= 1 && self.limits.get(&batch.incarnation).is_some_and(|&l| batch.number <= l)
    }

    /// Whether a local state at `position` is part of the valid history (so it can be kept and
    /// only the changelog after it applied).
    pub fn includes(&self, position: &Position) -> bool {
        match position.batch {
            None => self.limits.is_empty(),
            Some(batch) => self.contains(batch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(incarnation: u64, number: u64) -> BatchId {
        BatchId { incarnation, number }
    }

    fn at(incarnation: u64, number: u64, offset: i64) -> Position {
        Position {
            batch: Some(batch(incarnation, number)),
            inputs: BTreeMap::from([("in".to_owned(), offset)]),
            stream_time: offset,
        }
    }

    fn fence(incarnation: u64, base: Position) -> CommitRecord {
        CommitRecord::Fence { incarnation, base, instance: "i".into() }
    }

    fn marker(incarnation: u64, number: u64, offset: i64) -> CommitRecord {
        CommitRecord::Marker { position: at(incarnation, number, offset) }
    }

    fn chain(records: Vec<CommitRecord>) -> Chain {
        let mut commits = Commits::default();
        for record in records {
            // Every record survives a round trip through its bytes.
            commits.add(CommitRecord::from_bytes(&record.to_bytes()).expect("round trip"));
        }
        commits.chain()
    }

    #[test]
    fn an_empty_topic_starts_the_first_incarnation_from_nothing() {
        let chain = chain(vec![]);
        assert_eq!(chain.next_incarnation, 1);
        assert_eq!(chain.end, Position::default());
        assert!(!chain.contains(batch(1, 1)));
        assert!(chain.includes(&Position::default()));
    }

    #[test]
    fn batches_up_to_the_latest_marker_are_valid_and_an_unclosed_one_is_not() {
        let chain = chain(vec![fence(1, Position::default()), marker(1, 1, 10), marker(1, 2, 20)]);
        assert!(chain.contains(batch(1, 1)) && chain.contains(batch(1, 2)));
        assert!(!chain.contains(batch(1, 3)), "crashed before its marker");
        assert_eq!(chain.end, at(1, 2, 20));
        assert_eq!(chain.next_incarnation, 2);
    }

    #[test]
    fn a_newer_fence_cuts_off_what_a_zombie_wrote_after_its_base() {
        // Incarnation 1 closed batch 2; incarnation 2 started from there; then the zombie of 1
        // closed batch 3, which must not count, although its marker is the latest record.
        let chain = chain(vec![
            fence(1, Position::default()),
            marker(1, 2, 20),
            fence(2, at(1, 2, 20)),
            marker(2, 1, 25),
            marker(1, 3, 30),
        ]);
        assert!(chain.contains(batch(1, 2)));
        assert!(!chain.contains(batch(1, 3)));
        assert!(chain.contains(batch(2, 1)));
        assert_eq!(chain.end, at(2, 1, 25));
        assert_eq!(chain.next_incarnation, 3);
    }

    #[test]
    fn a_fence_without_markers_resumes_from_its_base() {
        let chain =
            chain(vec![fence(1, Position::default()), marker(1, 4, 40), fence(2, at(1, 4, 40))]);
        assert_eq!(chain.end, at(1, 4, 40));
        assert!(chain.contains(batch(1, 4)));
        assert!(chain.includes(&at(1, 4, 40)));
        assert!(!chain.includes(&at(1, 5, 50)), "local state ahead of the history is not trusted");
    }

    #[test]
    fn bases_chain_back_through_several_incarnations() {
        let chain = chain(vec![
            fence(1, Position::default()),
            marker(1, 3, 30),
            fence(2, at(1, 2, 20)), // incarnation 2 restored before batch 3's marker landed
            marker(2, 2, 40),
            fence(3, at(2, 2, 40)),
            marker(3, 1, 50),
        ]);
        assert!(chain.contains(batch(1, 2)) && !chain.contains(batch(1, 3)));
        assert!(chain.contains(batch(2, 2)) && chain.contains(batch(3, 1)));
        assert_eq!(chain.end, at(3, 1, 50));
    }

    #[test]
    fn batch_headers_round_trip_and_reject_other_lengths() {
        let id = batch(7, 9);
        assert_eq!(BatchId::from_header(&id.to_header()), Some(id));
        assert_eq!(BatchId::from_header(&[0; 15]), None);
        assert_eq!(BatchId::from_header(&[0; 17]), None);
    }
}
