//! Gives every integration test a real broker and names nobody else uses.
//!
//! The broker is, in order: `KAFKA_BOOTSTRAP` when set (it must answer); otherwise Apache Kafka
//! in a container through testcontainers when a Docker engine answers; otherwise the test fails
//! and says how to start one. It never passes or skips silently without a broker.

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eddy::kafka::{Admin, KafkaSettings};
use testcontainers::runners::SyncRunner;
use testcontainers::{Container, ImageExt};
use testcontainers_modules::kafka::apache::{KAFKA_PORT, Kafka};

const HOW_TO_START: &str = "Start one of these and run the tests again:\n  \
     - the local Nisshi broker: `scripts/services.sh start`, then \
     `KAFKA_BOOTSTRAP=127.0.0.1:9092 cargo test` (or simply `scripts/test.sh`, which does both);\n  \
     - any Kafka cluster: `KAFKA_BOOTSTRAP=host:port cargo test`;\n  \
     - a Docker engine: the tests then start Apache Kafka with testcontainers.";

/// Where the broker came from.
pub struct Broker {
    /// `host:port` to bootstrap from.
    pub bootstrap: String,
    /// Kept alive for the whole test process when the broker is a container.
    _container: Option<Container<Kafka>>,
}

/// The broker shared by every test in this process.
pub fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(|| {
        if let Ok(bootstrap) = std::env::var("KAFKA_BOOTSTRAP") {
            if let Err(error) = Admin::new(&KafkaSettings::new(&bootstrap))
                .and_then(|admin| admin.ping(Duration::from_secs(15)))
            {
                panic!("KAFKA_BOOTSTRAP={bootstrap} does not answer ({error}).\n{HOW_TO_START}");
            }
            return Broker { bootstrap, _container: None };
        }
        if docker_answers() {
            return start_container();
        }
        panic!("No Kafka broker for the integration tests: KAFKA_BOOTSTRAP is unset and no Docker engine answers.\n{HOW_TO_START}");
    })
}

/// Client settings for the shared broker.
pub fn settings() -> KafkaSettings {
    KafkaSettings::new(&broker().bootstrap)
}

/// A name no other test, and no earlier run, uses: topics, groups, transactional ids.
pub fn unique(kind: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("it-{kind}-{}-{millis}-{n}", std::process::id())
}

fn docker_answers() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn start_container() -> Broker {
    // A single broker: the transaction log must accept one replica, or transactions never start.
    let container = Kafka::default()
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .start()
        .unwrap_or_else(|error| {
            panic!(
                "A Docker engine answers, but Kafka did not start in it: {error}.\n{HOW_TO_START}"
            )
        });
    let port = container
        .get_host_port_ipv4(KAFKA_PORT)
        .unwrap_or_else(|error| panic!("The Kafka container exposes no port: {error}"));
    Broker { bootstrap: format!("127.0.0.1:{port}"), _container: Some(container) }
}
