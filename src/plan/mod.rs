//! The topology compiler: from what a file says ([`TopologySpec`]) to what will run ([`Plan`]).
//!
//! [`compile`] checks everything that can be checked before a record is read — every input
//! exists, there is no cycle, every field an expression or setting names is in the schema,
//! expressions type-check, sink schemas can hold what flows into them — and reports every
//! problem at once, each with its YAML path. What it returns is typed and resolved: operators
//! hold compiled expressions, every edge knows the type of its records, stores and internal
//! topics (changelogs, repartition topics) are named, and the nodes are split into
//! sub-topologies at repartitions. Nothing here touches Kafka or RocksDB.

mod describe;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub use describe::{describe_dot, describe_mermaid, describe_text};

use crate::expr::{Expr, Scope};
use crate::format::{AvroSchema, OfflineRegistry, avro::load_dir};
use crate::hint;
use crate::operator::{BotRules, Sessionize};
use crate::spec::{
    BotLimits, BotSettings, Emit, Feed, Format, Invalid, JoinMode, KeyFormat, OperatorKind,
    OperatorSpec, Problem, SinkSpec, SourceSpec, TableMode, TableSpec, TestCase, TopologySpec,
    WindowKind, WindowSpec,
};
use crate::state::StoreKind;
use crate::types::Type;

/// A compiled topology.
pub struct Plan {
    /// The spec it was compiled from.
    pub spec: TopologySpec,
    /// Input streams, as in the spec.
    pub sources: Vec<SourcePlan>,
    /// Input tables, as in the spec.
    pub tables: Vec<TablePlan>,
    /// Operators in an order where every input comes first.
    pub nodes: Vec<NodePlan>,
    /// Outputs, as in the spec.
    pub sinks: Vec<SinkPlan>,
    /// Every store, by index (what operators address stores by).
    pub stores: Vec<StorePlan>,
    /// Topics Eddy creates and owns.
    pub internal_topics: Vec<InternalTopic>,
    /// The independent parts of the plan, split at repartitions.
    pub subtopologies: Vec<Subtopology>,
    /// Every schema of the topology's schema directory, served offline by id.
    pub registry: Arc<OfflineRegistry>,
}

/// Where a node or sink reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// A source stream, by index.
    Source(usize),
    /// An operator, by index in [`Plan::nodes`].
    Node(usize),
    /// The late records of a windowed operator (`<name>.late`): its input records that
    /// arrived after their window or session had closed, unchanged.
    Late(usize),
}

/// An input stream, resolved.
pub struct SourcePlan {
    /// What the file says.
    pub spec: SourceSpec,
    /// The reader schema, for Avro.
    pub schema: Option<AvroSchema>,
    /// The type of record values.
    pub value: Type,
    /// The type of keys.
    pub key: Type,
    /// The sub-topology it feeds.
    pub subtopology: usize,
}

/// An input table, resolved.
pub struct TablePlan {
    /// What the file says.
    pub spec: TableSpec,
    /// The row schema, for Avro.
    pub schema: Option<AvroSchema>,
    /// The type of rows.
    pub row: Type,
    /// The type of keys.
    pub key: Type,
    /// The store holding the latest row per key.
    pub store: usize,
}

/// An operator, resolved.
pub struct NodePlan {
    /// Its name.
    pub name: String,
    /// What it reads.
    pub input: Input,
    /// What it does.
    pub operator: OperatorPlan,
    /// The type of the values it emits.
    pub value: Type,
    /// The type of the keys it emits.
    pub key: Type,
    /// The sub-topology it runs in.
    pub subtopology: usize,
}

/// What an operator does, compiled; one variant per kind.
pub enum OperatorPlan {
    /// Keeps records for which the expression is true.
    Filter {
        /// A boolean expression.
        where_: Expr,
    },
    /// Projects and computes fields.
    Map {
        /// When not empty, the output has exactly these fields.
        select: Vec<(String, Expr)>,
        /// Fields added or replaced.
        set: Vec<(String, Expr)>,
        /// Fields removed.
        drop: Vec<String>,
    },
    /// Changes the key; what it emits goes through a repartition topic.
    Rekey {
        /// The new key.
        key: Expr,
        /// The repartition topic.
        topic: String,
        /// Its partitions, when the topology sets them (default: those of the input).
        partitions: Option<i64>,
        /// When set, the old key is kept in this field of the value (a `top`'s repartition by
        /// window keeps the item this way).
        keep_key_as: Option<String>,
    },
    /// Enriches records with a table row.
    Join {
        /// The table, by index.
        table: usize,
        /// The table key to look up.
        on: Expr,
        /// Inner or left.
        mode: JoinMode,
        /// Row fields copied onto the record (output name, row field); empty: nest the row.
        fields: Vec<(String, String)>,
        /// The field the row is nested under when `fields` is empty.
        as_: String,
    },
    /// Counts records per key and window, with sums and distinct counts.
    Count {
        /// The windows.
        window: WindowSpec,
        /// When counts are emitted.
        emit: Emit,
        /// Sums: output field and numeric expression.
        sums: Vec<(String, Expr)>,
        /// Distinct counts: output field and the expression whose values are counted.
        distinct: Vec<(String, Expr)>,
        /// Its window store (assigned when stores are laid out).
        store: usize,
        /// Its second store, when it needs one: the distinct values seen per window (a window
        /// store), or a sliding window's running totals (a key-value store).
        aux_store: Option<usize>,
    },
    /// Keeps the top items per window of a count, read through a repartition by window.
    Top {
        /// How many items.
        n: usize,
        /// The count's field that ranks items.
        by: String,
        /// When lists are emitted.
        emit: Emit,
        /// The count's window size (a window's end is its start plus this).
        size_ms: i64,
        /// How long after a window's end its list still changes.
        grace_ms: i64,
        /// Its window store (one entry per open window).
        store: usize,
    },
    /// Sessions per key.
    Sessionize {
        /// Inactivity that ends a session.
        gap_ms: i64,
        /// Extra time a closable session waits for late records.
        grace_ms: i64,
        /// The page field.
        page: String,
        /// When sessions are emitted.
        emit: Emit,
        /// Its session store.
        store: usize,
    },
    /// Bot scoring.
    DetectBots {
        /// The user-agent and IP rules, loaded from their files.
        rules: Arc<BotRules>,
        /// Rates, regularity and threshold.
        limits: BotLimits,
        /// The user-agent field.
        user_agent: String,
        /// The IP field.
        ip: String,
        /// Its key-value store of per-key and per-IP behaviour.
        store: usize,
    },
}

impl OperatorPlan {
    /// The `type:` word of this operator.
    pub fn word(&self) -> &'static str {
        match self {
            OperatorPlan::Filter { .. } => "filter",
            OperatorPlan::Map { .. } => "map",
            OperatorPlan::Rekey { .. } => "rekey",
            OperatorPlan::Join { .. } => "join",
            OperatorPlan::Count { .. } => "count",
            OperatorPlan::Top { .. } => "top",
            OperatorPlan::Sessionize { .. } => "sessionize",
            OperatorPlan::DetectBots { .. } => "detect_bots",
        }
    }

    /// Whether it has a late output (`<name>.late`).
    pub fn has_late(&self) -> bool {
        matches!(self, OperatorPlan::Count { .. } | OperatorPlan::Sessionize { .. })
    }

    /// Its stores: where the plan writes each store's index, the store name's suffix after
    /// the operator's name, and the store's kind.
    fn store_slots(&mut self) -> Vec<(&mut usize, &'static str, StoreKind)> {
        match self {
            OperatorPlan::Count { window, distinct, store, aux_store, .. } => {
                let mut slots = vec![(store, "", StoreKind::Window)];
                if let Some(aux) = aux_store {
                    if window.kind == WindowKind::Sliding {
                        slots.push((aux, "-totals", StoreKind::Kv));
                    } else if !distinct.is_empty() {
                        slots.push((aux, "-distinct", StoreKind::Window));
                    }
                }
                slots
            }
            OperatorPlan::Top { store, .. } => vec![(store, "", StoreKind::Window)],
            OperatorPlan::Sessionize { store, .. } => vec![(store, "", StoreKind::Session)],
            OperatorPlan::DetectBots { store, .. } => vec![(store, "", StoreKind::Kv)],
            OperatorPlan::Filter { .. }
            | OperatorPlan::Map { .. }
            | OperatorPlan::Rekey { .. }
            | OperatorPlan::Join { .. } => Vec::new(),
        }
    }
}

/// An output, resolved.
pub struct SinkPlan {
    /// What the file says.
    pub spec: SinkSpec,
    /// What it writes.
    pub input: Input,
    /// Only records for which this is true are written.
    pub where_: Option<Expr>,
    /// The writer schema, for Avro.
    pub schema: Option<AvroSchema>,
}

/// A store: keyed state of an operator or a table.
pub struct StorePlan {
    /// Its name (unique in the topology).
    pub name: String,
    /// Key-value, window or session.
    pub kind: StoreKind,
    /// The compacted topic it is restored from: its own changelog, or a table's topic.
    pub restore_from: String,
    /// Who uses it (an operator or a table), for describe.
    pub owner: String,
}

/// Why Eddy owns a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicRole {
    /// The compacted changelog of a store.
    Changelog,
    /// Records re-keyed by one sub-topology for the next.
    Repartition,
    /// The commit records (fences and batch markers) of a sub-topology's tasks, which say
    /// which changelog records a restore may apply (see `runtime::protocol`).
    Commits,
}

/// A topic Eddy creates.
#[derive(Clone, Debug)]
pub struct InternalTopic {
    /// The topic name (prefixed by the application id).
    pub name: String,
    /// Changelog or repartition.
    pub role: TopicRole,
    /// Its partitions: a number, or those of another topic once that is known.
    pub partitions: Partitions,
}

/// How many partitions a topic has or will have.
#[derive(Clone, Debug, PartialEq)]
pub enum Partitions {
    /// A known number.
    Exactly(i64),
    /// As many as this input topic has (known when connected to Kafka).
    Like(String),
}

impl std::fmt::Display for Partitions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Partitions::Exactly(n) => write!(f, "{n}"),
            Partitions::Like(topic) => write!(f, "as {topic}"),
        }
    }
}

/// Nodes that run together in one task per input partition.
#[derive(Clone, Debug)]
pub struct Subtopology {
    /// Source streams read (indexes into [`Plan::sources`]).
    pub sources: Vec<usize>,
    /// The rekey node whose repartition topic it reads, if it starts at one.
    pub repartition: Option<usize>,
    /// Its nodes, in plan order.
    pub nodes: Vec<usize>,
    /// Its input partitions.
    pub partitions: Partitions,
    /// What names its tasks: its source, or the rekey node whose topic it reads.
    pub name: String,
    /// The stores its operators own (indexes into [`Plan::stores`]), each with a changelog.
    pub stores: Vec<usize>,
    /// Its commits topic, when it has stores.
    pub commits: Option<String>,
}

impl Plan {
    /// The names in scope for expressions on records of `value` and `key` types: the value's
    /// fields, `_key` and `_timestamp`.
    pub fn scope(value: &Type, key: &Type) -> Scope {
        Scope {
            value: value.clone(),
            extras: vec![("_key".to_owned(), key.clone()), ("_timestamp".to_owned(), Type::Int)],
        }
    }

    /// The value and key types flowing out of `input`.
    pub fn types_of(&self, input: Input) -> (&Type, &Type) {
        types_of(&self.sources, &self.nodes, input)
    }

    /// The name of `input`, as an `input:` writes it.
    pub fn name_of(&self, input: Input) -> String {
        match input {
            Input::Source(i) => self.sources[i].spec.name.clone(),
            Input::Node(i) => self.nodes[i].name.clone(),
            Input::Late(i) => format!("{}{LATE}", self.nodes[i].name),
        }
    }

    /// The embedded tests.
    pub fn tests(&self) -> &[TestCase] {
        &self.spec.tests
    }
}

/// Reads and compiles a topology file; every problem found, of shape or of sense, is in the
/// error.
pub fn load(file: &std::path::Path) -> Result<Plan, Invalid> {
    let (spec, problems) = TopologySpec::read_partial(file)?;
    compile_with(spec, problems)
}

/// Compiles a spec into a plan, or reports every problem found.
pub fn compile(spec: TopologySpec) -> Result<Plan, Invalid> {
    compile_with(spec, Vec::new())
}

/// Compiles a spec whose reading found `problems` already, adding the compiler's own.
fn compile_with(spec: TopologySpec, problems: Vec<Problem>) -> Result<Plan, Invalid> {
    let dir = spec.file.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    let mut compiler = Compiler { problems, unreadable: spec.unreadable.clone(), dir };
    let file = spec.file.clone();
    let plan = compiler.compile(spec);
    if compiler.problems.is_empty() {
        Ok(plan)
    } else {
        Err(Invalid { file, problems: compiler.problems })
    }
}

/// Collects problems while compiling.
struct Compiler {
    problems: Vec<Problem>,
    /// Names the spec left out (see [`TopologySpec::unreadable`]).
    unreadable: Vec<String>,
    /// The topology file's directory, which data files (bot patterns) are relative to.
    dir: std::path::PathBuf,
}

/// What a name in the topology refers to.
#[derive(Clone, Copy)]
enum Named {
    Source(usize),
    Table,
    Operator(usize),
    Sink,
}

impl Compiler {
    fn report(
        &mut self,
        path: impl Into<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.problems.push(Problem { path: path.into(), message: message.into(), hint });
    }

    fn compile(&mut self, spec: TopologySpec) -> Plan {
        let schema_dir = spec.schema_dir();
        let schemas = match load_dir(&schema_dir) {
            Ok(schemas) => schemas,
            Err(error) => {
                let any_avro = spec.sources.iter().any(|s| s.feed.schema.is_some())
                    || spec.tables.iter().any(|t| t.feed.schema.is_some())
                    || spec.sinks.iter().any(|s| s.schema.is_some());
                if any_avro {
                    self.report(
                        "(schemas)",
                        format!("cannot load the schemas in {}: {error}", schema_dir.display()),
                        Some("schemas live in avro/ beside the topologies/ directory".into()),
                    );
                }
                BTreeMap::new()
            }
        };
        let names = self.names(&spec);

        let sources: Vec<SourcePlan> =
            spec.sources.iter().map(|source| self.source(source, &schemas)).collect();
        let tables: Vec<TablePlan> = spec
            .tables
            .iter()
            .enumerate()
            .map(|(i, table)| self.table(table, i, &schemas))
            .collect();
        let order = self.order(&spec.operators, &names);
        let mut nodes: Vec<NodePlan> = Vec::with_capacity(order.len());
        let mut node_index: HashMap<&str, usize> = HashMap::new();
        for &op in &order {
            let spec_op = &spec.operators[op];
            let Some(input) = self.input_of(
                &format!("operators.{}.input", spec_op.name),
                &spec_op.input,
                &names,
                (&node_index, &nodes),
            ) else {
                continue;
            };
            if let OperatorKind::Top { .. } = spec_op.kind {
                if let Some([by_window, top]) =
                    self.top(spec_op, input, &nodes, &spec.application_id)
                {
                    nodes.push(by_window);
                    node_index.insert(&spec_op.name, nodes.len());
                    nodes.push(top);
                }
                continue;
            }
            let (value, key) = types_of(&sources, &nodes, input);
            if let Some(node) = self.node(spec_op, input, value, key, &tables, &spec.application_id)
            {
                node_index.insert(&spec_op.name, nodes.len());
                nodes.push(node);
            }
        }
        let sinks: Vec<SinkPlan> = spec
            .sinks
            .iter()
            .filter_map(|sink| {
                let input = self.input_of(
                    &format!("sinks.{}.input", sink.name),
                    &sink.input,
                    &names,
                    (&node_index, &nodes),
                )?;
                let (value, key) = types_of(&sources, &nodes, input);
                Some(self.sink(sink, input, value, key, &schemas))
            })
            .collect();

        let mut plan = Plan {
            spec,
            sources,
            tables,
            nodes,
            sinks,
            stores: Vec::new(),
            internal_topics: Vec::new(),
            subtopologies: Vec::new(),
            registry: Arc::new(OfflineRegistry::new(schemas.into_values())),
        };
        self.layout(&mut plan);
        plan
    }

    /// Every name, checking that no two parts share one.
    fn names(&mut self, spec: &TopologySpec) -> HashMap<String, (Named, String)> {
        let mut names: HashMap<String, (Named, String)> = HashMap::new();
        let all = spec
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| (&s.name, Named::Source(i), format!("sources.{}", s.name)))
            .chain(
                spec.tables.iter().map(|t| (&t.name, Named::Table, format!("tables.{}", t.name))),
            )
            .chain(
                spec.operators
                    .iter()
                    .enumerate()
                    .map(|(i, o)| (&o.name, Named::Operator(i), format!("operators.{}", o.name))),
            )
            .chain(spec.sinks.iter().map(|s| (&s.name, Named::Sink, format!("sinks.{}", s.name))));
        for (name, named, path) in all {
            if let Some((_, first)) = names.get(name) {
                let message = format!("duplicate name '{name}': {first} has it too");
                self.report(
                    path,
                    message,
                    Some("every source, table, operator and sink needs its own name".into()),
                );
            } else {
                names.insert(name.clone(), (named, path));
            }
        }
        names
    }

    /// Operator indexes ordered so every input comes first; reports cycles.
    fn order(
        &mut self,
        operators: &[OperatorSpec],
        names: &HashMap<String, (Named, String)>,
    ) -> Vec<usize> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let mut marks = vec![Mark::New; operators.len()];
        let mut order = Vec::new();
        for start in 0..operators.len() {
            // Iterative depth-first search, keeping the path for the cycle message.
            let mut path: Vec<usize> = Vec::new();
            let mut at = Some(start);
            while let Some(op) = at {
                match marks[op] {
                    Mark::Done => {}
                    Mark::Open => {
                        let from = path.iter().position(|&p| p == op).unwrap_or(0);
                        let cycle: Vec<&str> = path[from..]
                            .iter()
                            .chain(std::iter::once(&op))
                            .map(|&p| operators[p].name.as_str())
                            .collect();
                        self.report(
                            format!("operators.{}.input", operators[op].name),
                            format!("cycle: {}", cycle.join(" → ")),
                            Some("an operator cannot read, directly or not, its own output".into()),
                        );
                        for &p in &path {
                            marks[p] = Mark::Done;
                        }
                        break;
                    }
                    Mark::New => {
                        marks[op] = Mark::Open;
                        path.push(op);
                        let input = &operators[op].input;
                        let input = input.strip_suffix(LATE).unwrap_or(input);
                        if let Some((Named::Operator(next), _)) = names.get(input) {
                            at = Some(*next);
                            continue;
                        }
                    }
                }
                // Close the path from the end: each node's input is done.
                while let Some(p) = path.pop() {
                    if marks[p] == Mark::Open {
                        marks[p] = Mark::Done;
                        order.push(p);
                    }
                }
                at = None;
            }
        }
        order
    }

    /// Resolves an `input:` naming a source, an already compiled operator, or the late
    /// records of one (`<name>.late`).
    fn input_of(
        &mut self,
        path: &str,
        name: &str,
        names: &HashMap<String, (Named, String)>,
        (index, nodes): (&HashMap<&str, usize>, &[NodePlan]),
    ) -> Option<Input> {
        if let Some(base) = name.strip_suffix(LATE)
            && let Some((Named::Operator(_), _)) = names.get(base)
        {
            // An operator that failed to compile was already reported.
            let node = *index.get(base)?;
            if nodes[node].operator.has_late() {
                return Some(Input::Late(node));
            }
            self.report(
                path,
                format!("'{base}' is a {} and has no late records", nodes[node].operator.word()),
                Some("only windowed operators (count, sessionize) have a `.late` output".into()),
            );
            return None;
        }
        match names.get(name) {
            Some((Named::Source(i), _)) => Some(Input::Source(*i)),
            // An operator that failed to compile (or is in a cycle) was already reported.
            Some((Named::Operator(_), _)) => index.get(name).map(|&i| Input::Node(i)),
            Some((Named::Table, _)) => {
                self.report(
                    path,
                    format!("'{name}' is a table, not a stream"),
                    Some(format!("enrich a stream with it: `type: join, table: {name}`")),
                );
                None
            }
            Some((Named::Sink, _)) => {
                self.report(path, format!("'{name}' is a sink; a sink cannot be read"), None);
                None
            }
            // Left out for its own shape problems, reported already.
            None if self.unreadable.iter().any(|n| n == name) => None,
            None => {
                let candidates = names
                    .iter()
                    .filter(|(_, (named, _))| {
                        matches!(named, Named::Source(_) | Named::Operator(_))
                    })
                    .map(|(n, _)| n.as_str());
                self.report(
                    path,
                    format!("unknown input '{name}'{}", hint::suggestion(name, candidates)),
                    Some("an input names a source or an operator".into()),
                );
                None
            }
        }
    }

    /// Looks up schema file `file` for the part at `path`.
    fn schema(
        &mut self,
        path: &str,
        file: &str,
        schemas: &BTreeMap<String, AvroSchema>,
    ) -> Option<AvroSchema> {
        match schemas.get(file) {
            Some(schema) => Some(schema.clone()),
            None => {
                self.report(
                    format!("{path}.schema"),
                    format!(
                        "no schema file '{file}' in avro/{}",
                        hint::suggestion(file, schemas.keys().map(String::as_str))
                    ),
                    Some(format!(
                        "schemas found: {}",
                        schemas.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
                    )),
                );
                None
            }
        }
    }

    /// The type of field `field` of `value`, reporting a field that is not there.
    fn field(&mut self, path: String, field: &str, value: &Type, what: &str) -> Option<Type> {
        let found = value.field(field);
        if found.is_none() {
            let names = value.field_names();
            self.report(
                path,
                format!(
                    "{what} '{field}' is not a field of the records{}",
                    hint::suggestion(field, names.iter().copied())
                ),
                Some(format!("fields: {}", names.join(", "))),
            );
        }
        found
    }

    /// The schema, value type and key type of a source's or table's feed at `path`.
    fn feed(
        &mut self,
        path: &str,
        feed: &Feed,
        schemas: &BTreeMap<String, AvroSchema>,
    ) -> (Option<AvroSchema>, Type, Type) {
        let schema = feed.schema.as_ref().and_then(|file| self.schema(path, file, schemas));
        let value = schema.as_ref().map(Type::of_avro).unwrap_or(Type::Any);
        let key = match (&feed.key, feed.key_format) {
            (Some(field), _) => {
                self.field(format!("{path}.key"), field, &value, "key field").unwrap_or(Type::Any)
            }
            (None, KeyFormat::String) => Type::String,
            (None, KeyFormat::Json) => Type::Any,
        };
        if feed.format == Format::Debezium && feed.key.is_none() {
            self.report(
                format!("{path}.key"),
                "a Debezium source or table needs `key:` naming its primary key column",
                Some("e.g. `key: id`".into()),
            );
        }
        (schema, value, key)
    }

    fn source(
        &mut self,
        source: &SourceSpec,
        schemas: &BTreeMap<String, AvroSchema>,
    ) -> SourcePlan {
        let path = format!("sources.{}", source.name);
        let (schema, value, key) = self.feed(&path, &source.feed, schemas);
        if let Some(field) = &source.timestamp
            && let Some(ty) =
                self.field(format!("{path}.timestamp"), field, &value, "timestamp field")
            && !matches!(ty.non_null(), Type::Int | Type::Any)
        {
            self.report(
                format!("{path}.timestamp"),
                format!("timestamp field '{field}' is {ty}, not milliseconds (int/long)"),
                Some("use a long field with logicalType timestamp-millis".into()),
            );
        }
        SourcePlan { spec: source.clone(), schema, value, key, subtopology: 0 }
    }

    fn table(
        &mut self,
        table: &TableSpec,
        index: usize,
        schemas: &BTreeMap<String, AvroSchema>,
    ) -> TablePlan {
        let (schema, row, key) = self.feed(&format!("tables.{}", table.name), &table.feed, schemas);
        TablePlan { spec: table.clone(), schema, row, key, store: index }
    }

    fn expr(&mut self, path: String, source: &str, value: &Type, key: &Type) -> Option<Expr> {
        match Expr::compile(source, &Plan::scope(value, key)) {
            Ok(expr) => Some(expr),
            Err(errors) => {
                for error in errors {
                    self.report(path.clone(), error.message, error.hint);
                }
                None
            }
        }
    }

    fn node(
        &mut self,
        spec: &OperatorSpec,
        input: Input,
        value: &Type,
        key: &Type,
        tables: &[TablePlan],
        application_id: &str,
    ) -> Option<NodePlan> {
        let path = format!("operators.{}", spec.name);
        let (operator, out_value, out_key) = match &spec.kind {
            OperatorKind::Filter { where_ } => {
                let expr = self.expr(format!("{path}.where"), where_, value, key)?;
                if !matches!(expr.output_type().non_null(), Type::Bool | Type::Any) {
                    self.report(
                        format!("{path}.where"),
                        format!("`{where_}` is {}, not a condition (bool)", expr.output_type()),
                        Some("compare it: e.g. `field == 'x'`".into()),
                    );
                }
                (OperatorPlan::Filter { where_: expr }, value.clone(), key.clone())
            }
            OperatorKind::Map { select, set, drop } => {
                let mut compiled = |list: &[(String, String)], part: &str| -> Vec<(String, Expr)> {
                    list.iter()
                        .filter_map(|(name, source)| {
                            let expr =
                                self.expr(format!("{path}.{part}.{name}"), source, value, key)?;
                            Some((name.clone(), expr))
                        })
                        .collect()
                };
                let select = compiled(select, "select");
                let set = compiled(set, "set");
                let mut fields = match (select.is_empty(), value) {
                    (false, _) => BTreeMap::new(),
                    (true, Type::Record(fields)) => fields.clone(),
                    (true, _) => BTreeMap::new(),
                };
                let open = select.is_empty() && !matches!(value, Type::Record(_));
                for (name, expr) in select.iter().chain(&set) {
                    fields.insert(name.clone(), expr.output_type().clone());
                }
                for name in drop {
                    if fields.remove(name).is_none() && !open {
                        let names: Vec<&str> = value.field_names();
                        self.report(
                            format!("{path}.drop"),
                            format!(
                                "cannot drop '{name}': not a field{}",
                                hint::suggestion(name, names.iter().copied())
                            ),
                            None,
                        );
                    }
                }
                let out = if open { Type::Any } else { Type::Record(fields) };
                (OperatorPlan::Map { select, set, drop: drop.clone() }, out, key.clone())
            }
            OperatorKind::Rekey { key: source, partitions } => {
                let expr = self.expr(format!("{path}.key"), source, value, key)?;
                let new_key = expr.output_type().clone();
                let topic = format!("{application_id}-{}-repartition", spec.name);
                let operator = OperatorPlan::Rekey {
                    key: expr,
                    topic,
                    partitions: *partitions,
                    keep_key_as: None,
                };
                (operator, value.clone(), new_key)
            }
            OperatorKind::Count { window, emit, sums, distinct } => {
                let mut fields = BTreeMap::from([
                    ("window_start".to_owned(), Type::Int),
                    ("window_end".to_owned(), Type::Int),
                    ("count".to_owned(), Type::Int),
                ]);
                let mut compiled_sums = Vec::new();
                for (name, source) in sums {
                    let Some(expr) = self.expr(format!("{path}.sum.{name}"), source, value, key)
                    else {
                        continue;
                    };
                    let ty = match expr.output_type().non_null() {
                        Type::Int => Type::Int,
                        Type::Float | Type::Any => Type::Float,
                        other => {
                            self.report(
                                format!("{path}.sum.{name}"),
                                format!("`{source}` is {other}, not a number: it cannot be summed"),
                                None,
                            );
                            continue;
                        }
                    };
                    fields.insert(name.clone(), ty);
                    compiled_sums.push((name.clone(), expr));
                }
                let mut compiled_distinct = Vec::new();
                for (name, source) in distinct {
                    if let Some(expr) =
                        self.expr(format!("{path}.distinct.{name}"), source, value, key)
                    {
                        fields.insert(name.clone(), Type::Int);
                        compiled_distinct.push((name.clone(), expr));
                    }
                }
                let names = sums.iter().chain(distinct).map(|(name, _)| name);
                for (seen, name) in names.clone().enumerate() {
                    let clash = ["window_start", "window_end", "count"].contains(&name.as_str())
                        || names.clone().take(seen).any(|earlier| earlier == name);
                    if clash {
                        self.report(
                            path.clone(),
                            format!("the count already has an output field '{name}'"),
                            Some("give each sum and distinct count its own name".into()),
                        );
                    }
                }
                let aux_store = (window.kind == WindowKind::Sliding
                    || !compiled_distinct.is_empty())
                .then_some(0);
                let operator = OperatorPlan::Count {
                    window: *window,
                    emit: *emit,
                    sums: compiled_sums,
                    distinct: compiled_distinct,
                    store: 0,
                    aux_store,
                };
                (operator, Type::Record(fields), key.clone())
            }
            OperatorKind::Sessionize { gap_ms, grace_ms, page, emit } => {
                if let Some(ty) = self.field(format!("{path}.page"), page, value, "page field")
                    && !matches!(ty.non_null(), Type::String | Type::Any)
                {
                    self.report(
                        format!("{path}.page"),
                        format!("page field '{page}' is {ty}, not text"),
                        None,
                    );
                }
                let fields = Sessionize::output_fields()
                    .into_iter()
                    .map(|(name, ty)| (name.to_owned(), ty))
                    .collect();
                let operator = OperatorPlan::Sessionize {
                    gap_ms: *gap_ms,
                    grace_ms: *grace_ms,
                    page: page.clone(),
                    emit: *emit,
                    store: 0,
                };
                (operator, Type::Record(fields), key.clone())
            }
            OperatorKind::DetectBots(settings) => {
                let operator = self.bots(&path, settings, value)?;
                let mut fields = match value {
                    Type::Record(fields) => fields.clone(),
                    _ => BTreeMap::new(),
                };
                for (name, ty) in [
                    ("is_bot", Type::Bool),
                    ("bot_score", Type::Float),
                    ("bot_reasons", Type::List(Box::new(Type::String))),
                ] {
                    if fields.insert(name.to_owned(), ty).is_some() {
                        self.report(
                            path.clone(),
                            format!("detect_bots adds '{name}', which the input already has"),
                            Some(format!("drop or rename '{name}' with a map first")),
                        );
                    }
                }
                let out =
                    if matches!(value, Type::Record(_)) { Type::Record(fields) } else { Type::Any };
                (operator, out, key.clone())
            }
            OperatorKind::Top { .. } => return None,
            OperatorKind::Join { table, on, mode, fields, as_ } => {
                let Some(index) = tables.iter().position(|t| &t.spec.name == table) else {
                    self.report(
                        format!("{path}.table"),
                        format!(
                            "unknown table '{table}'{}",
                            hint::suggestion(table, tables.iter().map(|t| t.spec.name.as_str()))
                        ),
                        Some("declare it under `tables:`".into()),
                    );
                    return None;
                };
                let table_plan = &tables[index];
                let on_expr = self.expr(format!("{path}.on"), on, value, key)?;
                if let Err(why) =
                    table_plan.key.non_null().accepts(on_expr.output_type().non_null())
                {
                    self.report(
                        format!("{path}.on"),
                        format!(
                            "`{on}` is {}, but table '{table}' is keyed by {}: {why}",
                            on_expr.output_type(),
                            table_plan.key
                        ),
                        None,
                    );
                }
                if table_plan.spec.mode == TableMode::Copartitioned && on.trim() != "_key" {
                    self.report(
                        format!("{path}.on"),
                        format!("a co-partitioned table is joined on the stream's key, not `{on}`"),
                        Some(format!("rekey the stream by `{on}` first, then join `on: _key`; or make table '{table}' global")),
                    );
                }
                let nullable = |ty: Type| if *mode == JoinMode::Left { ty.nullable() } else { ty };
                let mut out = match value {
                    Type::Record(fields) => fields.clone(),
                    _ => BTreeMap::new(),
                };
                let as_name = as_.clone().unwrap_or_else(|| table.clone());
                if fields.is_empty() {
                    out.insert(as_name.clone(), nullable(table_plan.row.clone()));
                } else {
                    for (name, row_field) in fields {
                        if let Some(ty) = self.field(
                            format!("{path}.fields.{name}"),
                            row_field,
                            &table_plan.row,
                            "table field",
                        ) {
                            out.insert(name.clone(), nullable(ty));
                        }
                    }
                }
                let collisions: Vec<&String> = match value {
                    Type::Record(input) => {
                        let added: Vec<&String> = if fields.is_empty() {
                            vec![&as_name]
                        } else {
                            fields.iter().map(|(n, _)| n).collect()
                        };
                        added.into_iter().filter(|n| input.contains_key(*n)).collect()
                    }
                    _ => Vec::new(),
                };
                for name in collisions {
                    self.report(
                        format!("{path}.{}", if fields.is_empty() { "as" } else { "fields" }),
                        format!("the join would overwrite the input's field '{name}'"),
                        Some("choose another output name".into()),
                    );
                }
                let out =
                    if matches!(value, Type::Record(_)) { Type::Record(out) } else { Type::Any };
                (
                    OperatorPlan::Join {
                        table: index,
                        on: on_expr,
                        mode: *mode,
                        fields: fields.clone(),
                        as_: as_name,
                    },
                    out,
                    key.clone(),
                )
            }
        };
        Some(NodePlan {
            name: spec.name.clone(),
            input,
            operator,
            value: out_value,
            key: out_key,
            subtopology: 0,
        })
    }

    /// Loads the rule files of a `detect_bots` and checks its fields.
    fn bots(&mut self, path: &str, settings: &BotSettings, value: &Type) -> Option<OperatorPlan> {
        for (key, field) in [("user_agent", &settings.user_agent), ("ip", &settings.ip)] {
            if let Some(ty) = self.field(format!("{path}.{key}"), field, value, "field")
                && !matches!(ty.non_null(), Type::String | Type::Any)
            {
                self.report(
                    format!("{path}.{key}"),
                    format!("field '{field}' is {ty}, not text"),
                    None,
                );
            }
        }
        let patterns = self.dir.join(&settings.patterns);
        let ranges = settings.datacenter_ranges.as_ref().map(|file| self.dir.join(file));
        match BotRules::load(&patterns, ranges.as_deref()) {
            Ok(rules) => Some(OperatorPlan::DetectBots {
                rules: Arc::new(rules),
                limits: settings.limits,
                user_agent: settings.user_agent.clone(),
                ip: settings.ip.clone(),
                store: 0,
            }),
            Err(error) => {
                let at = if error.file == patterns { "patterns" } else { "datacenter_ranges" };
                self.report(
                    format!("{path}.{at}"),
                    error.to_string(),
                    Some("paths are relative to the topology file".into()),
                );
                None
            }
        }
    }

    /// A `top`: a hidden rekey of its count's records by window (keeping the item), then the
    /// top operator reading that repartition, so every count of a window meets in one task.
    fn top(
        &mut self,
        spec: &OperatorSpec,
        input: Input,
        nodes: &[NodePlan],
        application_id: &str,
    ) -> Option<[NodePlan; 2]> {
        let OperatorKind::Top { n, by, emit, grace_ms } = &spec.kind else { return None };
        let path = format!("operators.{}", spec.name);
        let count = match input {
            Input::Node(i) => match &nodes[i].operator {
                OperatorPlan::Count { window, .. } if window.kind != WindowKind::Sliding => {
                    Some((*window, &nodes[i]))
                }
                _ => None,
            },
            _ => None,
        };
        let Some((window, count)) = count else {
            self.report(
                format!("{path}.input"),
                format!(
                    "a top ranks the windows of a count; '{}' is not a tumbling or hopping count",
                    spec.input
                ),
                Some("count first (`type: count` with a window), then rank its output".into()),
            );
            return None;
        };
        let by = by.clone().unwrap_or_else(|| "count".to_owned());
        let by_type = self.field(format!("{path}.by"), &by, &count.value, "field")?;
        let (item_key, by_window) = (count.key.clone(), format!("{}-by-window", spec.name));
        let key_expr =
            self.expr(format!("{path}.input"), "window_start", &count.value, &item_key)?;
        let mut keyed = match &count.value {
            Type::Record(fields) => fields.clone(),
            _ => BTreeMap::new(),
        };
        keyed.insert("item".to_owned(), item_key.clone());
        let rekey = NodePlan {
            name: by_window,
            input,
            operator: OperatorPlan::Rekey {
                key: key_expr,
                topic: format!("{application_id}-{}-repartition", spec.name),
                partitions: None,
                keep_key_as: Some("item".to_owned()),
            },
            value: Type::Record(keyed),
            key: Type::Int,
            subtopology: 0,
        };
        let item = BTreeMap::from([("item".to_owned(), item_key), (by.clone(), by_type)]);
        let list = Type::record([
            ("window_start", Type::Int),
            ("window_end", Type::Int),
            ("items", Type::List(Box::new(Type::Record(item)))),
        ]);
        let top = NodePlan {
            name: spec.name.clone(),
            input: Input::Node(nodes.len()),
            operator: OperatorPlan::Top {
                n: usize::try_from(*n).unwrap_or(usize::MAX),
                by,
                emit: *emit,
                size_ms: window.size_ms,
                grace_ms: grace_ms.unwrap_or(window.advance_ms),
                store: 0,
            },
            value: list,
            key: Type::Int,
            subtopology: 0,
        };
        Some([rekey, top])
    }

    fn sink(
        &mut self,
        sink: &SinkSpec,
        input: Input,
        value: &Type,
        key: &Type,
        schemas: &BTreeMap<String, AvroSchema>,
    ) -> SinkPlan {
        let path = format!("sinks.{}", sink.name);
        let where_ =
            sink.where_.as_ref().and_then(|w| self.expr(format!("{path}.where"), w, value, key));
        let schema = sink.schema.as_ref().and_then(|file| self.schema(&path, file, schemas));
        if let Some(schema) = &schema
            && let Err(why) = Type::of_avro(schema).accepts(value)
        {
            self.report(
                format!("{path}.schema"),
                format!(
                    "schema {} cannot hold what '{}' emits: {why}",
                    sink.schema.as_deref().unwrap_or_default(),
                    sink.input
                ),
                Some(
                    "change the schema, or select/compute fields with a `map` before the sink"
                        .into(),
                ),
            );
        }
        SinkPlan { spec: sink.clone(), input, where_, schema }
    }

    /// Assigns sub-topologies, stores and internal topics, and checks co-partitioning.
    fn layout(&mut self, plan: &mut Plan) {
        // Each source starts a sub-topology; each rekey starts one for its consumers.
        for (i, source) in plan.sources.iter_mut().enumerate() {
            source.subtopology = i;
            plan.subtopologies.push(Subtopology {
                sources: vec![i],
                repartition: None,
                nodes: Vec::new(),
                partitions: source_partitions(&source.spec),
                name: source.spec.name.clone(),
                stores: Vec::new(),
                commits: None,
            });
        }
        let mut starts: HashMap<usize, usize> = HashMap::new();
        for index in 0..plan.nodes.len() {
            let subtopology = match plan.nodes[index].input {
                Input::Source(s) => plan.sources[s].subtopology,
                Input::Node(n) | Input::Late(n) => match starts.get(&n) {
                    Some(&sub) => sub,
                    None => plan.nodes[n].subtopology,
                },
            };
            plan.nodes[index].subtopology = subtopology;
            plan.subtopologies[subtopology].nodes.push(index);
            if let OperatorPlan::Rekey { topic, partitions, .. } = &plan.nodes[index].operator {
                let partitions = match partitions {
                    Some(n) => Partitions::Exactly(*n),
                    None => plan.subtopologies[subtopology].partitions.clone(),
                };
                plan.internal_topics.push(InternalTopic {
                    name: topic.clone(),
                    role: TopicRole::Repartition,
                    partitions: partitions.clone(),
                });
                starts.insert(index, plan.subtopologies.len());
                plan.subtopologies.push(Subtopology {
                    sources: Vec::new(),
                    repartition: Some(index),
                    nodes: Vec::new(),
                    partitions,
                    name: plan.nodes[index].name.clone(),
                    stores: Vec::new(),
                    commits: None,
                });
            }
        }
        // Each store of a stateful operator has a compacted changelog, partitioned like the
        // operator's sub-topology.
        for node in &mut plan.nodes {
            let partitions = plan.subtopologies[node.subtopology].partitions.clone();
            for (slot, suffix, kind) in node.operator.store_slots() {
                *slot = plan.stores.len();
                plan.subtopologies[node.subtopology].stores.push(*slot);
                let name = format!("{}{suffix}", node.name);
                let changelog = format!("{}-{name}-changelog", plan.spec.application_id);
                plan.stores.push(StorePlan {
                    name,
                    kind,
                    restore_from: changelog.clone(),
                    owner: format!("operator {}", node.name),
                });
                plan.internal_topics.push(InternalTopic {
                    name: changelog,
                    role: TopicRole::Changelog,
                    partitions: partitions.clone(),
                });
            }
        }
        // Tasks with stores record their commits in one more compacted topic.
        for sub in &mut plan.subtopologies {
            if !sub.stores.is_empty() {
                let name = format!("{}-{}-commits", plan.spec.application_id, sub.name);
                plan.internal_topics.push(InternalTopic {
                    name: name.clone(),
                    role: TopicRole::Commits,
                    partitions: sub.partitions.clone(),
                });
                sub.commits = Some(name);
            }
        }
        // Table stores restore from their own topics.
        for table in &mut plan.tables {
            table.store = plan.stores.len();
            plan.stores.push(StorePlan {
                name: table.spec.name.clone(),
                kind: StoreKind::Kv,
                restore_from: table.spec.feed.topic.clone(),
                owner: format!("table {}", table.spec.name),
            });
        }
        // Co-partitioned tables must match the partitions of the streams joined with them.
        for node in &plan.nodes {
            if let OperatorPlan::Join { table, .. } = &node.operator {
                let table = &plan.tables[*table];
                if table.spec.mode != TableMode::Copartitioned {
                    continue;
                }
                let stream = &plan.subtopologies[node.subtopology].partitions;
                if let (Partitions::Exactly(a), Some(b)) = (stream, table.spec.feed.partitions)
                    && *a != b
                {
                    self.report(
                        format!("tables.{}.partitions", table.spec.name),
                        format!("co-partitioned table has {b} partitions but '{}' reads a stream with {a}", node.name),
                        Some("give both topics the same partitions, or use `mode: global`".into()),
                    );
                }
            }
        }
    }
}

/// The suffix naming an operator's late records as an input.
pub const LATE: &str = ".late";

/// The value and key types flowing out of `input`, among `sources` and `nodes`.
fn types_of<'p>(
    sources: &'p [SourcePlan],
    nodes: &'p [NodePlan],
    input: Input,
) -> (&'p Type, &'p Type) {
    match input {
        Input::Source(i) => (&sources[i].value, &sources[i].key),
        Input::Node(i) => (&nodes[i].value, &nodes[i].key),
        // Late records are the operator's input records, unchanged.
        Input::Late(i) => types_of(sources, nodes, nodes[i].input),
    }
}

/// The partitions of a source's topic, as far as the spec knows.
fn source_partitions(source: &SourceSpec) -> Partitions {
    match source.feed.partitions {
        Some(n) => Partitions::Exactly(n),
        None => Partitions::Like(source.feed.topic.clone()),
    }
}
