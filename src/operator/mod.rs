//! Operators: the steps of a topology, one file per kind, named as in YAML.
//!
//! An operator is small, synchronous and deterministic: [`Operator::process`] takes one record
//! and emits zero or more, [`Operator::on_stream_time`] lets windowed operators close what
//! stream time has passed. Operators see keyed state only through the [`Stores`] traits and time
//! only through the record timestamps and stream time in [`Context`] — never the wall clock,
//! Kafka or RocksDB — so the broker-free test driver runs them exactly as production does, and
//! a replay after a crash reproduces the same output.

mod bots;
mod count;
mod filter;
mod join;
mod map;
mod rekey;
mod sessionize;
mod top;

pub use bots::{BotReason, BotRules, BotRulesError, DetectBots, MAX_REGULAR_EVENTS};
pub use count::Count;
pub use filter::Filter;
pub use join::Join;
pub use map::Map;
pub use rekey::Rekey;
pub use sessionize::Sessionize;
pub use top::Top;

use std::sync::Arc;

use crate::expr::{EvalError, Expr};
use crate::plan::{OperatorPlan, Plan};
use crate::state::{StateError, Stores};
use crate::value::{DecodeError, Value};

/// A record as operators see it: decoded key and value, and its event time.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The key (null when the record has none).
    pub key: Value,
    /// The value.
    pub value: Value,
    /// Event time, in milliseconds since the epoch.
    pub timestamp: i64,
}

/// What an operator may use besides the record.
pub struct Context<'a> {
    /// The task's stores, by plan index.
    pub stores: &'a mut dyn Stores,
    /// The task's stream time: the largest event time it has processed.
    pub stream_time: i64,
}

/// Why an operator could not process a record, by the action it demands.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The record is to blame (an expression failed on it): dead-letter it and go on.
    #[error("{operator}: {source}")]
    BadRecord {
        /// The operator's name.
        operator: String,
        /// What failed.
        source: EvalError,
    },
    /// The state is to blame: the task must stop and be rebuilt from its changelog.
    #[error("{operator}: {source}")]
    State {
        /// The operator's name.
        operator: String,
        /// What failed.
        source: StateError,
    },
    /// A stored value does not decode: the state is corrupt; rebuild the task.
    #[error("{operator}: {source}")]
    Corrupt {
        /// The operator's name.
        operator: String,
        /// What failed.
        source: DecodeError,
    },
}

impl OperatorError {
    /// For `map_err`: the record is to blame for `source`, in `operator`.
    pub(crate) fn bad_record(operator: &str) -> impl Fn(EvalError) -> OperatorError + '_ {
        move |source| OperatorError::BadRecord { operator: operator.to_owned(), source }
    }

    /// For `map_err`: the state failed in `operator`.
    pub(crate) fn state(operator: &str) -> impl Fn(StateError) -> OperatorError + '_ {
        move |source| OperatorError::State { operator: operator.to_owned(), source }
    }

    /// For `map_err`: `operator` read a stored value that does not decode.
    pub(crate) fn corrupt(operator: &str) -> impl Fn(DecodeError) -> OperatorError + '_ {
        move |source| OperatorError::Corrupt { operator: operator.to_owned(), source }
    }
}

/// Every operator kind; building one is one exhaustive `match` over the plan.
pub enum Operator {
    /// `type: filter`.
    Filter(Filter),
    /// `type: map`.
    Map(Map),
    /// `type: rekey`.
    Rekey(Rekey),
    /// `type: join`.
    Join(Join),
    /// `type: count`.
    Count(Count),
    /// `type: top`.
    Top(Top),
    /// `type: sessionize`.
    Sessionize(Sessionize),
    /// `type: detect_bots`.
    DetectBots(DetectBots),
}

impl Operator {
    /// The operator for node `index` of `plan`.
    pub fn build(plan: &Plan, index: usize) -> Operator {
        let node = &plan.nodes[index];
        let name = node.name.clone();
        match &node.operator {
            OperatorPlan::Filter { where_ } => Operator::Filter(Filter::new(name, where_.clone())),
            OperatorPlan::Map { select, set, drop } => {
                Operator::Map(Map::new(name, select.clone(), set.clone(), drop.clone()))
            }
            OperatorPlan::Rekey { key, keep_key_as, .. } => {
                Operator::Rekey(Rekey::new(name, key.clone(), keep_key_as.clone()))
            }
            OperatorPlan::Join { table, on, mode, fields, as_ } => Operator::Join(Join::new(
                name,
                plan.tables[*table].store,
                on.clone(),
                *mode,
                fields.clone(),
                as_.clone(),
            )),
            OperatorPlan::Count { window, emit, sums, distinct, store, aux_store } => {
                Operator::Count(Count::new(
                    name,
                    (*store, *aux_store),
                    *window,
                    *emit,
                    sums.clone(),
                    distinct.clone(),
                ))
            }
            OperatorPlan::Top { n, by, emit, size_ms, grace_ms, store } => Operator::Top(Top::new(
                name,
                *store,
                (*n, by.clone()),
                *emit,
                (*size_ms, *grace_ms),
            )),
            OperatorPlan::Sessionize { gap_ms, grace_ms, page, emit, store } => {
                Operator::Sessionize(Sessionize::new(
                    name,
                    *store,
                    *gap_ms,
                    *grace_ms,
                    *emit,
                    page.clone(),
                ))
            }
            OperatorPlan::DetectBots { rules, limits, user_agent, ip, store } => {
                Operator::DetectBots(DetectBots::new(
                    name,
                    *store,
                    Arc::clone(rules),
                    *limits,
                    user_agent.clone(),
                    ip.clone(),
                ))
            }
        }
    }

    /// Processes one record, appending what it emits to `out`, and the record itself to
    /// `late` when it arrived after its window or session closed.
    pub fn process(
        &mut self,
        record: Record,
        ctx: &mut Context<'_>,
        out: &mut Vec<Record>,
        late: &mut Vec<Record>,
    ) -> Result<(), OperatorError> {
        match self {
            Operator::Filter(op) => op.process(record, out),
            Operator::Map(op) => op.process(record, out),
            Operator::Rekey(op) => op.process(record, out),
            Operator::Join(op) => op.process(record, ctx, out),
            Operator::Count(op) => op.process(record, ctx, out, late),
            Operator::Top(op) => op.process(record, ctx, out),
            Operator::Sessionize(op) => op.process(record, ctx, out, late),
            Operator::DetectBots(op) => op.process(record, ctx, out),
        }
    }

    /// Lets the operator act on stream time reaching `ctx.stream_time` (closing windows).
    pub fn on_stream_time(
        &mut self,
        ctx: &mut Context<'_>,
        out: &mut Vec<Record>,
    ) -> Result<(), OperatorError> {
        match self {
            Operator::Count(op) => op.on_stream_time(ctx, out),
            Operator::Top(op) => op.on_stream_time(ctx, out),
            Operator::Sessionize(op) => op.on_stream_time(ctx, out),
            Operator::Filter(_)
            | Operator::Map(_)
            | Operator::Rekey(_)
            | Operator::Join(_)
            | Operator::DetectBots(_) => Ok(()),
        }
    }
}

/// Evaluates `expr` on `record`, with `_key` and `_timestamp` in scope (see [`Plan::scope`]).
pub(crate) fn eval(expr: &Expr, record: &Record) -> Result<Value, EvalError> {
    let timestamp = Value::Int(record.timestamp);
    expr.eval(&record.value, &[&record.key, &timestamp])
}

/// Evaluates condition `expr` on `record`.
pub(crate) fn eval_bool(expr: &Expr, record: &Record) -> Result<bool, EvalError> {
    let timestamp = Value::Int(record.timestamp);
    expr.eval_bool(&record.value, &[&record.key, &timestamp])
}
