//! `eddy run`: one instance of an application, processing the partitions the consumer group
//! gives it, with state that is exactly-once on any Kafka-protocol broker.
//!
//! One thread does everything (the machine's other cores serve librdkafka and RocksDB): it
//! polls the group consumer, routes each record to its task (sub-topology × input partition),
//! restores tasks that arrive, and commits. Rebalance callbacks run inside `poll` on the same
//! thread and reach the instance through a mutex that the loop never holds while polling.
//!
//! # The commit protocol, as run by [`Instance::commit`]
//!
//! Per task, a batch is everything processed since its last commit.
//!
//! 1. Processing: each input record runs through the task's operators; store writes collect in
//!    the task's pending write set; outputs (sinks, repartition topics, dead letters) are sent
//!    at once, each with an `eddy.id` header (input topic/partition/offset/n) that an identical
//!    replay repeats. Under `exactly_once` they are inside the instance's open transaction.
//! 2. Every `commit_interval`: each task's changelog records (the last write of each key) are
//!    sent with the header `eddy.batch` = (incarnation, batch number), then the producer is
//!    flushed: every output and changelog record of the batch is acknowledged.
//! 3. A marker per task (commits topic, key `marker/<incarnation>`) closes its batch, with the
//!    input offset and stream time the batch ends at; fences of tasks that finished restoring
//!    go with them. Under `exactly_once`: the consumer offsets join the transaction and it
//!    commits; a commit that times out is *unknown*, handled as a failure. Otherwise: flush.
//! 4. Each task writes its pending set and its position (batch, input offsets, stream time,
//!    changelog ends) to RocksDB in one atomic WriteBatch.
//! 5. The group offsets are committed (a hint for stateless tasks; stateful ones resume from
//!    their position).
//!
//! Any failure in steps 2–3 aborts the transaction (under `exactly_once`) and sends every task
//! of the batch back to restore: it opens a new incarnation whose fence cuts off whatever the
//! failed attempt may have left in the changelog, so a batch number is never reused. A failure
//! in step 4 does the same for that task; a crash anywhere is the same case seen from the
//! next start. `restore.rs` has the restore steps and `protocol.rs` the rule for what counts.

pub mod protocol;
mod restore;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use crate::format::SchemaRegistry;
use crate::kafka::{
    self, Admin, ConsumerOptions, ConsumerRecord, GroupConsumer, KafkaSettings, Member,
    PartitionReader, Producer, ProducerRecord, RebalanceListener, TopicPartition, TopicSpec,
    TransactionError,
};
use crate::operator::{OperatorError, Record};
use crate::plan::{OperatorPlan, Partitions, Plan, TopicRole};
use crate::spec::{Guarantee, OnError};
use crate::state::{StateEnv, StateError, StoreSpec, TaskState};
use crate::task::codec::{SinkCodec, SourceCodec};
use crate::task::{Destination, Entry, Output, Task};
use crate::value::Value;
use protocol::{BATCH_HEADER, BatchId, CommitRecord, LocalMeta, Position};
use restore::{Restore, Setup};

/// Header carrying an output's idempotency key.
pub const ID_HEADER: &str = "eddy.id";

/// How long a changelog record stays uncompacted: far longer than a zombie writer can outlive
/// its fence (delivery timeout plus a restart), so compaction never picks an invalid record
/// over a valid one before a restore has re-logged the key.
const MIN_COMPACTION_LAG_MS: &str = "86400000";

/// How long a record may wait for delivery before it fails. It bounds how long after its
/// sender gave up a record can still land (a zombie's window, which the fences and the
/// changelogs' one-day compaction lag cover); shorter values fail healthy commits on a busy
/// broker.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Records read from a changelog per restore step, between polls of running tasks.
const RESTORE_CHUNK: usize = 20_000;

/// How an instance is run.
pub struct RunOptions {
    /// How to reach Kafka.
    pub kafka: KafkaSettings,
    /// Where task state lives (one directory per task below it).
    pub state_dir: PathBuf,
    /// This instance's stable name: its transactional id and its members' client id.
    pub instance_id: String,
    /// Where Avro schemas come from.
    pub registry: Arc<dyn SchemaRegistry>,
}

/// Why an instance stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Kafka failed in a way retrying does not fix.
    #[error(transparent)]
    Kafka(#[from] kafka::Error),
    /// The transactional producer is fenced or broken.
    #[error("{0}")]
    Transaction(#[from] TransactionError),
    /// The topics are not as the topology needs them.
    #[error("{0}")]
    Setup(String),
    /// A source with `on_error: fail` read a record it cannot process.
    #[error(
        "stopped on a bad record of {topic} partition {partition} at offset {offset} \
         (on_error: fail; nothing after it was committed): {reason}"
    )]
    BadRecord {
        /// The input topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// The record's offset.
        offset: i64,
        /// Why it was refused.
        reason: String,
    },
    /// State failed.
    #[error(transparent)]
    State(#[from] StateError),
}

/// A task: one sub-topology over one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId {
    /// The sub-topology.
    pub subtopology: usize,
    /// The input partition.
    pub partition: i32,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.subtopology, self.partition)
    }
}

/// A running task.
struct Running {
    task: Task,
    state: TaskState,
    /// Its input partition.
    input: TopicPartition,
    /// Whether it has stores (and so changelogs, commits and incarnations).
    stateful: bool,
    incarnation: u64,
    /// The last committed batch number.
    number: u64,
    /// The next input offset to process (`None` until the first record when unknown).
    next: Option<i64>,
    /// The input offset after the last commit.
    committed: Option<i64>,
    /// Processed something since the last commit.
    dirty: bool,
    changelogs: BTreeMap<String, i64>,
}

/// Where a task is.
enum Slot {
    /// Restoring its stores (or, when `done`, waiting for its fence to be committed).
    Restoring {
        restore: Box<Restore>,
        done: bool,
    },
    Running(Box<Running>),
}

/// What an instance counts, logged when it stops.
#[derive(Default, Debug)]
struct Counts {
    records: u64,
    dead_letters: u64,
    commits: u64,
    failed_commits: u64,
    restored: u64,
}

/// The instance's state, shared between the loop and rebalance callbacks.
struct Instance {
    plan: Arc<Plan>,
    options: RunOptions,
    env: StateEnv,
    producer: Producer,
    exactly_once: bool,
    in_transaction: bool,
    /// The topic each sub-topology reads.
    inputs: Vec<String>,
    /// Input topic → sub-topology reading it.
    topics: HashMap<String, usize>,
    sources: Vec<SourceCodec>,
    sinks: Vec<SinkCodec>,
    stores: Vec<StoreSpec>,
    tasks: BTreeMap<TaskId, Slot>,
    /// Partitions assigned but not yet set up.
    arrived: Vec<TopicPartition>,
    counts: Counts,
    /// Reads commits and changelogs for restores (created on first use).
    reader: Option<PartitionReader>,
    /// Set when a source with `on_error: fail` hit a bad record.
    failure: Option<RunError>,
    out: Vec<Output>,
}

/// Runs an instance until `stop` is set (then commits and leaves the group) or a fatal error.
pub fn run(plan: Arc<Plan>, options: RunOptions, stop: Arc<AtomicBool>) -> Result<(), RunError> {
    prepare_topics(&plan, &options.kafka)?;
    let app = plan.spec.application_id.clone();
    let exactly_once = plan.spec.settings.processing_guarantee == Guarantee::ExactlyOnce;
    let client_id = format!("{app}-{}", options.instance_id);
    let producer = Producer::transactional(
        &options.kafka,
        &client_id,
        exactly_once.then_some(client_id.as_str()),
        DELIVERY_TIMEOUT,
    )?;
    let inputs: Vec<String> =
        (0..plan.subtopologies.len()).map(|i| input_topic(&plan, i).to_owned()).collect();
    let topics = inputs.iter().enumerate().map(|(index, topic)| (topic.clone(), index)).collect();
    let registry = options.registry.clone();
    let sources = (0..plan.sources.len()).map(|i| SourceCodec::new(&plan, i, &registry)).collect();
    let sinks = (0..plan.sinks.len())
        .map(|i| SinkCodec::new(&plan, i, &registry))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| RunError::Setup(format!("cannot prepare the sinks: {error}")))?;
    let stores = plan.stores.iter().map(|s| StoreSpec::new(s.name.clone(), s.kind)).collect();
    let budget = usize::try_from(plan.spec.settings.memory_budget_bytes).unwrap_or(usize::MAX);
    let instance = Arc::new(Mutex::new(Instance {
        env: StateEnv::new(budget),
        plan: plan.clone(),
        options,
        producer,
        exactly_once,
        in_transaction: false,
        inputs: inputs.clone(),
        topics,
        sources,
        sinks,
        stores,
        tasks: BTreeMap::new(),
        arrived: Vec::new(),
        counts: Counts::default(),
        reader: None,
        failure: None,
        out: Vec::new(),
    }));
    let listener = Arc::new(Listener { instance: instance.clone() });
    let mut consumer_options = ConsumerOptions::new(app.clone());
    consumer_options.client_id = client_id;
    consumer_options.pause_assigned = true;
    consumer_options.read_committed = exactly_once;
    let consumer =
        GroupConsumer::new(&lock(&instance).options.kafka, &consumer_options, Some(listener))?;
    consumer.subscribe(&inputs.iter().map(String::as_str).collect::<Vec<_>>())?;
    info!(application = %app, guarantee = ?plan.spec.settings.processing_guarantee, "Joined the group; waiting for partitions.");

    let interval = Duration::from_millis(plan.spec.settings.commit_interval_ms.max(1) as u64);
    let mut last_commit = Instant::now();
    let mut last_poll_error: Option<Instant> = None;
    let result = loop {
        if stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        let restoring = {
            let mut instance = lock(&instance);
            instance.set_up_arrived(&consumer.member());
            instance.restore_step()
        };
        let wait = if restoring { Duration::ZERO } else { Duration::from_millis(50) };
        // Poll without holding the lock: rebalance callbacks take it.
        let mut polled = Vec::new();
        match consumer.poll(wait) {
            Ok(Some(record)) => polled.push(record),
            Ok(None) => {}
            Err(error) => {
                if last_poll_error.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                    warn!(%error, "Reading from Kafka failed; retrying.");
                    last_poll_error = Some(Instant::now());
                }
            }
        }
        if !polled.is_empty() {
            // Drain what is already fetched, without waiting, up to a commit's worth.
            while polled.len() < 2_000 {
                match consumer.poll(Duration::ZERO) {
                    Ok(Some(record)) => polled.push(record),
                    _ => break,
                }
            }
        }
        let mut instance = lock(&instance);
        for record in polled {
            instance.process(record, &consumer.member());
            if instance.failure.is_some() {
                break;
            }
        }
        if let Some(failure) = instance.failure.take() {
            break Err(failure);
        }
        if last_commit.elapsed() >= interval || instance.awaiting_fence() {
            if let Err(error) = instance.commit(&consumer.member()) {
                break Err(error);
            }
            last_commit = Instant::now();
        }
    };
    {
        let mut instance = lock(&instance);
        if result.is_ok() {
            info!("Stopping: committing and leaving the group.");
            if let Err(error) = instance.commit(&consumer.member()) {
                warn!(%error, "The last commit failed; the next owner replays it.");
            }
        } else if instance.in_transaction {
            let _ = instance.producer.abort();
        }
    }
    consumer.close();
    let instance = lock(&instance);
    let counts = &instance.counts;
    info!(
        records = counts.records,
        dead_letters = counts.dead_letters,
        commits = counts.commits,
        failed_commits = counts.failed_commits,
        restored_records = counts.restored,
        "Stopped."
    );
    result
}

/// Locks the instance; a panic while holding the lock cannot leave it half-updated in a way
/// that matters (every path re-validates), so poisoning is ignored.
fn lock(instance: &Mutex<Instance>) -> MutexGuard<'_, Instance> {
    instance.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The topic a sub-topology reads: its source's, or its repartition topic.
fn input_topic(plan: &Plan, subtopology: usize) -> &str {
    let sub = &plan.subtopologies[subtopology];
    match (sub.sources.first(), sub.repartition) {
        (Some(&source), _) => &plan.sources[source].spec.feed.topic,
        (None, Some(node)) => repartition_topic(plan, node),
        (None, None) => "",
    }
}

/// The repartition topic a rekey node writes.
fn repartition_topic(plan: &Plan, node: usize) -> &str {
    match &plan.nodes[node].operator {
        OperatorPlan::Rekey { topic, .. } => topic,
        _ => "",
    }
}

/// Checks the source topics and creates the topics Eddy writes.
fn prepare_topics(plan: &Plan, kafka: &KafkaSettings) -> Result<(), RunError> {
    let admin = Admin::new(kafka)?;
    let mut known: HashMap<String, i32> = HashMap::new();
    let mut count = |topic: &str| -> Result<i32, RunError> {
        if let Some(&n) = known.get(topic) {
            return Ok(n);
        }
        let described = admin.describe_topic(topic).map_err(|error| {
            RunError::Setup(format!(
                "source topic '{topic}' cannot be read ({error}); create it first, e.g. with `eddy check`"
            ))
        })?;
        known.insert(topic.to_owned(), described.partitions);
        Ok(described.partitions)
    };
    let resolve = |partitions: &Partitions,
                   count: &mut dyn FnMut(&str) -> Result<i32, RunError>| {
        match partitions {
            Partitions::Exactly(n) => i32::try_from(*n)
                .map_err(|_| RunError::Setup(format!("{n} partitions is too many"))),
            Partitions::Like(topic) => count(topic),
        }
    };
    for source in &plan.sources {
        let actual = count(&source.spec.feed.topic)?;
        if let Some(declared) = source.spec.feed.partitions
            && i64::from(actual) != declared
        {
            return Err(RunError::Setup(format!(
                "{}: sources.{}.partitions says {declared}, but topic '{}' has {actual}; fix the topology or the topic",
                plan.spec.file.display(),
                source.spec.name,
                source.spec.feed.topic
            )));
        }
    }
    let mut partitions = Vec::new();
    for sub in &plan.subtopologies {
        partitions.push(resolve(&sub.partitions, &mut count)?);
    }
    let mut specs = Vec::new();
    for topic in &plan.internal_topics {
        let n = resolve(&topic.partitions, &mut count)?;
        let spec = TopicSpec::new(&topic.name, n);
        specs.push(match topic.role {
            TopicRole::Changelog => spec
                .config("cleanup.policy", "compact")
                .config("min.compaction.lag.ms", MIN_COMPACTION_LAG_MS),
            TopicRole::Commits => spec.config("cleanup.policy", "compact"),
            TopicRole::Repartition => spec,
        });
    }
    for sink in &plan.sinks {
        let n = match sink.spec.partitions {
            Some(n) => i32::try_from(n).unwrap_or(1),
            None => partitions.iter().copied().max().unwrap_or(1),
        };
        specs.push(TopicSpec::new(&sink.spec.topic, n));
    }
    specs.push(TopicSpec::new(&plan.spec.settings.dead_letter_topic, 1));
    for (topic, outcome) in admin.create_topics(&specs)? {
        debug!(%topic, ?outcome, "Topic ready.");
    }
    // Internal topics that already existed must still fit the plan.
    for (topic, spec) in plan.internal_topics.iter().zip(&specs) {
        let described = admin.describe_topic(&topic.name)?;
        if described.partitions != spec.partitions {
            return Err(RunError::Setup(format!(
                "internal topic '{}' has {} partitions, this topology needs {}; \
                 delete the application's internal topics to start over",
                topic.name, described.partitions, spec.partitions
            )));
        }
    }
    Ok(())
}

/// Sends rebalance events to the instance.
struct Listener {
    instance: Arc<Mutex<Instance>>,
}

impl RebalanceListener for Listener {
    fn assigned(&self, _: &Member<'_>, partitions: &[TopicPartition]) {
        info!(?partitions, "Partitions assigned.");
        lock(&self.instance).arrived.extend_from_slice(partitions);
    }

    fn revoked(&self, member: &Member<'_>, partitions: &[TopicPartition]) {
        info!(?partitions, "Partitions revoked; committing their work.");
        let mut instance = lock(&self.instance);
        if let Err(error) = instance.commit(member) {
            warn!(%error, "Commit before handing partitions over failed; the next owner replays it.");
        }
        instance.drop_tasks(partitions);
    }

    fn lost(&self, member: &Member<'_>, partitions: &[TopicPartition]) {
        warn!(?partitions, "Partitions lost to the group; dropping their uncommitted work.");
        let mut instance = lock(&self.instance);
        if instance.in_transaction {
            // Aborting takes the other tasks' outputs of this transaction too: they restart
            // from their last commit like any failed batch.
            instance.fail_batch(member);
        }
        instance.drop_tasks(partitions);
    }
}

impl Instance {
    fn task_of(&self, topic: &str, partition: i32) -> Option<TaskId> {
        self.topics.get(topic).map(|&subtopology| TaskId { subtopology, partition })
    }

    /// The input partition of a task.
    fn input_of(&self, id: TaskId) -> TopicPartition {
        TopicPartition::new(&self.inputs[id.subtopology], id.partition)
    }

    fn drop_tasks(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if let Some(id) = self.task_of(&tp.topic, tp.partition)
                && let Some(slot) = self.tasks.remove(&id)
            {
                if let Slot::Running(mut running) = slot {
                    running.state.abort();
                }
                info!(task = %id, "Task closed.");
            }
            self.arrived.retain(|arrived| arrived != tp);
        }
    }

    fn setup(&self, id: TaskId) -> Setup<'_> {
        let plan = &*self.plan;
        let sub = &plan.subtopologies[id.subtopology];
        let app = &plan.spec.application_id;
        let partition = |topic: &str| TopicPartition::new(topic, id.partition);
        Setup {
            env: &self.env,
            dir: self.options.state_dir.join(app).join(format!("{}-{}", sub.name, id.partition)),
            identity: format!("{app}/{}-{}", sub.name, id.partition),
            stores: &self.stores,
            commits: partition(sub.commits.as_deref().unwrap_or_default()),
            changelogs: sub
                .stores
                .iter()
                .map(|&store| (store, partition(&plan.stores[store].restore_from)))
                .collect(),
        }
    }

    /// The restore reader, created on first use.
    fn take_reader(&mut self) -> Result<PartitionReader, RunError> {
        match self.reader.take() {
            Some(reader) => Ok(reader),
            None => {
                let client_id = format!(
                    "{}-{}-restore",
                    self.plan.spec.application_id, self.options.instance_id
                );
                Ok(PartitionReader::new(&self.options.kafka, &client_id, self.exactly_once)?)
            }
        }
    }

    /// Opens tasks for newly assigned partitions: stateless ones run at once, stateful ones
    /// start restoring.
    fn set_up_arrived(&mut self, member: &Member<'_>) {
        let arrived = std::mem::take(&mut self.arrived);
        let mut retry = Vec::new();
        for tp in arrived {
            let Some(id) = self.task_of(&tp.topic, tp.partition) else { continue };
            if let Err(error) = self.open_task(id, tp.clone(), member) {
                warn!(task = %id, %error, "Cannot open the task; retrying.");
                retry.push(tp);
            }
        }
        if !retry.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
        self.arrived.extend(retry);
    }

    fn open_task(
        &mut self,
        id: TaskId,
        input: TopicPartition,
        member: &Member<'_>,
    ) -> Result<(), RunError> {
        let stateful = self.plan.subtopologies[id.subtopology].commits.is_some();
        if stateful {
            let mut reader = self.take_reader()?;
            let restore = Restore::begin(id, &self.setup(id), &mut reader);
            self.reader = Some(reader);
            let restore = restore?;
            info!(task = %id, incarnation = restore.chain.next_incarnation, "Restoring the task.");
            self.tasks.insert(id, Slot::Restoring { restore: Box::new(restore), done: false });
            return Ok(());
        }
        let setup = self.setup(id);
        let (state, _) = TaskState::open(setup.env, &setup.dir, &setup.identity, setup.stores)?;
        member.resume_at(&input, None)?;
        let task = Task::new(self.plan.clone(), id.subtopology);
        self.tasks.insert(
            id,
            Slot::Running(Box::new(Running {
                task,
                state,
                input,
                stateful: false,
                incarnation: 0,
                number: 0,
                next: None,
                committed: None,
                dirty: false,
                changelogs: BTreeMap::new(),
            })),
        );
        info!(task = %id, "Task running.");
        Ok(())
    }

    /// Reads one chunk for the first task still restoring; `true` while any task restores.
    fn restore_step(&mut self) -> bool {
        let Some((&id, _)) =
            self.tasks.iter().find(|(_, slot)| matches!(slot, Slot::Restoring { done: false, .. }))
        else {
            return false;
        };
        let Some(Slot::Restoring { mut restore, .. }) = self.tasks.remove(&id) else {
            return false;
        };
        let step = match self.take_reader() {
            Ok(mut reader) => {
                let step = restore.step(&mut reader, RESTORE_CHUNK);
                self.reader = Some(reader);
                step
            }
            Err(error) => Err(error),
        };
        match step {
            Ok(done) => {
                if done {
                    self.counts.restored += restore.applied;
                }
                self.tasks.insert(id, Slot::Restoring { restore, done });
            }
            Err(error) => {
                warn!(task = %id, %error, "Restore failed; starting it again.");
                drop(restore);
                std::thread::sleep(Duration::from_secs(1));
                self.arrived.push(self.input_of(id));
            }
        }
        true
    }

    fn awaiting_fence(&self) -> bool {
        self.tasks.values().any(|slot| matches!(slot, Slot::Restoring { done: true, .. }))
    }

    /// Sends one record, inside the transaction under exactly_once.
    fn send(&mut self, record: &ProducerRecord) -> Result<(), RunError> {
        if self.exactly_once && !self.in_transaction {
            self.producer.begin()?;
            self.in_transaction = true;
        }
        self.producer.send(record)?;
        Ok(())
    }

    /// Processes one polled record.
    fn process(&mut self, record: ConsumerRecord, member: &Member<'_>) {
        let Some(id) = self.task_of(&record.topic, record.partition) else { return };
        let Some(Slot::Running(running)) = self.tasks.get(&id) else { return };
        if running.next.is_some_and(|next| record.offset < next) {
            return; // fetched before the task moved its position back
        }
        self.counts.records += 1;
        let sub = &self.plan.subtopologies[id.subtopology];
        let decoded = match (sub.sources.first(), sub.repartition) {
            (Some(&source), _) => self.sources[source]
                .decode(
                    record.key.as_deref(),
                    record.value.as_deref(),
                    record.timestamp.unwrap_or(0),
                )
                .map(|decoded| (Entry::Source(source), decoded))
                .map_err(|error| (error.kind().to_owned(), error.to_string())),
            (None, Some(node)) => {
                decode_repartitioned(&record).map(|r| (Entry::Repartition(node), r))
            }
            (None, None) => return,
        };
        let on_error = match sub.sources.first() {
            Some(&source) => self.plan.sources[source].spec.on_error,
            None => OnError::Fail,
        };
        let (entry, decoded) = match decoded {
            Ok(decoded) => decoded,
            Err((kind, reason)) => {
                return self.bad_record(id, &record, &kind, &reason, on_error, true, member);
            }
        };
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let Some(Slot::Running(running)) = self.tasks.get_mut(&id) else { return };
        let processed = running.task.process(entry, decoded, &mut running.state, &mut out);
        match processed {
            Ok(()) => {}
            Err(OperatorError::BadRecord { operator, source }) => {
                self.out = out;
                let reason = format!("{operator}: {source}");
                return self.bad_record(id, &record, "operator", &reason, on_error, false, member);
            }
            Err(other) => {
                error!(task = %id, error = %other, "The task failed; restoring it.");
                self.out = out;
                return self.rebuild(id, member);
            }
        }
        let mut sent = Ok(());
        for (n, output) in out.drain(..).enumerate() {
            let id_header = format!("{}/{}/{}/{n}", record.topic, record.partition, record.offset);
            sent = self.send_output(output, id_header);
            if sent.is_err() {
                break;
            }
        }
        self.out = out;
        if let Err(error) = sent {
            warn!(task = %id, %error, "Sending an output failed; rewinding the batch.");
            return self.fail_batch(member);
        }
        if let Some(Slot::Running(running)) = self.tasks.get_mut(&id) {
            running.next = Some(record.offset + 1);
            running.dirty = true;
        }
    }

    fn send_output(&mut self, output: Output, id_header: String) -> Result<(), RunError> {
        let Output { to, record } = output;
        let headers = vec![(ID_HEADER.to_owned(), Some(id_header.into_bytes()))];
        let produced = match to {
            Destination::Sink(sink) => match self.sinks[sink].encode(&record) {
                Ok((key, value)) => ProducerRecord {
                    topic: self.plan.sinks[sink].spec.topic.clone(),
                    partition: None,
                    key,
                    value: Some(value),
                    headers,
                    timestamp: Some(record.timestamp),
                },
                Err(error) => {
                    // The sink's schema refuses this output: it goes to the dead letters, as
                    // JSON, with the reason; the rest of the pipeline goes on.
                    self.counts.dead_letters += 1;
                    let name = &self.plan.sinks[sink].spec.name;
                    let value = crate::format::json::encode(&record.value).unwrap_or_default();
                    ProducerRecord {
                        topic: self.plan.spec.settings.dead_letter_topic.clone(),
                        partition: None,
                        key: None,
                        value: Some(value),
                        headers: vec![
                            (
                                "eddy.error".to_owned(),
                                Some(format!("sink {name}: {error}").into_bytes()),
                            ),
                            ("eddy.error.kind".to_owned(), Some(error.kind().as_bytes().to_vec())),
                            ("eddy.sink".to_owned(), Some(name.as_bytes().to_vec())),
                        ],
                        timestamp: Some(record.timestamp),
                    }
                }
            },
            Destination::Repartition(node) => ProducerRecord {
                topic: repartition_topic(&self.plan, node).to_owned(),
                partition: None,
                key: Some(record.key.to_bytes()),
                value: Some(record.value.to_bytes()),
                headers,
                timestamp: Some(record.timestamp),
            },
        };
        self.send(&produced)
    }

    /// A record that cannot be processed: dead-lettered under `continue`; under `fail`, the
    /// instance commits what came before (when the record changed nothing) and stops.
    #[allow(clippy::too_many_arguments)]
    fn bad_record(
        &mut self,
        id: TaskId,
        record: &ConsumerRecord,
        kind: &str,
        reason: &str,
        on_error: OnError,
        untouched: bool,
        member: &Member<'_>,
    ) {
        match on_error {
            OnError::Continue => {
                warn!(task = %id, topic = %record.topic, partition = record.partition, offset = record.offset, %reason, "Bad record sent to the dead-letter topic.");
                let mut headers = record.headers.clone();
                let mut header = |name: &str, value: String| {
                    headers.push((name.to_owned(), Some(value.into_bytes())));
                };
                header("eddy.error", reason.to_owned());
                header("eddy.error.kind", kind.to_owned());
                header("eddy.source.topic", record.topic.clone());
                header("eddy.source.partition", record.partition.to_string());
                header("eddy.source.offset", record.offset.to_string());
                header("eddy.source.timestamp", record.timestamp.unwrap_or(-1).to_string());
                header(
                    ID_HEADER,
                    format!("{}/{}/{}/dead-letter", record.topic, record.partition, record.offset),
                );
                let dead = ProducerRecord {
                    topic: self.plan.spec.settings.dead_letter_topic.clone(),
                    partition: None,
                    key: record.key.clone(),
                    value: record.value.clone(),
                    headers,
                    timestamp: record.timestamp,
                };
                self.counts.dead_letters += 1;
                if let Err(error) = self.send(&dead) {
                    warn!(%error, "Sending a dead letter failed; rewinding the batch.");
                    return self.fail_batch(member);
                }
                if let Some(Slot::Running(running)) = self.tasks.get_mut(&id) {
                    running.next = Some(record.offset + 1);
                    running.dirty = true;
                }
            }
            OnError::Fail => {
                if untouched {
                    if let Err(error) = self.commit(member) {
                        warn!(%error, "Commit before stopping failed; the batch is replayed on restart.");
                    }
                } else if let Some(Slot::Running(running)) = self.tasks.get_mut(&id) {
                    running.state.abort();
                }
                self.failure = Some(RunError::BadRecord {
                    topic: record.topic.clone(),
                    partition: record.partition,
                    offset: record.offset,
                    reason: reason.to_owned(),
                });
            }
        }
    }

    /// Sends a task back to restore (a new incarnation), discarding its uncommitted work.
    fn rebuild(&mut self, id: TaskId, member: &Member<'_>) {
        let Some(slot) = self.tasks.remove(&id) else { return };
        let input = match slot {
            Slot::Running(mut running) => {
                running.state.abort();
                if let Err(error) = member.pause(&running.input) {
                    warn!(task = %id, %error, "Cannot pause the task's input.");
                }
                if !running.stateful {
                    // A stateless task only rewinds its input.
                    if let Err(error) = member.resume_at(&running.input, running.committed) {
                        warn!(task = %id, %error, "Cannot rewind the task's input.");
                    }
                    running.next = running.committed;
                    running.dirty = false;
                    self.tasks.insert(id, Slot::Running(running));
                    return;
                }
                running.input.clone()
            }
            Slot::Restoring { .. } => self.input_of(id),
        };
        self.arrived.push(input);
    }

    /// A failed batch: the transaction is aborted and every task that took part restarts from
    /// its last commit in a new incarnation.
    fn fail_batch(&mut self, member: &Member<'_>) {
        self.counts.failed_commits += 1;
        if self.in_transaction {
            if let Err(error) = self.producer.abort() {
                if let TransactionError::Fatal(_) = error {
                    self.failure = Some(RunError::Transaction(error));
                    return;
                }
                warn!(%error, "Aborting the transaction failed.");
            }
            self.in_transaction = false;
        }
        let ids: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, slot)| match slot {
                Slot::Running(running) => running.dirty,
                Slot::Restoring { done, .. } => *done,
            })
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.rebuild(id, member);
        }
        // Whatever the failed attempt sent is settled before anything new is sent.
        let _ = self.producer.flush(DELIVERY_TIMEOUT * 2);
        let _ = self.producer.take_delivered();
    }

    /// Commits every task with work (steps 2–5 of the module docs) and starts the tasks whose
    /// restore finished.
    fn commit(&mut self, member: &Member<'_>) -> Result<(), RunError> {
        if let Some(failure) = self.failure.take() {
            return Err(failure);
        }
        let dirty: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Running(r) if r.dirty))
            .map(|(&id, _)| id)
            .collect();
        let fencing: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Restoring { done: true, .. }))
            .map(|(&id, _)| id)
            .collect();
        if dirty.is_empty() && fencing.is_empty() && !self.in_transaction {
            return Ok(());
        }
        match self.commit_batch(&dirty, &fencing, member) {
            Ok(()) => {}
            Err(error @ RunError::Transaction(TransactionError::Fatal(_))) => return Err(error),
            Err(error) => {
                warn!(%error, "Commit failed; the tasks of the batch restart from their last commit.");
                self.fail_batch(member);
                return match self.failure.take() {
                    Some(failure) => Err(failure),
                    None => Ok(()),
                };
            }
        }
        self.counts.commits += 1;
        self.start_fenced(&fencing, member);
        Ok(())
    }

    fn commit_batch(
        &mut self,
        dirty: &[TaskId],
        fencing: &[TaskId],
        member: &Member<'_>,
    ) -> Result<(), RunError> {
        // Step 2: changelogs, then everything acknowledged.
        let mut markers = Vec::new();
        for &id in dirty {
            let Some(Slot::Running(running)) = self.tasks.get_mut(&id) else { continue };
            if !running.stateful {
                continue;
            }
            let batch = BatchId { incarnation: running.incarnation, number: running.number + 1 };
            let header = (BATCH_HEADER.to_owned(), Some(batch.to_header()));
            let entries = running.state.take_changelog();
            let mut records = Vec::with_capacity(entries.len());
            for entry in entries {
                records.push(ProducerRecord {
                    topic: self.plan.stores[entry.store].restore_from.clone(),
                    partition: Some(id.partition),
                    key: Some(entry.key),
                    value: entry.value,
                    headers: vec![header.clone()],
                    timestamp: None,
                });
            }
            let mut inputs = BTreeMap::new();
            if let Some(next) = running.next {
                inputs.insert(running.input.topic.clone(), next);
            }
            let position =
                Position { batch: Some(batch), inputs, stream_time: running.task.stream_time() };
            markers.push((id, position));
            for record in &records {
                self.send(record)?;
            }
        }
        self.producer.flush(DELIVERY_TIMEOUT)?;
        // Step 3: markers and fences close the batch.
        for (id, position) in &markers {
            let marker = CommitRecord::Marker { position: position.clone() };
            self.send_commit_record(*id, &marker)?;
        }
        for &id in fencing {
            let Some(Slot::Restoring { restore, .. }) = self.tasks.get(&id) else { continue };
            let fence = CommitRecord::Fence {
                incarnation: restore.chain.next_incarnation,
                base: restore.chain.end.clone(),
                instance: self.options.instance_id.clone(),
            };
            self.send_commit_record(id, &fence)?;
        }
        let offsets: Vec<(TopicPartition, i64)> = dirty
            .iter()
            .filter_map(|id| match self.tasks.get(id) {
                Some(Slot::Running(running)) => {
                    running.next.map(|next| (running.input.clone(), next))
                }
                _ => None,
            })
            .collect();
        if self.in_transaction {
            if !offsets.is_empty()
                && let Some(group) = member.group_metadata()
            {
                self.producer.send_offsets(&offsets, &group)?;
            }
            self.producer.commit()?;
            self.in_transaction = false;
        } else {
            self.producer.flush(DELIVERY_TIMEOUT)?;
        }
        // Step 4: state and position, atomically.
        let delivered = self.producer.take_delivered();
        for (id, position) in markers {
            let Some(Slot::Running(running)) = self.tasks.get_mut(&id) else { continue };
            for (tp, offset) in &delivered {
                if tp.partition == id.partition && running.changelogs.contains_key(&tp.topic) {
                    running.changelogs.insert(tp.topic.clone(), offset + 1);
                }
            }
            let meta = LocalMeta { position, changelogs: running.changelogs.clone() };
            match running.state.commit(&meta.to_bytes()) {
                Ok(()) => {
                    running.number += 1;
                }
                Err(error) => {
                    warn!(task = %id, %error, "Writing the batch to local state failed; restoring the task.");
                    self.rebuild(id, member);
                }
            }
        }
        for &id in dirty {
            if let Some(Slot::Running(running)) = self.tasks.get_mut(&id) {
                running.dirty = false;
                running.committed = running.next;
            }
        }
        // Step 5: the group offsets, a hint.
        if !offsets.is_empty()
            && let Err(error) = member.commit(&offsets)
        {
            debug!(%error, "Committing group offsets failed; the next commit retries.");
        }
        Ok(())
    }

    fn send_commit_record(&mut self, id: TaskId, record: &CommitRecord) -> Result<(), RunError> {
        let topic = self.plan.subtopologies[id.subtopology].commits.clone().unwrap_or_default();
        self.send(&ProducerRecord {
            topic,
            partition: Some(id.partition),
            key: Some(record.key()),
            value: Some(record.to_bytes()),
            headers: Vec::new(),
            timestamp: None,
        })
    }

    /// Tasks whose fence was committed start processing, from the end of their history.
    fn start_fenced(&mut self, fenced: &[TaskId], member: &Member<'_>) {
        for &id in fenced {
            let Some(Slot::Restoring { mut restore, .. }) = self.tasks.remove(&id) else {
                continue;
            };
            let input = self.input_of(id);
            let end = restore.chain.end.clone();
            let next = end.inputs.get(&input.topic).copied();
            if let Err(error) = restore.relog_repairs() {
                warn!(task = %id, %error, "Cannot re-log keys; restoring again.");
                self.arrived.push(input);
                continue;
            }
            if let Err(error) = member.resume_at(&input, next) {
                warn!(task = %id, %error, "Cannot resume the task's input; restoring again.");
                self.arrived.push(input);
                continue;
            }
            let mut task = Task::new(self.plan.clone(), id.subtopology);
            if end.batch.is_some() {
                task.resume_stream_time(end.stream_time);
            }
            let changelogs = restore.positions().clone();
            let incarnation = restore.chain.next_incarnation;
            info!(task = %id, incarnation, offset = ?next, "Task running.");
            self.tasks.insert(
                id,
                Slot::Running(Box::new(Running {
                    task,
                    state: restore.state,
                    input,
                    stateful: true,
                    incarnation,
                    number: 0,
                    next,
                    committed: next,
                    // Re-logged keys go out with the first batch.
                    dirty: true,
                    changelogs,
                })),
            );
        }
    }
}

/// Decodes a record of a repartition topic (Eddy's own binary encoding of key and value).
fn decode_repartitioned(record: &ConsumerRecord) -> Result<Record, (String, String)> {
    let decode = |bytes: Option<&[u8]>| match bytes {
        Some(bytes) => {
            Value::from_bytes(bytes).map_err(|e| ("repartition".to_owned(), e.to_string()))
        }
        None => Ok(Value::Null),
    };
    Ok(Record {
        key: decode(record.key.as_deref())?,
        value: decode(record.value.as_deref())?,
        timestamp: record.timestamp.unwrap_or(0),
    })
}
