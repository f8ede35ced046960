#!/usr/bin/env bash
# Runs Eddy's whole test suite on a fresh or warm machine: installs and starts the local broker
# (scripts/services.sh), checks formatting and lints, then runs every test against that broker.
# Set KAFKA_BOOTSTRAP to test against another cluster instead.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
started=$SECONDS
scripts/services.sh start
export KAFKA_BOOTSTRAP="${KAFKA_BOOTSTRAP:-$EDDY_BOOTSTRAP_SERVERS}"
echo "[test] services ready after $((SECONDS - started)) s; testing against $KAFKA_BOOTSTRAP" >&2
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --all-targets
echo "[test] done in $((SECONDS - started)) s" >&2
