#!/usr/bin/env bash
# The main job on this machine: starts the local broker, builds Eddy, creates the topics of the
# reference topology (topologies/clickstream.yaml) and round-trips records through each.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/services.sh start
cargo build --locked --bin eddy
"$CARGO_TARGET_DIR/debug/eddy" --bootstrap-servers "$EDDY_BOOTSTRAP_SERVERS" check topologies/clickstream.yaml
