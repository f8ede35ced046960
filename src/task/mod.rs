//! A task: one sub-topology running over one input partition, without Kafka.
//!
//! [`Task`] routes a decoded record from its entry (a source, or a repartition topic) through
//! the sub-topology's operators to its sinks, tracks stream time (the largest event time seen),
//! and lets operators act when stream time advances. What leaves the task is a list of
//! [`Output`]s: records for a sink, or records for a repartition topic that the next
//! sub-topology reads. The runtime wraps a task with Kafka; the test driver wraps it with
//! test input; both run this same code.

pub mod codec;

use std::collections::HashMap;
use std::sync::Arc;

use crate::operator::{Context, Operator, OperatorError, Record, eval_bool};
use crate::plan::{Input, Plan};
use crate::state::Stores;

/// Where a record enters a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Entry {
    /// From a source stream, by index.
    Source(usize),
    /// From the repartition topic of a rekey node, by node index.
    Repartition(usize),
}

/// Where an output record goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A sink, by index.
    Sink(usize),
    /// The repartition topic of a rekey node, by node index.
    Repartition(usize),
}

/// A record leaving the task.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// Where it goes.
    pub to: Destination,
    /// The record.
    pub record: Record,
}

/// One sub-topology over one partition.
pub struct Task {
    plan: Arc<Plan>,
    /// Operators by node index (`None` for nodes of other sub-topologies).
    operators: Vec<Option<Operator>>,
    /// The nodes reading each input, in plan order.
    consumers: HashMap<Input, Arc<[usize]>>,
    /// The sinks reading each input.
    sinks: HashMap<Input, Vec<usize>>,
    /// Nodes of this sub-topology, in plan order (for stream-time callbacks).
    order: Vec<usize>,
    stream_time: i64,
    /// Emitted records, reused between calls.
    scratch: Vec<Vec<Record>>,
}

impl Task {
    /// A task for sub-topology `subtopology` of `plan`.
    pub fn new(plan: Arc<Plan>, subtopology: usize) -> Self {
        let sub = &plan.subtopologies[subtopology];
        let mut operators: Vec<Option<Operator>> = (0..plan.nodes.len()).map(|_| None).collect();
        let mut consumers: HashMap<Input, Vec<usize>> = HashMap::new();
        for &node in &sub.nodes {
            operators[node] = Some(Operator::build(&plan, node));
            consumers.entry(plan.nodes[node].input).or_default().push(node);
        }
        let consumers = consumers.into_iter().map(|(input, nodes)| (input, nodes.into())).collect();
        let mut sinks: HashMap<Input, Vec<usize>> = HashMap::new();
        for (index, sink) in plan.sinks.iter().enumerate() {
            sinks.entry(sink.input).or_default().push(index);
        }
        let order = sub.nodes.clone();
        Task {
            plan,
            operators,
            consumers,
            sinks,
            order,
            stream_time: i64::MIN,
            scratch: Vec::new(),
        }
    }

    /// The largest event time processed so far (`i64::MIN` before the first record).
    pub fn stream_time(&self) -> i64 {
        self.stream_time
    }

    /// Sets stream time, as restored with the task's state: processing after a restore must
    /// see the stream time the lost attempt had, to make the same decisions.
    pub fn resume_stream_time(&mut self, time: i64) {
        self.stream_time = time;
    }

    /// Processes one record entering at `entry`, appending what leaves the task to `out`.
    ///
    /// On an error, outputs this record already appended are still in `out`: the caller
    /// truncates `out` to its length before the call (and dead-letters the record).
    pub fn process(
        &mut self,
        entry: Entry,
        record: Record,
        stores: &mut dyn Stores,
        out: &mut Vec<Output>,
    ) -> Result<(), OperatorError> {
        let advanced = record.timestamp > self.stream_time;
        if advanced {
            self.stream_time = record.timestamp;
        }
        let from = match entry {
            Entry::Source(index) => Input::Source(index),
            Entry::Repartition(node) => Input::Node(node),
        };
        // What the new stream time closes goes first: an operator then sees the record with
        // its state already as of the record's time (a sliding window without the records that
        // left it). Nothing a record can join is closed by its own time, so counts, sessions
        // and lists are the same either way.
        if advanced {
            self.on_stream_time(stores, out)?;
        }
        self.emit(from, record, stores, out)
    }

    /// Advances stream time to `time` (if later) without a record, letting windowed operators
    /// close what it passes: the test driver's `advance_stream_time`.
    pub fn advance_to(
        &mut self,
        time: i64,
        stores: &mut dyn Stores,
        out: &mut Vec<Output>,
    ) -> Result<(), OperatorError> {
        if time > self.stream_time {
            self.stream_time = time;
            self.on_stream_time(stores, out)?;
        }
        Ok(())
    }

    fn on_stream_time(
        &mut self,
        stores: &mut dyn Stores,
        out: &mut Vec<Output>,
    ) -> Result<(), OperatorError> {
        for position in 0..self.order.len() {
            let node = self.order[position];
            let mut emitted = self.scratch.pop().unwrap_or_default();
            if let Some(operator) = &mut self.operators[node] {
                let mut ctx = Context { stores: &mut *stores, stream_time: self.stream_time };
                operator.on_stream_time(&mut ctx, &mut emitted)?;
            }
            self.forward(node, &mut emitted, stores, out)?;
            self.scratch.push(emitted);
        }
        Ok(())
    }

    /// Sends `record`, emitted by `from`, to every sink and operator reading `from`.
    fn emit(
        &mut self,
        from: Input,
        record: Record,
        stores: &mut dyn Stores,
        out: &mut Vec<Output>,
    ) -> Result<(), OperatorError> {
        if let Some(sinks) = self.sinks.get(&from) {
            let plan = &*self.plan;
            for &sink in sinks {
                let keep = match &plan.sinks[sink].where_ {
                    Some(condition) => eval_bool(condition, &record).map_err(
                        OperatorError::bad_record(&format!("sink {}", plan.sinks[sink].spec.name)),
                    )?,
                    None => true,
                };
                if keep {
                    out.push(Output { to: Destination::Sink(sink), record: record.clone() });
                }
            }
        }
        // An Arc, so walking the consumers while running them costs no allocation.
        let Some(consumers) = self.consumers.get(&from).map(Arc::clone) else { return Ok(()) };
        let last = consumers.len().saturating_sub(1);
        let mut record = Some(record);
        for (position, &node) in consumers.iter().enumerate() {
            let input = if position == last { record.take() } else { record.clone() };
            let Some(input) = input else { break };
            let mut emitted = self.scratch.pop().unwrap_or_default();
            let mut late = self.scratch.pop().unwrap_or_default();
            if let Some(operator) = &mut self.operators[node] {
                let mut ctx = Context { stores: &mut *stores, stream_time: self.stream_time };
                operator.process(input, &mut ctx, &mut emitted, &mut late)?;
            }
            self.forward(node, &mut emitted, stores, out)?;
            for record in late.drain(..) {
                self.emit(Input::Late(node), record, stores, out)?;
            }
            self.scratch.push(late);
            self.scratch.push(emitted);
        }
        Ok(())
    }

    /// Passes what `node` emitted on: to its repartition topic if it is a rekey, else onward.
    fn forward(
        &mut self,
        node: usize,
        emitted: &mut Vec<Record>,
        stores: &mut dyn Stores,
        out: &mut Vec<Output>,
    ) -> Result<(), OperatorError> {
        let repartitions = matches!(self.operators[node], Some(Operator::Rekey(_)));
        for record in emitted.drain(..) {
            if repartitions {
                out.push(Output { to: Destination::Repartition(node), record });
            } else {
                self.emit(Input::Node(node), record, stores, out)?;
            }
        }
        Ok(())
    }
}
