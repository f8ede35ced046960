//! What a topology file says, read faithfully and checked only for shape.
//!
//! [`TopologySpec::read`] turns a YAML file into typed specs (sources, tables, operators,
//! sinks, settings and embedded tests) and reports every problem of shape at once — an unknown
//! field with the field that was probably meant, a duration that does not parse, a missing
//! setting — each with its YAML path. Whether the parts fit together (inputs exist, fields are
//! in the schemas, expressions type-check) is the topology compiler's job (`plan`).

mod reader;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value as Yaml;

use reader::{Node, Obj, Problems};
pub use reader::{parse_duration, parse_timestamp};

use crate::value::Value;

/// One thing wrong with a topology file: where (a YAML path), what, and how to fix it.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// The YAML path, e.g. `operators.sessions.gap`.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub hint: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n    hint: {hint}")?;
        }
        Ok(())
    }
}

/// A topology file that is not valid: the file and every problem found in it.
#[derive(Debug, thiserror::Error)]
pub struct Invalid {
    /// The file.
    pub file: PathBuf,
    /// Every problem, in file order as far as it is known.
    pub problems: Vec<Problem>,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        writeln!(f, "{}: {count} {noun}", self.file.display())?;
        for problem in &self.problems {
            writeln!(f, "  {}: {problem}", self.file.display())?;
        }
        Ok(())
    }
}

/// A topology file, as written.
#[derive(Clone, Debug)]
pub struct TopologySpec {
    /// The file it was read from; schemas are found in `avro/` beside its directory.
    pub file: PathBuf,
    /// The consumer group, and the prefix of every internal topic.
    pub application_id: String,
    /// How the topology runs.
    pub settings: Settings,
    /// Input streams.
    pub sources: Vec<SourceSpec>,
    /// Input tables (a topic of keyed rows, kept in a store and joined against).
    pub tables: Vec<TableSpec>,
    /// Processing steps.
    pub operators: Vec<OperatorSpec>,
    /// Output topics.
    pub sinks: Vec<SinkSpec>,
    /// Embedded test cases, run by `eddy test`.
    pub tests: Vec<TestCase>,
    /// Names of entries left out because their shape was wrong (their problems are reported
    /// already), so the compiler does not also call them unknown.
    pub unreadable: Vec<String>,
}

/// How a topology runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Exactly-once or at-least-once outputs.
    pub processing_guarantee: Guarantee,
    /// How often a task commits, in milliseconds.
    pub commit_interval_ms: i64,
    /// Memory shared by every store of an instance (block cache and write buffers), in bytes.
    pub memory_budget_bytes: u64,
    /// Where records that cannot be processed go, with the reason in headers.
    pub dead_letter_topic: String,
}

/// The processing guarantee for outputs (state is exactly-once either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarantee {
    /// Outputs, changelogs and offsets commit in one Kafka transaction.
    ExactlyOnce,
    /// Outputs may repeat after a crash, as identical replays with the same idempotency key.
    AtLeastOnce,
}

/// How a topic's record values are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Avro in the Confluent wire format (magic byte, schema id, datum).
    Avro,
    /// JSON text.
    Json,
    /// Debezium change events (JSON envelope with `before`, `after`, `op`).
    Debezium,
}

/// How a topic's record keys are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    /// UTF-8 text.
    String,
    /// JSON text.
    Json,
}

/// What to do with a record that cannot be decoded or processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Send it to the dead-letter topic with the reason, count it, and go on.
    Continue,
    /// Stop without committing past it.
    Fail,
}

/// A topic Eddy reads and how its records are encoded: what sources and tables share.
#[derive(Clone, Debug)]
pub struct Feed {
    /// The topic.
    pub topic: String,
    /// Partitions to create the topic with, when Eddy creates it (demo, tests).
    pub partitions: Option<i64>,
    /// The value format.
    pub format: Format,
    /// The reader schema (a file in `avro/`), for Avro; for Debezium, of the `after` row.
    pub schema: Option<String>,
    /// A value field to key records by; without it, the record key is the key.
    pub key: Option<String>,
    /// The key format.
    pub key_format: KeyFormat,
}

/// An input stream.
#[derive(Clone, Debug)]
pub struct SourceSpec {
    /// The name operators use as `input`.
    pub name: String,
    /// Its topic and encoding.
    pub feed: Feed,
    /// The value field holding event time (milliseconds); without it, the record timestamp.
    pub timestamp: Option<String>,
    /// What to do with a bad record.
    pub on_error: OnError,
}

/// How a table is spread over instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableMode {
    /// Every instance holds the whole table.
    Global,
    /// Each task holds the partition of the table that matches its input partition.
    Copartitioned,
}

/// An input table: a topic of keyed rows, the latest row per key kept in a store.
#[derive(Clone, Debug)]
pub struct TableSpec {
    /// The name joins use as `table`.
    pub name: String,
    /// Its topic and encoding.
    pub feed: Feed,
    /// Global or co-partitioned.
    pub mode: TableMode,
}

/// A processing step.
#[derive(Clone, Debug)]
pub struct OperatorSpec {
    /// Its name, used as `input` by later steps and sinks, and to name its stores.
    pub name: String,
    /// The source, table-free operator or earlier step it reads.
    pub input: String,
    /// What it does.
    pub kind: OperatorKind,
}

/// What an operator does, with its settings; one variant per `type:` in YAML.
#[derive(Clone, Debug)]
pub enum OperatorKind {
    /// `type: filter`: keeps the records for which `where` is true.
    Filter {
        /// A boolean expression over the record's fields.
        where_: String,
    },
    /// `type: map`: projects and computes fields.
    Map {
        /// When given, the output has exactly these fields (name → expression).
        select: Vec<(String, String)>,
        /// Fields added or replaced (name → expression), keeping the others.
        set: Vec<(String, String)>,
        /// Fields removed.
        drop: Vec<String>,
    },
    /// `type: rekey`: changes the key, which implies a repartition.
    Rekey {
        /// An expression giving the new key.
        key: String,
        /// Partitions of the repartition topic (default: those of the input).
        partitions: Option<i64>,
    },
    /// `type: join`: enriches each record with the table row its `on` expression names.
    Join {
        /// The table.
        table: String,
        /// An expression giving the table key to look up.
        on: String,
        /// Inner (drop records without a row) or left (keep them, with null table fields).
        mode: JoinMode,
        /// Table fields copied onto the record (output name → table field); when empty, the
        /// whole row is added as one field named by `as_`.
        fields: Vec<(String, String)>,
        /// The field the whole row goes to when `fields` is empty (default: the table name).
        as_: Option<String>,
    },
    /// `type: count`: counts records per key and time window, with optional sums and distinct
    /// counts.
    Count {
        /// The windows.
        window: WindowSpec,
        /// When counts are emitted.
        emit: Emit,
        /// Sums (output field → numeric expression), in file order.
        sums: Vec<(String, String)>,
        /// Distinct counts (output field → expression whose distinct values are counted).
        distinct: Vec<(String, String)>,
    },
    /// `type: top`: the `n` items with the highest count (or named sum or distinct count) per
    /// window of a `count` operator, across all its partitions.
    Top {
        /// How many items to keep.
        n: i64,
        /// The count's output field that ranks items (default `count`).
        by: Option<String>,
        /// When the list is emitted.
        emit: Emit,
        /// How long after a window's end its list still takes counts (default: the count's
        /// window advance, one step of lag between partitions).
        grace_ms: Option<i64>,
    },
    /// `type: sessionize`: sessions per key, split by inactivity.
    Sessionize {
        /// Inactivity that ends a session, in milliseconds.
        gap_ms: i64,
        /// How long after a session could close it still takes late records.
        grace_ms: i64,
        /// The field holding the page, for entry/exit pages and distinct pages.
        page: String,
        /// When sessions are emitted.
        emit: Emit,
    },
    /// `type: detect_bots`: scores each record by user-agent and behavioural rules.
    DetectBots(BotSettings),
}

/// What `detect_bots` reads and how strict it is.
#[derive(Clone, Debug, PartialEq)]
pub struct BotSettings {
    /// The field holding the user agent.
    pub user_agent: String,
    /// The field holding the client IP.
    pub ip: String,
    /// The crawler pattern file, relative to the topology file.
    pub patterns: String,
    /// An optional CIDR list of data-centre ranges, relative to the topology file.
    pub datacenter_ranges: Option<String>,
    /// The behavioural limits.
    pub limits: BotLimits,
}

/// Behavioural limits of `detect_bots`: rates per window, interval regularity, and the score
/// from which an event counts as a bot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BotLimits {
    /// The rate window (tumbling, event time), in milliseconds.
    pub window_ms: i64,
    /// Events per window per key above which the key is a bot.
    pub max_per_key: u32,
    /// Events per window per IP above which the IP is a bot.
    pub max_per_ip: u32,
    /// Intervals between a key's events needed before judging their regularity.
    pub regular_min_events: u32,
    /// Coefficient of variation of the intervals below which they are too regular for a human.
    pub regular_max_jitter: f64,
    /// The score at or above which an event is a bot.
    pub threshold: f64,
}

impl Default for BotLimits {
    fn default() -> Self {
        BotLimits {
            window_ms: 10_000,
            max_per_key: 30,
            max_per_ip: 100,
            regular_min_events: 8,
            regular_max_jitter: 0.1,
            threshold: 0.5,
        }
    }
}

/// How windows are laid out in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// Back-to-back windows of `size`.
    Tumbling,
    /// Overlapping windows of `size` starting every `advance`.
    Hopping,
    /// One window of `size` ending at stream time (a rolling counter), moving with it.
    Sliding,
}

/// Time windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    /// Tumbling, hopping or sliding.
    pub kind: WindowKind,
    /// How long a window is, in milliseconds.
    pub size_ms: i64,
    /// How far apart windows start, in milliseconds; for a sliding window, the resolution
    /// its records are bucketed at (`size / 3600`, at least 1 ms).
    pub advance_ms: i64,
    /// How long after its end a window still takes late records, in milliseconds (0 for a
    /// sliding window).
    pub grace_ms: i64,
}

/// When a windowed operator emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    /// Once per window, when stream time passes its end plus grace.
    Final,
    /// On every change.
    Updates,
}

impl OperatorKind {
    /// The `type:` word of this kind, as written in YAML.
    pub fn word(&self) -> &'static str {
        match self {
            OperatorKind::Filter { .. } => "filter",
            OperatorKind::Map { .. } => "map",
            OperatorKind::Rekey { .. } => "rekey",
            OperatorKind::Join { .. } => "join",
            OperatorKind::Count { .. } => "count",
            OperatorKind::Top { .. } => "top",
            OperatorKind::Sessionize { .. } => "sessionize",
            OperatorKind::DetectBots(_) => "detect_bots",
        }
    }
}

/// Every operator `type:` word.
pub const OPERATOR_TYPES: [&str; 8] =
    ["filter", "map", "rekey", "join", "count", "top", "sessionize", "detect_bots"];

/// Join modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinMode {
    /// Drop records whose key has no row.
    Inner,
    /// Keep records whose key has no row, with null table fields.
    Left,
}

/// An output topic.
#[derive(Clone, Debug)]
pub struct SinkSpec {
    /// Its name.
    pub name: String,
    /// The operator or source it writes.
    pub input: String,
    /// The topic.
    pub topic: String,
    /// Partitions to create the topic with, when Eddy creates it.
    pub partitions: Option<i64>,
    /// The value format (Avro or JSON).
    pub format: Format,
    /// The writer schema (a file in `avro/`), for Avro.
    pub schema: Option<String>,
    /// The key format.
    pub key_format: KeyFormat,
    /// Only records for which this expression is true are written.
    pub where_: Option<String>,
}

/// One embedded test: records in, expected records out.
#[derive(Clone, Debug)]
pub struct TestCase {
    /// What it shows.
    pub name: String,
    /// Where it is, e.g. `tests[2]`.
    pub path: String,
    /// Table rows loaded before any input (table name, rows).
    pub tables: Vec<(String, Vec<TestRecord>)>,
    /// Input records (source name, records), processed in timestamp order.
    pub input: Vec<(String, Vec<TestRecord>)>,
    /// Stream time to advance to after the input, closing windows.
    pub advance_stream_time: Option<i64>,
    /// Expected output per sink (sink name, records in order); sinks not named are not checked.
    pub expect: Vec<(String, Vec<TestRecord>)>,
}

/// A record in a test: key, timestamp and value as YAML gives them.
#[derive(Clone, Debug, PartialEq)]
pub struct TestRecord {
    /// Where it is, for messages.
    pub path: String,
    /// The key (null when not given).
    pub key: Value,
    /// The timestamp in milliseconds, when given.
    pub timestamp: Option<i64>,
    /// The value: for input, the record; for expectations, the fields that must match.
    pub value: Value,
}

/// Defaults of [`Settings`].
const DEFAULT_COMMIT_INTERVAL_MS: i64 = 100;
const DEFAULT_MEMORY_BUDGET_BYTES: u64 = 256 << 20;

impl TopologySpec {
    /// Reads a topology file, reporting every problem of shape found in it.
    pub fn read(file: &Path) -> Result<TopologySpec, Invalid> {
        let invalid = |problem: Problem| Invalid { file: file.to_owned(), problems: vec![problem] };
        let text = std::fs::read_to_string(file).map_err(|error| {
            invalid(Problem {
                path: "(file)".into(),
                message: format!("cannot read: {error}"),
                hint: None,
            })
        })?;
        Self::parse(file, &text)
    }

    /// Parses topology YAML `text` as if read from `file`.
    pub fn parse(file: &Path, text: &str) -> Result<TopologySpec, Invalid> {
        let (spec, problems) = Self::parse_partial(file, text)?;
        if problems.is_empty() {
            Ok(spec)
        } else {
            Err(Invalid { file: file.to_owned(), problems })
        }
    }

    /// Parses as much of topology YAML `text` as has the right shape, with the problems of
    /// the rest, so that the compiler can go on and report its own problems too. Fails only
    /// when the text is not YAML or not a mapping.
    pub fn parse_partial(file: &Path, text: &str) -> Result<(TopologySpec, Vec<Problem>), Invalid> {
        let invalid = |problems| Invalid { file: file.to_owned(), problems };
        let yaml: Yaml = serde_yaml_ng::from_str(text).map_err(|error| {
            invalid(vec![Problem {
                path: "(yaml)".into(),
                message: error.to_string(),
                hint: Some(
                    "the file must be valid YAML before anything else can be checked".into(),
                ),
            }])
        })?;
        let problems = Problems::default();
        let root = Node { path: "", value: &yaml, problems: &problems };
        let spec = root.object().map(|top| read_topology(file, &top));
        let problems = problems.into_vec();
        match spec {
            Some(spec) => Ok((spec, problems)),
            None => Err(invalid(problems)),
        }
    }

    /// Reads a topology file as far as it has the right shape; see [`Self::parse_partial`].
    pub fn read_partial(file: &Path) -> Result<(TopologySpec, Vec<Problem>), Invalid> {
        let text = std::fs::read_to_string(file).map_err(|error| Invalid {
            file: file.to_owned(),
            problems: vec![Problem {
                path: "(file)".into(),
                message: format!("cannot read: {error}"),
                hint: None,
            }],
        })?;
        Self::parse_partial(file, &text)
    }

    /// Every topic the topology reads or writes, with the partitions it asks for, by name.
    pub fn external_topics(&self) -> BTreeMap<&str, Option<i64>> {
        let sources = self.sources.iter().map(|s| (s.feed.topic.as_str(), s.feed.partitions));
        let tables = self.tables.iter().map(|t| (t.feed.topic.as_str(), t.feed.partitions));
        let sinks = self.sinks.iter().map(|s| (s.topic.as_str(), s.partitions));
        let mut topics = BTreeMap::new();
        for (topic, partitions) in sources.chain(tables).chain(sinks) {
            let entry = topics.entry(topic).or_insert(partitions);
            *entry = (*entry).max(partitions);
        }
        topics
    }

    /// The directory holding this topology's Avro schemas: the first `avro/` directory in the
    /// topology's directory or above it (`topologies/x.yaml` → `avro/`).
    pub fn schema_dir(&self) -> PathBuf {
        let dir = self.file.parent().unwrap_or(Path::new("."));
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
        dir.ancestors()
            .map(|ancestor| ancestor.join("avro"))
            .find(|candidate| candidate.is_dir())
            .unwrap_or_else(|| dir.join("avro"))
    }
}

const FORMATS: [(&str, Format); 3] =
    [("avro", Format::Avro), ("json", Format::Json), ("debezium", Format::Debezium)];
const KEY_FORMATS: [(&str, KeyFormat); 2] =
    [("string", KeyFormat::String), ("json", KeyFormat::Json)];

fn read_topology(file: &Path, top: &Obj<'_>) -> TopologySpec {
    let application_id = top.required_string("application_id").unwrap_or_default();
    if !application_id.is_empty() && !is_topic_safe(&application_id) {
        top.problems.report(
            "application_id",
            format!("'{application_id}' cannot prefix topic names"),
            Some("use letters, digits, '.', '_' and '-' only".into()),
        );
    }
    let settings = top
        .with("settings", |node| {
            node.object().map(|obj| {
                let settings = read_settings(&obj, &application_id);
                obj.finish();
                settings
            })
        })
        .flatten()
        .unwrap_or_else(|| default_settings(&application_id));
    let mut unreadable = Vec::new();
    let sources = named(top, "sources", read_source, &mut unreadable);
    let tables = named(top, "tables", read_table, &mut unreadable);
    let operators = named(top, "operators", read_operator, &mut unreadable);
    let sinks = named(top, "sinks", read_sink, &mut unreadable);
    let tests = top
        .with("tests", |node| {
            node.list()
                .into_iter()
                .filter_map(|(path, item)| {
                    Node { path: &path, value: item, problems: top.problems }.object().map(|obj| {
                        let case = read_test(&obj);
                        obj.finish();
                        case
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    top.with("description", |node| node.string());
    top.finish();
    TopologySpec {
        file: file.to_owned(),
        application_id,
        settings,
        sources,
        tables,
        operators,
        sinks,
        tests,
        unreadable,
    }
}

/// Reads the named entries of section `key` with `read`; names of entries that do not read
/// go to `unreadable`.
fn named<T>(
    top: &Obj<'_>,
    key: &'static str,
    read: fn(String, &Obj<'_>) -> Option<T>,
    unreadable: &mut Vec<String>,
) -> Vec<T> {
    top.entries(key)
        .into_iter()
        .filter_map(|(name, path, value)| {
            let node = Node { path: &path, value: &value, problems: top.problems };
            let spec = node.object().and_then(|obj| {
                let spec = read(name.clone(), &obj);
                obj.finish();
                spec
            });
            if spec.is_none() {
                unreadable.push(name);
            }
            spec
        })
        .collect()
}

fn is_topic_safe(name: &str) -> bool {
    name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn default_settings(application_id: &str) -> Settings {
    Settings {
        processing_guarantee: Guarantee::ExactlyOnce,
        commit_interval_ms: DEFAULT_COMMIT_INTERVAL_MS,
        memory_budget_bytes: DEFAULT_MEMORY_BUDGET_BYTES,
        dead_letter_topic: format!("{application_id}-dead-letters"),
    }
}

fn read_settings(obj: &Obj<'_>, application_id: &str) -> Settings {
    let defaults = default_settings(application_id);
    let settings = Settings {
        processing_guarantee: obj
            .choice(
                "processing_guarantee",
                &[
                    ("exactly_once", Guarantee::ExactlyOnce),
                    ("at_least_once", Guarantee::AtLeastOnce),
                ],
            )
            .unwrap_or(defaults.processing_guarantee),
        commit_interval_ms: obj.duration("commit_interval").unwrap_or(defaults.commit_interval_ms),
        memory_budget_bytes: obj
            .with("memory_budget", |node| {
                let text = node.string()?;
                parse_bytes(&text)
                    .map_err(|why| {
                        node.report(
                            format!("'{text}' is not a size: {why}"),
                            Some("write a number and a unit: 512MiB, 2GiB".into()),
                        )
                    })
                    .ok()
            })
            .flatten()
            .unwrap_or(defaults.memory_budget_bytes),
        dead_letter_topic: obj.string("dead_letter_topic").unwrap_or(defaults.dead_letter_topic),
    };
    obj.report_if(settings.commit_interval_ms == 0, "commit_interval", "must be longer than 0ms");
    settings
}

/// Bytes in `text`: a whole number with `B`, `KiB`, `MiB` or `GiB`.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let amount: u64 = digits.parse().map_err(|_| "it does not start with a number".to_owned())?;
    let scale: u64 = match unit.trim() {
        "B" => 1,
        "KiB" | "KB" | "K" => 1 << 10,
        "MiB" | "MB" | "M" => 1 << 20,
        "GiB" | "GB" | "G" => 1 << 30,
        "" => return Err("it has no unit".into()),
        other => return Err(format!("unknown unit '{other}'")),
    };
    amount.checked_mul(scale).ok_or_else(|| "it is too large".into())
}

/// The topic and encoding fields sources and tables share.
fn read_feed(obj: &Obj<'_>) -> Feed {
    let topic = obj.required_string("topic").unwrap_or_default();
    let partitions = obj.positive("partitions");
    let format = obj.choice("format", &FORMATS).unwrap_or(Format::Json);
    // Debezium keys records by the primary key as a JSON struct.
    let default_key_format =
        if format == Format::Debezium { KeyFormat::Json } else { KeyFormat::String };
    let feed = Feed {
        topic,
        partitions,
        format,
        schema: obj.string("schema"),
        key: obj.string("key"),
        key_format: obj.choice("key_format", &KEY_FORMATS).unwrap_or(default_key_format),
    };
    check_schema(obj, feed.format, feed.schema.as_deref());
    feed
}

fn read_source(name: String, obj: &Obj<'_>) -> Option<SourceSpec> {
    Some(SourceSpec {
        name,
        feed: read_feed(obj),
        timestamp: obj.string("timestamp"),
        on_error: obj
            .choice("on_error", &[("continue", OnError::Continue), ("fail", OnError::Fail)])
            .unwrap_or(OnError::Continue),
    })
}

fn read_table(name: String, obj: &Obj<'_>) -> Option<TableSpec> {
    Some(TableSpec {
        name,
        feed: read_feed(obj),
        mode: obj
            .choice(
                "mode",
                &[("global", TableMode::Global), ("copartitioned", TableMode::Copartitioned)],
            )
            .unwrap_or(TableMode::Global),
    })
}

/// Avro needs a schema; other formats may name one (Debezium: the row schema).
fn check_schema(obj: &Obj<'_>, format: Format, schema: Option<&str>) {
    if format == Format::Avro && schema.is_none() {
        obj.report(
            "format avro needs a schema",
            Some("add `schema: <file>.avsc` naming a file in avro/".into()),
        );
    }
}

fn read_operator(name: String, obj: &Obj<'_>) -> Option<OperatorSpec> {
    let input = obj.required_string("input");
    let Some(word) = obj.required_string("type") else {
        obj.accept_rest();
        return None;
    };
    let kind = match word.as_str() {
        "filter" => obj.required_string("where").map(|where_| OperatorKind::Filter { where_ }),
        "map" => {
            let (select, set, drop) =
                (obj.string_map("select"), obj.string_map("set"), obj.strings("drop"));
            if select.is_empty() && set.is_empty() && drop.is_empty() {
                obj.report(
                    "a map needs at least one of select, set or drop",
                    Some("e.g. `set: { path: \"page_url.lowerAscii()\" }`".into()),
                );
            }
            Some(OperatorKind::Map { select, set, drop })
        }
        "rekey" => {
            let (key, partitions) = (obj.required_string("key"), obj.positive("partitions"));
            key.map(|key| OperatorKind::Rekey { key, partitions })
        }
        "join" => {
            let table = obj.required_string("table");
            let on = obj.required_string("on");
            let mode = obj
                .choice("mode", &[("left", JoinMode::Left), ("inner", JoinMode::Inner)])
                .unwrap_or(JoinMode::Left);
            let (fields, as_) = (obj.string_map("fields"), obj.string("as"));
            if !fields.is_empty() && as_.is_some() {
                obj.report(
                    "a join takes either `fields` or `as`, not both",
                    Some("`fields` copies chosen row fields; `as` nests the whole row".into()),
                );
            }
            table.zip(on).map(|(table, on)| OperatorKind::Join { table, on, mode, fields, as_ })
        }
        "count" => {
            let window = obj.required("window", |node| {
                node.object().and_then(|w| {
                    let window = read_window(&w);
                    w.finish();
                    window
                })
            });
            let sliding = window.is_some_and(|w| w.kind == WindowKind::Sliding);
            let emit = read_emit(obj);
            if sliding && emit == Some(Emit::Final) {
                obj.report_if(
                    true,
                    "emit",
                    "a sliding window never closes, so it has no final count: it emits updates",
                );
            }
            let emit = emit.unwrap_or(if sliding { Emit::Updates } else { Emit::Final });
            let (sums, distinct) = (obj.string_map("sum"), obj.string_map("distinct"));
            if sliding && !distinct.is_empty() {
                obj.problems.report(
                    &reader::join(&obj.path, "distinct"),
                    "distinct counts need tumbling or hopping windows",
                    Some(
                        "count distinct values per window with `advance`, or drop `distinct`"
                            .into(),
                    ),
                );
            }
            window.map(|window| OperatorKind::Count { window, emit, sums, distinct })
        }
        "top" => {
            let n = obj.positive("n");
            if !obj.present("n") {
                obj.report("missing required field 'n'", Some("e.g. `n: 10`".into()));
            }
            let (by, grace_ms) = (obj.string("by"), obj.duration("grace"));
            let emit = read_emit(obj).unwrap_or(Emit::Final);
            n.map(|n| OperatorKind::Top { n, by, emit, grace_ms })
        }
        "sessionize" => {
            let gap_ms = obj.duration("gap");
            if !obj.present("gap") {
                obj.report("missing required field 'gap'", Some("e.g. `gap: 30m`".into()));
            }
            let grace_ms = obj.duration("grace").unwrap_or(0);
            let page = obj.string("page").unwrap_or_else(|| "page_url".to_owned());
            let emit = read_emit(obj).unwrap_or(Emit::Final);
            obj.report_if(gap_ms == Some(0), "gap", "a session gap must be longer than 0ms");
            gap_ms.filter(|gap| *gap > 0).map(|gap_ms| OperatorKind::Sessionize {
                gap_ms,
                grace_ms,
                page,
                emit,
            })
        }
        "detect_bots" => read_bots(obj).map(OperatorKind::DetectBots),
        other => {
            obj.problems.report(
                &reader::join(&obj.path, "type"),
                format!(
                    "unknown operator type '{other}'{}",
                    crate::hint::suggestion(other, OPERATOR_TYPES)
                ),
                Some(format!("one of: {}", OPERATOR_TYPES.join(", "))),
            );
            // The other fields belong to a type we do not know: do not report them too.
            obj.accept_rest();
            None
        }
    };
    Some(OperatorSpec { name, input: input?, kind: kind? })
}

/// `emit: final | updates`, when written.
fn read_emit(obj: &Obj<'_>) -> Option<Emit> {
    obj.choice("emit", &[("final", Emit::Final), ("updates", Emit::Updates)])
}

fn read_bots(obj: &Obj<'_>) -> Option<BotSettings> {
    let defaults = BotLimits::default();
    let patterns = obj.required_string("patterns");
    let rate = obj.with("rate", |node| {
        let rate = node.object()?;
        let limits = (rate.duration("window"), rate.positive("per_key"), rate.positive("per_ip"));
        rate.finish();
        Some(limits)
    });
    let (window, per_key, per_ip) = rate.flatten().unwrap_or_default();
    let regular = obj.with("regular_intervals", |node| {
        let regular = node.object()?;
        let limits = (regular.positive("min_events"), regular.fraction("max_jitter"));
        regular.report_if(
            limits.1 == Some(0.0),
            "max_jitter",
            "a jitter of 0 flags nothing; intervals are too regular below this coefficient of variation",
        );
        regular.finish();
        Some(limits)
    });
    let (min_events, max_jitter) = regular.flatten().unwrap_or_default();
    let most = i64::from(crate::operator::MAX_REGULAR_EVENTS);
    if min_events.is_some_and(|n| n > most) {
        obj.problems.report(
            &reader::join(&obj.path, "regular_intervals.min_events"),
            format!("at most {most} intervals are kept per key"),
            None,
        );
    }
    let small = |n: Option<i64>, default: u32| n.map_or(default, |n| n.min(most) as u32);
    let threshold = obj.fraction("threshold");
    obj.report_if(
        threshold == Some(0.0),
        "threshold",
        "a threshold of 0 makes every event a bot; use a score above 0",
    );
    let limits = BotLimits {
        window_ms: window.filter(|w| *w > 0).unwrap_or(defaults.window_ms),
        max_per_key: small(per_key, defaults.max_per_key),
        max_per_ip: small(per_ip, defaults.max_per_ip),
        regular_min_events: small(min_events, defaults.regular_min_events),
        regular_max_jitter: max_jitter.unwrap_or(defaults.regular_max_jitter),
        threshold: threshold.unwrap_or(defaults.threshold),
    };
    Some(BotSettings {
        user_agent: obj.string("user_agent").unwrap_or_else(|| "user_agent".to_owned()),
        ip: obj.string("ip").unwrap_or_else(|| "ip".to_owned()),
        patterns: patterns?,
        datacenter_ranges: obj.string("datacenter_ranges"),
        limits,
    })
}

fn read_window(obj: &Obj<'_>) -> Option<WindowSpec> {
    let (size_ms, advance_ms, grace_ms) =
        (obj.duration("size"), obj.duration("advance"), obj.duration("grace").unwrap_or(0));
    let kind = obj.choice(
        "type",
        &[
            ("tumbling", WindowKind::Tumbling),
            ("hopping", WindowKind::Hopping),
            ("sliding", WindowKind::Sliding),
        ],
    );
    if !obj.present("size") {
        obj.report(
            "missing required field 'size'",
            Some("e.g. `window: { size: 5m, advance: 1m }`".into()),
        );
    }
    let size_ms = size_ms?;
    if size_ms == 0 {
        obj.report_if(true, "size", "a window must be longer than 0ms");
        return None;
    }
    if kind == Some(WindowKind::Sliding) {
        let at = |key: &str, what: &str| {
            obj.problems.report(
                &reader::join(&obj.path, key),
                format!("a sliding window has no {what}: it always ends at stream time"),
                Some("drop it, or use `type: hopping` for windows on a fixed grid".into()),
            );
        };
        if advance_ms.is_some() {
            at("advance", "advance");
        }
        if grace_ms != 0 {
            at("grace", "grace");
        }
        let resolution = (size_ms / 3600).max(1);
        return Some(WindowSpec {
            kind: WindowKind::Sliding,
            size_ms,
            advance_ms: resolution,
            grace_ms: 0,
        });
    }
    let advance_ms = advance_ms.unwrap_or(size_ms);
    if kind == Some(WindowKind::Tumbling) && advance_ms != size_ms {
        obj.report_if(true, "advance", "a tumbling window advances by its size");
    }
    if advance_ms == 0 {
        obj.report_if(true, "advance", "windows must advance by more than 0ms");
        return None;
    }
    if advance_ms > size_ms {
        obj.problems.report(
            &reader::join(&obj.path, "advance"),
            format!("the window advance ({advance_ms} ms) exceeds its size ({size_ms} ms): records between windows would be counted nowhere"),
            Some("make advance at most the size (advance = size is a tumbling window)".into()),
        );
        return None;
    }
    let kind = if advance_ms == size_ms { WindowKind::Tumbling } else { WindowKind::Hopping };
    Some(WindowSpec { kind, size_ms, advance_ms, grace_ms })
}

fn read_sink(name: String, obj: &Obj<'_>) -> Option<SinkSpec> {
    let spec = SinkSpec {
        name,
        input: obj.required_string("input").unwrap_or_default(),
        topic: obj.required_string("topic").unwrap_or_default(),
        partitions: obj.positive("partitions"),
        format: obj.choice("format", &FORMATS[..2]).unwrap_or(Format::Json),
        schema: obj.string("schema"),
        key_format: obj.choice("key_format", &KEY_FORMATS).unwrap_or(KeyFormat::String),
        where_: obj.string("where"),
    };
    check_schema(obj, spec.format, spec.schema.as_deref());
    Some(spec)
}

fn read_test(obj: &Obj<'_>) -> TestCase {
    let records = |key: &'static str, expect: bool| -> Vec<(String, Vec<TestRecord>)> {
        obj.entries(key)
            .into_iter()
            .map(|(name, path, value)| {
                let node = Node { path: &path, value: &value, problems: obj.problems };
                let list = node
                    .list()
                    .into_iter()
                    .filter_map(|(path, item)| {
                        Node { path: &path, value: item, problems: obj.problems }
                            .object()
                            .and_then(|record| read_test_record(&record, expect))
                    })
                    .collect();
                (name, list)
            })
            .collect()
    };
    let case = TestCase {
        name: obj.required_string("name").unwrap_or_default(),
        path: obj.path.clone(),
        tables: records("tables", false),
        input: records("input", false),
        advance_stream_time: obj
            .with("advance_stream_time", |node| {
                let text = node.string()?;
                parse_timestamp(&text).map_err(|why| node.report(why, None)).ok()
            })
            .flatten(),
        expect: records("expect", true),
    };
    obj.report_if(
        case.input.is_empty() && case.tables.is_empty(),
        "input",
        "a test needs input records",
    );
    case
}

fn read_test_record(obj: &Obj<'_>, expect: bool) -> Option<TestRecord> {
    let key = obj.field("key").map(yaml_value).unwrap_or(Value::Null);
    let timestamp = obj
        .with("ts", |node| {
            let text = node.string()?;
            parse_timestamp(&text).map_err(|why| node.report(why, None)).ok()
        })
        .flatten();
    let value = match obj.field("value") {
        Some(value) => yaml_value(value),
        // `value: null` is a delete (a table row) or a tombstone.
        None if obj.present("value") => Value::Null,
        None if expect => Value::Map(BTreeMap::new()),
        None => {
            obj.report("missing required field 'value'", None);
            return None;
        }
    };
    let record = TestRecord { path: obj.path.clone(), key, timestamp, value };
    obj.finish();
    Some(record)
}

/// The [`Value`] of YAML test data: integers stay integers, other numbers become floats.
pub fn yaml_value(yaml: Yaml) -> Value {
    match yaml {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(items) => Value::Array(items.into_iter().map(yaml_value).collect()),
        Yaml::Mapping(map) => Value::Map(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s,
                        other => {
                            serde_yaml_ng::to_string(&other).unwrap_or_default().trim().to_owned()
                        }
                    };
                    (key, yaml_value(v))
                })
                .collect(),
        ),
        Yaml::Tagged(tagged) => yaml_value(tagged.value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        match TopologySpec::parse(Path::new("t.yaml"), yaml) {
            Ok(_) => Vec::new(),
            Err(invalid) => {
                invalid.problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect()
            }
        }
    }

    #[test]
    fn a_full_spec_reads() {
        let spec = TopologySpec::parse(
            Path::new("t.yaml"),
            r#"
application_id: shop
settings: { processing_guarantee: at_least_once, commit_interval: 50ms, memory_budget: 64MiB }
sources:
  clicks: { topic: clicks, partitions: 4, format: avro, schema: click_event.avsc, key: user_id, timestamp: event_time }
tables:
  products: { topic: products, key: id, mode: global }
operators:
  views: { type: filter, input: clicks, where: "event_type == 'page_view'" }
  enriched: { type: join, input: views, table: products, on: product_id, fields: { name: name } }
sinks:
  out: { input: enriched, topic: out }
tests:
  - name: one view
    input: { clicks: [ { key: u1, ts: "00:01", value: { page_url: /a } } ] }
    expect: { out: [ { key: u1 } ] }
"#,
        )
        .unwrap();
        assert_eq!(spec.settings.processing_guarantee, Guarantee::AtLeastOnce);
        assert_eq!(spec.settings.commit_interval_ms, 50);
        assert_eq!(spec.settings.memory_budget_bytes, 64 << 20);
        assert_eq!(spec.settings.dead_letter_topic, "shop-dead-letters");
        assert_eq!(spec.sources[0].feed.partitions, Some(4));
        assert_eq!(spec.operators[1].kind.word(), "join");
        assert_eq!(spec.tests[0].input[0].1[0].timestamp, Some(60_000));
        assert_eq!(spec.external_topics().len(), 3);
    }

    #[test]
    fn every_problem_of_shape_is_reported_with_its_path() {
        let found = problems(
            r#"
application_id: shop
sources:
  clicks: { tpoic: clicks, format: avro }
operators:
  a: { type: filtr, input: clicks }
  b: { type: rekey, input: a, key: k, partitions: -1 }
  c: { type: map, input: b }
sinks:
  out: { input: c, topic: out, format: xml }
settings: { commit_interval: soon }
"#,
        );
        let expected = [
            "settings.commit_interval: 'soon' is not a duration: it does not start with a number",
            "sources.clicks: missing required field 'topic'",
            "sources.clicks: format avro needs a schema",
            "sources.clicks.tpoic: unknown field 'tpoic' (did you mean 'topic'?)",
            "operators.a.type: unknown operator type 'filtr' (did you mean 'filter'?)",
            "operators.b.partitions: expected a positive whole number, found -1",
            "operators.c: a map needs at least one of select, set or drop",
            "sinks.out.format: unknown value 'xml'",
        ];
        for message in expected {
            assert!(found.iter().any(|f| f == message), "missing {message:?} in {found:#?}");
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
    }
}
