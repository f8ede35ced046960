//! The topology commands (`eddy validate`, `describe`, `test`) as a user runs them: the real
//! binary on real files, no broker.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `eddy` with `args` from the repository root.
fn eddy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("the eddy binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The broken topologies: each declares the problems it must produce in `# expect:` lines.
fn broken_topologies() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/topologies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/topologies exists")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_broken_topology_fails_with_every_expected_problem_and_no_other() {
    let files = broken_topologies();
    assert!(files.len() >= 10, "at least ten broken topologies, found {}", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        let expected: Vec<&str> =
            text.lines().filter_map(|line| line.strip_prefix("# expect: ")).collect();
        assert!(!expected.is_empty(), "{} declares no `# expect:` lines", file.display());
        let relative = file.strip_prefix(env!("CARGO_MANIFEST_DIR")).expect("inside the repo");
        let output = eddy(&["validate", relative.to_str().expect("UTF-8 path")]);
        let printed = stdout(&output);
        if output.status.success() {
            failures.push(format!("{}: exited 0\n{printed}", file.display()));
            continue;
        }
        // Each problem line is "  FILE: PATH: MESSAGE" (a hint may follow on its own line).
        let prefix = format!("  {}: ", relative.display());
        let problems: Vec<&str> =
            printed.lines().filter_map(|line| line.strip_prefix(prefix.as_str())).collect();
        for want in &expected {
            if !problems.contains(want) {
                failures.push(format!("{}: missing problem {want:?}\n{printed}", file.display()));
            }
        }
        for got in &problems {
            if !expected.contains(got) {
                failures.push(format!("{}: unexpected problem {got:?}", file.display()));
            }
        }
        let header = format!("{}: {} problem", relative.display(), expected.len());
        if !printed.starts_with(&header) {
            failures.push(format!("{}: header is not {header:?}\n{printed}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn problems_carry_hints() {
    let output = eddy(&["validate", "tests/topologies/unknown_fields.yaml"]);
    let printed = stdout(&output);
    assert!(printed.contains("hint: fields here: topic, partitions, format"), "{printed}");
}

#[test]
fn the_reference_topology_is_valid_and_its_tests_pass() {
    let output = eddy(&["validate", "topologies/clickstream.yaml"]);
    assert!(output.status.success(), "{}", stdout(&output));
    assert!(stdout(&output).contains("topologies/clickstream.yaml: valid"), "{}", stdout(&output));

    let output = eddy(&["test", "topologies/clickstream.yaml"]);
    let printed = stdout(&output);
    assert!(output.status.success(), "{printed}");
    let summary = printed.lines().last().expect("a summary line");
    assert!(summary.ends_with(" passed, 0 failed"), "{printed}");
    assert!(!summary.starts_with("0 passed"), "{printed}");
}

#[test]
fn describe_shows_operators_key_changes_and_internal_topics_in_three_formats() {
    let text = stdout(&eddy(&["describe", "topologies/clickstream.yaml"]));
    for part in [
        "detect_bots scored <- clicks",
        "filter views <- humans",
        "sessionize sessions <- humans sessions split by 1800000 ms of inactivity",
        "count product_views_1h <- by_product sliding window of 3600000 ms",
        "top top_pages_5m <- top_pages_5m-by-window 10 items by count per window",
        "sink late_page_views_out <- page_views_1m.late",
        "window store 'page_views_1m-distinct' (changelog clickstream-page_views_1m-distinct-changelog)",
        "join with_product <- views",
        "map enriched <- with_customer",
        "rekey by_product <- product_views KEY CHANGE",
        "clickstream-by_product-repartition (repartition, 4 partitions)",
        "table products <- topic shop.public.products",
        "sub-topology 1",
        "count page_views_5m <- by_page hopping windows of 300000 ms every 60000 ms",
        "clickstream-page_views_1m-changelog (changelog, compacted, 4 partitions)",
    ] {
        assert!(text.contains(part), "missing {part:?} in\n{text}");
    }
    let mermaid =
        stdout(&eddy(&["describe", "--format", "mermaid", "topologies/clickstream.yaml"]));
    assert!(mermaid.starts_with("flowchart LR\n"), "{mermaid}");
    assert!(
        mermaid.contains("op_by_product -- repartition -->") || mermaid.contains("repartition"),
        "{mermaid}"
    );
    let dot = stdout(&eddy(&["describe", "--format", "dot", "topologies/clickstream.yaml"]));
    assert!(dot.starts_with("digraph \"clickstream\" {"), "{dot}");
    assert!(dot.trim_end().ends_with('}'), "{dot}");
}

#[test]
fn a_failing_embedded_test_exits_non_zero_and_says_what_differed() {
    let dir = std::env::temp_dir().join(format!("eddy-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("failing.yaml");
    std::fs::write(
        &file,
        r#"
application_id: failing
sources:
  clicks: { topic: clicks, format: json }
operators:
  upper: { type: map, input: clicks, set: { page: "page.upperAscii()" } }
sinks:
  out: { input: upper, topic: out }
tests:
  - name: upper-cases pages
    input: { clicks: [ { key: u1, ts: "00:01", value: { page: /a } } ] }
    expect: { out: [ { key: u1, value: { page: /a } } ] }
"#,
    )
    .expect("written");
    let output = eddy(&["test", file.to_str().expect("UTF-8")]);
    let printed = stdout(&output);
    assert!(!output.status.success(), "{printed}");
    assert!(printed.contains("value.page: expected '/a', got '/A'"), "{printed}");
    assert!(printed.trim_end().ends_with("0 passed, 1 failed"), "{printed}");
    let _ = std::fs::remove_dir_all(&dir);
}
