//! The exec guard (src/process/guard.rs): no handler process outlives rsmld, not even a
//! SIGKILLed one (a shell's `sleep`, a helper in its own session, one that also cleared
//! its environment), and with the guard in between rsmld reports what it did without
//! one: the command's pid, its exit status or signal, start-up errors, a closed stdout
//! or stdin, the signal dispositions and mask the command starts with.
//!
//! Through the binary (which always uses the guard) and in-process with
//! `rsmld::process::guard::enable` pointed at the built binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails (clippy.toml's allow-*-in-tests skips helpers)"
)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{alive, line, marker, record, rsmld_bin, Proc};
use rsmld::codec::message::{DaemonMessage, Record};
use rsmld::handler::exec::{ExecFactory, ExecFraming, ExecOptions};
use rsmld::handler::{BatchError, Handler, HandlerFactory, Interrupt, WorkerContext};
use rsmld::pipeline::item::{Item, Payload};
use rsmld::protocol::tracker::RecordId;
use rsmld::telemetry::LeaseId;

// ---------------------------------------------------------------- helpers

/// Live processes (zombies excluded) whose environment or command line holds `marker`.
fn marked(marker: &str) -> Vec<i32> {
    let needle = marker.as_bytes();
    let holds = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    let mut found = Vec::new();
    for pid in common::pids() {
        if !alive(pid) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if holds(&env) || holds(&cmdline) {
            found.push(pid);
        }
    }
    found
}

/// Waits (up to 10 s) until no marked process is left; returns those still alive.
fn outliving(marker: &str) -> Vec<i32> {
    common::poll_until_empty(|| marked(marker))
}

/// Waits (up to 20 s) until `path` holds one pid per line, `n` of them; returns them.
fn pids_in(path: &Path, n: usize) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if pids.len() >= n && text.ends_with('\n') {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "{} holds {text:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (up to 5 s) until `pid` is no longer alive (a SIGKILLed process takes a moment).
fn gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn process_line(records: Vec<Record>) -> String {
    line(&DaemonMessage::ProcessRecords {
        records,
        millis_behind_latest: Some(0),
    })
}

/// rsmld (`--workers 1`) with `sh -c SCRIPT` as its exec child, `RSMLD_TEST_MARKER`
/// set, initialized, and one record sent to it.
fn rsmld_with(script: &str, marker: &str, extra: &[&str], key: &str) -> Proc {
    let mut args: Vec<String> = ["--handler", "exec", "--workers", "1"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    args.extend(["--", "sh", "-c", script].map(String::from));
    let mut p = Proc::spawn_env(&args, &[("RSMLD_TEST_MARKER", marker)]);
    let mut model = common::initialize(&mut p);
    let records = vec![record(1, key)];
    model.deliver_all(&records);
    p.send(&process_line(records));
    p
}

// ---------------------------------------------------------------- SIGKILL of rsmld

/// rsmld is SIGKILLed while its child is busy: the shell's `sleep` (same group, not the
/// direct child), a helper that called setsid() (marker in its environment), and one
/// that called setsid() and cleared its environment (marker only in its argv) all die
/// within seconds. Without the guard all three survive: the kernel's parent-death
/// signal reaches only rsmld's direct children.
#[test]
fn binary_sigkilled_leaves_no_descendant_behind() {
    let sleep = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v sleep"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let cases = [
        // The grandchild `sleep` runs in the foreground of the shell child.
        ("shell-sleep", "IFS= read -r item; echo $$ >> {pids}; {sleep} 120 & echo $! >> {pids}; wait"),
        // A helper in its own session, started before the first item.
        (
            "setsid-helper",
            "setsid sh -c 'echo $$ >> {pids}; exec {sleep} 120' </dev/null >/dev/null 2>&1 & \
             IFS= read -r item; echo $$ >> {pids}; exec {sleep} 120",
        ),
        // A helper in its own session with an empty environment (no tag, no marker).
        (
            "setsid-env-cleared",
            "setsid env -i /bin/sh -c 'echo $$ >> {pids}; {sleep} 120; : {marker}' </dev/null >/dev/null 2>&1 & \
             IFS= read -r item; echo $$ >> {pids}; exec {sleep} 120",
        ),
    ];
    let runs: Vec<_> = cases
        .iter()
        .map(|(name, script)| {
            let (name, script, sleep) = (name.to_string(), script.to_string(), sleep.clone());
            std::thread::spawn(move || {
                let dir = tempfile::tempdir().unwrap();
                let pidfile = dir.path().join("pids");
                let m = marker(&name);
                let script = script
                    .replace("{pids}", pidfile.to_str().unwrap())
                    .replace("{sleep}", &sleep)
                    .replace("{marker}", &m);
                let mut p = rsmld_with(&script, &m, &[], "a");
                let pids = pids_in(&pidfile, 2);
                let live = marked(&m);
                for pid in &pids {
                    assert!(live.contains(pid), "{name}: {pid} not running: {live:?}");
                }
                p.child.kill().unwrap();
                p.child.wait().unwrap();
                assert_eq!(outliving(&m), Vec::<i32>::new(), "{name}");
                for pid in pids {
                    assert!(!alive(pid), "{name}: {pid} outlived a SIGKILLed rsmld");
                }
            })
        })
        .collect();
    for run in runs {
        run.join().unwrap();
    }
}

/// rsmld ends a child that broke the protocol (it keeps running): the child's helper that
/// called setsid() and cleared its environment (so neither the group kill nor the
/// `RSMLD_EXEC_CHILD` tag reaches it) dies with it, while rsmld runs on: the guard,
/// asked to end the child, kills its whole subtree. Without that it lived on, re-parented
/// to rsmld, until rsmld exited (or forever, if rsmld was SIGKILLed meanwhile).
#[test]
fn binary_ends_every_descendant_of_a_child_it_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let m = marker("replaced-env-cleared");
    let script = format!(
        "n=0; while IFS= read -r item; do n=$((n+1)); case \"$item\" in \
         *'\"partitionKey\":\"spawn\"'*) setsid env -i /bin/sh -c 'echo $$ >> {0}; while :; do sleep 1; done; : {1}' </dev/null >/dev/null 2>&1 & ;; \
         *'\"partitionKey\":\"garbage\"'*) echo garbage ;; esac; echo \"ok $n\"; done",
        pids.display(),
        m
    );
    let dlq = dir.path().join("dlq");
    let extra = ["--on-error", "skip", "--dead-letter", dlq.to_str().unwrap()];
    let mut p = rsmld_with(&script, &m, &extra, "spawn");
    let helper = pids_in(&pids, 1)[0];
    assert!(alive(helper));
    p.send(&process_line(vec![record(2, "garbage")]));
    assert!(gone(helper), "helper {helper} outlived its child");
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "rsmld exited: {}",
        p.stderr()
    );
    p.close_stdin();
    assert_eq!(
        p.wait(Duration::from_secs(30)).unwrap(),
        0,
        "{}",
        p.stderr()
    );
    assert!(p.stderr().contains("not an answer"), "{}", p.stderr());
    assert_eq!(outliving(&m), Vec::<i32>::new());
}

// ---------------------------------------------------------------- what rsmld reports

/// Through the binary: a child that exits 3 and one killed by SIGUSR1 are reported with
/// their own pid (the shell's `$$`, not the guard's) and their own status, and the
/// batch fails (exit 1).
#[test]
fn binary_reports_the_commands_pid_and_status() {
    for (key, status) in [
        ("crash", "exited (exit status: 3)"),
        ("usr1", "exited (signal: 10 (SIGUSR1))"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!(
            "n=0; while IFS= read -r item; do n=$((n+1)); echo $$ > {0}; case \"$item\" in \
             *'\"partitionKey\":\"crash\"'*) exit 3 ;; *'\"partitionKey\":\"usr1\"'*) kill -USR1 $$ ;; esac; \
             echo \"ok $n\"; done",
            pidfile.display()
        );
        let m = marker(key);
        let mut p = rsmld_with(&script, &m, &["--checkpoint-interval", "0"], key);
        assert_eq!(
            p.wait(Duration::from_secs(30)).unwrap(),
            1,
            "{}",
            p.stderr()
        );
        let pid = pids_in(&pidfile, 1)[0];
        let err = p.stderr();
        assert!(
            err.contains(&format!("exec handler child \"sh\" (pid {pid}) {status}")),
            "{key}: {err}"
        );
        assert!(
            err.lines()
                .any(|l| l.contains("started exec handler [\"sh\", \"-c\"")
                    && l.ends_with(&format!("(pid {pid})"))),
            "{key}: {err}"
        );
        assert_eq!(outliving(&m), Vec::<i32>::new(), "{key}");
    }
}

// ---------------------------------------------------------------- in-process, guarded

fn guarded() {
    rsmld::process::guard::enable(Some(rsmld_bin()));
}

fn item(n: u64, key: &'static str) -> Item<'static> {
    Item {
        record: RecordId(n),
        sequence_number: common::leak(common::seq(n)),
        sub_sequence_number: 0,
        user_sub: 0,
        user_total: 1,
        partition_key: key,
        explicit_hash_key: None,
        approximate_arrival_timestamp: Some(1_700_000_000_000 + n as i64),
        data: Payload::Bytes(common::leak_bytes(format!("payload-{n}").into_bytes())),
    }
}

fn options(script: &str) -> ExecOptions {
    ExecOptions {
        command: ["sh", "-c", script].map(String::from).to_vec(),
        max_pipelined: 8,
        restart_backoff: Duration::from_millis(10),
        restart_backoff_max: Duration::from_millis(40),
        stall_warning: Duration::from_secs(5),
        answer_timeout: None,
        framing: ExecFraming::Item,
    }
}

fn ctx() -> WorkerContext {
    WorkerContext::new(0, 1).for_lease(lease())
}

fn start(options: ExecOptions) -> Box<dyn Handler> {
    ExecFactory::new(options)
        .create(&ctx())
        .unwrap_or_else(|e| panic!("create: {e}"))
}

fn failure(result: Result<(), BatchError>) -> String {
    match result {
        Err(BatchError::Items(v)) => v[0].1.message.clone(),
        other => panic!("{other:?}"),
    }
}

/// The pid the failure message names.
fn named_pid(message: &str) -> i32 {
    message
        .split("(pid ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {message}"))
}

/// The parent of `pid`.
fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// A command that cannot be started: the same error as without a guard (the OS error
/// of the exec, through the guard's report).
#[test]
fn guarded_unspawnable_command_is_the_same_clear_error() {
    guarded();
    let mut o = options("");
    o.command = vec!["/nonexistent/rsmld-handler".into(), "x".into()];
    let e = ExecFactory::new(o)
        .create(&ctx())
        .err()
        .expect("create succeeded");
    assert!(
        e.message.contains("cannot start the exec handler command \"/nonexistent/rsmld-handler\": No such file or directory"),
        "{e}"
    );
}

/// The command runs under the guard (its parent is a `rsmld __exec-guard` process, not
/// us), messages name the command's pid, its exit status and its death by a signal come
/// through, and nothing is left once it ended.
#[test]
fn guarded_child_is_named_by_its_own_pid_and_status() {
    guarded();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!(
        "echo $$ > {0}; n=0; while IFS= read -r item; do n=$((n+1)); case \"$item\" in \
         *'\"partitionKey\":\"crash\"'*) exit 3 ;; *'\"partitionKey\":\"term\"'*) kill -TERM $$ ;; esac; \
         echo \"ok $n\"; done",
        pidfile.display()
    );
    let mut h = start(options(&script));
    let pid = pids_in(&pidfile, 1)[0];
    let guard = parent_of(pid);
    assert_ne!(guard, std::process::id() as i32);
    let cmdline = std::fs::read(format!("/proc/{guard}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("__exec-guard"),
        "{cmdline:?}"
    );
    h.process(&lease(), &[item(1, "a")]).unwrap();
    let m = failure(h.process(&lease(), &[item(2, "crash")]));
    assert!(
        m.contains(&format!("(pid {pid}) exited (exit status: 3)")),
        "{m}"
    );
    assert!(!alive(guard) && !alive(pid));
    let m = failure(h.process(&lease(), &[item(3, "term")]));
    let second = named_pid(&m);
    assert_ne!(second, pid);
    assert!(m.contains("exited (signal: 15 (SIGTERM))"), "{m}");
    assert!(!alive(second));
    h.close().unwrap();
}

/// The guard holds no copy of the command's stdin or stdout: a command that closes its
/// stdout, or its stdin, and keeps running is seen doing so, as without a guard.
#[test]
fn guarded_child_closing_its_pipes_is_seen() {
    guarded();
    for (script, expected) in [
        (
            "IFS= read -r l; exec >&-; exec sleep 120",
            "closed its stdout without exiting (killed)",
        ),
        (
            "IFS= read -r l; exec <&-; echo 'ok 1'; exec sleep 120",
            "stopped reading its stdin",
        ),
    ] {
        let mut o = options(script);
        // One unit at a time: unit 2 is written only after the answer to unit 1.
        o.max_pipelined = 1;
        o.answer_timeout = Some(Duration::from_secs(20));
        let mut h = start(o);
        let batch: Vec<Item> = (1..=3).map(|n| item(n, "k")).collect();
        let t = Instant::now();
        let m = failure(h.process(&lease(), &batch));
        assert!(m.contains(expected), "{script}: {m}");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{script}: {:?}",
            t.elapsed()
        );
        assert!(gone(named_pid(&m)), "{script}");
        drop(h);
    }
}

/// The command starts with default dispositions for every signal rsmld ignores or the
/// guard waits for, and with nothing blocked.
#[test]
fn guarded_child_starts_with_clean_signals() {
    guarded();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("status");
    let script = format!("grep -E '^Sig(Ign|Blk)' /proc/self/status > {0}.tmp; mv {0}.tmp {0}; n=0; while IFS= read -r l; do n=$((n+1)); echo \"ok $n\"; done", out.display());
    let mut h = start(options(&script));
    h.process(&lease(), &[item(1, "a")]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !out.exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let text = std::fs::read_to_string(&out).unwrap();
    let mask = |name: &str| {
        let l = text.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(l.rsplit(['\t', ' ']).next().unwrap(), 16).unwrap()
    };
    assert_eq!(mask("SigBlk:"), 0, "{text}");
    let ignored = mask("SigIgn:");
    for sig in rsmld::sys::IGNORED_SIGNALS.into_iter().chain([
        libc::SIGCHLD,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ]) {
        assert_eq!(
            ignored & (1 << (sig - 1)),
            0,
            "signal {sig} ignored: {text}"
        );
    }
    h.close().unwrap();
}

/// Signals the guard receives: one that the command sent to its own group
/// (`killpg(0, SIGUSR1)`, a shell's `kill -USR1 0`) reaches it once, not a second time
/// forwarded by the guard; one sent to the guard alone from outside is forwarded.
#[test]
fn guarded_child_gets_each_signal_once() {
    guarded();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!(
        r#"
import os, signal, sys, time
count = 0
def note(sig, frame):
    global count
    count += 1
signal.signal(signal.SIGUSR1, note)
with open({0:?}, "w") as f:
    f.write(f"{{os.getpid()}}\n")
for n, line in enumerate(sys.stdin, start=1):
    if '"partitionKey":"group"' in line:
        os.killpg(0, signal.SIGUSR1)
    time.sleep(0.2)
    print(f"err {{n}} usr1={{count}}", flush=True)
"#,
        pidfile.to_str().unwrap()
    );
    let mut o = options("");
    o.command = vec!["python3".into(), "-c".into(), script];
    let mut h = start(o);
    let pid = pids_in(&pidfile, 1)[0];
    let m = failure(h.process(&lease(), &[item(1, "group")]));
    assert!(m.ends_with("usr1=1"), "{m}");
    // From outside the group (and not from the guard's parent, this test process: a
    // SIGUSR1 from it asks the guard to end the command), to the guard only.
    let guard = parent_of(pid);
    let kill = std::process::Command::new("kill")
        .args(["-USR1", &guard.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in 2.. {
        let m = failure(h.process(&lease(), &[item(n, "a")]));
        if m.ends_with("usr1=2") {
            break;
        }
        assert!(m.ends_with("usr1=1") && Instant::now() < deadline, "{m}");
    }
    h.close().unwrap();
}

/// The watchdog's interrupter kills the guard's group: the hung command and its `sleep`
/// die, the guard too, and the next batch runs in a new command.
#[test]
fn guarded_hung_child_is_killed_by_the_interrupter() {
    guarded();
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script = format!(
        "n=0; while IFS= read -r l; do n=$((n+1)); case \"$l\" in *'\"partitionKey\":\"hang\"'*) \
         echo $$ >> {0}; sleep 600 & echo $! >> {0}; wait ;; esac; echo \"ok $n\"; done",
        pids.display()
    );
    let mut h = start(options(&script));
    let interrupt = h.interrupter().unwrap();
    let killer = std::thread::spawn({
        let pids = pids.clone();
        move || {
            pids_in(&pids, 2);
            interrupt(Interrupt::Timeout);
        }
    });
    let m = failure(h.process(&lease(), &[item(1, "hang")]));
    killer.join().unwrap();
    assert!(m.contains("killed after timeout"), "{m}");
    let got = pids_in(&pids, 2);
    assert_eq!(named_pid(&m), got[0]);
    for pid in got {
        assert!(gone(pid), "{pid} alive");
    }
    h.process(&lease(), &[item(2, "a")]).unwrap();
    h.close().unwrap();
}

/// The cost of the guard: the time from `create` (the child's start) to its first
/// answer, and of `close`, with and without the guard, over several starts. Prints the
/// medians; checks only that both work. Run alone (it switches the guard for the whole test binary):
/// `cargo test --test exec_guard -- --ignored --test-threads=1 --nocapture`.
#[test]
#[ignore]
fn measure_start_cost() {
    let script = "n=0; while IFS= read -r l; do n=$((n+1)); echo \"ok $n\"; done";
    let mut medians = Vec::new();
    for guard in [false, true, false, true] {
        // RSMLD_GUARD_BIN: measure another build of the guard (e.g. target/release/rsmld).
        let bin = std::env::var_os("RSMLD_GUARD_BIN").map_or_else(rsmld_bin, Into::into);
        rsmld::process::guard::enable(guard.then_some(bin));
        let (mut starts, mut closes): (Vec<Duration>, Vec<Duration>) = (0..30)
            .map(|i| {
                let t = Instant::now();
                let mut h = start(options(script));
                h.process(&lease(), &[item(i, "a")]).unwrap();
                let started = t.elapsed();
                let t = Instant::now();
                h.close().unwrap();
                (started, t.elapsed())
            })
            .unzip();
        starts.sort();
        closes.sort();
        let mid = |v: &[Duration]| (v[v.len() / 2], v[v.len() * 9 / 10]);
        medians.push((guard, mid(&starts), mid(&closes)));
    }
    for (guard, (start, start90), (close, close90)) in medians {
        eprintln!(
            "guard {guard}: start to first answer median {start:?} (p90 {start90:?}), close median {close:?} (p90 {close90:?})"
        );
    }
}

/// The lease every batch of these tests belongs to (the one the context names).
fn lease() -> LeaseId {
    LeaseId::new("", "shardId-000000000042")
}
