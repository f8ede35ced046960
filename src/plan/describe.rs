//! `eddy describe`: a compiled plan as text for people, or as a Mermaid or DOT graph.

use std::fmt::Write;

use super::{Input, OperatorPlan, Plan, TopicRole};
use crate::spec::{Emit, Format, Guarantee, JoinMode, TableMode, WindowKind};

/// A format as written in YAML.
fn format_word(format: Format) -> &'static str {
    match format {
        Format::Avro => "avro",
        Format::Json => "json",
        Format::Debezium => "debezium",
    }
}

/// The plan as indented text: sub-topologies with their inputs, operators (with key changes
/// and stores), sinks, and the internal topics Eddy will create.
pub fn describe_text(plan: &Plan) -> String {
    let mut out = String::new();
    let spec = &plan.spec;
    let _ = writeln!(out, "topology {} ({})", spec.application_id, spec.file.display());
    let settings = &spec.settings;
    let _ = writeln!(
        out,
        "  processing: {}, commit every {} ms, state memory {} MiB, dead letters to {}",
        match settings.processing_guarantee {
            Guarantee::ExactlyOnce => "exactly_once",
            Guarantee::AtLeastOnce => "at_least_once",
        },
        settings.commit_interval_ms,
        settings.memory_budget_bytes >> 20,
        settings.dead_letter_topic
    );
    for table in &plan.tables {
        let store = &plan.stores[table.store];
        let _ = writeln!(
            out,
            "  table {} <- topic {} ({}, {}), keyed by {} : {}; store '{}' restored from {}",
            table.spec.name,
            table.spec.feed.topic,
            format_word(table.spec.feed.format),
            match table.spec.mode {
                TableMode::Global => "global",
                TableMode::Copartitioned => "copartitioned",
            },
            table.spec.feed.key.as_deref().unwrap_or("the record key"),
            table.key,
            store.name,
            store.restore_from,
        );
    }
    for (index, sub) in plan.subtopologies.iter().enumerate() {
        let _ = writeln!(
            out,
            "  sub-topology {index} (one task per partition, {} partitions)",
            sub.partitions
        );
        for &source in &sub.sources {
            let source = &plan.sources[source];
            let _ = writeln!(
                out,
                "    source {} <- topic {} ({}{}), key {} : {}, event time {}",
                source.spec.name,
                source.spec.feed.topic,
                format_word(source.spec.feed.format),
                source.spec.feed.schema.as_ref().map(|s| format!(" {s}")).unwrap_or_default(),
                source.spec.feed.key.as_deref().unwrap_or("record key"),
                source.key,
                source.spec.timestamp.as_deref().unwrap_or("record timestamp"),
            );
        }
        if let Some(rekey) = sub.repartition
            && let OperatorPlan::Rekey { topic, .. } = &plan.nodes[rekey].operator
        {
            let _ =
                writeln!(out, "    source {} <- repartition topic {topic}", plan.nodes[rekey].name);
        }
        for &index in &sub.nodes {
            let node = &plan.nodes[index];
            let _ = write!(
                out,
                "    {} {} <- {}",
                node.operator.word(),
                node.name,
                plan.name_of(node.input)
            );
            match &node.operator {
                OperatorPlan::Filter { where_ } => {
                    let _ = write!(out, " where {}", where_.source());
                }
                OperatorPlan::Map { select, set, drop } => {
                    let names = |list: &[(String, crate::expr::Expr)]| {
                        list.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                    };
                    if !select.is_empty() {
                        let _ = write!(out, " select [{}]", names(select));
                    }
                    if !set.is_empty() {
                        let _ = write!(out, " set [{}]", names(set));
                    }
                    if !drop.is_empty() {
                        let _ = write!(out, " drop [{}]", drop.join(", "));
                    }
                }
                OperatorPlan::Rekey { key, topic, .. } => {
                    let _ = write!(
                        out,
                        " KEY CHANGE to {} : {} -> repartition topic {topic}",
                        key.source(),
                        node.key
                    );
                }
                OperatorPlan::Count { window, emit, sums, distinct, .. } => {
                    let shape = match window.kind {
                        WindowKind::Tumbling => "tumbling",
                        WindowKind::Hopping => "hopping",
                        WindowKind::Sliding => "sliding",
                    };
                    let _ = if window.kind == WindowKind::Sliding {
                        write!(
                            out,
                            " sliding window of {} ms up to stream time, in {} ms buckets, emit {}",
                            window.size_ms,
                            window.advance_ms,
                            emit_word(*emit),
                        )
                    } else {
                        write!(
                            out,
                            " {shape} windows of {} ms every {} ms, grace {} ms, emit {}",
                            window.size_ms,
                            window.advance_ms,
                            window.grace_ms,
                            emit_word(*emit),
                        )
                    };
                    for (what, list) in [("sum", sums), ("distinct", distinct)] {
                        if !list.is_empty() {
                            let names: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
                            let _ = write!(out, ", {what} [{}]", names.join(", "));
                        }
                    }
                }
                OperatorPlan::Top { n, by, emit, grace_ms, .. } => {
                    let _ = write!(
                        out,
                        " {n} items by {by} per window, grace {grace_ms} ms, emit {}",
                        emit_word(*emit)
                    );
                }
                OperatorPlan::Sessionize { gap_ms, grace_ms, page, emit, .. } => {
                    let _ = write!(
                        out,
                        " sessions split by {gap_ms} ms of inactivity, grace {grace_ms} ms, pages from {page}, emit {}",
                        emit_word(*emit)
                    );
                }
                OperatorPlan::DetectBots { user_agent, ip, limits, .. } => {
                    let _ = write!(
                        out,
                        " user agent {user_agent}, ip {ip}; over {} ms at most {} per key and {} per ip; bot from score {}",
                        limits.window_ms, limits.max_per_key, limits.max_per_ip, limits.threshold
                    );
                }
                OperatorPlan::Join { table, on, mode, .. } => {
                    let _ = write!(
                        out,
                        " {} join table {} on {} (reads store '{}')",
                        match mode {
                            JoinMode::Inner => "inner",
                            JoinMode::Left => "left",
                        },
                        plan.tables[*table].spec.name,
                        on.source(),
                        plan.stores[plan.tables[*table].store].name
                    );
                }
            }
            let _ = writeln!(out);
            let owner = format!("operator {}", node.name);
            for store in plan.stores.iter().filter(|s| s.owner == owner) {
                let _ = writeln!(
                    out,
                    "      {} store '{}' (changelog {})",
                    store.kind.as_str(),
                    store.name,
                    store.restore_from
                );
            }
            let (value, key) = plan.types_of(node.input);
            if *key != node.key || *value != node.value {
                let _ = writeln!(out, "      emits key {} value {}", node.key, node.value);
            }
        }
        for sink in plan.sinks.iter().filter(|s| subtopology_of(plan, s.input) == index) {
            let _ = writeln!(
                out,
                "    sink {} <- {} -> topic {} ({}{}){}",
                sink.spec.name,
                plan.name_of(sink.input),
                sink.spec.topic,
                format_word(sink.spec.format),
                sink.spec.schema.as_ref().map(|s| format!(" {s}")).unwrap_or_default(),
                sink.where_.as_ref().map(|w| format!(" where {}", w.source())).unwrap_or_default(),
            );
        }
    }
    if plan.internal_topics.is_empty() {
        let _ = writeln!(out, "  internal topics: none");
    } else {
        let _ = writeln!(out, "  internal topics:");
        for topic in &plan.internal_topics {
            let role = match topic.role {
                TopicRole::Changelog => "changelog, compacted",
                TopicRole::Repartition => "repartition",
                TopicRole::Commits => "commits, compacted",
            };
            let _ = writeln!(out, "    {} ({role}, {} partitions)", topic.name, topic.partitions);
        }
    }
    out
}

/// The sub-topology where records emitted by `input` are consumed: a rekey's go through its
/// repartition topic to the sub-topology reading it.
fn subtopology_of(plan: &Plan, input: Input) -> usize {
    match input {
        Input::Source(i) => plan.sources[i].subtopology,
        Input::Node(i) | Input::Late(i) => plan
            .subtopologies
            .iter()
            .position(|sub| sub.repartition == Some(i))
            .unwrap_or(plan.nodes[i].subtopology),
    }
}

/// One edge of the graph: from, to, label. What a rekey emits flows through its
/// repartition topic, drawn as a node of its own.
fn edges(plan: &Plan) -> Vec<(String, String, String)> {
    let id = |input: Input| match input {
        Input::Source(i) => format!("source_{}", plan.sources[i].spec.name),
        Input::Late(i) => format!("op_{}", plan.nodes[i].name),
        Input::Node(i) => match &plan.nodes[i].operator {
            OperatorPlan::Rekey { topic, .. } => format!("topic_{topic}"),
            _ => format!("op_{}", plan.nodes[i].name),
        },
    };
    let mut edges = Vec::new();
    for source in &plan.sources {
        edges.push((
            format!("topic_{}", source.spec.feed.topic),
            format!("source_{}", source.spec.name),
            String::new(),
        ));
    }
    let label = |input: Input| match input {
        Input::Late(_) => "late".to_owned(),
        _ => String::new(),
    };
    for node in &plan.nodes {
        edges.push((id(node.input), format!("op_{}", node.name), label(node.input)));
        match &node.operator {
            OperatorPlan::Join { table, .. } => edges.push((
                format!("table_{}", plan.tables[*table].spec.name),
                format!("op_{}", node.name),
                "lookup".into(),
            )),
            OperatorPlan::Rekey { topic, .. } => edges.push((
                format!("op_{}", node.name),
                format!("topic_{topic}"),
                "repartition".into(),
            )),
            _ => {}
        }
    }
    for table in &plan.tables {
        edges.push((
            format!("topic_{}", table.spec.feed.topic),
            format!("table_{}", table.spec.name),
            String::new(),
        ));
    }
    for sink in &plan.sinks {
        edges.push((id(sink.input), format!("sink_{}", sink.spec.name), label(sink.input)));
        edges.push((
            format!("sink_{}", sink.spec.name),
            format!("topic_{}", sink.spec.topic),
            String::new(),
        ));
    }
    edges
}

/// Every node of the graph: id, label, shape class.
fn vertices(plan: &Plan) -> Vec<(String, String, &'static str)> {
    let mut out = Vec::new();
    let mut topics: Vec<&str> = plan.sources.iter().map(|s| s.spec.feed.topic.as_str()).collect();
    topics.extend(plan.tables.iter().map(|t| t.spec.feed.topic.as_str()));
    topics.extend(plan.sinks.iter().map(|s| s.spec.topic.as_str()));
    topics.extend(plan.internal_topics.iter().map(|t| t.name.as_str()));
    topics.sort_unstable();
    topics.dedup();
    for topic in topics {
        out.push((format!("topic_{topic}"), format!("topic {topic}"), "topic"));
    }
    for source in &plan.sources {
        out.push((
            format!("source_{}", source.spec.name),
            format!("source {}", source.spec.name),
            "source",
        ));
    }
    for table in &plan.tables {
        out.push((
            format!("table_{}", table.spec.name),
            format!("table {}", table.spec.name),
            "store",
        ));
    }
    for node in &plan.nodes {
        out.push((
            format!("op_{}", node.name),
            format!("{} {}", node.operator.word(), node.name),
            "operator",
        ));
    }
    for sink in &plan.sinks {
        out.push((format!("sink_{}", sink.spec.name), format!("sink {}", sink.spec.name), "sink"));
    }
    out
}

/// Mermaid-safe identifier.
fn safe(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// The plan as a Mermaid flowchart.
pub fn describe_mermaid(plan: &Plan) -> String {
    let mut out = String::from("flowchart LR\n");
    for (id, label, shape) in vertices(plan) {
        let id = safe(&id);
        let _ = match shape {
            "topic" => writeln!(out, "  {id}[(\"{label}\")]"),
            "store" => writeln!(out, "  {id}[(\"{label}\")]"),
            "source" | "sink" => writeln!(out, "  {id}>\"{label}\"]"),
            _ => writeln!(out, "  {id}[\"{label}\"]"),
        };
    }
    for (from, to, label) in edges(plan) {
        if label.is_empty() {
            let _ = writeln!(out, "  {} --> {}", safe(&from), safe(&to));
        } else {
            let _ = writeln!(out, "  {} -- {label} --> {}", safe(&from), safe(&to));
        }
    }
    out
}

/// The plan as a Graphviz DOT digraph.
pub fn describe_dot(plan: &Plan) -> String {
    let mut out = format!("digraph \"{}\" {{\n  rankdir=LR;\n", plan.spec.application_id);
    for (id, label, shape) in vertices(plan) {
        let shape = match shape {
            "topic" | "store" => "cylinder",
            "source" | "sink" => "cds",
            _ => "box",
        };
        let _ = writeln!(out, "  \"{id}\" [label=\"{label}\", shape={shape}];");
    }
    for (from, to, label) in edges(plan) {
        let _ = writeln!(out, "  \"{from}\" -> \"{to}\" [label=\"{label}\"];");
    }
    out.push_str("}\n");
    out
}

/// The word of an emit mode, as YAML writes it.
fn emit_word(emit: Emit) -> &'static str {
    match emit {
        Emit::Final => "final",
        Emit::Updates => "updates",
    }
}
