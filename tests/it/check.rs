//! `rsmld check` and start-up validation, through the real binary on properties files in a
//! temporary directory: exact `FILE:LINE: error|warning: message` lines and exit codes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails (clippy.toml's allow-*-in-tests skips helpers)"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RSMLD: &str = env!("CARGO_BIN_EXE_rsmld");

/// Runs rsmld in `dir` with `args`; stdin closed; returns (exit code, stderr). Fails the
/// test instead of hanging if the process does not exit within a generous minute.
fn run_in(dir: &Path, args: &[&str]) -> (i32, String) {
    let mut child = Command::new(RSMLD)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("rsmld {args:?} did not exit within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A directory with `app.properties` made of `lines` and an `out/` directory.
fn setup(lines: &[String]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("app.properties"), lines.join("\n") + "\n").unwrap();
    dir
}

/// A file with nothing to report under KCL 3.x (line numbers 1-9 are relied on).
fn clean_v3() -> Vec<String> {
    [
        &format!("executableName = {RSMLD} --properties app.properties"),
        "applicationName = app",
        "streamName = s",
        "AwsCredentialsProvider = DefaultCredentialsProvider",
        "workerId = host-1",
        "shutdownGraceMillis = 30000",
        "callProcessRecordsEvenForEmptyRecordList = true",
        "rsmld.handler = file",
        "rsmld.output = out",
    ]
    .map(String::from)
    .to_vec()
}

fn check(lines: &[String], kcl: &str) -> (i32, String) {
    let dir = setup(lines);
    run_in(
        dir.path(),
        &["check", "--properties", "app.properties", "--kcl", kcl],
    )
}

/// Starts rsmld in `dir` on `app.properties` (the daemon's way, not `check`), sends one
/// `initialize` and closes stdin; asserts that the first answer is its status, and
/// returns stderr.
fn assert_starts_and_initializes(dir: &Path) -> String {
    let mut child = Command::new(RSMLD)
        .args(["--properties", "app.properties"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let init = r#"{"action":"initialize","shardId":"shardId-000000000001","sequenceNumber":"TRIM_HORIZON","subSequenceNumber":0}"#;
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        format!("{init}\n").as_bytes(),
    )
    .unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stdout.starts_with(r#"{"action":"status","responseFor":"initialize"}"#),
        "stdout {stdout:?}, stderr {stderr}"
    );
    stderr
}

/// Asserts that `rsmld check --kcl KCL` on `lines` exits with `code` and writes exactly
/// `expected` to stderr.
fn assert_check(lines: &[String], kcl: &str, code: i32, expected: &str) {
    let (got, err) = check(lines, kcl);
    assert_eq!(got, code, "{err}");
    assert_eq!(err, expected);
}

fn with(mut lines: Vec<String>, replace: &[(usize, &str)], append: &[&str]) -> Vec<String> {
    for (line, text) in replace {
        lines[line - 1] = (*text).to_owned();
    }
    lines.extend(append.iter().map(|s| s.to_string()));
    lines
}

#[test]
fn a_clean_file_is_one_ok_line_and_exit_0() {
    assert_check(&clean_v3(), "3", 0, "app.properties: ok for KCL 3.x\n");
    let v2 = with(
        clean_v3(),
        &[(
            4,
            "AWSCredentialsProvider = DefaultAWSCredentialsProviderChain",
        )],
        &[],
    );
    assert_check(&v2, "2", 0, "app.properties: ok for KCL 2.x\n");
}

#[test]
fn typos_in_daemon_and_rsmld_keys_name_the_nearest_key() {
    let lines = with(
        clean_v3(),
        &[(6, "shutdownGraceMilis = 30000")],
        &[
            "rsmld.max_inflight = 5",
            "ShardSyncIntervalMillis = 1000",
            "consumerName = c",
            "gracefulLeaseHandoffTimeoutMillis = 60000",
        ],
    );
    assert_check(
        &lines,
        "3",
        1,
        "app.properties: warning: shutdownGraceMillis is not set (0): on SIGTERM the daemon starts a graceful shutdown but waits 0 ms for it, so the JVM exits before rsmld can drain and checkpoint; set it (e.g. 30000)\n\
         app.properties:6: error: unknown key shutdownGraceMilis: the KCL 3.x daemon ignores it silently (keys are case-sensitive); did you mean shutdownGraceMillis?\n\
         app.properties:10: error: unknown key \"rsmld.max_inflight\", did you mean \"rsmld.max_in_flight\"?\n\
         app.properties:11: error: unknown key ShardSyncIntervalMillis: the KCL 3.x daemon ignores it silently (keys are case-sensitive); did you mean shardSyncIntervalMillis?\n\
         app.properties:12: error: unknown key consumerName: the KCL 3.x daemon ignores it silently (keys are case-sensitive); did you mean fanoutConfig.consumerName?\n"
    );
    // The same 3.x-only key is an error for a 2.x daemon, which ignores it.
    let lines = with(
        clean_v3(),
        &[(
            4,
            "AWSCredentialsProvider = DefaultAWSCredentialsProviderChain",
        )],
        &[
            "gracefulLeaseHandoffTimeoutMillis = 60000",
            "myapp.color = blue",
        ],
    );
    assert_check(
        &lines,
        "2",
        1,
        "app.properties:10: error: gracefulLeaseHandoffTimeoutMillis is a KCL 3.x key: the KCL 2.x daemon ignores it silently\n\
         app.properties:11: warning: unknown key myapp.color: the KCL 2.x daemon ignores it\n"
    );
}

#[test]
fn bad_values_are_named_by_the_key_as_written() {
    let lines = with(
        clean_v3(),
        &[],
        &[
            "rsmld.workers = 0",
            "rsmld.max-in-flight-bytes = 1000",
            "rsmld.checkpoint_interval = NaN",
            "rsmld.on_error = sometimes",
            "failoverTimeMillis = 10s",
            "callProcessRecordsEvenForEmptyRecordList = ture",
            "initialPositionInStream = EARLIEST",
            "timeoutInSeconds = 0",
            "maxRecords = 20000",
        ],
    );
    assert_check(
        &lines,
        "3",
        1,
        "app.properties:7: warning: callProcessRecordsEvenForEmptyRecordList is set again at line 15, which wins: this line has no effect\n\
         app.properties:10: error: rsmld.workers = \"0\": 0 is out of range: must be 1..=1024\n\
         app.properties:11: error: rsmld.max-in-flight-bytes = \"1000\": 1000B is out of range: must be 2MiB..=16GiB\n\
         app.properties:12: error: rsmld.checkpoint_interval = \"NaN\": \"NaN\" is not a finite duration\n\
         app.properties:13: error: rsmld.on_error = \"sometimes\": must be one of fail, retry, skip\n\
         app.properties:14: error: failoverTimeMillis = \"10s\": not a whole number; the daemon silently reads 0\n\
         app.properties:15: error: callProcessRecordsEvenForEmptyRecordList = \"ture\": not a boolean (true or false); the daemon silently reads false\n\
         app.properties:16: error: initialPositionInStream = \"EARLIEST\": must be one of TRIM_HORIZON, LATEST (the daemon fails at start-up)\n\
         app.properties:17: error: timeoutInSeconds = 0: the daemon waits that long for each answer, so it halts the JVM at its first wait (every shard stops); unset it or give a number of seconds\n\
         app.properties:18: error: maxRecords = 20000: more than 10000; the daemon fails at start-up\n"
    );
}

#[test]
fn credentials_providers_are_checked_per_kcl_version_with_the_name_that_works() {
    let provider = |value: &str| with(clean_v3(), &[(4, value)], &[]);
    assert_check(
        &provider("AWSCredentialsProvider = DefaultAWSCredentialsProviderChain"),
        "3",
        1,
        "app.properties:4: error: AWSCredentialsProvider: the KCL 3.x daemon cannot resolve \"DefaultAWSCredentialsProviderChain\" (KCL 3.x takes AWS SDK v2 providers): use DefaultCredentialsProvider; with no provider left the daemon exits at start-up\n"
    );
    assert_check(
        &provider("AWSCredentialsProvider = DefaultCredentialsProvider"),
        "2",
        1,
        "app.properties:4: error: AWSCredentialsProvider: the KCL 2.x daemon cannot resolve \"DefaultCredentialsProvider\" (KCL 2.x takes AWS SDK v1 providers): use DefaultAWSCredentialsProviderChain; with no provider left the daemon exits at start-up\n"
    );
    // 2.x reads the key in exactly one spelling; 3.x accepts any case of the prefix.
    assert_check(
        &provider("AwsCredentialsProvider = DefaultAWSCredentialsProviderChain"),
        "2",
        1,
        "app.properties: error: no credentials provider: the KCL 2.x daemon does not start; e.g. AWSCredentialsProvider = DefaultAWSCredentialsProviderChain\n\
         app.properties:4: error: unknown key AwsCredentialsProvider: the KCL 2.x daemon ignores it silently (keys are case-sensitive); did you mean AWSCredentialsProvider?\n"
    );
    // Arguments, fully qualified names and chains: what works passes; a dead link in a
    // chain that still has a provider is a warning.
    for ok in [
        "AwsCredentialsProvider = ProfileCredentialsProvider|dev",
        "awscredentialsprovider = software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider",
        "AwsCredentialsProvider = StsAssumeRoleCredentialsProvider|arn:aws:iam::1:role/r|s|endpointRegion=us-east-1",
    ] {
        assert_eq!(check(&provider(ok), "3").0, 0, "{ok}");
    }
    let (code, err) = check(
        &provider("AwsCredentialsProvider = DefaultCredentialsProvider, DefaultAWSCredentialsProviderChain"),
        "3",
    );
    assert_eq!(code, 0);
    assert!(err.starts_with("app.properties:4: warning: AwsCredentialsProvider: the KCL 3.x daemon cannot resolve \"DefaultAWSCredentialsProviderChain\""), "{err}");
    let (code, err) = check(
        &provider("AWSCredentialsProvider = ProfileCredentialsProvider"),
        "2",
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot resolve \"ProfileCredentialsProvider\" (KCL 2.x takes AWS SDK v1 providers): use profile.ProfileCredentialsProvider;"),
        "{err}"
    );
    let (code, err) = check(
        &provider("AwsCredentialsProvider = StsAssumeRoleCredentialsProvider"),
        "3",
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("StsAssumeRoleCredentialsProvider needs 2 arguments"),
        "{err}"
    );
}

#[test]
fn the_output_directory_must_exist_or_be_creatable() {
    // A regular file where the directory's parent should be: cannot be created.
    let dir = setup(&with(clean_v3(), &[(9, "rsmld.output = blocker/out")], &[]));
    std::fs::write(dir.path().join("blocker"), "").unwrap();
    let (code, err) = run_in(dir.path(), &["check", "--properties", "app.properties"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "app.properties:9: error: rsmld.output blocker/out: does not exist and cannot be created: blocker is not a directory\n"
    );
    // A file in place of the directory.
    assert_check(
        &with(clean_v3(), &[(9, "rsmld.output = app.properties")], &[]),
        "3",
        1,
        "app.properties:9: error: rsmld.output app.properties: is not a directory\n",
    );
    // Missing, but its parent exists: rsmld creates it; a warning to check the path.
    assert_check(
        &with(clean_v3(), &[(9, "rsmld.output = out/new")], &[]),
        "3",
        0,
        "app.properties:9: warning: rsmld.output out/new: does not exist; rsmld creates it at start-up under out (is that the volume you meant?)\n"
    );
    // A file handler without a directory: start-up's own consistency check, by key.
    let mut lines = clean_v3();
    lines.pop();
    assert_check(
        &lines,
        "3",
        1,
        "app.properties:8: error: rsmld.handler = file needs rsmld.output (the output directory)\n",
    );
}

#[test]
fn programs_must_exist_and_be_executable() {
    let lines = with(
        clean_v3(),
        &[
            (8, "rsmld.handler = exec"),
            (9, "rsmld.exec.command = ./handler.sh out"),
        ],
        // The exec handler's default item timeout makes the drain bound 600 s.
        &["gracefulLeaseHandoffTimeoutMillis = 600000"],
    );
    let dir = setup(&lines);
    let handler = dir.path().join("handler.sh");
    std::fs::write(&handler, "#!/bin/sh\nwhile read -r l; do echo ok; done\n").unwrap();
    std::fs::set_permissions(&handler, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = run_in(dir.path(), &["check", "--properties", "app.properties"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "app.properties:9: error: rsmld.exec.command: ./handler.sh: ./handler.sh is not executable (chmod +x)\n"
    );
    std::fs::set_permissions(&handler, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, err) = run_in(dir.path(), &["check", "--properties", "app.properties"]);
    assert_eq!(
        (code, err.as_str()),
        (0, "app.properties: ok for KCL 3.x\n")
    );
    // executableName itself, and a bare name looked up in PATH.
    let lines = with(
        clean_v3(),
        &[(
            1,
            "executableName = ./nothing-here --properties app.properties",
        )],
        &[],
    );
    let (code, err) = check(&lines, "3");
    assert_eq!(code, 1);
    assert!(
        err.starts_with(
            "app.properties:1: error: executableName: ./nothing-here: does not exist\n"
        ),
        "{err}"
    );
    let lines = with(
        clean_v3(),
        &[
            (8, "rsmld.handler = exec"),
            (9, "rsmld.exec.command = no-such-program-anywhere"),
        ],
        &["gracefulLeaseHandoffTimeoutMillis = 600000"],
    );
    assert_check(
        &lines,
        "3",
        1,
        "app.properties:9: error: rsmld.exec.command: no-such-program-anywhere: not found in PATH\n"
    );
}

#[test]
fn risky_settings_are_warnings_and_exit_0() {
    let lines = with(
        clean_v3(),
        &[
            (5, "# no workerId"),
            (6, "shutdownGraceMillis = 0"),
            (7, "callProcessRecordsEvenForEmptyRecordList = false"),
        ],
        &["timeoutInSeconds = 60"],
    );
    assert_check(
        &lines,
        "3",
        0,
        "app.properties: warning: workerId is not set: each start gets a random id, so after a restart the old leases wait failoverTimeMillis to expire; set one that is fixed per host and unique per daemon process\n\
         app.properties:6: warning: shutdownGraceMillis = 0: on SIGTERM the daemon starts a graceful shutdown but waits 0 ms for it, so the JVM exits before rsmld can drain and checkpoint; set it (e.g. 30000)\n\
         app.properties:7: warning: callProcessRecordsEvenForEmptyRecordList = false: an idle shard then gets no processRecords, so items that finish after the last batch are not checkpointed until records arrive; set it to true\n\
         app.properties:10: warning: timeoutInSeconds = 60: rsmld has no item timeout, so nothing bounds how long it holds an answer while it drains (a stuck handler), and on timeout the daemon halts the JVM and every shard; set rsmld.item_timeout so that the drain fits\n"
    );
    // With an item timeout the bound is computed: (20000 + 10000) items / (2 workers x 500)
    // = 30 rounds x 5 s = 150 s > 60 s.
    let lines = with(
        clean_v3(),
        &[],
        &[
            "timeoutInSeconds = 60",
            "rsmld.workers = 2",
            "rsmld.item_timeout = 5",
        ],
    );
    // The KCL 3.x lease handoff waits 30 s when gracefulLeaseHandoffTimeoutMillis is unset.
    assert_check(
        &lines,
        "3",
        0,
        "app.properties: warning: gracefulLeaseHandoffTimeoutMillis is not set (30000, the KCL 3.x default): draining rsmld's in-flight bound can take up to 150 s (30000 items = max-in-flight 20000 + maxRecords 10000, in 30 rounds of 2 workers x batch size 500, each up to 5.0 s = item timeout 5 s x 1 attempts); a handoff that times out moves the lease before the final checkpoint (records since the last checkpoint are processed again)\n\
         app.properties:10: warning: timeoutInSeconds = 60: draining rsmld's in-flight bound can take up to 150 s (30000 items = max-in-flight 20000 + maxRecords 10000, in 30 rounds of 2 workers x batch size 500, each up to 5.0 s = item timeout 5 s x 1 attempts); on timeout the daemon halts the JVM and every shard\n"
    );
    // The discard handler has nothing to drain: no warning.
    let lines = with(
        clean_v3(),
        &[(8, "rsmld.handler = discard"), (9, "# no output")],
        &["timeoutInSeconds = 60"],
    );
    assert_check(&lines, "3", 0, "app.properties: ok for KCL 3.x\n");
    // A drain that fits: no warning.
    let lines = with(
        clean_v3(),
        &[],
        &[
            "timeoutInSeconds = 600",
            "rsmld.workers = 2",
            "rsmld.item_timeout = 5",
            "gracefulLeaseHandoffTimeoutMillis = 600000",
        ],
    );
    assert_eq!(check(&lines, "3").0, 0);
    assert_eq!(check(&lines, "3").1, "app.properties: ok for KCL 3.x\n");
}

#[test]
fn start_up_reports_every_bad_entry_with_file_line_and_key() {
    let lines = with(
        clean_v3(),
        &[],
        &[
            "rsmld.workers = 100000",
            "rsmld.batch_size = 0",
            "rsmld.wokers = 2",
        ],
    );
    let dir = setup(&lines);
    let (code, err) = run_in(dir.path(), &["--properties", "app.properties"]);
    assert_eq!(code, 2, "a bad properties file is a configuration error");
    assert_eq!(
        err,
        "rsmld[-] ERROR app.properties:10: rsmld.workers = \"100000\": 100000 is out of range: must be 1..=1024\n\
         rsmld[-] ERROR app.properties:11: rsmld.batch_size = \"0\": 0 is out of range: must be 1..=100000\n\
         rsmld[-] ERROR app.properties:12: unknown key \"rsmld.wokers\", did you mean \"rsmld.workers\"?\n"
    );
    // A consistency error of settings from the file names the key and its line.
    let mut lines = clean_v3();
    lines.pop();
    let dir = setup(&lines);
    let (code, err) = run_in(dir.path(), &["--properties", "app.properties"]);
    assert_eq!(
        code, 2,
        "an inconsistent properties file is a configuration error"
    );
    assert!(
        err.ends_with("ERROR app.properties:8: rsmld.handler = file needs rsmld.output (the output directory)\n"),
        "{err}"
    );
}

/// Absurd settings stop rsmld at once with a clear message (before: `--workers 100000`
/// panicked in thread set-up and then hung, ignoring SIGTERM).
#[test]
fn absurd_settings_are_rejected_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value, reason) in [
        (
            "--workers",
            "100000",
            "100000 is out of range: must be 1..=1024",
        ),
        ("--workers", "0", "0 is out of range: must be 1..=1024"),
        ("--batch-size", "0", "0 is out of range: must be 1..=100000"),
        (
            "--max-in-flight-bytes",
            "1024",
            "1KiB is out of range: must be 2MiB..=16GiB",
        ),
        (
            "--max-in-flight",
            "1000000000",
            "1000000000 is out of range: must be 0..=1000000",
        ),
        ("--checkpoint-interval", "-1", "\"-1\" is negative"),
        (
            "--checkpoint-interval",
            "NaN",
            "\"NaN\" is not a finite duration",
        ),
        (
            "--item-timeout",
            "1e300",
            "\"1e300\" is too large: must be 0 or 10ms..=1d",
        ),
        ("--retry-backoff", "inf", "\"inf\" is not a finite duration"),
        (
            "--rotate-bytes",
            "10",
            "10B is out of range: must be 0 or 1KiB..=1TiB",
        ),
        (
            "--retries",
            "1000000",
            "1000000 is out of range: must be 0..=100",
        ),
    ] {
        let arg = format!("{flag}={value}");
        let (code, err) = run_in(dir.path(), &["--handler", "discard", &arg]);
        assert_eq!(code, 2, "{arg}: {err}");
        assert!(
            err.contains(&format!("invalid value '{value}' for '{flag}")) && err.contains(reason),
            "{arg}: {err}"
        );
    }
    let (code, err) = run_in(dir.path(), &["kpl", "encode", "--max-bytes", "10"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("10B is out of range: must be 64B..=1MiB"),
        "{err}"
    );
}

/// scripts/java-command.sh on a fake jars directory: one command line whose classpath is the
/// jars directory (wildcard) plus the properties file's directory, the daemon's main class
/// and the absolute properties file; no multilang jar → exit 1 and a clear message.
#[test]
fn java_command_helper_prints_the_daemon_command() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/java-command.sh");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let jars = root.join("jars");
    std::fs::create_dir(&jars).unwrap();
    for jar in [
        "amazon-kinesis-client-multilang-3.1.3.jar",
        "amazon-kinesis-client-3.1.3.jar",
    ] {
        std::fs::write(jars.join(jar), "").unwrap();
    }
    std::fs::create_dir(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/app.properties"), "executableName = rsmld\n").unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("bash")
            .arg(&script)
            .args(args)
            .current_dir(&root)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let jars_arg = jars.display().to_string();
    let with_heap = |heap: &str| {
        run(&[
            "--properties",
            "etc/app.properties",
            "--jars",
            &jars_arg,
            "--heap",
            heap,
        ])
    };
    let (code, out, err) = with_heap("2g");
    assert_eq!(code, Some(0), "{err}");
    let r = root.display();
    assert_eq!(
        out,
        format!(
            "java -Xms2g -Xmx2g -XX:+ExitOnOutOfMemoryError -Dfile.encoding=UTF-8 -cp '{r}/jars/*:{r}/etc' software.amazon.kinesis.multilang.MultiLangDaemon --properties-file {r}/etc/app.properties\n"
        )
    );
    assert!(err.contains("KCL 3.1.3 MultiLangDaemon"), "{err}");
    // The JVM's heap size syntax: digits and one optional unit letter; anything else is
    // refused here rather than by the JVM on the production host.
    for heap in ["512m", "2G", "1t", "4096"] {
        let (code, out, err) = with_heap(heap);
        assert_eq!(code, Some(0), "{heap}: {err}");
        assert!(
            out.starts_with(&format!("java -Xms{heap} -Xmx{heap} ")),
            "{out}"
        );
    }
    for heap in ["2GB", "1.5g", "g", "2 g", "-1g", "2gb"] {
        let (code, out, err) = with_heap(heap);
        assert_eq!((code, out.as_str()), (Some(2), ""), "{heap}");
        assert_eq!(
            err,
            format!("java-command.sh: --heap {heap}: not a JVM heap size (digits, then k, m, g or t: 512m, 2g)\n")
        );
    }
    std::fs::remove_file(jars.join("amazon-kinesis-client-multilang-3.1.3.jar")).unwrap();
    let (code, out, err) = run(&["--properties", "etc/app.properties", "--jars", &jars_arg]);
    assert_eq!((code, out.as_str()), (Some(1), ""));
    assert!(
        err.contains("has no amazon-kinesis-client-multilang-*.jar"),
        "{err}"
    );
}

/// Java keeps a value's trailing blanks (an enum then fails at start-up), and applies the
/// keys in no defined order (two keys for one property: either may win).
#[test]
fn trailing_blanks_and_two_keys_for_one_property() {
    let lines = with(
        clean_v3(),
        &[],
        &[
            "initialPositionInStream = LATEST  ",
            "maxRecords = 1000",
            "pollingConfig.maxRecords = 2000",
            "workerIdentifier = host-2",
        ],
    );
    assert_check(
        &lines,
        "3",
        1,
        "app.properties:10: error: initialPositionInStream = \"LATEST  \" ends in blanks, which the daemon keeps: it fails at start-up (no such value); remove them\n\
         app.properties:12: warning: pollingConfig.maxRecords and maxRecords (line 11) set the same thing; the daemon applies keys in no defined order, so either may win: keep one\n\
         app.properties:13: warning: workerIdentifier and workerId (line 5) set the same thing; the daemon applies keys in no defined order, so either may win: keep one\n"
    );
}

/// rsmld started without `--properties` reads none of the `rsmld.*` keys: they are flagged,
/// not applied; an exec handler without a command is named by its key; ISO-8601 durations
/// and tag lists.
#[test]
fn executable_name_decides_what_rsmld_reads() {
    let lines = with(
        clean_v3(),
        &[
            (1, &format!("executableName = {RSMLD} --handler discard")),
            (8, "rsmld.handler = exec"),
        ],
        &[],
    );
    assert_check(
        &lines,
        "3",
        0,
        "app.properties:1: warning: the rsmld.* keys take effect only when executableName passes --properties with this file\n"
    );
    let lines = with(
        clean_v3(),
        &[
            (8, "rsmld.handler = exec"),
            (9, "gracefulLeaseHandoffTimeoutMillis = 600000"),
        ],
        &[],
    );
    assert_check(
        &lines,
        "3",
        1,
        "app.properties:8: error: rsmld.handler = exec needs rsmld.exec.command (or a command after -- in executableName)\n"
    );
    let lines = with(
        clean_v3(),
        &[],
        &[
            "staleWorkerMetricsEntryCleanupDuration = 12h",
            "workerMetricsTags = team",
            "coordinatorStateTags = team=data,env=prod",
            "staleWorkerMetricsEntryCleanupDuration = PT12H",
        ],
    );
    assert_check(
        &lines,
        "3",
        1,
        "app.properties:10: warning: staleWorkerMetricsEntryCleanupDuration is set again at line 13, which wins: this line has no effect\n\
         app.properties:10: error: staleWorkerMetricsEntryCleanupDuration = \"12h\": not an ISO-8601 duration such as PT12H; the daemon fails at start-up\n\
         app.properties:11: error: workerMetricsTags = \"team\": not a tag list such as k=v,k2=v2\n"
    );
}

/// Human units in the properties file: `2s` and `16MiB` reach rsmld's settings, start-up
/// runs with them (answers `initialize`), `rsmld check` accepts them; a bad unit is one
/// error naming the file, the line and the key, at start-up and in `rsmld check` alike.
#[test]
fn units_in_the_properties_file() {
    let lines = with(
        clean_v3(),
        &[],
        &[
            "rsmld.checkpoint_interval = 2s",
            "rsmld.max_in_flight_bytes = 16MiB",
            "rsmld.rotate_secs = 1h",
            "rsmld.max_inflated_bytes = 8 MiB",
        ],
    );
    let dir = setup(&lines);
    let path = dir.path().join("app.properties");
    let cli = rsmld::cli::config::Cli::parse_with_properties(vec![
        "rsmld".into(),
        "--properties".into(),
        path.display().to_string(),
    ])
    .unwrap();
    assert_eq!(cli.run.checkpoint_interval, Duration::from_secs(2));
    assert_eq!(cli.run.max_in_flight_bytes, 16 << 20);
    let file = cli
        .run
        .handler_group::<rsmld::cli::registry::file::FileArgs>();
    assert_eq!(file.unwrap().rotate_secs, Duration::from_secs(3600));
    assert_eq!(cli.run.max_inflated_bytes, 8 << 20);
    let (code, err) = run_in(dir.path(), &["check", "--properties", "app.properties"]);
    assert_eq!(
        (code, err.as_str()),
        (0, "app.properties: ok for KCL 3.x\n")
    );
    let stderr = assert_starts_and_initializes(dir.path());
    assert!(stderr.contains("checkpoint interval 2.000 s"), "{stderr}");

    let lines = with(
        clean_v3(),
        &[],
        &[
            "rsmld.checkpoint_interval = 2x",
            "rsmld.max_in_flight_bytes = 16M",
            "rsmld.item_timeout = -1s",
        ],
    );
    let dir = setup(&lines);
    let want = [
        "app.properties:10: rsmld.checkpoint_interval = \"2x\": \"2x\" has an unknown unit \"x\": use ns, us, ms, s, m, h or d",
        "app.properties:11: rsmld.max_in_flight_bytes = \"16M\": \"16M\" is ambiguous: write 16MiB (powers of 1024) or 16MB (powers of 1000)",
        "app.properties:12: rsmld.item_timeout = \"-1s\": \"-1s\" is negative",
    ];
    let (code, err) = run_in(dir.path(), &["--properties", "app.properties"]);
    assert_eq!(code, 2, "a bad properties file is a configuration error");
    let at_start_up: String = want
        .iter()
        .map(|w| format!("rsmld[-] ERROR {w}\n"))
        .collect();
    assert_eq!(err, at_start_up);
    let (code, err) = run_in(dir.path(), &["check", "--properties", "app.properties"]);
    assert_eq!(code, 1);
    let in_check: String = want
        .iter()
        .map(|w| format!("{}\n", w.replacen(": ", ": error: ", 1)))
        .collect();
    assert_eq!(err, in_check);
}

/// The daemon keeps a value's trailing blanks (java.util.Properties) and trims them only
/// where its converter does: numbers, durations, tags, lists and credentials are trimmed;
/// a boolean, an enum, epoch seconds, `maxActiveThreads`, an endpoint and a name are not.
/// Each verdict was observed with the 3.1.3 and 2.5.8 jars.
#[test]
fn trailing_blanks_follow_each_converter() {
    let lines = with(
        clean_v3(),
        &[
            (4, "AwsCredentialsProvider = DefaultCredentialsProvider "),
            (7, "callProcessRecordsEvenForEmptyRecordList = true "),
        ],
        &[
            "initialPositionInStreamExtended = 1700000000 ",
            "metricsLevel = NONE\t",
            "maxActiveThreads = 4 ",
            "failoverTimeMillis = 20000  ",
            "staleWorkerMetricsEntryCleanupDuration = PT12H ",
            "tableName = app-leases ",
            "kinesisEndpoint = http://localhost:4567 ",
            "isGracefulLeaseHandoffEnabled = false ",
            "metricsEnabledDimensions = Operation,ShardId ",
            "shutdownGraceMillis = 30000 ",
        ],
    );
    assert_check(
        &lines,
        "3",
        1,
        "app.properties:6: warning: shutdownGraceMillis is set again at line 19, which wins: this line has no effect\n\
         app.properties:7: error: callProcessRecordsEvenForEmptyRecordList = \"true \" ends in a blank, which the daemon keeps: it does not read \"true\" as a boolean and silently reads false; remove it\n\
         app.properties:10: error: initialPositionInStreamExtended = \"1700000000 \" ends in a blank, which the daemon keeps: it fails at start-up (NumberFormatException); remove it\n\
         app.properties:11: error: metricsLevel = \"NONE\\t\" ends in a blank, which the daemon keeps: it fails at start-up (no such value); remove it\n\
         app.properties:12: error: maxActiveThreads = \"4 \" ends in a blank, which the daemon keeps: it fails at start-up (NumberFormatException); remove it\n\
         app.properties:12: warning: maxActiveThreads > 0 is a fixed pool that must hold 1 + 2 threads per lease plus the I/O of every child; too small a pool deadlocks. Leave it unset (0: unbounded)\n\
         app.properties:15: error: tableName = \"app-leases \" ends in a blank, which the daemon keeps: it uses the value blank included (another name than the one you see); remove it\n\
         app.properties:16: error: kinesisEndpoint = \"http://localhost:4567 \" ends in a blank, which the daemon keeps: it fails at start-up (the endpoint URI has an illegal character); remove it\n"
    );
    // The same rules under 2.x.
    let lines = with(
        clean_v3(),
        &[
            (
                4,
                "AWSCredentialsProvider = DefaultAWSCredentialsProviderChain",
            ),
            (7, "callProcessRecordsEvenForEmptyRecordList = yes  "),
        ],
        &["initialPositionInStream = LATEST "],
    );
    assert_check(
        &lines,
        "2",
        1,
        "app.properties:7: error: callProcessRecordsEvenForEmptyRecordList = \"yes  \" ends in blanks, which the daemon keeps: it does not read \"yes\" as a boolean and silently reads false; remove them\n\
         app.properties:10: error: initialPositionInStream = \"LATEST \" ends in a blank, which the daemon keeps: it fails at start-up (no such value); remove it\n"
    );
}

/// KCL 3.x reads the credentials key in any case: two spellings reach one setter twice and
/// start-up fails (`IllegalStateException`, observed with the 3.1.3 jars); 2.x reads one
/// spelling and ignores the other.
#[test]
fn a_credentials_provider_set_twice() {
    let lines = with(
        clean_v3(),
        &[],
        &["AWSCredentialsProvider = DefaultCredentialsProvider"],
    );
    assert_check(
        &lines,
        "3",
        1,
        "app.properties:10: error: AWSCredentialsProvider and AwsCredentialsProvider (line 4) both set awsCredentialsProvider: the KCL 3.x daemon reads the key in any case and fails at start-up (IllegalStateException: When a property handler is resolved further properties may not be set.); keep one\n"
    );
    let lines = with(
        clean_v3(),
        &[(
            4,
            "AWSCredentialsProvider = DefaultAWSCredentialsProviderChain",
        )],
        &["AwsCredentialsProvider = DefaultAWSCredentialsProviderChain"],
    );
    assert_check(
        &lines,
        "2",
        1,
        "app.properties:10: error: unknown key AwsCredentialsProvider: the KCL 2.x daemon ignores it silently (keys are case-sensitive); did you mean AWSCredentialsProvider?\n"
    );
    // The provider's builder keys alone are a provider (the daemon starts) ...
    let lines = with(
        clean_v3(),
        &[(
            4,
            "kinesisCredentialsProvider.class = DefaultCredentialsProvider",
        )],
        &[],
    );
    assert_check(&lines, "3", 0, "app.properties: ok for KCL 3.x\n");
    // ... and with the provider's key they set the same provider twice (both versions).
    let lines = with(
        clean_v3(),
        &[],
        &[
            "awsCredentialsProviderDynamoDB = DefaultCredentialsProvider",
            "AWSCREDENTIALSPROVIDERDynamoDB = DefaultCredentialsProvider",
            "kinesisCredentialsProvider.class = ProfileCredentialsProvider",
        ],
    );
    assert_check(
        &lines,
        "3",
        1,
        "app.properties:11: error: AWSCREDENTIALSPROVIDERDynamoDB and awsCredentialsProviderDynamoDB (line 10) both set awsCredentialsProviderDynamoDB: the KCL 3.x daemon reads the key in any case and fails at start-up (IllegalStateException: When a property handler is resolved further properties may not be set.); keep one\n\
         app.properties:12: error: kinesisCredentialsProvider.class and AwsCredentialsProvider (line 4) both set the same credentials provider: the daemon fails at start-up (IllegalStateException: When a property handler is resolved further properties may not be set.) unless it happens to apply kinesisCredentialsProvider.class first (keys are applied in no defined order); keep one\n"
    );
}

/// Wrappers in `executableName` are followed to the rsmld command they run; a program that
/// is neither is only checked to exist.
#[test]
fn wrappers_in_executable_name() {
    for exe in [
        format!("/usr/bin/env RUST_LOG=debug {RSMLD} --properties app.properties"),
        format!("nice -n 5 {RSMLD} --properties app.properties"),
        format!("env -u HOME RUST_LOG=info ionice -c 2 -n 7 taskset -c 0 {RSMLD} --properties app.properties"),
        format!("setpriv --nnp chrt -o 0 {RSMLD} --properties app.properties"),
    ] {
        let lines = with(clean_v3(), &[(1, &format!("executableName = {exe}"))], &[]);
        assert_eq!(
            check(&lines, "3"),
            (0, "app.properties: ok for KCL 3.x\n".to_owned()),
            "{exe}"
        );
    }
    // Behind the wrapper, rsmld's arguments are still checked.
    let lines = with(
        clean_v3(),
        &[(
            1,
            &format!("executableName = env RUST_LOG=debug {RSMLD} --properties app.properties --wokers 2"),
        )],
        &[],
    );
    let (code, err) = check(&lines, "3");
    assert_eq!(code, 1);
    assert!(
        err.starts_with("app.properties:1: error: executableName: rsmld rejects its arguments: unexpected argument '--wokers'"),
        "{err}"
    );
    let lines = with(
        clean_v3(),
        &[(
            1,
            "executableName = env RUST_LOG=debug ./nothing-here --properties app.properties",
        )],
        &[],
    );
    assert_check(
        &lines,
        "3",
        1,
        "app.properties:1: error: executableName: ./nothing-here: does not exist\n",
    );
    let lines = with(
        clean_v3(),
        &[(
            1,
            &format!("executableName = timeout 1h {RSMLD} --properties app.properties"),
        )],
        &[],
    );
    assert_check(
        &lines,
        "3",
        0,
        "app.properties:1: warning: executableName: timeout ends the record processor after 1h, while it holds its lease: the daemon then loses that shard's processor mid-stream; remove it\n"
    );
    // Something else: it must exist; its arguments are its own.
    let lines = with(
        clean_v3(),
        &[(
            1,
            "executableName = /bin/sh ./processor.sh --properties app.properties --fast",
        )],
        &[],
    );
    assert_check(
        &lines,
        "3",
        0,
        "app.properties:1: warning: executableName runs /bin/sh, which is not rsmld: rsmld check checks that it exists and can be run, not its arguments\n"
    );
    let lines = with(
        clean_v3(),
        &[(
            1,
            "executableName = env -S rsmld --properties app.properties",
        )],
        &["rsmld.wokers = 2"],
    );
    // A form this does not follow is a warning; the rsmld.* keys are still checked.
    assert_check(
        &lines,
        "3",
        1,
        "app.properties:1: warning: executableName: env -S is a form rsmld check does not follow: the command it runs and its arguments are not checked\n\
         app.properties:10: error: unknown key \"rsmld.wokers\", did you mean \"rsmld.workers\"?\n"
    );
}

/// The KCL 3.x handoff timeout applies unset (30000 ms), flat or nested; not when the
/// graceful handoff is off or under 2.x. The drain bound uses `pollingConfig.maxRecords`.
#[test]
fn handoff_timeout_and_max_records_in_every_spelling() {
    let drain = ["rsmld.workers = 2", "rsmld.item_timeout = 5"];
    let lines = with(
        clean_v3(),
        &[],
        &[
            drain[0],
            drain[1],
            "gracefulLeaseHandoffConfigBean.gracefulLeaseHandoffTimeoutMillis = 10000",
        ],
    );
    assert_check(
        &lines,
        "3",
        0,
        "app.properties:12: warning: gracefulLeaseHandoffConfigBean.gracefulLeaseHandoffTimeoutMillis = 10000: draining rsmld's in-flight bound can take up to 150 s (30000 items = max-in-flight 20000 + maxRecords 10000, in 30 rounds of 2 workers x batch size 500, each up to 5.0 s = item timeout 5 s x 1 attempts); a handoff that times out moves the lease before the final checkpoint (records since the last checkpoint are processed again)\n"
    );
    for off in [
        "isGracefulLeaseHandoffEnabled = false",
        "gracefulLeaseHandoffConfigBean.isGracefulLeaseHandoffEnabled = off",
    ] {
        let lines = with(clean_v3(), &[], &[drain[0], drain[1], off]);
        assert_eq!(
            check(&lines, "3"),
            (0, "app.properties: ok for KCL 3.x\n".to_owned()),
            "{off}"
        );
    }
    // 2.x has no graceful handoff.
    let lines = with(
        clean_v3(),
        &[(
            4,
            "AWSCredentialsProvider = DefaultAWSCredentialsProviderChain",
        )],
        &[drain[0], drain[1]],
    );
    assert_check(&lines, "2", 0, "app.properties: ok for KCL 2.x\n");
    // pollingConfig.maxRecords = 100: (20000 + 100) items / (2 x 500) = 21 rounds x 5 s.
    let lines = with(
        clean_v3(),
        &[],
        &[
            drain[0],
            drain[1],
            "pollingConfig.maxRecords = 100",
            "timeoutInSeconds = 60",
            "gracefulLeaseHandoffTimeoutMillis = 600000",
        ],
    );
    assert_check(
        &lines,
        "3",
        0,
        "app.properties:13: warning: timeoutInSeconds = 60: draining rsmld's in-flight bound can take up to 105 s (20100 items = max-in-flight 20000 + maxRecords 100, in 21 rounds of 2 workers x batch size 500, each up to 5.0 s = item timeout 5 s x 1 attempts); on timeout the daemon halts the JVM and every shard\n"
    );
}

/// A non-numeric `timeoutInSeconds` is 0 to the daemon: it halts the JVM at its first wait.
#[test]
fn a_timeout_that_is_not_a_number_is_zero() {
    let lines = with(clean_v3(), &[], &["timeoutInSeconds = 5min"]);
    assert_check(
        &lines,
        "3",
        1,
        "app.properties:10: error: timeoutInSeconds = \"5min\": not a whole number (32-bit); the daemon silently reads 0, and with 0 it halts the JVM at its first wait for an answer (every shard stops)\n"
    );
}

/// The daemon reads the file as ISO-8859-1; so does rsmld: a Latin-1 byte in a comment
/// stops neither, and a UTF-8 value reads garbled to both (a warning with the escape).
#[test]
fn the_file_is_read_as_latin1_like_the_daemon_reads_it() {
    let dir = setup(&clean_v3());
    let path = dir.path().join("app.properties");
    let mut bytes = b"# Caf\xe9 (a Latin-1 comment)\n".to_vec();
    bytes.extend(std::fs::read(&path).unwrap());
    bytes.extend("processingLanguage = café\n".as_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let (code, err) = run_in(dir.path(), &["check", "--properties", "app.properties"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        err,
        "app.properties:11: warning: processingLanguage has bytes outside ASCII: the daemon reads the file as ISO-8859-1 (as rsmld does), so it reads processingLanguage = \"cafÃ©\" (the file's bytes are the UTF-8 \"café\": write processingLanguage = caf\\u00e9)\n"
    );
    // Start-up reads the same file and answers initialize.
    assert_starts_and_initializes(dir.path());
    // A \u escape Java cannot read stops the daemon (Properties.load throws).
    let lines = with(clean_v3(), &[], &["tableName = caf\\u00zz"]);
    assert_check(
        &lines,
        "3",
        1,
        "app.properties:10: error: tableName: a \\u escape that is not four hex digits: the daemon fails at start-up (IllegalArgumentException: Malformed \\uxxxx encoding.); an escape is \\u and four hex digits (\\u00e9)\n"
    );
}

/// `shardPrioritization` has no converter in either daemon: any value fails start-up
/// (`ConversionException`, observed with the 3.1.3 and 2.5.8 jars).
#[test]
fn shard_prioritization_cannot_be_set() {
    let lines = with(
        clean_v3(),
        &[],
        &["shardPrioritization = software.amazon.kinesis.leases.ParentsFirstShardPrioritization"],
    );
    assert_check(
        &lines,
        "3",
        1,
        "app.properties:10: error: shardPrioritization cannot be set from the properties file: the daemon has no converter for it and fails at start-up (ConversionException); remove it\n"
    );
}

/// `executableName = rsmld attach --socket PATH --properties FILE`: check reads attach's
/// own flags, says the handler options are the server's and not checked, and does not ask
/// for a handler (old code: "rsmld rejects its arguments" for attach's flags, an error).
#[test]
fn check_understands_an_attach_executable() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("rsmld.sock");
    let lines: Vec<String> = [
        format!(
            "executableName = {RSMLD} attach --socket {} --properties app.properties",
            socket.display()
        ),
        "applicationName = app".into(),
        "streamName = s".into(),
        "AwsCredentialsProvider = DefaultCredentialsProvider".into(),
        "workerId = host-1".into(),
        "shutdownGraceMillis = 30000".into(),
        "callProcessRecordsEvenForEmptyRecordList = true".into(),
    ]
    .to_vec();
    let (code, err) = check(&lines, "3");
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("error:"), "{err}");
    assert!(
        err.contains("app.properties:1: warning: executableName: rsmld attach hands each lease to the rsmld serve on")
            && err.contains("not checked here"),
        "{err}"
    );
    assert!(!err.contains("--handler"), "no handler asked for: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // attach's own flags are checked: a bad --retry-for, no --socket.
    let mut bad = lines.clone();
    bad[0] = format!("executableName = {RSMLD} attach --socket /x.sock --retry-for soon");
    let (code, err) = check(&bad, "3");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "app.properties:1: error: executableName: rsmld attach rejects its arguments:"
        ) && err.contains("--retry-for"),
        "{err}"
    );
    bad[0] = format!("executableName = {RSMLD} attach --properties app.properties");
    let (code, err) = check(&bad, "3");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--socket"), "{err}");

    // A relative socket, no --properties, rsmld.* keys that attach does not read.
    let mut odd = lines.clone();
    odd[0] = format!("executableName = {RSMLD} attach --socket rsmld.sock");
    odd.push("rsmld.handler = file".into());
    let (code, err) = check(&odd, "3");
    assert_eq!(code, 0, "{err}");
    for want in [
        "--socket rsmld.sock is relative",
        "rsmld attach without --properties",
        "rsmld attach reads no rsmld.* keys",
    ] {
        assert!(err.contains(want), "{want} not in:\n{err}");
    }
}
