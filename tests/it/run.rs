//! `eddy run` as operators run it: several instances of one counting topology as real
//! processes on the real broker, killed with SIGKILL, stopped with SIGTERM, restarted on their
//! own state directory or on an empty one, and fed bad records. What the tests prove:
//!
//! - State is exactly-once under crashes: after many `kill -9`s while input flows, the newest
//!   count each key emits equals the number of input records with that key, under
//!   `at_least_once` and `exactly_once` alike (no record lost, none counted twice), and one
//!   fresh instance restored only from the changelogs carries on from exactly those counts.
//! - Outputs repeat only as identical replays: records that share an `eddy.id` header carry the
//!   same key and value, and every count from 1 to the key's total was emitted.
//! - Clean membership changes (SIGTERM, new members joining) neither lose nor double-count, and
//!   every SIGTERMed instance exits 0.
//! - Bad input never disappears: with `on_error: continue` each bad record goes to the
//!   dead-letter topic with its raw bytes and headers saying why, where from and when, and the
//!   instance keeps running; with `on_error: fail` the instance stops on it without committing
//!   past it, and stops on it again when restarted.
//! - A corrupted state directory is wiped and rebuilt from the changelog.
//!
//! Every instance logs (`RUST_LOG=info`) to its own file; when a test fails, the tail of every
//! instance's log is printed and the test's directory (topology, logs, state) is kept. Random
//! choices (which instance to kill, for how long) come from a seed printed at the start of each
//! test; `EDDY_IT_SEED=<seed>` repeats them.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{JoinHandle, sleep};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eddy::kafka::{
    Admin, ConsumerOptions, ConsumerRecord, CreateOutcome, GroupConsumer, Producer, ProducerRecord,
    TopicPartition, TopicSpec,
};

use crate::harness::{broker, settings, unique};

/// Midnight UTC. Every input timestamp is `BASE_TS + n` ms with `n` below a day, so all input
/// falls into the one daily window that starts here, and none of it is late.
const BASE_TS: i64 = 1_699_920_000_000;
const DAY_MS: i64 = 86_400_000;
/// How long a SIGTERMed instance may take to commit, leave the group and exit.
const TERM_WAIT: Duration = Duration::from_secs(30);
/// The outputs are drained when nothing new has arrived for this long…
const QUIET: Duration = Duration::from_secs(15);
/// …or for this long while they already hold the expected counts.
const QUIET_WHEN_RIGHT: Duration = Duration::from_secs(5);
/// The most a drain may take, however busy the outputs stay. Generous: on 2 shared cores three
/// debug-built instances catch up with a killed-and-restarted backlog in about 75 s.
const DRAIN_CAP: Duration = Duration::from_secs(180);
/// Marks, in an instance's log, where each start of it begins.
const START_MARK: &str = "=== test harness: start";

// ------------------------------------------------------------------------------------------
// Choices

/// A xorshift64 generator: random enough to pick victims and pauses, and repeatable by seed.
struct Rng(u64);

impl Rng {
    fn seeded(test: &str) -> Rng {
        let seed =
            std::env::var("EDDY_IT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0x9E37_79B9_7F4A_7C15)
            });
        eprintln!("{test}: seed {seed} (EDDY_IT_SEED={seed} repeats its choices)");
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = high.saturating_sub(low).as_millis() as u64;
        low + Duration::from_millis(self.below(span + 1))
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

// ------------------------------------------------------------------------------------------
// The topology

#[derive(Clone, Copy, PartialEq, Eq)]
enum SourceFormat {
    Json,
    Avro,
}

struct Options {
    guarantee: &'static str,
    format: SourceFormat,
    on_error: &'static str,
    partitions: i32,
}

impl Options {
    fn json(guarantee: &'static str) -> Options {
        Options { guarantee, format: SourceFormat::Json, on_error: "continue", partitions: 6 }
    }
}

const CLICK_SCHEMA: &str = r#"{
  "type": "record",
  "name": "Click",
  "fields": [
    { "name": "user_id", "type": "string" },
    { "name": "ts", "type": "long" },
    { "name": "page_url", "type": "string" }
  ]
}
"#;

/// A counting topology written to `<root>/topologies/t.yaml` (schemas in `<root>/avro/`), with
/// its input topic created; every name is unique to this test run.
struct Topology {
    root: PathBuf,
    file: PathBuf,
    app: String,
    input: String,
    output: String,
    dead_letters: String,
}

impl Topology {
    fn write(kind: &str, options: &Options) -> Topology {
        let root = std::env::temp_dir().join(unique(kind));
        let app = unique(&format!("{kind}-app"));
        let input = unique(&format!("{kind}-clicks"));
        let output = unique(&format!("{kind}-counts"));
        let dead_letters = unique(&format!("{kind}-dlq"));
        for dir in ["topologies", "avro", "logs", "state"] {
            std::fs::create_dir_all(root.join(dir)).expect("test directory");
        }
        let format = match options.format {
            SourceFormat::Json => "json".to_owned(),
            SourceFormat::Avro => {
                std::fs::write(root.join("avro/click.avsc"), CLICK_SCHEMA).expect("schema file");
                "avro, schema: click.avsc".to_owned()
            }
        };
        let Options { guarantee, on_error, partitions, .. } = options;
        let yaml = format!(
            "application_id: {app}\n\
             settings:\n  \
               processing_guarantee: {guarantee}\n  \
               commit_interval: 100ms\n  \
               dead_letter_topic: {dead_letters}\n\
             sources:\n  \
               clicks: {{ topic: {input}, partitions: {partitions}, format: {format}, \
                 key: user_id, timestamp: ts, on_error: {on_error} }}\n\
             operators:\n  \
               counts: {{ type: count, input: clicks, window: {{ size: 1d, grace: 1d }}, \
                 emit: updates }}\n\
             sinks:\n  \
               counts_out: {{ input: counts, topic: {output}, partitions: {partitions}, \
                 format: json }}\n"
        );
        let file = root.join("topologies/t.yaml");
        std::fs::write(&file, yaml).expect("topology file");
        let created = Admin::new(&settings())
            .and_then(|admin| admin.create_topics(&[TopicSpec::new(&input, *partitions)]))
            .expect("create the input topic");
        assert_eq!(created[0].1, CreateOutcome::Created, "input topic {input}");
        Topology { root, file, app, input, output, dead_letters }
    }
}

// ------------------------------------------------------------------------------------------
// Instances

/// One `eddy run` instance: a stable id and state directory across restarts, one log file.
struct Instance {
    id: String,
    state_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

/// The instances of one topology. Dropping it SIGKILLs whatever still runs; when the test is
/// failing it also prints the tail of every instance's log and keeps the test directory.
struct Cluster {
    topology: Topology,
    instances: Vec<Instance>,
    state_dirs: u32,
}

impl Cluster {
    fn new(topology: Topology) -> Cluster {
        Cluster { topology, instances: Vec::new(), state_dirs: 0 }
    }

    fn fresh_state_dir(&mut self, id: &str) -> PathBuf {
        self.state_dirs += 1;
        let dir = self.topology.root.join("state").join(format!("{id}-{}", self.state_dirs));
        std::fs::create_dir_all(&dir).expect("state directory");
        dir
    }

    /// Starts a new instance with a new id and an empty state directory; returns its index.
    fn add(&mut self) -> usize {
        let index = self.instances.len();
        let id = format!("{}-i{index}", self.topology.app);
        let state_dir = self.fresh_state_dir(&id);
        let log = self.topology.root.join("logs").join(format!("i{index}.log"));
        self.instances.push(Instance { id, state_dir, log, child: None, starts: 0 });
        self.start(index);
        index
    }

    /// Gives a stopped instance an empty state directory (same id) for its next start.
    fn wipe_state(&mut self, index: usize) {
        assert!(self.instances[index].child.is_none(), "wipe the state of a stopped instance");
        let id = self.instances[index].id.clone();
        self.instances[index].state_dir = self.fresh_state_dir(&id);
    }

    /// (Re)starts a stopped instance on its state directory.
    fn start(&mut self, index: usize) {
        let file = self.topology.file.clone();
        let instance = &mut self.instances[index];
        assert!(instance.child.is_none(), "{} is already running", instance.id);
        instance.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&instance.log)
            .expect("instance log file");
        writeln!(
            log,
            "{START_MARK} #{} of {} on {} ===",
            instance.starts,
            instance.id,
            instance.state_dir.display()
        )
        .expect("write the log");
        let child = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .arg("--bootstrap-servers")
            .arg(&broker().bootstrap)
            .arg("run")
            .arg(&file)
            .arg("--state-dir")
            .arg(&instance.state_dir)
            .arg("--instance-id")
            .arg(&instance.id)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("instance log file"))
            .stderr(log)
            .spawn()
            .expect("the eddy binary starts");
        instance.child = Some(child);
    }

    /// SIGKILL: no chance to commit or leave the group.
    fn kill(&mut self, index: usize) {
        let instance = &mut self.instances[index];
        let mut child = instance.child.take().expect("kill a running instance");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap the killed instance");
    }

    /// SIGTERM, then waits for the exit; fails the test if the instance outlives [`TERM_WAIT`].
    fn term(&mut self, index: usize) -> ExitStatus {
        let instance = &mut self.instances[index];
        let pid = instance.child.as_ref().expect("stop a running instance").id();
        let sent = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        assert!(sent.is_ok_and(|s| s.success()), "could not SIGTERM {}", instance.id);
        self.wait_exit(index, TERM_WAIT, "after SIGTERM")
    }

    /// Waits for a running instance to exit on its own, failing the test after `cap`.
    fn wait_exit(&mut self, index: usize, cap: Duration, why: &str) -> ExitStatus {
        let instance = &mut self.instances[index];
        let child = instance.child.as_mut().expect("wait for a running instance");
        let deadline = Instant::now() + cap;
        loop {
            if let Some(status) = child.try_wait().expect("instance status") {
                instance.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit within {cap:?} {why}", instance.id);
            sleep(Duration::from_millis(100));
        }
    }

    /// Fails the test if an instance that should be running has exited.
    fn assert_running(&mut self) {
        for instance in &mut self.instances {
            if let Some(child) = instance.child.as_mut()
                && let Some(status) = child.try_wait().expect("instance status")
            {
                instance.child = None;
                panic!("instance {} exited on its own with {status}", instance.id);
            }
        }
    }

    fn running(&self) -> Vec<usize> {
        (0..self.instances.len()).filter(|&i| self.instances[i].child.is_some()).collect()
    }

    fn stopped(&self) -> Vec<usize> {
        (0..self.instances.len()).filter(|&i| self.instances[i].child.is_none()).collect()
    }

    /// SIGTERMs every running instance; each must exit 0.
    fn term_all(&mut self) {
        for index in self.running() {
            let began = Instant::now();
            let status = self.term(index);
            assert!(
                status.success(),
                "{} exited with {status} after SIGTERM (it must commit, leave and exit 0)",
                self.instances[index].id
            );
            eprintln!("  {} stopped cleanly in {:?}", self.instances[index].id, began.elapsed());
        }
    }

    /// What an instance logged since its latest start.
    fn log_of_last_start(&self, index: usize) -> String {
        let text = std::fs::read_to_string(&self.instances[index].log).unwrap_or_default();
        match text.rfind(START_MARK) {
            Some(at) => text[at..].to_owned(),
            None => text,
        }
    }

    fn tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for instance in &self.instances {
            let text = std::fs::read_to_string(&instance.log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            out += &format!(
                "----- last {} lines of {} ({}) -----\n",
                all.len() - from,
                instance.id,
                instance.log.display()
            );
            for line in &all[from..] {
                out += line;
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for instance in &mut self.instances {
            if let Some(mut child) = instance.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.tails(60));
            eprintln!("The topology, logs and state are kept in {}", self.topology.root.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.topology.root);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Input

fn click_json(user: &str, ts: i64) -> Vec<u8> {
    format!(r#"{{"user_id":"{user}","ts":{ts},"page_url":"/p{}"}}"#, ts % 7).into_bytes()
}

/// The `seq`-th input record's timestamp: all of them inside one daily window.
fn ts_of(seq: i64) -> i64 {
    assert!((0..DAY_MS).contains(&seq), "input record {seq} would fall outside the day");
    BASE_TS + seq
}

fn record(
    topic: &str,
    partition: Option<i32>,
    key: &str,
    value: Vec<u8>,
    ts: i64,
) -> ProducerRecord {
    ProducerRecord {
        topic: topic.to_owned(),
        partition,
        key: Some(key.as_bytes().to_vec()),
        value: Some(value),
        headers: Vec::new(),
        timestamp: Some(ts),
    }
}

fn producer() -> Producer {
    Producer::new(&settings(), &unique("test-producer")).expect("producer")
}

/// Whether the broker hides aborted transactions from `read_committed` readers: a record sent
/// in an aborted transaction, then a plain one; a committed reader that reaches the plain one
/// without seeing the aborted one proves isolation. (Nisshi 0.7 does not isolate.)
fn broker_isolates_transactions() -> bool {
    let topic = unique("isolation");
    Admin::new(&settings())
        .and_then(|admin| admin.create_topics(&[TopicSpec::new(&topic, 1)]))
        .expect("create the probe topic");
    let id = unique("isolation-txn");
    let txn = Producer::transactional(&settings(), &id, Some(&id), Duration::from_secs(30))
        .expect("transactional producer");
    let record = |value: &str| ProducerRecord {
        topic: topic.clone(),
        partition: Some(0),
        value: Some(value.as_bytes().to_vec()),
        ..ProducerRecord::default()
    };
    txn.begin().expect("begin");
    txn.send(&record("aborted")).expect("send");
    txn.flush(Duration::from_secs(30)).expect("flush");
    txn.abort().expect("abort");
    let plain = producer();
    plain.send(&record("plain")).expect("send");
    plain.flush(Duration::from_secs(30)).expect("flush");
    let reader = GroupConsumer::new(&settings(), &ConsumerOptions::new(unique("isolation")), None)
        .expect("reader");
    reader.assign(&[(TopicPartition::new(&topic, 0), 0)]).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut saw_aborted = false;
    while Instant::now() < deadline {
        if let Ok(Some(record)) = reader.poll(Duration::from_millis(200)) {
            match record.value.as_deref() {
                Some(b"aborted") => saw_aborted = true,
                Some(b"plain") => return !saw_aborted,
                _ => {}
            }
        }
    }
    panic!("the isolation probe never read back its plain record from {topic}");
}

/// Input produced at a steady rate by a thread, until told to stop; it knows how many records
/// of each key the broker acknowledged.
struct Feed {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<BTreeMap<String, u64>>,
}

impl Feed {
    fn start(topic: &str, users: u64, per_second: u64, seed: u64) -> Feed {
        let stop = Arc::new(AtomicBool::new(false));
        let topic = topic.to_owned();
        let stopped = stop.clone();
        let handle = std::thread::spawn(move || {
            let producer = producer();
            let mut rng = Rng(seed.max(1));
            let mut counts = BTreeMap::new();
            let started = Instant::now();
            let mut last_flush = Instant::now();
            let mut sent: u64 = 0;
            while !stopped.load(Ordering::SeqCst) {
                let due = started.elapsed().as_millis() as u64 * per_second / 1000;
                while sent < due {
                    let user = format!("u{}", rng.below(users));
                    let ts = ts_of(sent as i64);
                    producer
                        .send(&record(&topic, None, &user, click_json(&user, ts), ts))
                        .expect("send");
                    *counts.entry(user).or_insert(0) += 1;
                    sent += 1;
                }
                if last_flush.elapsed() >= Duration::from_secs(1) {
                    producer
                        .flush(Duration::from_secs(60))
                        .expect("every input record acknowledged");
                    last_flush = Instant::now();
                }
                sleep(Duration::from_millis(10));
            }
            producer.flush(Duration::from_secs(60)).expect("every input record acknowledged");
            counts
        });
        Feed { stop, handle }
    }

    /// Stops producing; returns the number of records sent per key.
    fn finish(self) -> BTreeMap<String, u64> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap_or_else(|_| panic!("the input thread failed"))
    }
}

/// One more record for each key, numbered on from `first_seq`.
fn send_one_per_key<'a>(topic: &str, keys: impl Iterator<Item = &'a String>, first_seq: u64) {
    let producer = producer();
    for (n, key) in keys.enumerate() {
        let ts = ts_of((first_seq + n as u64) as i64);
        producer.send(&record(topic, None, key, click_json(key, ts), ts)).expect("send");
    }
    producer.flush(Duration::from_secs(60)).expect("every input record acknowledged");
}

fn total(counts: &BTreeMap<String, u64>) -> u64 {
    counts.values().sum()
}

// ------------------------------------------------------------------------------------------
// Output

fn header<'a>(record: &'a ConsumerRecord, name: &str) -> Option<&'a [u8]> {
    record.headers.iter().find(|(key, _)| key == name).and_then(|(_, value)| value.as_deref())
}

fn header_text(record: &ConsumerRecord, name: &str) -> Option<String> {
    header(record, name).map(|bytes| String::from_utf8_lossy(bytes).into_owned())
}

/// A numeric header: decimal text, or a big-endian integer of 4 or 8 bytes.
fn header_int(record: &ConsumerRecord, name: &str) -> Option<i64> {
    let bytes = header(record, name)?;
    if let Some(n) = std::str::from_utf8(bytes).ok().and_then(|t| t.trim().parse().ok()) {
        return Some(n);
    }
    match bytes.len() {
        4 => Some(i64::from(i32::from_be_bytes(bytes.try_into().ok()?))),
        8 => Some(i64::from_be_bytes(bytes.try_into().ok()?)),
        _ => None,
    }
}

/// The user id in an output key (plain text; a JSON string is accepted too).
fn key_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).into_owned();
    if text.starts_with('"')
        && let Ok(serde_json::Value::String(inner)) = serde_json::from_str(&text)
    {
        return inner;
    }
    text
}

fn where_(record: &ConsumerRecord) -> String {
    format!("{}-{}@{}", record.topic, record.partition, record.offset)
}

/// A record's key and value bytes.
type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// What the count outputs say so far, built record by record in offset order.
#[derive(Default)]
struct Tally {
    /// Per key: the partition, offset and count of its newest output.
    latest: BTreeMap<String, (i32, i64, u64)>,
    /// Per key: every count it emitted.
    seen: BTreeMap<String, BTreeSet<u64>>,
    /// Per `eddy.id`: the key and value first seen with it.
    by_id: HashMap<Vec<u8>, KeyValue>,
    outputs: u64,
    duplicates: u64,
    conflicting_ids: Vec<String>,
    missing_ids: u64,
    malformed: Vec<String>,
    split_keys: BTreeSet<String>,
}

impl Tally {
    fn add(&mut self, record: &ConsumerRecord) {
        self.outputs += 1;
        let Some(key) = record.key.as_deref().map(key_text) else {
            self.malformed.push(format!("{}: no key", where_(record)));
            return;
        };
        let value: Option<serde_json::Value> =
            record.value.as_deref().and_then(|v| serde_json::from_slice(v).ok());
        let count = value.as_ref().and_then(|v| v.get("count")).and_then(|c| c.as_u64());
        let Some(count) = count else {
            self.malformed.push(format!(
                "{}: value {:?} has no count",
                where_(record),
                record.value.as_deref().map(String::from_utf8_lossy)
            ));
            return;
        };
        let window_start =
            value.as_ref().and_then(|v| v.get("window_start")).and_then(|w| w.as_i64());
        if window_start != Some(BASE_TS) {
            self.malformed.push(format!(
                "{}: window_start {window_start:?}, expected {BASE_TS}",
                where_(record)
            ));
        }
        match header(record, "eddy.id") {
            None => self.missing_ids += 1,
            Some(id) => match self.by_id.entry(id.to_vec()) {
                Entry::Occupied(first) => {
                    self.duplicates += 1;
                    if first.get() != &(record.key.clone(), record.value.clone()) {
                        self.conflicting_ids.push(format!(
                            "{}: eddy.id {:?} first carried {:?}, now {:?}",
                            where_(record),
                            String::from_utf8_lossy(id),
                            first.get().1.as_deref().map(String::from_utf8_lossy),
                            record.value.as_deref().map(String::from_utf8_lossy),
                        ));
                    }
                }
                Entry::Vacant(slot) => {
                    slot.insert((record.key.clone(), record.value.clone()));
                }
            },
        }
        self.seen.entry(key.clone()).or_default().insert(count);
        if let Some(&(partition, _, _)) = self.latest.get(&key)
            && partition != record.partition
        {
            self.split_keys.insert(key.clone());
        }
        self.latest.insert(key, (record.partition, record.offset, count));
    }

    fn latest_count(&self, key: &str) -> u64 {
        self.latest.get(key).map_or(0, |&(_, _, count)| count)
    }

    /// Whether every key's newest count is the expected one, and no other key has outputs.
    fn matches(&self, expected: &BTreeMap<String, u64>) -> bool {
        self.latest.len() == expected.len()
            && expected.iter().all(|(key, &want)| self.latest_count(key) == want)
    }
}

/// How the newest counts compare with the input.
struct Verdict {
    lost: u64,
    double_counted: u64,
    /// Counts between 1 and a key's total that no output carried.
    never_emitted: u64,
    examples: Vec<String>,
}

impl Verdict {
    fn of(expected: &BTreeMap<String, u64>, tally: &Tally) -> Verdict {
        let mut verdict =
            Verdict { lost: 0, double_counted: 0, never_emitted: 0, examples: Vec::new() };
        for (key, &want) in expected {
            let got = tally.latest_count(key);
            if got < want {
                verdict.lost += want - got;
                verdict.examples.push(format!("{key}: newest count {got}, input {want}"));
            } else if got > want {
                verdict.double_counted += got - want;
                verdict.examples.push(format!("{key}: newest count {got}, input {want}"));
            }
            let seen = tally.seen.get(key);
            verdict.never_emitted +=
                (1..=want).filter(|c| !seen.is_some_and(|s| s.contains(c))).count() as u64;
        }
        for (key, &(_, _, got)) in &tally.latest {
            if !expected.contains_key(key) {
                verdict.double_counted += got;
                verdict.examples.push(format!("{key}: newest count {got}, but no input has it"));
            }
        }
        verdict
    }

    fn exact(&self) -> bool {
        self.lost == 0 && self.double_counted == 0
    }

    fn describe(&self, tally: &Tally) -> String {
        let mut text = format!(
            "lost {}, double_counted {}, counts never emitted {}, outputs {}, keys on more than one \
             output partition {:?}",
            self.lost, self.double_counted, self.never_emitted, tally.outputs, tally.split_keys
        );
        for example in self.examples.iter().take(10) {
            text += &format!("\n  {example}");
        }
        if self.examples.len() > 10 {
            text += &format!("\n  … and {} more keys", self.examples.len() - 10);
        }
        for bad in tally.malformed.iter().take(5) {
            text += &format!("\n  malformed output {bad}");
        }
        text
    }
}

/// Reads one topic, every partition from offset 0, outside any group (read_committed).
struct Outputs {
    topic: String,
    consumer: GroupConsumer,
    probe: GroupConsumer,
    partitions: Vec<TopicPartition>,
    next: BTreeMap<i32, i64>,
    records: Vec<ConsumerRecord>,
    tally: Tally,
    counts: bool,
    poll_errors: u64,
}

impl Outputs {
    /// Waits for Eddy to create `topic`, then reads it; `counts`: tally its records as counts.
    fn open(topic: &str, counts: bool, cluster: &mut Cluster) -> Outputs {
        let consumer =
            GroupConsumer::new(&settings(), &ConsumerOptions::new(unique("reader")), None)
                .expect("reader");
        // Watermarks come from a read_uncommitted consumer: asked through a read_committed one,
        // Nisshi 0.7 never answers (the request times out). A consumer, unlike an admin client,
        // asks for metadata without creating the topic.
        let mut probe_options = ConsumerOptions::new(unique("probe"));
        probe_options.read_committed = false;
        let probe = GroupConsumer::new(&settings(), &probe_options, None).expect("probe");
        let cap = Duration::from_secs(90);
        let deadline = Instant::now() + cap;
        while let Err(error) = probe.watermarks(&TopicPartition::new(topic, 0)) {
            cluster.assert_running();
            assert!(
                Instant::now() < deadline,
                "eddy run did not create {topic} within {cap:?} ({error})"
            );
            sleep(Duration::from_millis(500));
        }
        let partitions = Admin::new(&settings())
            .and_then(|admin| admin.describe_topic(topic))
            .expect("describe the output topic")
            .partitions;
        let partitions: Vec<TopicPartition> =
            (0..partitions).map(|p| TopicPartition::new(topic, p)).collect();
        let from_start: Vec<(TopicPartition, i64)> =
            partitions.iter().map(|tp| (tp.clone(), 0)).collect();
        consumer.assign(&from_start).expect("assign the output partitions");
        Outputs {
            topic: topic.to_owned(),
            consumer,
            probe,
            partitions,
            next: BTreeMap::new(),
            records: Vec::new(),
            tally: Tally::default(),
            counts,
            poll_errors: 0,
        }
    }

    /// Reads for `how_long`; returns how many records arrived.
    fn poll_for(&mut self, how_long: Duration) -> u64 {
        let until = Instant::now() + how_long;
        let mut new = 0;
        while Instant::now() < until {
            match self.consumer.poll(Duration::from_millis(100)) {
                Ok(Some(record)) => {
                    new += 1;
                    self.next.insert(record.partition, record.offset + 1);
                    if self.counts {
                        self.tally.add(&record);
                    }
                    self.records.push(record);
                }
                Ok(None) => {}
                Err(error) => {
                    self.poll_errors += 1;
                    if self.poll_errors <= 5 {
                        eprintln!("  reading {}: {error}", self.topic);
                    }
                }
            }
        }
        new
    }

    /// Reads up to the high watermarks every partition has now (no transactions on the topic).
    fn read_to_end(&mut self, cap: Duration) {
        let ends: Vec<(i32, i64)> = self
            .partitions
            .iter()
            .map(|tp| (tp.partition, self.probe.watermarks(tp).expect("watermarks").1))
            .collect();
        let deadline = Instant::now() + cap;
        while !ends.iter().all(|(p, end)| self.next.get(p).copied().unwrap_or(0) >= *end) {
            assert!(
                Instant::now() < deadline,
                "{}: not read to {ends:?} within {cap:?}",
                self.topic
            );
            self.poll_for(Duration::from_millis(200));
        }
    }
}

/// Reads the outputs until nothing new arrives for [`QUIET`] (or [`QUIET_WHEN_RIGHT`] once
/// they hold the expected counts), at most [`DRAIN_CAP`]; returns how long it took.
fn drain(out: &mut Outputs, cluster: &mut Cluster, expected: &BTreeMap<String, u64>) -> Duration {
    let started = Instant::now();
    let mut last_new = Instant::now();
    loop {
        if out.poll_for(Duration::from_millis(500)) > 0 {
            last_new = Instant::now();
        }
        cluster.assert_running();
        let quiet = last_new.elapsed();
        if quiet >= QUIET || (quiet >= QUIET_WHEN_RIGHT && out.tally.matches(expected)) {
            return started.elapsed();
        }
        if started.elapsed() >= DRAIN_CAP {
            eprintln!(
                "  the outputs were still growing after {DRAIN_CAP:?}; verifying what arrived"
            );
            return started.elapsed();
        }
    }
}

/// Reads the outputs until every key's newest count is the expected one, at most `cap`.
fn await_counts(
    out: &mut Outputs,
    cluster: &mut Cluster,
    expected: &BTreeMap<String, u64>,
    cap: Duration,
) -> bool {
    let deadline = Instant::now() + cap;
    loop {
        out.poll_for(Duration::from_millis(300));
        cluster.assert_running();
        if out.tally.matches(expected) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

/// Fails the test unless the outputs are well-formed and replays are identical.
fn assert_outputs_well_formed(tally: &Tally) {
    assert!(
        tally.malformed.is_empty(),
        "malformed outputs: {:#?}",
        &tally.malformed[..tally.malformed.len().min(10)]
    );
    assert_eq!(tally.missing_ids, 0, "outputs without an eddy.id header");
    assert!(
        tally.conflicting_ids.is_empty(),
        "{} outputs share an eddy.id with a different output (a replay must be identical): {:#?}",
        tally.conflicting_ids.len(),
        &tally.conflicting_ids[..tally.conflicting_ids.len().min(10)]
    );
    assert!(
        tally.split_keys.is_empty(),
        "keys on several output partitions: {:?}",
        tally.split_keys
    );
}

// ------------------------------------------------------------------------------------------
// Crash tests

struct Chaos {
    name: &'static str,
    guarantee: &'static str,
    users: u64,
    per_second: u64,
    min_kills: u32,
    min_time: Duration,
    /// The kill after which the victim restarts on an empty state directory.
    empty_state_at_kill: u32,
    /// Afterwards: stop everything, restore all state on one new instance, count on.
    restore_elsewhere: bool,
}

fn crash_test(chaos: Chaos) {
    let wall = Instant::now();
    let name = chaos.name;
    let mut rng = Rng::seeded(name);
    let topology = Topology::write("crash", &Options::json(chaos.guarantee));
    let (input, output) = (topology.input.clone(), topology.output.clone());
    let mut cluster = Cluster::new(topology);
    for _ in 0..3 {
        cluster.add();
    }
    let mut out = Outputs::open(&output, true, &mut cluster);
    let feed = Feed::start(&input, chaos.users, chaos.per_second, rng.next());

    let (mut kills, mut restarts) = (0u32, 0u32);
    let chaos_started = Instant::now();
    while kills < chaos.min_kills || chaos_started.elapsed() < chaos.min_time {
        out.poll_for(rng.between(Duration::from_secs(2), Duration::from_secs(5)));
        cluster.assert_running();
        let victim = rng.below(3) as usize;
        cluster.kill(victim);
        kills += 1;
        let down = rng.between(Duration::from_secs(1), Duration::from_secs(4));
        out.poll_for(down);
        let empty = kills == chaos.empty_state_at_kill;
        if empty {
            cluster.wipe_state(victim);
        }
        cluster.start(victim);
        restarts += 1;
        eprintln!(
            "  {:>5.1}s kill -9 #{kills} of {} for {down:?}, restarted on {} state",
            chaos_started.elapsed().as_secs_f64(),
            cluster.instances[victim].id,
            if empty { "an EMPTY" } else { "its own" }
        );
    }
    let expected = feed.finish();
    let records = total(&expected);
    eprintln!("  input stopped: {records} records over {} keys; draining", expected.len());
    let drained = drain(&mut out, &mut cluster, &expected);

    let verdict = Verdict::of(&expected, &out.tally);
    eprintln!(
        "{name}: records {records}, kills {kills}, restarts {restarts}, lost {}, double_counted {}, \
         output duplicates {} of {} outputs (identical replays; conflicting {}), counts never \
         emitted {}, drained in {drained:?}, wall time {:?}",
        verdict.lost,
        verdict.double_counted,
        out.tally.duplicates,
        out.tally.outputs,
        out.tally.conflicting_ids.len(),
        verdict.never_emitted,
        wall.elapsed()
    );
    assert!(
        verdict.exact(),
        "{name}: the state is not exactly-once: {}",
        verdict.describe(&out.tally)
    );
    assert_outputs_well_formed(&out.tally);
    assert_eq!(
        verdict.never_emitted,
        0,
        "{name}: some counts were never emitted (an output was lost): {}",
        verdict.describe(&out.tally)
    );

    if chaos.guarantee == "exactly_once" {
        // The strict check: on a broker that hides aborted transactions, committed outputs
        // of an exactly_once application never repeat.
        if broker_isolates_transactions() {
            eprintln!("{name}: the broker isolates transactions; checking for no duplicates");
            assert_eq!(out.tally.duplicates, 0, "{name}: duplicate committed outputs");
        } else {
            eprintln!(
                "{name}: the broker does not hide aborted transactions; duplicates are identical \
                 replays, checked above, and the no-duplicate check does not apply here"
            );
        }
    }
    cluster.term_all();
    if chaos.restore_elsewhere {
        let began = Instant::now();
        let fresh = cluster.add();
        let mut more = expected.clone();
        for count in more.values_mut() {
            *count += 1;
        }
        send_one_per_key(&input, expected.keys(), records);
        let restored = await_counts(&mut out, &mut cluster, &more, Duration::from_secs(120));
        let after = Verdict::of(&more, &out.tally);
        eprintln!(
            "{name}: restored on one new instance ({}) with an empty state dir, one more record per \
             key: lost {}, double_counted {}, in {:?}; wall time {:?}",
            cluster.instances[fresh].id,
            after.lost,
            after.double_counted,
            began.elapsed(),
            wall.elapsed()
        );
        assert!(
            restored && after.exact(),
            "{name}: after a restore elsewhere the counts are not input + 1: {}",
            after.describe(&out.tally)
        );
        assert_outputs_well_formed(&out.tally);
        cluster.term_all();
    }
}

/// Three instances, input flowing, at least ten `kill -9`s (one restart on an empty state
/// directory); then every key's newest count equals its input, and one new instance restored
/// from the changelogs alone counts on from exactly there.
#[test]
fn crash_test_kill_minus_nine() {
    crash_test(Chaos {
        name: "crash_test_kill_minus_nine",
        guarantee: "at_least_once",
        users: 300,
        per_second: 2000,
        min_kills: 10,
        min_time: Duration::from_secs(60),
        empty_state_at_kill: 5,
        restore_elsewhere: true,
    });
}

/// The same under `exactly_once` (transactions), shorter.
#[test]
fn exactly_once_counting_survives_kills() {
    crash_test(Chaos {
        name: "exactly_once_counting_survives_kills",
        guarantee: "exactly_once",
        users: 300,
        per_second: 1000,
        min_kills: 4,
        min_time: Duration::from_secs(40),
        empty_state_at_kill: 2,
        restore_elsewhere: false,
    });
}

/// Eight clean membership changes (SIGTERM one, start one) while input flows: every stopped
/// instance exits 0 and the counts stay exact.
#[test]
fn sigterm_churn_of_eight_membership_changes() {
    let name = "sigterm_churn_of_eight_membership_changes";
    let wall = Instant::now();
    let mut rng = Rng::seeded(name);
    let topology = Topology::write("churn", &Options::json("at_least_once"));
    let (input, output) = (topology.input.clone(), topology.output.clone());
    let mut cluster = Cluster::new(topology);
    for _ in 0..3 {
        cluster.add();
    }
    let mut out = Outputs::open(&output, true, &mut cluster);
    let feed = Feed::start(&input, 200, 1000, rng.next());

    let mut changes = 0;
    while changes < 8 {
        out.poll_for(rng.between(Duration::from_secs(3), Duration::from_secs(5)));
        cluster.assert_running();
        let running = cluster.running();
        let stop = match running.len() {
            0..=2 => false,
            3 => rng.below(2) == 0,
            _ => true,
        };
        changes += 1;
        if stop {
            let index = rng.pick(&running);
            let began = Instant::now();
            let status = cluster.term(index);
            let id = &cluster.instances[index].id;
            assert!(status.success(), "{id} exited with {status} after SIGTERM");
            eprintln!("  change {changes}: SIGTERM {id}, exited 0 in {:?}", began.elapsed());
        } else {
            let stopped = cluster.stopped();
            let index = if !stopped.is_empty() && rng.below(2) == 0 {
                let index = rng.pick(&stopped);
                cluster.start(index);
                index
            } else {
                cluster.add()
            };
            eprintln!(
                "  change {changes}: started {} (start #{})",
                cluster.instances[index].id, cluster.instances[index].starts
            );
        }
    }
    out.poll_for(rng.between(Duration::from_secs(2), Duration::from_secs(4)));
    let expected = feed.finish();
    let drained = drain(&mut out, &mut cluster, &expected);
    let verdict = Verdict::of(&expected, &out.tally);
    eprintln!(
        "{name}: records {}, membership changes {changes}, lost {}, double_counted {}, output \
         duplicates {} of {}, drained in {drained:?}, wall time {:?}",
        total(&expected),
        verdict.lost,
        verdict.double_counted,
        out.tally.duplicates,
        out.tally.outputs,
        wall.elapsed()
    );
    assert!(verdict.exact(), "{name}: the counts are not exact: {}", verdict.describe(&out.tally));
    assert_outputs_well_formed(&out.tally);
    assert_eq!(verdict.never_emitted, 0, "{name}: outputs lost: {}", verdict.describe(&out.tally));
    cluster.term_all();
}

// ------------------------------------------------------------------------------------------
// Bad records

fn avro_long(n: i64, out: &mut Vec<u8>) {
    let mut zigzag = ((n << 1) ^ (n >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

fn avro_string(s: &str, out: &mut Vec<u8>) {
    avro_long(s.len() as i64, out);
    out.extend_from_slice(s.as_bytes());
}

/// A `Click` datum (Avro binary, no framing).
fn avro_click(user: &str, ts: i64) -> Vec<u8> {
    let mut datum = Vec::new();
    avro_string(user, &mut datum);
    avro_long(ts, &mut datum);
    avro_string(&format!("/p{}", ts % 7), &mut datum);
    datum
}

/// The Confluent wire format: magic byte, schema id, datum.
fn framed(magic: u8, schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut bytes = vec![magic];
    bytes.extend_from_slice(&schema_id.to_be_bytes());
    bytes.extend_from_slice(datum);
    bytes
}

/// A record produced to a known partition, at a known offset.
struct Sent {
    what: &'static str,
    key: String,
    value: Vec<u8>,
    partition: i32,
    offset: i64,
    ts: i64,
}

/// Produces records to fixed partitions of a fresh topic, knowing each one's offset.
struct Placed {
    topic: String,
    producer: Producer,
    next_offset: BTreeMap<i32, i64>,
    seq: i64,
}

impl Placed {
    fn new(topic: &str) -> Placed {
        Placed {
            topic: topic.to_owned(),
            producer: producer(),
            next_offset: BTreeMap::new(),
            seq: 0,
        }
    }

    fn send(&mut self, what: &'static str, partition: i32, key: &str, value: Vec<u8>) -> Sent {
        let ts = ts_of(self.seq);
        self.seq += 1;
        self.producer
            .send(&record(&self.topic, Some(partition), key, value.clone(), ts))
            .expect("send");
        let next = self.next_offset.entry(partition).or_insert(0);
        let offset = *next;
        *next += 1;
        Sent { what, key: key.to_owned(), value, partition, offset, ts }
    }

    fn next_ts(&self) -> i64 {
        ts_of(self.seq)
    }

    fn flush(&self) {
        self.producer.flush(Duration::from_secs(60)).expect("every record acknowledged");
    }
}

/// With `on_error: continue`, each of five kinds of undecodable Avro record goes to the
/// dead-letter topic with its raw bytes and headers saying why, where from and when; the good
/// records around them are all counted and the instance keeps running.
#[test]
fn poison_pills_continue_go_to_the_dead_letter_topic() {
    let name = "poison_pills_continue_go_to_the_dead_letter_topic";
    let mut rng = Rng::seeded(name);
    let partitions = 3;
    let options = Options {
        guarantee: "at_least_once",
        format: SourceFormat::Avro,
        on_error: "continue",
        partitions,
    };
    let topology = Topology::write("poison", &options);
    let (input, output, dead_letters) =
        (topology.input.clone(), topology.output.clone(), topology.dead_letters.clone());
    let mut cluster = Cluster::new(topology);
    cluster.add();

    let mut placed = Placed::new(&input);
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut poisons: Vec<Sent> = Vec::new();
    for n in 0..120u32 {
        if n > 0 && n % 20 == 0 {
            // A user's records stay on one partition; bad records land anywhere.
            let kind = poisons.len();
            let partition = (kind as i32) % partitions;
            let ts = placed.next_ts();
            let (what, value) = match kind {
                0 => {
                    let mut bytes: Vec<u8> = (0..24).map(|_| rng.next() as u8).collect();
                    bytes[0] = 0xA5;
                    ("random bytes", bytes)
                }
                1 => ("wrong magic byte 1", framed(1, 1, &avro_click("a1", ts))),
                2 => ("too short", vec![0, 0, 0]),
                3 => ("unknown schema id 999", framed(0, 999, &avro_click("a1", ts))),
                _ => {
                    let mut datum = Vec::new();
                    avro_long(1_000_000, &mut datum); // a string far longer than the record
                    ("payload that is not a Click", framed(0, 1, &datum))
                }
            };
            poisons.push(placed.send(what, partition, &format!("poison-{kind}"), value));
        }
        let user = rng.below(10) as i32;
        let key = format!("a{user}");
        let ts = placed.next_ts();
        placed.send("good", user % partitions, &key, framed(0, 1, &avro_click(&key, ts)));
        *expected.entry(key).or_insert(0) += 1;
    }
    placed.flush();
    assert_eq!(poisons.len(), 5);

    let mut out = Outputs::open(&output, true, &mut cluster);
    let mut dlq = Outputs::open(&dead_letters, false, &mut cluster);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !(out.tally.matches(&expected) && dlq.records.len() >= poisons.len()) {
        assert!(
            Instant::now() < deadline,
            "{name}: after 90 s: {} dead letters of {}; counts: {}",
            dlq.records.len(),
            poisons.len(),
            Verdict::of(&expected, &out.tally).describe(&out.tally)
        );
        out.poll_for(Duration::from_millis(300));
        dlq.poll_for(Duration::from_millis(300));
        cluster.assert_running();
    }
    dlq.read_to_end(Duration::from_secs(30));
    out.read_to_end(Duration::from_secs(30));

    let verdict = Verdict::of(&expected, &out.tally);
    assert!(
        verdict.exact(),
        "{name}: good records not counted exactly: {}",
        verdict.describe(&out.tally)
    );
    assert_outputs_well_formed(&out.tally);

    let mut problems = Vec::new();
    if dlq.records.len() != poisons.len() {
        problems.push(format!("{} dead letters, expected {}", dlq.records.len(), poisons.len()));
    }
    let mut errors = BTreeSet::new();
    for poison in &poisons {
        let found =
            dlq.records.iter().find(|r| r.value.as_deref() == Some(poison.value.as_slice()));
        let Some(letter) = found else {
            problems.push(format!("{}: no dead letter carries its raw value", poison.what));
            continue;
        };
        let what = poison.what;
        if letter.key.as_deref() != Some(poison.key.as_bytes()) {
            problems.push(format!("{what}: key {:?}, expected {:?}", letter.key, poison.key));
        }
        let error = header_text(letter, "eddy.error").unwrap_or_default();
        if error.is_empty() {
            problems.push(format!("{what}: no eddy.error"));
        } else if !errors.insert(error.clone()) {
            problems.push(format!("{what}: eddy.error {error:?} is the same as another kind's"));
        }
        if header_text(letter, "eddy.error.kind").unwrap_or_default().is_empty() {
            problems.push(format!("{what}: no eddy.error.kind"));
        }
        if header_text(letter, "eddy.source.topic").as_deref() != Some(input.as_str()) {
            problems.push(format!(
                "{what}: eddy.source.topic {:?}",
                header_text(letter, "eddy.source.topic")
            ));
        }
        let numbers = [
            ("eddy.source.partition", i64::from(poison.partition)),
            ("eddy.source.offset", poison.offset),
            ("eddy.source.timestamp", poison.ts),
        ];
        for (header_name, want) in numbers {
            let got = header_int(letter, header_name);
            if got != Some(want) {
                problems.push(format!(
                    "{what}: {header_name} {got:?} ({:?}), expected {want}",
                    header_text(letter, header_name)
                ));
            }
        }
        eprintln!(
            "  dead letter for {what} (partition {}, offset {}): kind {:?}, error {error:?}",
            poison.partition,
            poison.offset,
            header_text(letter, "eddy.error.kind")
        );
    }
    assert!(
        problems.is_empty(),
        "{name}: dead letters are not as promised:\n  {}",
        problems.join("\n  ")
    );
    cluster.assert_running();
    cluster.term_all();
    eprintln!(
        "{name}: {} good records counted exactly, {} dead letters as promised",
        total(&expected),
        poisons.len()
    );
}

/// Whether a log names offset `offset` in one of the usual ways.
fn mentions_offset(log: &str, offset: i64) -> bool {
    [
        format!("offset {offset}"),
        format!("offset={offset}"),
        format!("offset: {offset}"),
        format!("offset\":{offset}"),
        format!("@{offset}"),
    ]
    .iter()
    .any(|pattern| log.contains(pattern.as_str()))
}

/// With `on_error: fail`, the instance stops on the bad record (exit non-zero, the log says
/// where), having counted the records before it exactly once and none after; restarted, it
/// stops on the same record and counts nothing twice.
#[test]
fn poison_pill_fail_stops_without_committing_past_it() {
    let name = "poison_pill_fail_stops_without_committing_past_it";
    let mut rng = Rng::seeded(name);
    let options = Options {
        guarantee: "at_least_once",
        format: SourceFormat::Json,
        on_error: "fail",
        partitions: 1,
    };
    let topology = Topology::write("fail", &options);
    let (input, output) = (topology.input.clone(), topology.output.clone());
    let mut cluster = Cluster::new(topology);

    let mut placed = Placed::new(&input);
    let mut before: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..30 {
        let key = format!("f{}", rng.below(5));
        let ts = placed.next_ts();
        placed.send("good", 0, &key, click_json(&key, ts));
        *before.entry(key).or_insert(0) += 1;
    }
    let bad = placed.send("bad", 0, "f-bad", b"{\"user_id\": \"f1\", \"ts\": oops".to_vec());
    for _ in 0..20 {
        let key = format!("f{}", rng.below(5));
        let ts = placed.next_ts();
        placed.send("good", 0, &key, click_json(&key, ts));
    }
    placed.flush();

    let mut runs = Vec::new();
    for run in 1..=2 {
        let began = Instant::now();
        if run == 1 {
            cluster.add();
        } else {
            cluster.start(0);
        }
        let status = cluster.wait_exit(0, Duration::from_secs(90), "on the bad record");
        let took = began.elapsed();
        runs.push(took);
        assert!(
            !status.success(),
            "{name}: run {run} exited 0 with on_error: fail and a bad record"
        );
        let log = cluster.log_of_last_start(0);
        assert!(
            log.contains(&input) && mentions_offset(&log, bad.offset),
            "{name}: run {run}'s log does not name the topic {input} and offset {} of the bad \
             record (partition {})",
            bad.offset,
            bad.partition
        );
        let mut out = Outputs::open(&output, true, &mut cluster);
        out.read_to_end(Duration::from_secs(30));
        let verdict = Verdict::of(&before, &out.tally);
        eprintln!(
            "  run {run}: exited with {status} after {took:?}; {} outputs, {} distinct, {}",
            out.tally.outputs,
            out.tally.by_id.len(),
            verdict.describe(&out.tally)
        );
        assert!(
            verdict.exact(),
            "{name}: after run {run} the counts are not those of the {} records before the bad \
             one: {}",
            total(&before),
            verdict.describe(&out.tally)
        );
        assert_outputs_well_formed(&out.tally);
        for (key, &n) in &before {
            let seen: Vec<u64> =
                out.tally.seen.get(key).map(|s| s.iter().copied().collect()).unwrap_or_default();
            assert_eq!(
                seen,
                (1..=n).collect::<Vec<_>>(),
                "{name}: run {run}: counts emitted for {key}"
            );
        }
        assert_eq!(
            out.tally.by_id.len() as u64,
            total(&before),
            "{name}: run {run}: distinct outputs (by eddy.id) must be one per record before the bad one"
        );
    }
    eprintln!(
        "{name}: stopped on partition {} offset {} twice; time to the failing exit: first run \
         {:?}, restart {:?}",
        bad.partition, bad.offset, runs[0], runs[1]
    );
}

/// Overwrites RocksDB's files (`*.sst`, `CURRENT`, `MANIFEST-*`) anywhere under `dir` with
/// garbage; returns the files it spoiled.
fn spoil_rocksdb_files(dir: &Path, rng: &mut Rng) -> Vec<PathBuf> {
    let mut spoiled = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.ends_with(".sst") || file == "CURRENT" || file.starts_with("MANIFEST-") {
                // Random bytes, not ending in a newline: CURRENT then names no manifest at all.
                let mut garbage: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
                garbage[4095] = 0xFF;
                std::fs::write(&path, garbage).expect("overwrite a state file");
                spoiled.push(path);
            }
        }
    }
    spoiled
}

/// A state directory whose RocksDB files are garbage is wiped (the log says so) and rebuilt
/// from the changelog: counting carries on exactly.
#[test]
fn a_corrupted_state_directory_is_wiped_and_restored() {
    let name = "a_corrupted_state_directory_is_wiped_and_restored";
    let mut rng = Rng::seeded(name);
    let topology = Topology::write("corrupt", &Options::json("at_least_once"));
    let (input, output) = (topology.input.clone(), topology.output.clone());
    let mut cluster = Cluster::new(topology);
    cluster.add();
    let mut out = Outputs::open(&output, true, &mut cluster);

    let producer = producer();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let records = 1000;
    for seq in 0..records {
        let key = format!("u{}", rng.below(50));
        let ts = ts_of(seq);
        producer.send(&record(&input, None, &key, click_json(&key, ts), ts)).expect("send");
        *expected.entry(key).or_insert(0) += 1;
    }
    producer.flush(Duration::from_secs(60)).expect("every record acknowledged");
    let counted = await_counts(&mut out, &mut cluster, &expected, Duration::from_secs(90));
    assert!(
        counted,
        "{name}: the first {records} records were not counted: {}",
        Verdict::of(&expected, &out.tally).describe(&out.tally)
    );
    let status = cluster.term(0);
    assert!(status.success(), "{name}: exited with {status} after SIGTERM");

    let state_dir = cluster.instances[0].state_dir.clone();
    let spoiled = spoil_rocksdb_files(&state_dir, &mut rng);
    assert!(
        !spoiled.is_empty(),
        "{name}: no RocksDB files (*.sst, CURRENT, MANIFEST-*) under {}",
        state_dir.display()
    );
    eprintln!("  spoiled {} RocksDB files under {}", spoiled.len(), state_dir.display());

    cluster.start(0);
    let mut more = expected.clone();
    for count in more.values_mut() {
        *count += 1;
    }
    send_one_per_key(&input, expected.keys(), records as u64);
    let restored = await_counts(&mut out, &mut cluster, &more, Duration::from_secs(120));
    let verdict = Verdict::of(&more, &out.tally);
    assert!(
        restored && verdict.exact(),
        "{name}: after the wipe the counts are not input + 1: {}",
        verdict.describe(&out.tally)
    );
    assert_outputs_well_formed(&out.tally);
    let log = cluster.log_of_last_start(0).to_lowercase();
    assert!(
        log.contains("wip"),
        "{name}: the restarted instance's log does not mention wiping its state"
    );
    cluster.term_all();
    eprintln!("{name}: {} spoiled files, wiped and restored; counts exact", spoiled.len());
}
