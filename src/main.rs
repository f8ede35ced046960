//! The `eddy` command line.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use eddy::check::check_topics;
use eddy::kafka::{KafkaSettings, TopicSpec};
use eddy::spec::TopologySpec;

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

fn main() -> anyhow::Result<()> {
    init_tracing();
    let cli = Cli::parse();
    match &cli.command {
        Command::Check { file, partitions, replication, records } => {
            let topology = TopologySpec::load(file)?;
            let topics: Vec<TopicSpec> = topology
                .external_topics()
                .into_iter()
                .map(|(name, asked)| TopicSpec {
                    replication: *replication,
                    ..TopicSpec::new(name, asked.unwrap_or(*partitions))
                })
                .collect();
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
