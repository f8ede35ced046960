//! The `eddy` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use eddy::check::check_topics;
use eddy::format::{ConfluentRegistry, SchemaRegistry};
use eddy::generate::GeneratorConfig;
use eddy::kafka::{KafkaSettings, Producer, ProducerRecord, TopicSpec};
use eddy::spec::TopologySpec;
use eddy::{bench, plan, runtime, testkit};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Parser)]
#[command(name = "eddy", version, about = "A stateful stream processor for clickstream analytics.")]
struct Cli {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(subcommand)]
    command: Command,
}

/// How to reach Kafka; every librdkafka property (SASL, TLS, …) can be passed through.
#[derive(Args)]
struct KafkaArgs {
    /// Kafka bootstrap servers, host:port[,host:port…].
    #[arg(long, global = true, env = "EDDY_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    bootstrap_servers: String,
    /// A librdkafka client property, key=value (repeatable), e.g. security.protocol=SASL_SSL.
    #[arg(long = "kafka-property", global = true, value_name = "KEY=VALUE")]
    kafka_properties: Vec<String>,
    /// A Java-style .properties file of client properties, applied before --kafka-property.
    #[arg(long, global = true, env = "EDDY_KAFKA_PROPERTIES", value_name = "FILE")]
    kafka_properties_file: Option<PathBuf>,
}

impl KafkaArgs {
    fn settings(&self) -> anyhow::Result<KafkaSettings> {
        let mut settings = KafkaSettings::new(&self.bootstrap_servers);
        if let Some(file) = &self.kafka_properties_file {
            settings = settings.with_properties_file(file)?;
        }
        for arg in &self.kafka_properties {
            settings = settings.with_property_arg(arg)?;
        }
        Ok(settings)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Check topology files without running them: every problem, with its YAML path and a
    /// hint. Exit 0 when all are valid.
    Validate {
        /// Topology files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the compiled plan: sub-topologies, operators, key changes, stores and the
    /// internal topics it needs.
    Describe {
        /// The topology file.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = DescribeFormat::Text)]
        format: DescribeFormat,
    },
    /// Run the `tests:` embedded in a topology file, without a broker. Exit 0 when all pass.
    Test {
        /// Topology files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Measure a topology's in-process throughput on generated clickstream, with RocksDB
    /// state and no broker: events/s per core and peak memory.
    Bench {
        /// The topology file (its first source takes clicks).
        #[arg(default_value = "topologies/clickstream.yaml")]
        file: PathBuf,
        /// Timed events.
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Events before timing starts.
        #[arg(long, default_value_t = 100_000)]
        warmup: usize,
        /// Records between state commits.
        #[arg(long, default_value_t = 10_000)]
        commit_every: usize,
        /// Generator seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run the topology: join the consumer group named by its application id and process the
    /// partitions it assigns, until SIGTERM or Ctrl-C (which commit and leave the group).
    Run {
        /// The topology file.
        file: PathBuf,
        /// Where task state lives; a task's directory is kept across restarts.
        #[arg(long, env = "EDDY_STATE_DIR", default_value = "state")]
        state_dir: PathBuf,
        /// This instance's stable name (its transactional id): give each instance its own and
        /// keep it across restarts.
        #[arg(long, env = "EDDY_INSTANCE_ID")]
        instance_id: Option<String>,
        /// A Confluent schema registry (URL); without it, Eddy serves the topology's avro/
        /// schemas itself with ids 1, 2, … in file-name order.
        #[arg(long, env = "EDDY_SCHEMA_REGISTRY")]
        schema_registry: Option<String>,
    },
    /// Produce generated clickstream (realistic users, sessions and bots) to the topic of a
    /// topology's first source, encoded as that source reads it.
    Generate {
        /// The topology file (its first source takes clicks).
        file: PathBuf,
        /// How many clicks (0 = until stopped).
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Clicks per second (0 = as fast as the broker takes them).
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        /// Generator seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Create the topics a topology reads and writes (when missing) and round-trip records
    /// through every partition of each, proving the cluster is usable.
    Check {
        /// The topology file.
        file: PathBuf,
        /// Partitions for topics the topology does not size.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Replicas for topics Eddy creates.
        #[arg(long, default_value_t = 1)]
        replication: i32,
        /// Records to round-trip through each partition.
        #[arg(long, default_value_t = 3)]
        records: usize,
    },
}

/// How `eddy describe` prints a plan.
#[derive(Clone, Copy, clap::ValueEnum)]
enum DescribeFormat {
    /// Indented text.
    Text,
    /// A Mermaid flowchart.
    Mermaid,
    /// A Graphviz digraph.
    Dot,
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Validate { files } => {
            let mut valid = true;
            for file in files {
                match plan::load(file) {
                    Ok(plan) => println!(
                        "{}: valid ({} sources, {} tables, {} operators, {} sinks, {} tests)",
                        file.display(),
                        plan.sources.len(),
                        plan.tables.len(),
                        plan.nodes.len(),
                        plan.sinks.len(),
                        plan.tests().len()
                    ),
                    Err(invalid) => {
                        valid = false;
                        print!("{invalid}");
                    }
                }
            }
            return Ok(if valid { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        Command::Describe { file, format } => {
            let plan = plan::load(file)?;
            let text = match format {
                DescribeFormat::Text => plan::describe_text(&plan),
                DescribeFormat::Mermaid => plan::describe_mermaid(&plan),
                DescribeFormat::Dot => plan::describe_dot(&plan),
            };
            print!("{text}");
        }
        Command::Test { files } => {
            let (mut passed, mut failed) = (0, 0);
            for file in files {
                let plan = Arc::new(plan::load(file)?);
                for outcome in testkit::run_tests(&plan) {
                    if outcome.failures.is_empty() {
                        passed += 1;
                        println!("ok     {}: {}", file.display(), outcome.name);
                    } else {
                        failed += 1;
                        println!("FAILED {}: {} ({})", file.display(), outcome.name, outcome.path);
                        for failure in &outcome.failures {
                            println!("         {failure}");
                        }
                    }
                }
            }
            println!("{passed} passed, {failed} failed");
            return Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        Command::Bench { file, events, warmup, commit_every, seed } => {
            let plan = Arc::new(plan::load(file)?);
            let config = bench::BenchConfig {
                events: *events,
                warmup: *warmup,
                commit_every: *commit_every,
                generator: GeneratorConfig { seed: *seed, ..GeneratorConfig::default() },
            };
            println!(
                "{}: {} events after {} warm-up, commit every {}",
                file.display(),
                events,
                warmup,
                commit_every
            );
            let report = bench::run(plan, &config)?;
            println!(
                "{:.0} events/s per core (CPU {:.2} s), {:.0} events/s wall ({:.2} s), peak RSS {} MiB",
                report.events_per_cpu_second(),
                report.cpu_seconds,
                report.events_per_second(),
                report.wall_seconds,
                report.peak_rss_bytes >> 20
            );
            for (sink, count) in &report.outputs {
                println!("  {sink:<24} {count:>10} records");
            }
            println!("  {:<24} {:>10} records", "(dead letters)", report.dead_letters);
        }
        Command::Run { file, state_dir, instance_id, schema_registry } => {
            let plan = Arc::new(plan::load(file)?);
            let registry: Arc<dyn SchemaRegistry> = match schema_registry {
                Some(url) => Arc::new(ConfluentRegistry::new(url, true)?),
                None => plan.registry.clone(),
            };
            let instance_id = match instance_id {
                Some(id) => id.clone(),
                None => default_instance_id(state_dir),
            };
            let options = runtime::RunOptions {
                kafka: cli.kafka.settings()?,
                state_dir: state_dir.clone(),
                instance_id,
                registry,
            };
            let stop = Arc::new(AtomicBool::new(false));
            watch_signals(stop.clone())?;
            return match runtime::run(plan, options, stop) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(error @ runtime::RunError::BadRecord { .. }) => {
                    eprintln!("error: {error}");
                    Ok(ExitCode::from(3))
                }
                Err(error) => Err(error.into()),
            };
        }
        Command::Generate { file, events, rate, seed } => {
            let plan = Arc::new(plan::load(file)?);
            let source = plan.sources.first().context("the topology has no source")?;
            let (name, topic) = (source.spec.name.clone(), source.spec.feed.topic.clone());
            let driver = testkit::TopologyDriver::new(plan.clone())?;
            let producer = Producer::new(&cli.kafka.settings()?, "eddy-generate")?;
            let config = GeneratorConfig { seed: *seed, ..GeneratorConfig::default() };
            let mut generator = eddy::generate::Generator::new(config);
            let stop = Arc::new(AtomicBool::new(false));
            watch_signals(stop.clone())?;
            let started = std::time::Instant::now();
            let mut sent = 0u64;
            while (*events == 0 || sent < *events) && !stop.load(Ordering::SeqCst) {
                let click = generator.next_click();
                let key = eddy::value::Value::String(click.user_id.clone());
                let (key, value) = driver.encode_input(&name, &key, &click.to_value())?;
                producer.send(&ProducerRecord {
                    topic: topic.clone(),
                    key,
                    value: Some(value),
                    timestamp: Some(click.event_time),
                    ..ProducerRecord::default()
                })?;
                sent += 1;
                if *rate > 0 {
                    let due = std::time::Duration::from_secs_f64(sent as f64 / *rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            }
            producer.flush(std::time::Duration::from_secs(60))?;
            println!("{sent} clicks sent to {topic} in {:.1} s", started.elapsed().as_secs_f64());
        }
        Command::Check { file, partitions, replication, records } => {
            let topology = TopologySpec::read(file)?;
            let topics = topology
                .external_topics()
                .into_iter()
                .map(|(name, asked)| {
                    let partitions = match asked {
                        Some(asked) => i32::try_from(asked)?,
                        None => *partitions,
                    };
                    Ok(TopicSpec { replication: *replication, ..TopicSpec::new(name, partitions) })
                })
                .collect::<anyhow::Result<Vec<TopicSpec>>>()?;
            let run_id = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis().to_string();
            let settings = cli.kafka.settings()?;
            let checks =
                check_topics(&settings, &topics, *records, &run_id).with_context(|| {
                    format!("the Kafka cluster at {} failed the check", settings.bootstrap_servers)
                })?;
            println!("{:<32} {:>10} {:>14}  topic", "application", "partitions", "round-tripped");
            for check in &checks {
                println!(
                    "{:<32} {:>10} {:>14}  {} ({:?})",
                    topology.application_id,
                    check.partitions,
                    check.round_tripped,
                    check.topic,
                    check.outcome
                );
            }
            println!("{} topics ready on {}.", checks.len(), settings.bootstrap_servers);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An instance id stable across restarts of the same instance: the host name and the state
/// directory (two instances never share a state directory).
fn default_instance_id(state_dir: &std::path::Path) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    let dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_owned());
    let mut hash: u32 = 0x811c_9dc5;
    for byte in dir.to_string_lossy().bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    format!("{host}-{hash:08x}")
}

/// Sets `stop` on SIGTERM or SIGINT (Ctrl-C), from a small signal-watching thread.
fn watch_signals(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        runtime.block_on(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(error) => {
                        tracing::warn!(%error, "Cannot watch SIGTERM.");
                        let _ = tokio::signal::ctrl_c().await;
                        stop.store(true, Ordering::SeqCst);
                        return;
                    }
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("Signal received; stopping after the current batch.");
            stop.store(true, Ordering::SeqCst);
        });
    })?;
    Ok(())
}

/// Logs to stderr; `RUST_LOG` filters (default `info`), `EDDY_LOG_FORMAT=json` emits JSON lines.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("EDDY_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
