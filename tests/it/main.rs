//! Integration tests on a real Kafka-protocol broker (see `harness` for where it comes from).
//!
//! One test binary for all of them, so that the heavy native libraries link once.

mod harness;
mod kafka;
