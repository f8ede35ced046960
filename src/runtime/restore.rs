//! Bringing a task's stores to the end of its valid history before it processes.
//!
//! The numbered steps (see `runtime/protocol.rs` for the records involved):
//!
//! 1. Read the task's partition of the commits topic to its end and compute the valid chain.
//! 2. If the local state's last commit is in the chain, keep it and read each changelog from
//!    where that commit left it; otherwise wipe the directory and read each changelog from its
//!    start. (A directory that is corrupt or belongs to someone else was already wiped when it
//!    was opened.)
//! 3. Apply, in log order, every changelog record whose batch is in the chain; remember the keys
//!    of records that are not (a crashed batch, a fenced zombie) unless a valid record of the
//!    same key follows, since compaction could otherwise keep the invalid one as the key's last.
//! 4. Commit the applied state with the chain's end as its position.
//! 5. (The runtime then writes the fence of the next incarnation, and only after it landed
//!    re-logs the remembered keys with their restored values and starts processing.)
//!
//! Reading happens in chunks ([`Restore::step`]) so that the runtime can keep processing the
//! tasks that are already running between them.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::info;

use super::protocol::{BATCH_HEADER, BatchId, Chain, CommitRecord, Commits, LocalMeta};
use super::{RunError, TaskId};
use crate::kafka::{PartitionReader, TopicPartition};
use crate::state::{ChangelogEntry, StateEnv, StoreSpec, TaskState};

/// How long reading a partition to its end may wait for the broker between records.
const READ_WAIT: Duration = Duration::from_millis(500);

/// How long reading the (small) commits partition may take in all.
const COMMITS_DEADLINE: Duration = Duration::from_secs(60);

/// A task being restored.
pub struct Restore {
    /// The task.
    pub id: TaskId,
    /// Its state, open.
    pub state: TaskState,
    /// Its valid history.
    pub chain: Chain,
    /// Changelogs still to read: (store index, partition, next offset).
    pending: Vec<(usize, TopicPartition, i64)>,
    /// The next offset of each changelog partition read so far.
    positions: BTreeMap<String, i64>,
    /// Keys whose last record read is not in the chain: (store, key).
    repair: HashSet<(usize, Vec<u8>)>,
    /// Records applied, for progress.
    pub applied: u64,
    /// When reading the changelogs began.
    started: Option<Instant>,
    last_report: Instant,
}

/// What the runtime needs to open and restore a task.
pub struct Setup<'a> {
    /// Memory and caches shared by every task's state.
    pub env: &'a StateEnv,
    /// The task's state directory.
    pub dir: PathBuf,
    /// The task's identity (recorded in its directory).
    pub identity: String,
    /// Every store of the plan.
    pub stores: &'a [StoreSpec],
    /// The task's commits partition.
    pub commits: TopicPartition,
    /// The task's stores with their changelog partitions.
    pub changelogs: Vec<(usize, TopicPartition)>,
}

impl Restore {
    /// Steps 1 and 2: reads the chain and opens (or wipes) the local state.
    pub fn begin(
        id: TaskId,
        setup: &Setup<'_>,
        reader: &mut PartitionReader,
    ) -> Result<Restore, RunError> {
        let mut commits = Commits::default();
        reader.start(&setup.commits, 0)?;
        let deadline = Instant::now() + COMMITS_DEADLINE;
        loop {
            let chunk = reader.next_chunk(10_000, READ_WAIT)?;
            for record in chunk.records.into_iter().filter(|r| r.topic == setup.commits.topic) {
                if let Some(record) = record.value.as_deref().and_then(CommitRecord::from_bytes) {
                    commits.add(record);
                }
            }
            if chunk.end {
                break;
            }
            if Instant::now() > deadline {
                return Err(RunError::Setup(format!(
                    "task {id}: could not read {} to its end within {} s",
                    setup.commits,
                    COMMITS_DEADLINE.as_secs()
                )));
            }
        }
        let chain = commits.chain();
        let (mut state, _) = TaskState::open(setup.env, &setup.dir, &setup.identity, setup.stores)?;
        let local = state.committed_meta()?.as_deref().and_then(LocalMeta::from_bytes);
        let from = match local {
            Some(local) if chain.includes(&local.position) => local.changelogs,
            other => {
                if other.is_some() || !chain.end.inputs.is_empty() {
                    info!(task = %id, "Local state is not part of the committed history; restoring it from the changelog.");
                }
                drop(state);
                TaskState::destroy(&setup.dir)?;
                state = TaskState::open(setup.env, &setup.dir, &setup.identity, setup.stores)?.0;
                BTreeMap::new()
            }
        };
        let pending = setup
            .changelogs
            .iter()
            .map(|(store, tp)| (*store, tp.clone(), from.get(&tp.topic).copied().unwrap_or(0)))
            .collect();
        Ok(Restore {
            id,
            state,
            chain,
            pending,
            positions: from,
            repair: HashSet::new(),
            applied: 0,
            started: None,
            last_report: Instant::now(),
        })
    }

    /// Step 3, one chunk of at most `max` records: returns `true` once every changelog has
    /// been read to its end and the state committed (step 4).
    pub fn step(&mut self, reader: &mut PartitionReader, max: usize) -> Result<bool, RunError> {
        let Some((store, tp, from)) = self.pending.first().cloned() else {
            return Ok(true);
        };
        self.started.get_or_insert_with(Instant::now);
        if reader.reading() != Some(&tp) {
            // The reader is shared: another task may have used it since the last step.
            reader.start(&tp, from)?;
        }
        let chunk = reader.next_chunk(max, READ_WAIT)?;
        let mut entries = Vec::with_capacity(chunk.records.len());
        for record in chunk.records.into_iter().filter(|r| r.topic == tp.topic) {
            self.positions.insert(tp.topic.clone(), record.offset + 1);
            self.pending[0].2 = record.offset + 1;
            let Some(key) = record.key else { continue };
            let batch = record
                .headers
                .iter()
                .find(|(name, _)| name == BATCH_HEADER)
                .and_then(|(_, value)| value.as_deref().and_then(BatchId::from_header));
            if batch.is_some_and(|batch| self.chain.contains(batch)) {
                self.repair.remove(&(store, key.clone()));
                entries.push(ChangelogEntry { store, key, value: record.value });
            } else {
                self.repair.insert((store, key));
            }
        }
        if !entries.is_empty() {
            self.applied += entries.len() as u64;
            self.state.apply_changelog(entries)?;
            // Progress is committed as it goes, so memory stays bounded; an empty meta marks
            // the state as mid-restore, which a restart does not trust.
            self.state.commit(&[])?;
        }
        if self.last_report.elapsed() > Duration::from_secs(2) {
            self.last_report = Instant::now();
            info!(task = %self.id, changelog = %tp, applied = self.applied, "Restoring.");
        }
        if !chunk.end {
            return Ok(false);
        }
        self.pending.remove(0);
        if !self.pending.is_empty() {
            return Ok(false);
        }
        let meta =
            LocalMeta { position: self.chain.end.clone(), changelogs: self.positions.clone() };
        self.state.commit(&meta.to_bytes())?;
        let seconds = self.started.map_or(0.0, |started| started.elapsed().as_secs_f64());
        info!(
            task = %self.id,
            records = self.applied,
            seconds = format!("{seconds:.2}"),
            records_per_second = format!("{:.0}", self.applied as f64 / seconds.max(1e-9)),
            repaired = self.repair.len(),
            "Restored."
        );
        Ok(true)
    }

    /// Step 5's re-logging: the keys whose last changelog record is not valid get their
    /// restored value (or a tombstone) logged again with the first batch.
    pub fn relog_repairs(&mut self) -> Result<(), RunError> {
        for (store, key) in std::mem::take(&mut self.repair) {
            self.state.relog(store, key)?;
        }
        Ok(())
    }

    /// The next offset of each changelog partition read.
    pub fn positions(&self) -> &BTreeMap<String, i64> {
        &self.positions
    }
}
