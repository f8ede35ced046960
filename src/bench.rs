//! `eddy bench`: the reference topology's throughput in process, with RocksDB state.
//!
//! Generated clickstream (see [`crate::generate`]) is encoded in the source's format before the
//! clock starts; then every record goes through [`TopologyDriver::pipe_bytes`] — decode, every
//! operator, the stores, sink encoding — exactly as the embedded tests run, with a commit of
//! the state every `commit_every` records as the runtime's commit interval would. The report
//! gives events per second of wall time and per second of CPU time (all threads: RocksDB's
//! background work included), and the process's peak resident memory.

use std::sync::Arc;
use std::time::Instant;

use crate::generate::{Generator, GeneratorConfig};
use crate::plan::Plan;
use crate::testkit::{DriverError, TopologyDriver};
use crate::value::Value;

/// A source record as the broker delivers it: key bytes, value bytes, timestamp.
type Encoded = (Option<Vec<u8>>, Vec<u8>, i64);

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Timed events.
    pub events: usize,
    /// Events run before timing starts (state and caches warm up).
    pub warmup: usize,
    /// The generator's settings.
    pub generator: GeneratorConfig,
    /// Records between state commits.
    pub commit_every: usize,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Timed events.
    pub events: usize,
    /// Wall-clock seconds of the timed part.
    pub wall_seconds: f64,
    /// CPU seconds of the whole process during the timed part.
    pub cpu_seconds: f64,
    /// Peak resident memory of the process, in bytes.
    pub peak_rss_bytes: u64,
    /// Records each sink received (name, count).
    pub outputs: Vec<(String, usize)>,
    /// Records refused (dead letters).
    pub dead_letters: usize,
}

impl BenchReport {
    /// Events per second of wall time.
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.wall_seconds
    }

    /// Events per second of CPU time: throughput per core.
    pub fn events_per_cpu_second(&self) -> f64 {
        self.events as f64 / self.cpu_seconds
    }
}

/// Runs the benchmark on `plan`, whose first source must take clicks (avro/click_event.avsc).
/// Tables named `products` and `customers` are loaded with the generator's rows first.
pub fn run(plan: Arc<Plan>, config: &BenchConfig) -> Result<BenchReport, DriverError> {
    let mut driver = TopologyDriver::new(plan.clone())?;
    let mut generator = Generator::new(config.generator.clone());
    for (table, rows) in [("products", generator.products()), ("customers", generator.customers())]
    {
        if plan.tables.iter().any(|t| t.spec.name == table) {
            for (id, row) in rows {
                driver.put_table_row(table, &Value::Int(id), Some(&row))?;
            }
        }
    }
    let source = plan.sources[0].spec.name.clone();
    let mut input = Vec::with_capacity(config.warmup + config.events);
    for _ in 0..config.warmup + config.events {
        let click = generator.next_click();
        let key = Value::String(click.user_id.clone());
        let (key, value) = driver.encode_input(&source, &key, &click.to_value())?;
        input.push((key, value, click.event_time));
    }
    driver.commit()?;
    let (warmup, timed) = input.split_at(config.warmup);
    feed(&mut driver, &source, warmup, config.commit_every, &mut vec![0; plan.sinks.len()])?;
    let mut counts = vec![0; plan.sinks.len()];
    let (cpu_before, started) = (cpu_seconds(), Instant::now());
    feed(&mut driver, &source, timed, config.commit_every, &mut counts)?;
    let (wall_seconds, cpu_seconds) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu_before);
    Ok(BenchReport {
        events: config.events,
        wall_seconds,
        cpu_seconds,
        peak_rss_bytes: peak_rss_bytes(),
        outputs: plan.sinks.iter().map(|s| s.spec.name.clone()).zip(counts).collect(),
        dead_letters: driver.dead_letters().len(),
    })
}

/// Pipes `records` into `source`, committing every `commit_every` and counting sink records.
fn feed(
    driver: &mut TopologyDriver,
    source: &str,
    records: &[Encoded],
    commit_every: usize,
    counts: &mut [usize],
) -> Result<(), DriverError> {
    for (n, (key, value, timestamp)) in records.iter().enumerate() {
        driver.pipe_bytes(source, key.as_deref(), Some(value), *timestamp)?;
        if (n + 1) % commit_every.max(1) == 0 {
            driver.commit()?;
            driver.drain_outputs(counts);
        }
    }
    driver.commit()?;
    driver.drain_outputs(counts);
    Ok(())
}

/// CPU time of the process so far (user + system, all threads), from `/proc/self/stat`;
/// 0 where there is no procfs.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command; in clock
    // ticks, 100 per second on Linux.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident memory of the process (`VmHWM`), in bytes; 0 where there is no procfs.
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}
