# Shared settings for the project's scripts (sourced, not run).
# The build cache lives outside the clone so that a fresh clone on the same machine (CI) reuses
# it: the C++ of RocksDB and librdkafka takes minutes to compile.
export PATH="$HOME/.cargo/bin:$PATH"
export EDDY_HOME="${EDDY_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/eddy}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$EDDY_HOME/target}"
export EDDY_BOOTSTRAP_SERVERS="${EDDY_BOOTSTRAP_SERVERS:-127.0.0.1:${EDDY_BROKER_PORT:-9092}}"
