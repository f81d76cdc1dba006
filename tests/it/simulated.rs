//! The fast path end to end: the benchmark's daemon simulator (`src/bin/mld_sim.rs`,
//! which answers checkpoints with the Java daemon's range checks and fails a run on any
//! violation or a wrong final checkpoint) drives the real binary with large batches, so
//! every line takes the path that matters for speed: scanned while it arrives,
//! acknowledged before it is decoded, parsed in parallel into per-worker blocks. The file
//! handler's output then shows that every record was processed exactly once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails (clippy.toml's allow-*-in-tests skips helpers)"
)]

use crate::common;

use std::collections::HashMap;
use std::process::Command;

use common::{mld_sim_bin, rsmld_bin, written};

struct Scenario {
    name: &'static str,
    sim: &'static [&'static str],
    records: u64,
}

/// Lines of 0.4–0.6 MB (at least 64 KiB and 256 records: the large-line path; over
/// 512 KiB for the plain one: the scan in parts too).
const SCENARIOS: [Scenario; 2] = [
    Scenario {
        name: "plain",
        sim: &["--batches", "12", "--records", "1200", "--size", "300"],
        records: 12 * 1200,
    },
    Scenario {
        name: "kpl",
        sim: &[
            "--batches",
            "6",
            "--records",
            "2000",
            "--size",
            "60",
            "--kpl",
            "50",
        ],
        records: 6 * 2000,
    },
];

fn run(scenario: &Scenario, end: &str, workers: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let output = Command::new(mld_sim_bin())
        .args(scenario.sim)
        .args(["--end", end, "--json", "--timeout", "60", "--"])
        .arg(rsmld_bin())
        .args(["--handler", "file", "--output", out.to_str().unwrap()])
        .args(["--workers", workers])
        .args(extra)
        .output()
        .unwrap();
    let what = format!("{} / {end} / {workers} workers {extra:?}", scenario.name);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: no report ({e}); stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(report["ok"], true, "{what}: {report}");
    assert_eq!(report["violations"], serde_json::json!([]), "{what}");
    assert_eq!(report["exit"], "exit 0", "{what}");
    let expected_final = if end == "shard-end" {
        "SHARD_END/0".to_owned()
    } else {
        // The simulator's last record: its final checkpoint must be exactly there.
        let last = report["checkpoints"]["final"].as_str().unwrap().to_owned();
        assert_ne!(last, "SHARD_END/0", "{what}");
        last
    };
    assert_eq!(
        report["checkpoints"]["final"],
        expected_final.as_str(),
        "{what}"
    );
    let mut seen: HashMap<(String, i64), usize> = HashMap::new();
    for (_, item) in written(&out) {
        let key = (
            item["sequenceNumber"].as_str().unwrap().to_owned(),
            item["subSequenceNumber"].as_i64().unwrap(),
        );
        *seen.entry(key).or_default() += 1;
    }
    assert_eq!(
        seen.len() as u64,
        scenario.records,
        "{what}: records processed"
    );
    assert!(
        seen.values().all(|&n| n == 1),
        "{what}: a record processed twice"
    );
    if end == "shutdown" {
        // The final checkpoint names the greatest record written.
        let (seq, sub) = seen
            .keys()
            .max_by(|a, b| (a.0.len(), &a.0, a.1).cmp(&(b.0.len(), &b.0, b.1)))
            .unwrap();
        assert_eq!(expected_final, format!("{seq}/{sub}"), "{what}");
    }
}

#[test]
fn large_batches_under_the_simulated_daemon() {
    for scenario in &SCENARIOS {
        for end in ["shutdown", "shard-end"] {
            for workers in ["1", "3"] {
                run(scenario, end, workers, &[]);
            }
        }
    }
}

/// The same with the early acknowledgement impossible (synchronous mode) and with a bound
/// below one batch: the answers may come later, the result is the same.
#[test]
fn large_batches_with_tight_in_flight_bounds() {
    for scenario in &SCENARIOS {
        run(scenario, "shutdown", "2", &["--max-in-flight", "0"]);
        run(scenario, "shard-end", "2", &["--max-in-flight", "500"]);
    }
}

/// `mld_sim --gate` (the many-leases benchmark starts every lease at one instant): it says
/// `ready` once its scenario is generated and spawns the processor only on a line from
/// stdin; `--pipe-size` enlarges the processor's stdin pipe and the run still passes.
#[test]
fn the_simulator_gate_holds_the_lease_until_told() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::Stdio;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    let mut sim = Command::new(mld_sim_bin())
        .args(["--batches", "3", "--records", "100", "--size", "50"])
        .args([
            "--gate",
            "--pipe-size",
            "131072",
            "--json",
            "--timeout",
            "60",
            "--",
        ])
        .arg(rsmld_bin())
        .args(["--handler", "discard"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(sim.stdout.take().unwrap());
    let mut ready = String::new();
    stdout.read_line(&mut ready).unwrap();
    assert_eq!(ready, "ready\n");
    // Held: no processor spawned while the gate is closed.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        sim.try_wait().unwrap().is_none(),
        "the simulator ended at its gate"
    );
    let children = format!("/proc/{0}/task/{0}/children", sim.id());
    if let Ok(kids) = std::fs::read_to_string(&children) {
        assert_eq!(
            kids.trim(),
            "",
            "a processor was spawned before the gate opened"
        );
    }
    let opened = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut stdin = sim.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let mut report = String::new();
    stdout.read_to_string(&mut report).unwrap();
    assert!(sim.wait().unwrap().success(), "{report}");
    let report: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["scenario"]["records"], 300);
    let started = report["started_unix_s"].as_f64().unwrap();
    assert!(
        started >= opened - 0.01,
        "spawned at {started}, gate opened at {opened}"
    );
}
