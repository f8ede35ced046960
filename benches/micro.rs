//! Micro-benchmarks of the per-record costs under every topology: decoding a record (Avro in
//! the Confluent wire format, JSON) and a round trip through a RocksDB-backed store.
//!
//! Run with `cargo bench --bench micro`; it prints nanoseconds per record (best of several
//! rounds, so a busy machine inflates less) and records per second on one core. Under
//! `cargo test` (no `--bench` argument) it runs once over a few records, as a smoke test.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use eddy::format::avro::load_dir;
use eddy::format::{AvroDecoder, AvroEncoder, OfflineRegistry, SchemaRegistry, json};
use eddy::state::{StateEnv, StoreKind, StoreSpec, Stores, TaskState};
use eddy::value::Value;

/// Records per round and rounds (the best is reported): measured, or a quick smoke run.
fn sizes() -> (usize, usize) {
    if std::env::args().any(|arg| arg == "--bench") { (200_000, 5) } else { (2_000, 1) }
}
/// Distinct keys in store benchmarks (a user population).
const KEYS: usize = 50_000;
/// Records between store commits (a 100 ms commit interval at ~500k records/s).
const COMMIT_EVERY: usize = 50_000;

fn click(i: usize) -> Value {
    Value::from([
        ("event_id", Value::from(format!("e{i}"))),
        ("user_id", Value::from(format!("u{}", i % KEYS))),
        ("session_hint", Value::Null),
        ("event_time", Value::Int(1_795_428_000_000 + i as i64)),
        ("page_url", Value::from(format!("/products/{}", i % 997))),
        ("referrer", Value::from("https://www.example.com/")),
        (
            "user_agent",
            Value::from(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
            ),
        ),
        ("ip", Value::from("203.0.113.7")),
        ("product_id", Value::Int((i % 997) as i64)),
        ("customer_id", Value::Null),
        ("event_type", Value::from("page_view")),
    ])
}

/// A stored little-endian counter, 0 when absent.
fn counter(stored: Option<Vec<u8>>) -> u64 {
    stored.and_then(|bytes| bytes.try_into().ok()).map_or(0, u64::from_le_bytes)
}

/// Runs `round` (over `records` records) `rounds` times and prints the best ns/record.
fn measure(name: &str, (records, rounds): (usize, usize), mut round: impl FnMut()) {
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let start = Instant::now();
        round();
        best = best.min(start.elapsed().as_nanos() as f64 / records as f64);
    }
    println!("| {name:<44} | {best:>8.0} ns | {:>10.0} /s |", 1e9 / best);
}

fn main() {
    let sizes = sizes();
    let (records, rounds) = sizes;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("avro");
    let schemas = load_dir(&dir).expect("the repository's schemas load");
    let schema = schemas["click_event.avsc"].clone();
    let registry = Arc::new(OfflineRegistry::new(schemas.into_values()));
    let encoder =
        AvroEncoder::new(registry.as_ref(), "clicks-value", schema.clone()).expect("encoder");
    let registry: Arc<dyn SchemaRegistry> = registry;
    let decoder = AvroDecoder::new(registry, Some(schema));
    let avro: Vec<Vec<u8>> =
        (0..1000).map(|i| encoder.encode(&click(i)).expect("encodes")).collect();
    let jsons: Vec<Vec<u8>> =
        (0..1000).map(|i| json::encode(&click(i)).expect("encodes")).collect();

    println!("| benchmark ({records} records, best of {rounds}) | per record | per core |");
    println!("| --- | ---: | ---: |");
    measure("Avro decode (wire format, 11-field click)", sizes, || {
        for i in 0..records {
            black_box(decoder.decode(&avro[i % avro.len()]).expect("decodes"));
        }
    });
    measure("Avro encode", sizes, || {
        for i in 0..records {
            black_box(encoder.encode(&click(i % 1000)).expect("encodes"));
        }
    });
    measure("JSON decode (same click)", sizes, || {
        for i in 0..records {
            black_box(json::decode(&jsons[i % jsons.len()]).expect("decodes"));
        }
    });

    let state_dir = std::env::temp_dir().join(format!("eddy-bench-{}", std::process::id()));
    let env = StateEnv::new(256 << 20);
    let (mut state, _) =
        TaskState::open(&env, &state_dir, "bench/0", &[StoreSpec::new("counts", StoreKind::Kv)])
            .expect("state opens");
    let keys: Vec<Vec<u8>> = (0..KEYS).map(|i| format!("u{i}").into_bytes()).collect();
    let mut n = 0u64;
    measure("store get + put (50k keys, commit every 50k)", sizes, || {
        for i in 0..records {
            let key = &keys[i % KEYS];
            let count = counter(state.kv(0).get(key).expect("get"));
            n += count;
            state.kv(0).put(key, &(count + 1).to_le_bytes());
            if (i + 1) % COMMIT_EVERY == 0 {
                state.take_changelog();
                state.commit(&[]).expect("commit");
            }
        }
    });
    state.take_changelog();
    state.commit(&[]).expect("commit");
    measure("store get of committed keys (after flush to RocksDB)", sizes, || {
        for i in 0..records {
            black_box(state.kv(0).get(&keys[(i * 7) % KEYS]).expect("get"));
        }
    });
    measure("Avro decode + store get + put (the per-record core)", sizes, || {
        for i in 0..records {
            let record = decoder.decode(&avro[i % avro.len()]).expect("decodes");
            let key = record.get("user_id").and_then(Value::as_str).expect("user_id").as_bytes();
            let count = counter(state.kv(0).get(key).expect("get"));
            state.kv(0).put(key, &(count + 1).to_le_bytes());
            if (i + 1) % COMMIT_EVERY == 0 {
                state.take_changelog();
                state.commit(&[]).expect("commit");
            }
        }
    });
    black_box(n);
    drop(state);
    let _ = std::fs::remove_dir_all(&state_dir);
}
