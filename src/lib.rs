//! Eddy: a Kafka Streams-style stateful stream processor for clickstream analytics.
//!
//! A topology file (YAML) names sources, operators and sinks; `eddy run` instances sharing an
//! application id split the input partitions through Kafka's consumer-group protocol. See
//! `DESIGN.md` in the shared folder for the architecture; each module's docs say what it owns.

pub mod bench;
pub mod check;
pub mod expr;
pub mod format;
pub mod generate;
pub mod hint;
pub mod kafka;
pub mod operator;
pub mod plan;
pub mod runtime;
pub mod spec;
pub mod state;
pub mod task;
mod tempdir;
pub mod testkit;
pub mod types;
pub mod value;
