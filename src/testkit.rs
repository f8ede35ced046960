//! The broker-free test driver: a whole topology in one process, on real RocksDB stores.
//!
//! [`TopologyDriver`] feeds records to sources and tables, advances stream time and reads what
//! sinks received, running the same decoding, tasks, operators, stores and encoding as
//! production — only Kafka is replaced: records are encoded in their source's format (Avro
//! through the topology's offline schema registry, or JSON) and decoded again, repartitioned
//! records hop between sub-topologies in process, and stores live in a temporary directory.
//! [`run_tests`] runs a topology's embedded `tests:` with it (`eddy test`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use crate::format::{FormatError, SchemaRegistry};
use crate::operator::{OperatorError, Record};
use crate::plan::Plan;
use crate::spec::{TestCase, TestRecord};
use crate::state::{StateEnv, StateError, StoreSpec, Stores, TaskState};
use crate::task::codec::{InputEncoder, SinkCodec, SourceCodec, TableCodec};
use crate::task::{Destination, Entry, Output, Task};
use crate::tempdir::TempDir;
use crate::value::Value;

/// Why the driver could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// No source, table or sink has this name.
    #[error("the topology has no {what} named '{name}'")]
    Unknown {
        /// Source, table or sink.
        what: &'static str,
        /// The name asked for.
        name: String,
    },
    /// Test input that its source's format cannot encode.
    #[error("cannot encode input for '{name}': {source}")]
    Encode {
        /// The source or table.
        name: String,
        /// Why.
        source: FormatError,
    },
    /// A sink's schema could not be registered, or its output not decoded.
    #[error("sink '{name}': {source}")]
    Sink {
        /// The sink.
        name: String,
        /// Why.
        source: FormatError,
    },
    /// The stores failed.
    #[error("state: {0}")]
    State(#[from] StateError),
    /// An operator failed in a way that is not the record's fault.
    #[error("{0}")]
    Operator(OperatorError),
    /// The temporary state directory could not be made.
    #[error("cannot create a state directory: {0}")]
    Io(#[from] std::io::Error),
}

/// A record the topology refused, with the reason: what production sends to the dead-letter
/// topic.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    /// The source or table it came from.
    pub input: String,
    /// A short reason kind (a [`FormatError::kind`], or `operator`).
    pub kind: String,
    /// What was wrong.
    pub reason: String,
}

/// A sink record as the broker would hold it: key, value, timestamp.
type Encoded = (Option<Vec<u8>>, Vec<u8>, i64);

/// Runs a compiled topology in process.
pub struct TopologyDriver {
    plan: Arc<Plan>,
    tasks: Vec<Task>,
    /// The sub-topology reading each rekey node's repartition topic.
    readers: HashMap<usize, usize>,
    sources: Vec<SourceCodec>,
    source_encoders: Vec<InputEncoder>,
    tables: Vec<TableCodec>,
    table_encoders: Vec<InputEncoder>,
    sinks: Vec<SinkCodec>,
    /// Encoded sink records not read yet, per sink.
    outputs: Vec<Vec<Encoded>>,
    dead_letters: Vec<DeadLetter>,
    state: TaskState,
    // Dropped after the state: the directory outlives the database.
    _env: StateEnv,
    _dir: TempDir,
}

/// Memory for the driver's stores: small, it holds test data.
const DRIVER_MEMORY_BYTES: usize = 32 << 20;

impl TopologyDriver {
    /// A driver for `plan`, with empty stores in a fresh temporary directory.
    pub fn new(plan: Arc<Plan>) -> Result<Self, DriverError> {
        let dir = TempDir::new("driver")?;
        let env = StateEnv::new(DRIVER_MEMORY_BYTES);
        let stores: Vec<StoreSpec> = plan
            .stores
            .iter()
            .map(|store| StoreSpec::new(store.name.clone(), store.kind))
            .collect();
        let identity = format!("{}/driver", plan.spec.application_id);
        let (state, _) = TaskState::open(&env, dir.path(), &identity, &stores)?;
        let registry: Arc<dyn SchemaRegistry> = plan.registry.clone();
        let encoder_error = |name: &str| {
            let name = name.to_owned();
            move |source| DriverError::Encode { name, source }
        };
        let sources =
            (0..plan.sources.len()).map(|i| SourceCodec::new(&plan, i, &registry)).collect();
        let source_encoders = (0..plan.sources.len())
            .map(|i| {
                InputEncoder::for_source(&plan, i, registry.as_ref())
                    .map_err(encoder_error(&plan.sources[i].spec.name))
            })
            .collect::<Result<_, _>>()?;
        let tables = (0..plan.tables.len()).map(|i| TableCodec::new(&plan, i, &registry)).collect();
        let table_encoders = (0..plan.tables.len())
            .map(|i| {
                InputEncoder::for_table(&plan, i, registry.as_ref())
                    .map_err(encoder_error(&plan.tables[i].spec.name))
            })
            .collect::<Result<_, _>>()?;
        let sinks = (0..plan.sinks.len())
            .map(|i| {
                SinkCodec::new(&plan, i, &registry).map_err(|source| DriverError::Sink {
                    name: plan.sinks[i].spec.name.clone(),
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        let tasks = (0..plan.subtopologies.len()).map(|i| Task::new(plan.clone(), i)).collect();
        let readers = plan
            .subtopologies
            .iter()
            .enumerate()
            .filter_map(|(index, sub)| sub.repartition.map(|node| (node, index)))
            .collect();
        Ok(TopologyDriver {
            outputs: vec![Vec::new(); plan.sinks.len()],
            plan,
            tasks,
            readers,
            sources,
            source_encoders,
            tables,
            table_encoders,
            sinks,
            dead_letters: Vec::new(),
            state,
            _env: env,
            _dir: dir,
        })
    }

    fn source_index(&self, name: &str) -> Result<usize, DriverError> {
        self.plan
            .sources
            .iter()
            .position(|s| s.spec.name == name)
            .ok_or_else(|| DriverError::Unknown { what: "source", name: name.to_owned() })
    }

    fn table_index(&self, name: &str) -> Result<usize, DriverError> {
        self.plan
            .tables
            .iter()
            .position(|t| t.spec.name == name)
            .ok_or_else(|| DriverError::Unknown { what: "table", name: name.to_owned() })
    }

    fn sink_index(&self, name: &str) -> Result<usize, DriverError> {
        self.plan
            .sinks
            .iter()
            .position(|s| s.spec.name == name)
            .ok_or_else(|| DriverError::Unknown { what: "sink", name: name.to_owned() })
    }

    /// Feeds a record to source `source`, encoded in the source's format first.
    pub fn pipe(
        &mut self,
        source: &str,
        key: &Value,
        value: &Value,
        timestamp: i64,
    ) -> Result<(), DriverError> {
        let (key, value) = self.encode_input(source, key, value)?;
        self.pipe_bytes(source, key.as_deref(), Some(&value), timestamp)
    }

    /// Encodes a record the way source `source` receives it (key bytes, value bytes), so a
    /// benchmark can encode its input before it starts timing.
    pub fn encode_input(
        &self,
        source: &str,
        key: &Value,
        value: &Value,
    ) -> Result<(Option<Vec<u8>>, Vec<u8>), DriverError> {
        let encoder = &self.source_encoders[self.source_index(source)?];
        let encode_error = |error| DriverError::Encode { name: source.to_owned(), source: error };
        let key = encoder.key(key).map_err(encode_error)?;
        let value = encoder.value(value).map_err(encode_error)?;
        Ok((key, value))
    }

    /// Forgets the sink records not read yet, adding how many each sink had to `counts` (by
    /// sink index): a benchmark's way to keep output from piling up in memory.
    pub fn drain_outputs(&mut self, counts: &mut [usize]) {
        for (count, output) in counts.iter_mut().zip(&mut self.outputs) {
            *count += output.len();
            output.clear();
        }
    }

    /// Feeds raw record bytes to source `source`, as the broker would deliver them.
    pub fn pipe_bytes(
        &mut self,
        source: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
    ) -> Result<(), DriverError> {
        let index = self.source_index(source)?;
        let record = match self.sources[index].decode(key, value, timestamp) {
            Ok(record) => record,
            Err(error) => {
                self.dead_letters.push(DeadLetter {
                    input: source.to_owned(),
                    kind: error.kind().to_owned(),
                    reason: error.to_string(),
                });
                return Ok(());
            }
        };
        let subtopology = self.plan.sources[index].subtopology;
        self.run(VecDeque::from([(subtopology, Entry::Source(index), record)]), source)
    }

    /// Upserts (or with `None`, deletes) a row of table `table`, through the table's format.
    pub fn put_table_row(
        &mut self,
        table: &str,
        key: &Value,
        row: Option<&Value>,
    ) -> Result<(), DriverError> {
        let index = self.table_index(table)?;
        let encode_error = |source| DriverError::Encode { name: table.to_owned(), source };
        let key_bytes = self.table_encoders[index].key(key).map_err(encode_error)?;
        let value = self.table_encoders[index].change(key, row).map_err(encode_error)?;
        match self.tables[index].decode(key_bytes.as_deref(), value.as_deref()) {
            Ok(change) => {
                let store = self.plan.tables[index].store;
                let key = change.key.to_bytes();
                match change.row {
                    Some(row) => self.state.kv(store).put(&key, &row.to_bytes()),
                    None => self.state.kv(store).delete(&key),
                }
            }
            Err(error) => self.dead_letters.push(DeadLetter {
                input: table.to_owned(),
                kind: error.kind().to_owned(),
                reason: error.to_string(),
            }),
        }
        Ok(())
    }

    /// Advances every task's stream time to `time`, closing what it passes.
    pub fn advance_stream_time(&mut self, time: i64) -> Result<(), DriverError> {
        for subtopology in 0..self.tasks.len() {
            let mut out = Vec::new();
            self.tasks[subtopology]
                .advance_to(time, &mut self.state, &mut out)
                .map_err(DriverError::Operator)?;
            let mut next = VecDeque::new();
            self.deliver(out, &mut next)?;
            self.run(next, "(stream time)")?;
        }
        Ok(())
    }

    /// Runs each queued record (sub-topology, entry, record) through its task, delivering
    /// what it emits and following repartitions until nothing is left. A record an operator
    /// refuses goes to the dead letters whole: nothing it emitted is kept.
    fn run(
        &mut self,
        mut queue: VecDeque<(usize, Entry, Record)>,
        input: &str,
    ) -> Result<(), DriverError> {
        while let Some((subtopology, entry, record)) = queue.pop_front() {
            let mut out = Vec::new();
            match self.tasks[subtopology].process(entry, record, &mut self.state, &mut out) {
                Ok(()) => self.deliver(out, &mut queue)?,
                Err(OperatorError::BadRecord { operator, source }) => {
                    self.dead_letters.push(DeadLetter {
                        input: input.to_owned(),
                        kind: "operator".to_owned(),
                        reason: format!("{operator}: {source}"),
                    });
                }
                Err(other) => return Err(DriverError::Operator(other)),
            }
        }
        Ok(())
    }

    /// Encodes sink records; queues repartitioned records (through Eddy's binary encoding, as
    /// over a repartition topic) for the sub-topology that reads them.
    fn deliver(
        &mut self,
        out: Vec<Output>,
        queue: &mut VecDeque<(usize, Entry, Record)>,
    ) -> Result<(), DriverError> {
        for Output { to, record } in out {
            match to {
                Destination::Sink(sink) => {
                    let (key, value) = self.sinks[sink].encode(&record).map_err(|source| {
                        DriverError::Sink { name: self.plan.sinks[sink].spec.name.clone(), source }
                    })?;
                    self.outputs[sink].push((key, value, record.timestamp));
                }
                Destination::Repartition(node) => {
                    let hop = |value: &Value| {
                        Value::from_bytes(&value.to_bytes()).map_err(|source| {
                            DriverError::Operator(OperatorError::Corrupt {
                                operator: "repartition".into(),
                                source,
                            })
                        })
                    };
                    let record = Record {
                        key: hop(&record.key)?,
                        value: hop(&record.value)?,
                        timestamp: record.timestamp,
                    };
                    if let Some(&next) = self.readers.get(&node) {
                        queue.push_back((next, Entry::Repartition(node), record));
                    }
                }
            }
        }
        Ok(())
    }

    /// The records sink `sink` received since the last read, decoded from their sink format.
    pub fn read_output(&mut self, sink: &str) -> Result<Vec<Record>, DriverError> {
        let index = self.sink_index(sink)?;
        let encoded = std::mem::take(&mut self.outputs[index]);
        encoded
            .into_iter()
            .map(|(key, value, timestamp)| {
                let (key, value) = self.sinks[index]
                    .decode(key.as_deref(), &value)
                    .map_err(|source| DriverError::Sink { name: sink.to_owned(), source })?;
                Ok(Record { key, value, timestamp })
            })
            .collect()
    }

    /// Records refused so far, in order.
    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.dead_letters
    }

    /// Commits the stores' pending writes, as a task commit would.
    pub fn commit(&mut self) -> Result<(), DriverError> {
        self.state.commit(&[])?;
        Ok(())
    }

    /// The stores, to inspect state in tests.
    pub fn stores(&mut self) -> &mut dyn Stores {
        &mut self.state
    }
}

/// The result of one embedded test.
#[derive(Debug)]
pub struct TestOutcome {
    /// The test's name.
    pub name: String,
    /// Where it is in the file.
    pub path: String,
    /// Why it failed; empty when it passed.
    pub failures: Vec<String>,
}

/// Runs every embedded test of `plan`, each on fresh stores.
pub fn run_tests(plan: &Arc<Plan>) -> Vec<TestOutcome> {
    plan.tests()
        .iter()
        .map(|case| {
            let failures = match run_case(plan, case) {
                Ok(failures) => failures,
                Err(error) => vec![error.to_string()],
            };
            TestOutcome { name: case.name.clone(), path: case.path.clone(), failures }
        })
        .collect()
}

fn run_case(plan: &Arc<Plan>, case: &TestCase) -> Result<Vec<String>, DriverError> {
    let mut driver = TopologyDriver::new(plan.clone())?;
    for (table, rows) in &case.tables {
        for row in rows {
            let value = if row.value.is_null() { None } else { Some(&row.value) };
            driver.put_table_row(table, &row.key, value)?;
        }
    }
    // Each source's records in the order written (so tests can send them out of order); the
    // sources merged by timestamp. A record without `ts` takes the previous one's.
    let mut queues: Vec<(&str, VecDeque<(i64, &TestRecord)>)> = case
        .input
        .iter()
        .map(|(source, records)| {
            let mut last = 0;
            let timed = records
                .iter()
                .map(|record| {
                    last = record.timestamp.unwrap_or(last);
                    (last, record)
                })
                .collect();
            (source.as_str(), timed)
        })
        .collect();
    while let Some(next) = queues
        .iter()
        .enumerate()
        .filter_map(|(i, (_, queue))| queue.front().map(|(ts, _)| (*ts, i)))
        .min()
        .map(|(_, i)| i)
    {
        let (source, queue) = &mut queues[next];
        let Some((timestamp, record)) = queue.pop_front() else { break };
        let source: &str = source;
        let index = driver.source_index(source)?;
        let value = complete_input(&plan.sources[index].spec, record, timestamp);
        driver.pipe(source, &record.key, &value, timestamp)?;
    }
    if let Some(time) = case.advance_stream_time {
        driver.advance_stream_time(time)?;
    }
    let mut failures: Vec<String> = driver
        .dead_letters()
        .iter()
        .map(|dead| {
            format!(
                "{}: a record went to the dead letters ({}): {}",
                dead.input, dead.kind, dead.reason
            )
        })
        .collect();
    for (sink, expected) in &case.expect {
        let actual = driver.read_output(sink)?;
        failures.extend(compare(sink, expected, &actual));
    }
    Ok(failures)
}

/// The test value with the source's key and timestamp fields filled from `key` and `ts` when
/// the test leaves them out, so tests stay short.
fn complete_input(source: &crate::spec::SourceSpec, record: &TestRecord, timestamp: i64) -> Value {
    let mut value = record.value.clone();
    if let Value::Map(fields) = &mut value {
        if let Some(field) = &source.timestamp {
            fields.entry(field.clone()).or_insert(Value::Int(timestamp));
        }
        if let Some(field) = &source.feed.key
            && !record.key.is_null()
        {
            fields.entry(field.clone()).or_insert_with(|| record.key.clone());
        }
    }
    value
}

/// Differences between expected and actual sink records, each a readable sentence.
fn compare(sink: &str, expected: &[TestRecord], actual: &[Record]) -> Vec<String> {
    let mut failures = Vec::new();
    for (position, want) in expected.iter().enumerate() {
        let Some(got) = actual.get(position) else {
            failures.push(format!("{}: expected a record in sink '{sink}', got none", want.path));
            continue;
        };
        if !want.key.is_null() && !same(&want.key, &got.key) {
            failures.push(format!(
                "{}: key: expected {}, got {}",
                want.path,
                show(&want.key),
                show(&got.key)
            ));
        }
        if let Some(ts) = want.timestamp
            && ts != got.timestamp
        {
            failures
                .push(format!("{}: timestamp: expected {ts}, got {}", want.path, got.timestamp));
        }
        let mut path = String::new();
        differences(&want.value, &got.value, &mut path, &want.path, &mut failures);
    }
    if actual.len() > expected.len() {
        let extra: Vec<String> = actual[expected.len()..]
            .iter()
            .map(|record| format!("{} → {}", show(&record.key), show(&record.value)))
            .collect();
        failures.push(format!(
            "expect.{sink}: expected {} records, got {}; unexpected: {}",
            expected.len(),
            actual.len(),
            extra.join("; ")
        ));
    }
    failures
}

/// Reports where `got` differs from `want`; fields `want` does not mention are not compared.
fn differences(want: &Value, got: &Value, path: &mut String, at: &str, failures: &mut Vec<String>) {
    match (want, got) {
        (Value::Map(want_fields), Value::Map(got_fields)) => {
            for (name, want_field) in want_fields {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(name);
                match got_fields.get(name) {
                    Some(got_field) => differences(want_field, got_field, path, at, failures),
                    None => failures.push(format!(
                        "{at}: value.{path}: expected {}, but the field is missing",
                        show(want_field)
                    )),
                }
                path.truncate(len);
            }
        }
        _ if same(want, got) => {}
        _ => {
            failures.push(format!("{at}: value.{path}: expected {}, got {}", show(want), show(got)))
        }
    }
}

/// Equality that lets a YAML integer match a float of the same value.
fn same(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Int(a), Value::Float(b)) | (Value::Float(b), Value::Int(a)) => (*a as f64) == *b,
        _ => want == got,
    }
}

/// A value as compact JSON-like text, for messages.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("'{s}'"),
        Value::Map(fields) => {
            let inner: BTreeMap<&String, String> =
                fields.iter().map(|(k, v)| (k, show(v))).collect();
            let parts: Vec<String> = inner.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
            format!("{{{}}}", parts.join(", "))
        }
        Value::Array(items) => {
            format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(", "))
        }
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bytes(b) => format!("{} bytes", b.len()),
    }
}

/// A driver for a topology written inline, for unit tests of operators (the file name in
/// messages is `test.yaml`).
#[cfg(test)]
pub(crate) fn driver_for(yaml: &str) -> TopologyDriver {
    let spec = crate::spec::TopologySpec::parse(std::path::Path::new("test.yaml"), yaml)
        .unwrap_or_else(|invalid| panic!("{invalid}"));
    let plan = crate::plan::compile(spec).unwrap_or_else(|invalid| panic!("{invalid}"));
    TopologyDriver::new(Arc::new(plan)).expect("a driver")
}
