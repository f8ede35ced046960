//! The Kafka layer against the real broker: records round-trip, groups split and move
//! partitions, topic configs stick, and `eddy check` proves a topology's topics.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eddy::kafka::{
    Admin, ConsumerOptions, ConsumerRecord, CreateOutcome, GroupConsumer, Member, Producer,
    ProducerRecord, RebalanceListener, TopicPartition, TopicSpec,
};

use crate::harness::{broker, settings, unique};

const WAIT: Duration = Duration::from_secs(60);

fn create_topic(spec: TopicSpec) {
    let outcomes =
        Admin::new(&settings()).and_then(|a| a.create_topics(&[spec])).expect("create topic");
    assert_eq!(outcomes[0].1, CreateOutcome::Created);
}

/// Records every rebalance callback, in order.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<(&'static str, Vec<TopicPartition>)>>,
}

impl RebalanceListener for Recorder {
    fn assigned(&self, _: &Member<'_>, partitions: &[TopicPartition]) {
        self.events.lock().expect("lock").push(("assigned", partitions.to_vec()));
    }
    fn revoked(&self, _: &Member<'_>, partitions: &[TopicPartition]) {
        self.events.lock().expect("lock").push(("revoked", partitions.to_vec()));
    }
}

impl Recorder {
    fn partitions(&self, kind: &str) -> BTreeSet<TopicPartition> {
        let events = self.events.lock().expect("lock");
        events.iter().filter(|(k, _)| *k == kind).flat_map(|(_, p)| p.clone()).collect()
    }
}

fn member(group: &str, topic: &str, listener: Arc<Recorder>) -> GroupConsumer {
    let consumer = GroupConsumer::new(&settings(), &ConsumerOptions::new(group), Some(listener))
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Polls every consumer in turn until `done` holds, failing after [`WAIT`].
fn poll_until(consumers: &[&GroupConsumer], what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
        for consumer in consumers {
            consumer.poll(Duration::from_millis(50)).expect("poll");
        }
    }
}

#[test]
fn records_round_trip_with_keys_headers_and_timestamps() {
    let topic = unique("round-trip");
    create_topic(TopicSpec::new(&topic, 2));
    let sent: Vec<ProducerRecord> = (0..40)
        .map(|n| ProducerRecord {
            topic: topic.clone(),
            partition: Some(n % 2),
            key: (n != 7).then(|| format!("user-{n}").into_bytes()),
            value: (n != 9).then(|| format!("{{\"n\":{n}}}").into_bytes()),
            headers: vec![
                ("trace".to_owned(), Some(format!("t{n}").into_bytes())),
                ("empty".to_owned(), None),
            ],
            timestamp: Some(1_700_000_000_000 + i64::from(n)),
        })
        .collect();
    let producer = Producer::new(&settings(), &unique("producer")).expect("producer");
    for record in &sent {
        producer.send(record).expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("every record acknowledged");

    let consumer = member(&unique("group"), &topic, Arc::default());
    let mut received: Vec<ConsumerRecord> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while received.len() < sent.len() {
        assert!(Instant::now() < deadline, "read {} of {} records", received.len(), sent.len());
        if let Some(record) = consumer.poll(Duration::from_millis(200)).expect("poll") {
            received.push(record);
        }
    }
    for partition in 0..2 {
        let want: Vec<_> = sent.iter().filter(|r| r.partition == Some(partition)).collect();
        let got: Vec<_> = received.iter().filter(|r| r.partition == partition).collect();
        assert_eq!(got.len(), want.len(), "partition {partition}");
        for (offset, (w, g)) in want.iter().zip(&got).enumerate() {
            assert_eq!(g.offset, offset as i64, "offsets are dense and in order");
            assert_eq!(
                (&g.key, &g.value, &g.headers, g.timestamp),
                (&w.key, &w.value, &w.headers, w.timestamp)
            );
        }
    }
    consumer.close();
}

#[test]
fn two_members_split_partitions_and_a_leaver_moves_its_share() {
    let topic = unique("split");
    create_topic(TopicSpec::new(&topic, 4));
    let group = unique("group");
    let all: BTreeSet<_> = (0..4).map(|p| TopicPartition::new(&topic, p)).collect();

    let first_events = Arc::new(Recorder::default());
    let first = member(&group, &topic, first_events.clone());
    poll_until(&[&first], "the first member to get all 4 partitions", || {
        first.assignment().expect("assignment").len() == 4
    });

    let second_events = Arc::new(Recorder::default());
    let second = member(&group, &topic, second_events.clone());
    poll_until(&[&first, &second], "the two members to hold 2 partitions each", || {
        let a = first.assignment().expect("assignment");
        let b = second.assignment().expect("assignment");
        a.len() == 2 && b.len() == 2
    });
    let a: BTreeSet<_> = first.assignment().expect("assignment").into_iter().collect();
    let b: BTreeSet<_> = second.assignment().expect("assignment").into_iter().collect();
    assert!(a.is_disjoint(&b), "no partition is held twice: {a:?} {b:?}");
    assert_eq!(&a | &b, all, "every partition is held");
    // Cooperative: the first member gave up exactly what the second got, and kept the rest.
    assert_eq!(first_events.partitions("revoked"), b);
    assert_eq!(second_events.partitions("assigned"), b);

    let moved_at = Instant::now();
    second.close();
    poll_until(&[&first], "the leaver's partitions to move to the remaining member", || {
        first.assignment().expect("assignment").len() == 4
    });
    eprintln!("partitions moved {:?} after the member left", moved_at.elapsed());
    assert_eq!(second_events.partitions("revoked"), b, "the leaver was told it lost its share");
    assert_eq!(
        first_events.partitions("assigned"),
        all,
        "the first member got back the leaver's share"
    );
    first.close();
}

#[test]
fn committed_offsets_are_what_the_member_committed() {
    let topic = unique("commit");
    create_topic(TopicSpec::new(&topic, 1));
    let group = unique("group");
    let consumer = member(&group, &topic, Arc::default());
    let tp = TopicPartition::new(&topic, 0);
    poll_until(&[&consumer], "the assignment", || {
        !consumer.assignment().expect("assignment").is_empty()
    });
    assert_eq!(
        consumer.committed(std::slice::from_ref(&tp)).expect("committed"),
        vec![(tp.clone(), None)]
    );
    consumer.commit(&[(tp.clone(), 17)]).expect("commit");
    assert_eq!(
        consumer.committed(std::slice::from_ref(&tp)).expect("committed"),
        vec![(tp, Some(17))]
    );
    consumer.close();
}

#[test]
fn a_compacted_topic_keeps_its_config() {
    let topic = unique("compacted");
    let spec = TopicSpec::new(&topic, 3)
        .config("cleanup.policy", "compact")
        .config("min.compaction.lag.ms", "60000");
    create_topic(spec.clone());
    let admin = Admin::new(&settings()).expect("admin");
    let described = admin.describe_topic(&topic).expect("describe");
    assert_eq!(described.partitions, 3);
    assert_eq!(described.configs.get("cleanup.policy").map(String::as_str), Some("compact"));
    assert_eq!(described.configs.get("min.compaction.lag.ms").map(String::as_str), Some("60000"));
    let again = admin.create_topics(&[spec]).expect("create again");
    assert_eq!(again, vec![(topic, CreateOutcome::AlreadyExists)]);
}

#[test]
fn eddy_check_creates_and_round_trips_a_topologys_topics() {
    let dir = std::env::temp_dir().join(unique("topology"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (input, output) = (unique("clicks"), unique("sessions"));
    let file = dir.join("topology.yaml");
    std::fs::write(
        &file,
        format!(
            "application_id: {}\nsources:\n  clicks: {{ topic: {input}, partitions: 3 }}\n\
             sinks:\n  out: {{ topic: {output}, input: clicks }}\n",
            unique("app")
        ),
    )
    .expect("write topology");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["check", "--partitions", "2", "--records", "4", "--bootstrap-servers"])
        .arg(&broker().bootstrap)
        .arg(&file)
        .output()
        .expect("run eddy");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "eddy check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let described = Admin::new(&settings()).expect("admin");
    assert_eq!(described.describe_topic(&input).expect("input").partitions, 3);
    assert_eq!(described.describe_topic(&output).expect("output").partitions, 2);
    assert!(stdout.contains(&format!("{:>14}  {input} (Created)", 12)), "{stdout}");
    assert!(stdout.contains(&format!("{:>14}  {output} (Created)", 8)), "{stdout}");
}

/// Without a broker, an integration test fails and says how to start one: it never passes.
#[test]
fn without_a_broker_a_test_fails_and_says_how_to_start_one() {
    let run = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "kafka::records_round_trip_with_keys_headers_and_timestamps"])
        .env("KAFKA_BOOTSTRAP", "127.0.0.1:1")
        .output()
        .expect("run the test binary");
    let output =
        String::from_utf8_lossy(&run.stdout).to_string() + &String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "the test passed without a broker:\n{output}");
    assert!(output.contains("KAFKA_BOOTSTRAP=127.0.0.1:1 does not answer"), "{output}");
    assert!(output.contains("scripts/services.sh start"), "{output}");
}
