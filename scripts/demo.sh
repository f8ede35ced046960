#!/usr/bin/env bash
# The main job on this machine: starts the local broker, builds Eddy, validates the reference
# topology (topologies/clickstream.yaml), runs its embedded tests, prints its plan, creates its
# topics and round-trips records through each, then runs it: two `eddy run` instances on
# generated clicks.
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

# Then the pipeline itself: generated clicks (1 000/s for 30 s) feed two instances of the
# reference topology sharing the work; both stop cleanly (SIGTERM) and say what they did.
demo="$HOME/.cache/eddy/demo"
mkdir -p "$demo"
"$eddy" --bootstrap-servers "$EDDY_BOOTSTRAP_SERVERS" generate topologies/clickstream.yaml \
  --events 30000 --rate 1000 --seed "$RANDOM" &
generator=$!
pids=()
for instance in a b; do
  "$eddy" --bootstrap-servers "$EDDY_BOOTSTRAP_SERVERS" run topologies/clickstream.yaml \
    --state-dir "$demo/state-$instance" --instance-id "demo-$instance" \
    >"$demo/$instance.log" 2>&1 &
  pids+=($!)
done
echo "[demo] two instances running (logs: $demo/a.log, $demo/b.log); generating clicks for 30 s…"
wait "$generator"
sleep 10
kill -TERM "${pids[@]}"
for pid in "${pids[@]}"; do wait "$pid"; done
for instance in a b; do
  echo "[demo] instance $instance: $(grep -o 'Stopped.*' "$demo/$instance.log" | sed 's/\x1b\[[0-9;]*m//g')"
done
