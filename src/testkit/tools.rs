//! Outside tools the tests run (the Prometheus Python client, node_exporter), installed under
//! `.state/` by the scripts that name them. One rule for all: a missing tool skips its test
//! locally and fails it under CI (`CI=true`), where `.ci/run` installs every tool.

use std::path::PathBuf;

/// `rel` below the state directory (`$RSMLD_STATE`, else `<repo>/.state`) if it exists;
/// otherwise a skip notice on stderr and `None`, or (under CI) a panic naming `installer`
/// and what the test uses the tool for.
pub fn installed(rel: &str, installer: &str, purpose: &str) -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let state = std::env::var_os("RSMLD_STATE").map_or(root.join(".state"), PathBuf::from);
    let path = state.join(rel);
    if path.exists() {
        return Some(path);
    }
    let message = format!("{} not found: run {installer} ({purpose})", path.display());
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    eprintln!("skipping: {message}");
    None
}

/// The Python of the venv holding the Prometheus Python client
/// (scripts/install-metrics-parser.sh), the independent parser of rsmld's metrics.
pub fn metrics_python() -> Option<PathBuf> {
    installed(
        "metrics-venv/bin/python",
        "scripts/install-metrics-parser.sh",
        "it installs the Prometheus Python client this test parses the metrics with",
    )
}

/// The metric families of a Prometheus text exposition as the Prometheus Python client
/// reads it (scripts/prom_parse.py run by `python`): its JSON, an array of families with
/// `name`, `type` and `samples`. Panics, with the text, if the client rejects it.
pub fn prom_parse(python: &std::path::Path, text: &str) -> Vec<serde_json::Value> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/prom_parse.py");
    let mut child = Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the Python client starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(text.as_bytes())
        .expect("the exposition is written");
    drop(stdin);
    let out = child.wait_with_output().expect("the Python client ends");
    assert!(
        out.status.success(),
        "the Python client rejects the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout) {
        Ok(serde_json::Value::Array(families)) => families,
        other => panic!("prom_parse.py printed no array of families: {other:?}"),
    }
}
