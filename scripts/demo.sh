#!/usr/bin/env bash
# The main job on this machine: starts the local broker, builds Eddy, validates the reference
# topology (topologies/clickstream.yaml), runs its embedded tests, prints its plan, then creates
# its topics and round-trips records through each.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/services.sh start
# --all-targets, as scripts/test.sh builds: the same feature set for build dependencies, so the
# C++ of RocksDB and librdkafka is compiled once for both commands, not once each.
cargo build --locked --all-targets
eddy="$CARGO_TARGET_DIR/debug/eddy"
"$eddy" validate topologies/clickstream.yaml
"$eddy" test topologies/clickstream.yaml
"$eddy" describe topologies/clickstream.yaml
"$eddy" --bootstrap-servers "$EDDY_BOOTSTRAP_SERVERS" check topologies/clickstream.yaml
