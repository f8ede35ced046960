//! Integration tests: the `eddy` binary on real topology files (`cli`), and everything that
//! talks to Kafka on a real Kafka-protocol broker (see `harness` for where it comes from).
//!
//! One test binary for all of them, so that the heavy native libraries link once.

mod cli;
mod harness;
mod kafka;
mod run;
