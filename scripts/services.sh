#!/usr/bin/env bash
# Makes this machine ready for Eddy and starts (or stops) the local services it runs against:
# PostgreSQL 15 (logical WAL, for the broker's storage and for Debezium) and the Nisshi
# Kafka-protocol broker. Idempotent: every step checks before it acts, so a second run is fast.
#
#   scripts/services.sh start    install what is missing, start PostgreSQL and the broker, wait
#   scripts/services.sh stop     stop the broker (PostgreSQL keeps running unless --all)
#   scripts/services.sh status   say what runs
#
# Settings (environment): EDDY_BROKER_PORT (9092), EDDY_HOME (~/.cache/eddy: pid files, logs).
set -euo pipefail

NISSHI_VERSION=0.7.0
PORT="${EDDY_BROKER_PORT:-9092}"
EDDY_HOME="${EDDY_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/eddy}"
RUN="$EDDY_HOME/run"
PG_VERSION=15
PG_CONF="/etc/postgresql/$PG_VERSION/main/postgresql.conf"
PG_URL="postgres://postgres:postgres@localhost/nisshi"
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '[services] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages the build and the services need: C/C++ toolchain and cmake for librdkafka and
# RocksDB, libclang for RocksDB's bindings, TLS/SASL/compression headers, PostgreSQL 15, Java 17
# and Python for the Debezium engine.
APT_PACKAGES=(build-essential cmake clang libclang-dev pkg-config libssl-dev libsasl2-dev
  libzstd-dev liblz4-dev zlib1g-dev protobuf-compiler postgresql-15 openjdk-17-jre-headless
  python3 python3-venv curl)

install_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "Installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

install_broker() {
  if command -v nisshi >/dev/null && nisshi --version 2>/dev/null | grep -q "$NISSHI_VERSION"; then
    return
  fi
  log "Installing the Nisshi broker $NISSHI_VERSION from crates.io (about 18 minutes on 2 cores, once)."
  # --ignore-rust-version: one dependency declares Rust 1.96 but builds on 1.95.
  cargo install "nisshi@$NISSHI_VERSION" --locked --ignore-rust-version \
    --features dynostore,postgres,libsql
}

pg_running() { pg_lsclusters -h 2>/dev/null | awk -v v="$PG_VERSION" '$1 == v && $2 == "main" {print $4}' | grep -q online; }
psql_postgres() { as_root su postgres -c "psql -qtAX $*"; }

start_postgres() {
  local restart=no
  if ! grep -qE '^wal_level *= *logical' "$PG_CONF"; then
    log "Setting wal_level = logical (the broker's storage and Debezium need it)."
    as_root sed -i -E 's/^#?wal_level.*/wal_level = logical/' "$PG_CONF"
    grep -qE '^wal_level' "$PG_CONF" || echo 'wal_level = logical' | as_root tee -a "$PG_CONF" >/dev/null
    restart=yes
  fi
  if pg_running; then
    [ "$restart" = yes ] && as_root pg_ctlcluster "$PG_VERSION" main restart
  else
    log "Starting PostgreSQL $PG_VERSION."
    as_root pg_ctlcluster "$PG_VERSION" main start
  fi
  psql_postgres "-c \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
  for db in nisshi; do
    if [ "$(psql_postgres "-c \"SELECT 1 FROM pg_database WHERE datname = '$db'\"")" != 1 ]; then
      psql_postgres "-c 'CREATE DATABASE $db'" >/dev/null
    fi
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }
broker_pid() { [ -f "$RUN/nisshi.pid" ] && kill -0 "$(cat "$RUN/nisshi.pid")" 2>/dev/null && cat "$RUN/nisshi.pid"; }

start_broker() {
  mkdir -p "$RUN"
  if broker_pid >/dev/null && port_open; then
    log "The broker already runs on 127.0.0.1:$PORT (pid $(broker_pid))."
    return
  fi
  if port_open; then
    log "Something else listens on 127.0.0.1:$PORT; set EDDY_BROKER_PORT to use another port."
    exit 1
  fi
  log "Starting the Nisshi broker on 127.0.0.1:$PORT (log: $RUN/nisshi.log)."
  nohup nisshi broker \
    --listener-url "tcp://127.0.0.1:$PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$PORT" \
    --storage-engine "$PG_URL" >>"$RUN/nisshi.log" 2>&1 &
  echo $! >"$RUN/nisshi.pid"
  for _ in $(seq 1 120); do
    if port_open; then
      log "The broker answers on 127.0.0.1:$PORT."
      return
    fi
    kill -0 "$(cat "$RUN/nisshi.pid")" 2>/dev/null || { tail -20 "$RUN/nisshi.log" >&2; log "The broker exited; its log is above."; exit 1; }
    sleep 0.5
  done
  log "The broker did not open port $PORT within 60 s; see $RUN/nisshi.log."
  exit 1
}

stop_broker() {
  local pid
  if pid=$(broker_pid); then
    log "Stopping the broker (pid $pid)."
    kill "$pid"
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/nisshi.pid"
}

case "${1:-start}" in
  start)
    install_packages
    install_broker
    start_postgres
    start_broker
    ;;
  stop)
    stop_broker
    if [ "${2:-}" = --all ] && pg_running; then as_root pg_ctlcluster "$PG_VERSION" main stop; fi
    ;;
  status)
    if pg_running; then echo "postgresql: running"; else echo "postgresql: stopped"; fi
    if pid=$(broker_pid) && port_open; then echo "broker: running on 127.0.0.1:$PORT (pid $pid)"; else echo "broker: stopped"; fi
    ;;
  *)
    echo "usage: $0 start|stop [--all]|status" >&2
    exit 2
    ;;
esac
