//! `vox` as a user runs it: the real binary, real guest builds, real scenario files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn vox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vox"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run vox")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_broken_expectation_fails_with_the_transcript_and_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    // The hello flow says "Hello from Voxide"; this scenario expects a different greeting.
    std::fs::write(
        dir.path().join("wrong-greeting.toml"),
        "name = \"expects the wrong greeting\"\n\
         [[expect]]\nanswer = true\n\
         [[expect]]\nsay = \"Welcome to Initech\"\n\
         [[expect]]\nhangup = true\n",
    )
    .unwrap();
    let out = vox(&["test", "sample-flows/hello", "--scenarios", dir.path().to_str().unwrap()]);
    let text = text(&out);
    assert!(!out.status.success(), "a failing scenario must fail the run:\n{text}");
    assert!(text.contains("FAIL  wrong-greeting.toml"), "{text}");
    assert!(text.contains("transcript up to the mismatch"), "{text}");
    assert!(text.contains("expectation #2 not met"), "{text}");
    assert!(text.contains("expected: say containing \"Welcome to Initech\""), "{text}");
    assert!(text.contains("say \"Hello from Voxide. Goodbye!\""), "shows what happened:\n{text}");
    assert!(text.lines().any(|l| l == "0 passed, 1 failed"), "{text}");
}

#[test]
fn an_invalid_scenario_file_is_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("typo.toml"), "[[expect]]\nsya = \"hi\"\n").unwrap();
    let out = vox(&["test", "sample-flows/hello", "--scenarios", dir.path().to_str().unwrap()]);
    let text = text(&out);
    assert!(!out.status.success());
    assert!(text.contains("typo.toml") && text.contains("unknown field `sya`"), "{text}");
}

#[test]
fn json_output_reports_every_scenario() {
    let out = vox(&["test", "sample-flows/hello", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(doc["failed"], 0);
    let scenarios = doc["flows"][0]["scenarios"].as_array().expect("scenarios");
    assert_eq!(doc["passed"].as_u64(), Some(scenarios.len() as u64));
    let basic =
        scenarios.iter().find(|s| s["file"].as_str().unwrap().ends_with("basic.toml")).unwrap();
    let kinds: Vec<&str> = basic["report"]["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["answer", "say", "hangup", "outcome"]);
    assert!(doc["flows"][0]["digest"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn a_directory_without_scenarios_fails() {
    let dir = tempfile::tempdir().unwrap();
    let out = vox(&["test", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("no scenarios"), "{}", text(&out));
}

#[test]
fn build_prints_the_component_and_its_digest() {
    let out = vox(&["build", "sample-flows/hello"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    let mut lines = stdout.lines();
    let path = lines.next().expect("path line");
    assert!(path.ends_with("hello.wasm") && Path::new(path).is_file(), "{stdout}");
    assert!(lines.next().is_some_and(|l| l.contains("KiB, sha256:")), "{stdout}");
}

#[test]
fn dialer_simulate_prints_the_campaigns_figures_and_a_chart() {
    let svg = tempfile::NamedTempFile::with_suffix(".svg").expect("temp file");
    let svg_path = svg.path().to_str().expect("utf-8 path");
    let out = vox(&[
        "dialer",
        "simulate",
        "predictive",
        "--day",
        "20m",
        "--days",
        "2",
        "--svg",
        svg_path,
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for line in ["abandon rate: ", "agent utilisation: ", "calls/hour per agent: ", "day  2: "] {
        assert!(t.contains(line), "missing {line:?} in:\n{t}");
    }
    let chart = std::fs::read_to_string(svg.path()).expect("chart written");
    assert!(chart.starts_with("<svg") && chart.contains("polyline"), "{chart}");

    let bad =
        vox(&["dialer", "simulate", "predictive", "--answer-rate", "0.8", "--machine-rate", "0.5"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("add up to more than 1"), "{}", text(&bad));
}
