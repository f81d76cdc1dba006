//! `rsmld serve` and `rsmld attach` as real processes: one server, several attaches, each
//! attach given pipes as its stdin and stdout and driven by the daemon model, as the daemon
//! drives its children. The server reads and writes those pipes itself (handed over with
//! SCM_RIGHTS); each attach exits with its lease's status.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rsmld::codec::message::Action;
use rsmld::protocol::sequence::{Esn, SequenceNumber};

use crate::common::{self, args, line, record, run_action, seq, CheckpointModel, Proc};

const WAIT: Duration = Duration::from_secs(30);

/// A server on `dir/rsmld.sock` with `extra` options, once it listens.
fn server(dir: &Path, extra: &[&str]) -> (Proc, PathBuf) {
    let socket = dir.join("rsmld.sock");
    let mut list = vec!["serve", "--socket", socket.to_str().unwrap()];
    list.extend(extra);
    let mut p = Proc::spawn(&args(&list));
    let deadline = Instant::now() + WAIT;
    while !p.stderr().contains("serving leases on") {
        assert!(
            Instant::now() < deadline,
            "server did not start:\n{}",
            p.stderr()
        );
        assert!(
            p.child.try_wait().unwrap().is_none(),
            "server exited:\n{}",
            p.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (p, socket)
}

/// The file handler, two workers, a checkpoint after every batch.
fn file_options(out: &Path) -> Vec<String> {
    let mut v = args(&["--handler", "file", "--output"]);
    v.push(out.to_str().unwrap().to_owned());
    v.extend(args(&common::CHECKPOINT_EVERY_BATCH));
    v
}

/// A server with the file handler writing to `dir/out` (checkpoint after every batch):
/// the server, its socket and the output directory.
fn file_server(dir: &Path) -> (Proc, PathBuf, PathBuf) {
    file_server_with(dir, &[])
}

/// [`file_server`] with `extra` options besides the file handler's.
fn file_server_with(dir: &Path, extra: &[&str]) -> (Proc, PathBuf, PathBuf) {
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    let mut opts = file_options(&out);
    opts.extend(args(extra));
    let (srv, socket) = server(dir, &opts.iter().map(String::as_str).collect::<Vec<_>>());
    (srv, socket, out)
}

/// An attach for `application` (through a properties file naming it).
fn attach(dir: &Path, socket: &Path, application: &str) -> Proc {
    attach_env(dir, socket, application, &[])
}

/// [`attach`] with `env` added to its environment.
fn attach_env(dir: &Path, socket: &Path, application: &str, env: &[(&str, &str)]) -> Proc {
    let props = dir.join(format!("{application}.properties"));
    std::fs::write(
        &props,
        format!("applicationName = {application}\nexecutableName = rsmld attach\n"),
    )
    .unwrap();
    Proc::spawn_env(
        &args(&[
            "attach",
            "--socket",
            socket.to_str().unwrap(),
            "--properties",
            props.to_str().unwrap(),
        ]),
        env,
    )
}

/// Initializes `p` for `shard` at TRIM_HORIZON.
fn init(p: &mut Proc, shard: &str) -> CheckpointModel {
    let mut model = CheckpointModel::default();
    model.initialize(Some("TRIM_HORIZON"), Some(0));
    let l = common::init_line_at(shard, "TRIM_HORIZON");
    run_action(p, &mut model, &l, Action::Initialize).unwrap();
    model
}

/// Records `from..to`, keys spread.
fn records(from: u64, to: u64) -> Vec<rsmld::codec::message::Record> {
    (from..to)
        .map(|i| record(i, &format!("k{}", i % 7)))
        .collect()
}

fn esn(i: u64) -> Esn {
    Esn::new(SequenceNumber::parse(&seq(i)).unwrap(), 0)
}

/// Ends a lease as the daemon does after a shutdown: `shutdownRequested`, then EOF.
fn finish(p: &mut Proc, model: &mut CheckpointModel) -> i32 {
    common::shutdown_requested(p, model).unwrap();
    p.close_stdin();
    p.wait(WAIT).unwrap()
}

/// The item lines written under `out`: (shardId, sequenceNumber) of each.
fn written(out: &Path) -> Vec<(String, String)> {
    common::written(out)
        .into_iter()
        .map(|(_, v)| {
            (
                v["shardId"].as_str().unwrap().to_owned(),
                v["sequenceNumber"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Two attaches (two applications) on one server, their batches interleaved: every record
/// processed, each lease checkpointed at its last record, each attach exits 0.
#[test]
fn two_attaches_share_one_server() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, socket, out) = file_server(dir.path());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    let mut a = attach(dir.path(), &socket, "alpha");
    let mut b = attach(dir.path(), &socket, "beta");
    let mut ma = init(&mut a, "shardId-000000000001");
    let mut mb = init(&mut b, "shardId-000000000002");
    for batch in 0..5u64 {
        let (lo, hi) = (batch * 10, batch * 10 + 10);
        common::process_records(&mut a, &mut ma, records(lo, hi)).unwrap();
        common::process_records(&mut b, &mut mb, records(1000 + lo, 1000 + hi)).unwrap();
    }
    assert_eq!(ma.last, Some(esn(49)), "alpha: {:?}", ma.stored);
    assert_eq!(mb.last, Some(esn(1049)), "beta: {:?}", mb.stored);
    assert_eq!(finish(&mut a, &mut ma), 0, "{}", srv.stderr());
    assert_eq!(finish(&mut b, &mut mb), 0, "{}", srv.stderr());

    let mut got = written(&out);
    got.sort();
    let mut want: Vec<(String, String)> = (0..50)
        .map(|i| ("shardId-000000000001".to_owned(), seq(i)))
        .chain((1000..1050).map(|i| ("shardId-000000000002".to_owned(), seq(i))))
        .collect();
    want.sort();
    assert_eq!(got, want);
    // The server keeps serving: a third lease after both ended.
    let mut c = attach(dir.path(), &socket, "gamma");
    let mut mc = init(&mut c, "shardId-000000000003");
    common::process_records(&mut c, &mut mc, records(2000, 2005)).unwrap();
    assert_eq!(finish(&mut c, &mut mc), 0);
    assert!(srv.child.try_wait().unwrap().is_none(), "{}", srv.stderr());
}

/// A shell exec child that fails every item of shard 9 and takes every other.
const FAIL_SHARD9: &str = r#"n=0; while read -r l; do n=$((n+1)); case "$l" in *shardId-000000000009*) echo "err $n boom";; *) echo "ok $n";; esac; done"#;

/// `--on-error fail`: a failed item ends its lease only (that attach exits 1, nothing past
/// it checkpointed); the other lease keeps going to its last record.
#[test]
fn a_failing_lease_ends_only_its_attach() {
    let dir = tempfile::tempdir().unwrap();
    let mut list = vec!["--handler", "exec", "--on-error", "fail"];
    list.extend(common::CHECKPOINT_EVERY_BATCH);
    list.extend(["--", "/bin/sh", "-c", FAIL_SHARD9]);
    let (mut srv, socket) = server(dir.path(), &list);
    let mut good = attach(dir.path(), &socket, "alpha");
    let mut bad = attach(dir.path(), &socket, "beta");
    let mut mg = init(&mut good, "shardId-000000000001");
    let mut mbad = init(&mut bad, "shardId-000000000009");
    common::process_records(&mut good, &mut mg, records(0, 10)).unwrap();
    // The bad lease's batch fails: no checkpoint, no status; its attach exits 1.
    mbad.deliver_all(&records(100, 110));
    bad.send(&line(&rsmld::testkit::encode::process_records(
        records(100, 110),
        Some(0),
    )));
    assert_eq!(bad.wait(WAIT).unwrap(), 1, "{}", srv.stderr());
    assert!(mbad.stored.is_empty());
    for batch in 1..4u64 {
        common::process_records(&mut good, &mut mg, records(batch * 10, batch * 10 + 10)).unwrap();
    }
    assert_eq!(mg.last, Some(esn(39)));
    assert_eq!(finish(&mut good, &mut mg), 0, "{}", srv.stderr());
    assert!(srv.child.try_wait().unwrap().is_none(), "{}", srv.stderr());
    assert!(srv.stderr_contains("boom"), "{}", srv.stderr());
}

/// The server killed with SIGKILL: every attach exits non-zero promptly (its socket closed).
#[test]
fn a_killed_server_ends_every_attach() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, socket, out) = file_server(dir.path());
    let mut a = attach(dir.path(), &socket, "alpha");
    let mut b = attach(dir.path(), &socket, "beta");
    let mut ma = init(&mut a, "shardId-000000000001");
    let _mb = init(&mut b, "shardId-000000000002");
    common::process_records(&mut a, &mut ma, records(0, 10)).unwrap();
    srv.child.kill().unwrap();
    srv.child.wait().unwrap();
    for p in [&mut a, &mut b] {
        let code = p.wait(WAIT).unwrap();
        assert_ne!(code, 0);
        assert!(p.stderr_contains("without a status"), "{}", p.stderr());
    }
    // A new server on the same path removes the stale socket.
    let opts = file_options(&out);
    let (mut again, _) = server(
        dir.path(),
        &opts.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(
        again.stderr_contains("removing stale socket"),
        "{}",
        again.stderr()
    );
}

/// No server: attach retries for `--retry-for`, then one error line and exit 2.
#[test]
fn no_server_retries_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    let start = Instant::now();
    let mut p = Proc::spawn(&args(&[
        "attach",
        "--socket",
        socket.to_str().unwrap(),
        "--retry-for",
        "1s",
    ]));
    assert_eq!(p.wait(WAIT).unwrap(), 2);
    assert!(start.elapsed() >= Duration::from_secs(1));
    let err = p.stderr();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no rsmld serve answers on"), "{err}");
}

/// What process `p` is now: the target of /proc/PID/exe.
fn exe_of(p: &Proc) -> String {
    let link = std::fs::read_link(format!("/proc/{}/exe", p.child.id())).unwrap();
    link.to_string_lossy().into_owned()
}

/// `p`'s resident memory (VmRSS) in KiB.
fn rss_kib(p: &Proc) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Waits until attach `p` has become the waiter (`src/attach/wait.rs`, run from a memfd).
fn until_waiter(p: &Proc) {
    let deadline = Instant::now() + WAIT;
    while !exe_of(p).contains("memfd:rsmld-attach") {
        assert!(Instant::now() < deadline, "still {}", exe_of(p));
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether attach waits through the waiter on this build's targets (src/attach/build.rs builds it
/// for x86_64 and aarch64 Linux; elsewhere attach waits in-process).
const WAITER: bool = cfg!(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
));

/// Once its lease is handed over, a waiting attach is the 2 KB waiter: /proc shows
/// `rsmld-attach` from a memfd, it holds the socket and nothing else but stdio, and its
/// resident memory is a few KiB (old code: the rsmld binary, 3.6-4.5 MiB); the lease goes
/// on through it and its status (0) comes back through it.
#[test]
fn a_waiting_attach_is_the_small_waiter() {
    if !WAITER {
        eprintln!("skipped: no waiter on this target");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, socket) = server(dir.path(), &["--handler", "discard"]);
    let mut a = attach(dir.path(), &socket, "alpha");
    assert!(
        srv.stderr_contains("application \"alpha\""),
        "{}",
        srv.stderr()
    );
    until_waiter(&a);
    let pid = a.child.id();
    // The command line stays attach's, so that `ps` and `pgrep -f` still tell the daemons'
    // attaches apart by socket and properties file.
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<&str> = cmdline.trim_end_matches('\0').split('\0').collect();
    assert_eq!(args[0], common::rsmld_bin().to_str().unwrap(), "{args:?}");
    assert_eq!(args[1], "attach", "{args:?}");
    assert!(args.contains(&socket.to_str().unwrap()), "{args:?}");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim_end(), "rsmld-attach");
    // Stdio, the socket on 3, and nothing attach opened: any other descriptor is one this
    // test process left open for its children too (the harness's, the shell's).
    let link = |pid: &str, fd: &str| std::fs::read_link(format!("/proc/{pid}/fd/{fd}"));
    let socket_fd = link(&pid.to_string(), "3").unwrap();
    assert!(
        socket_fd.to_string_lossy().starts_with("socket:"),
        "{socket_fd:?}"
    );
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let fd = entry.unwrap().file_name().into_string().unwrap();
        if !["0", "1", "2", "3"].contains(&fd.as_str()) {
            let held = link(&pid.to_string(), &fd).unwrap();
            assert_eq!(
                link("self", &fd).ok(),
                Some(held.clone()),
                "the waiter holds descriptor {fd} ({held:?}), not inherited from the test"
            );
        }
    }
    let rss = rss_kib(&a);
    assert!(rss < 512, "a waiting attach holds {rss} KiB");
    let mut m = init(&mut a, "shardId-000000000001");
    common::process_records(&mut a, &mut m, records(0, 10)).unwrap();
    assert!(rss_kib(&a) < 512);
    assert_eq!(finish(&mut a, &mut m), 0, "{}", srv.stderr());
    assert_eq!(a.stderr(), "");
}

/// The lease's status reaches the daemon whichever way attach waits (`waiter`: the
/// waiter, the default; else in-process, `RSMLD_ATTACH_NO_EXEC=1`): a protocol error 3, a
/// clean end 0, and a server killed with SIGKILL exit 1 at once with one error line.
fn statuses_pass_through(waiter: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, socket) = server(dir.path(), &["--handler", "discard"]);
    let env: &[(&str, &str)] = if waiter {
        &[]
    } else {
        &[("RSMLD_ATTACH_NO_EXEC", "1")]
    };
    let mut leases: Vec<(Proc, CheckpointModel)> = ["alpha", "beta", "gamma"]
        .iter()
        .enumerate()
        .map(|(i, app)| {
            let mut p = attach_env(dir.path(), &socket, app, env);
            let m = init(&mut p, &format!("shardId-00000000000{i}"));
            (p, m)
        })
        .collect();
    for (p, m) in &mut leases {
        common::process_records(p, m, records(0, 5)).unwrap();
        if waiter {
            until_waiter(p);
        } else {
            assert_eq!(exe_of(p), common::rsmld_bin().to_string_lossy());
        }
    }
    let (broken, _) = &mut leases[0];
    broken.send("this is not a message of the protocol");
    assert_eq!(broken.wait(WAIT).unwrap(), 3, "{}", srv.stderr());
    assert_eq!(broken.stderr(), "");
    let (clean, m) = &mut leases[1];
    assert_eq!(finish(clean, m), 0, "{}", srv.stderr());
    assert_eq!(clean.stderr(), "");
    srv.child.kill().unwrap();
    srv.child.wait().unwrap();
    let (orphan, _) = &mut leases[2];
    assert_eq!(orphan.wait(WAIT).unwrap(), 1);
    assert_eq!(
        orphan.stderr(),
        "rsmld[attach] ERROR the server closed the lease without a status (did it die?)\n"
    );
}

/// Through the waiter: statuses 3 and 0 from the server, 1 and the error line when it dies.
#[test]
fn the_waiter_exits_with_the_lease_status() {
    statuses_pass_through(WAITER);
}

/// `RSMLD_ATTACH_NO_EXEC=1` (and wherever the waiter cannot be executed): attach waits
/// in-process, as the rsmld binary, with the same statuses and the same error line.
#[test]
fn the_in_process_wait_exits_with_the_lease_status() {
    statuses_pass_through(false);
}

/// Runs `sh -c script` as pid 1 of a new pid namespace whose `vm.memfd_noexec` is 2 (no
/// memfd may be executed there, Linux 6.3 and later), with `args` as its `$0 $@`; `None`
/// where that cannot be set up (not root, no unshare, an older kernel).
fn in_memfd_noexec_namespace(script: &str, args: &[String]) -> Option<std::process::Command> {
    let script = format!("echo 2 > /proc/sys/vm/memfd_noexec && {script}");
    let probe = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "sh", "-c", &script, "true"])
        .stderr(std::process::Stdio::null())
        .status();
    if rsmld::serve::fd::own_uid() != 0 || !probe.is_ok_and(|s| s.success()) {
        return None;
    }
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--pid", "--fork", "sh", "-c", &script])
        .args(args);
    Some(cmd)
}

/// Where the kernel refuses to execute a memfd (`vm.memfd_noexec = 2`), attach waits
/// in-process, silently, and the lease's status still reaches the daemon: 3 for a
/// protocol error, 0 for a clean end. Needs root and Linux 6.3; skipped otherwise.
#[test]
fn attach_waits_in_process_where_memfds_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, socket) = server(dir.path(), &["--handler", "discard"]);
    let mut argv = vec![common::rsmld_bin().to_string_lossy().into_owned()];
    argv.extend(args(&["attach", "--socket", socket.to_str().unwrap()]));
    for (shard, broken) in [
        ("shardId-000000000001", true),
        ("shardId-000000000002", false),
    ] {
        let Some(cmd) = in_memfd_noexec_namespace(r#"exec "$0" "$@""#, &argv) else {
            eprintln!("skipped: needs root, unshare and vm.memfd_noexec (Linux 6.3)");
            return;
        };
        // unshare forks the namespace's pid 1 (the attach) and exits with its status.
        let mut p = Proc::from_command(cmd);
        let mut m = init(&mut p, shard);
        common::process_records(&mut p, &mut m, records(0, 5)).unwrap();
        let unshare = p.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).unwrap();
        let attach: u32 = children.trim().parse().unwrap();
        let exe = std::fs::read_link(format!("/proc/{attach}/exe")).unwrap();
        assert_eq!(exe, common::rsmld_bin(), "the attach waits as itself");
        if broken {
            p.send("this is not a message of the protocol");
            assert_eq!(p.wait(WAIT).unwrap(), 3, "{}", srv.stderr());
        } else {
            assert_eq!(finish(&mut p, &mut m), 0, "{}", srv.stderr());
        }
        assert_eq!(p.stderr(), "", "the fallback is silent");
    }
}

/// A second server on a path where one answers refuses to start.
#[test]
fn a_second_server_on_a_live_socket_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let opts = file_options(&out);
    let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
    let (_srv, socket) = server(dir.path(), &opts);
    let mut list = vec!["serve", "--socket", socket.to_str().unwrap()];
    list.extend(&opts);
    let mut second = Proc::spawn(&args(&list));
    assert_eq!(second.wait(WAIT).unwrap(), 2);
    assert!(
        second.stderr().contains("a server already answers on"),
        "{}",
        second.stderr()
    );
}

/// Two applications with the same shard id and the same records on one server: their
/// files are apart (named `<application>.<shardId>.…`), each holding exactly its lease's
/// records, and each lease is checkpointed at its own last record.
#[test]
fn two_applications_with_one_shard_id_stay_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, socket, out) = file_server(dir.path());
    let shard = "shardId-000000000001";
    let mut a = attach(dir.path(), &socket, "alpha");
    let mut b = attach(dir.path(), &socket, "beta");
    let mut ma = init(&mut a, shard);
    let mut mb = init(&mut b, shard);
    for batch in 0..3u64 {
        common::process_records(&mut a, &mut ma, records(batch * 10, batch * 10 + 10)).unwrap();
        common::process_records(&mut b, &mut mb, records(batch * 10, batch * 10 + 5)).unwrap();
    }
    assert_eq!(ma.last, Some(esn(29)));
    assert_eq!(mb.last, Some(esn(24)));
    assert_eq!(finish(&mut a, &mut ma), 0, "{}", srv.stderr());
    assert_eq!(finish(&mut b, &mut mb), 0, "{}", srv.stderr());
    let of = |app: &str| {
        let mut got: Vec<String> = common::written(&out)
            .into_iter()
            .filter(|(name, _)| name.starts_with(&format!("{app}.{shard}.")))
            .map(|(name, v)| {
                // The item JSON says its application too.
                assert_eq!(v["application"], app, "{name}: {v}");
                v["sequenceNumber"].as_str().unwrap().to_owned()
            })
            .collect();
        got.sort();
        got
    };
    let want_a: Vec<String> = (0..30).map(seq).collect();
    let want_b: Vec<String> = (0..3).flat_map(|b| (b * 10..b * 10 + 5).map(seq)).collect();
    assert_eq!(of("alpha"), want_a);
    assert_eq!(of("beta"), want_b);
    assert_eq!(common::written(&out).len(), 45);
    // Their log lines name them apart too.
    for app in ["alpha", "beta"] {
        let name = format!("rsmld[{app}/{shard}] INFO");
        assert!(srv.stderr_contains(&name), "{name}:\n{}", srv.stderr());
    }
}

/// `--on-error skip`: the dead letters of two applications with the same shard id go to
/// files named by application, each holding only its lease's items; both leases are
/// checkpointed at their last record (a dead letter counts as done).
#[test]
fn dead_letters_are_named_by_application() {
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead");
    let dead_s = dead.to_str().unwrap().to_owned();
    let mut list = vec![
        "--handler",
        "exec",
        "--on-error",
        "skip",
        "--dead-letter",
        &dead_s,
    ];
    list.extend(common::CHECKPOINT_EVERY_BATCH);
    list.extend(["--", "/bin/sh", "-c", FAIL_SHARD9]);
    let (mut srv, socket) = server(dir.path(), &list);
    let shard = "shardId-000000000009";
    let mut a = attach(dir.path(), &socket, "alpha");
    let mut b = attach(dir.path(), &socket, "beta");
    let mut ma = init(&mut a, shard);
    let mut mb = init(&mut b, shard);
    common::process_records(&mut a, &mut ma, records(0, 6)).unwrap();
    common::process_records(&mut b, &mut mb, records(0, 4)).unwrap();
    assert_eq!(ma.last, Some(esn(5)));
    assert_eq!(mb.last, Some(esn(3)));
    assert_eq!(finish(&mut a, &mut ma), 0, "{}", srv.stderr());
    assert_eq!(finish(&mut b, &mut mb), 0, "{}", srv.stderr());
    let lines = |app: &str| {
        let mut n = 0;
        for entry in std::fs::read_dir(&dead).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with(&format!("{app}.{shard}.")) {
                for l in std::fs::read_to_string(&path).unwrap().lines() {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    assert_eq!(v["item"]["application"], app, "{name}: {l}");
                    n += 1;
                }
            }
        }
        n
    };
    assert_eq!((lines("alpha"), lines("beta")), (6, 4));
}

/// An attach as `uid` (the test runs as root), without a properties file.
fn attach_as(socket: &Path, uid: u32) -> Proc {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(common::rsmld_bin());
    cmd.args(["attach", "--socket", socket.to_str().unwrap()]);
    cmd.uid(uid).gid(uid);
    Proc::from_command(cmd)
}

/// Peer credentials: a peer of another user is refused (its attach exits 2, nothing of
/// its lease runs) even when the socket's mode would let it connect; `--allow-uid`
/// admits it. Needs root (to run the attach as another user); skipped otherwise.
#[test]
fn another_users_attach_is_refused_unless_allowed() {
    if rsmld::serve::fd::own_uid() != 0 {
        eprintln!("skipped: needs root to start an attach as another user");
        return;
    }
    const NOBODY: u32 = 65534;
    use std::os::unix::fs::PermissionsExt;
    for allow in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        // Let the other user reach the socket: the credentials check is what is tested.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let mut opts = file_options(&out);
        if allow {
            opts.extend(args(&["--allow-uid", &NOBODY.to_string()]));
        }
        let (mut srv, socket) = server(
            dir.path(),
            &opts.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        let mut p = attach_as(&socket, NOBODY);
        if allow {
            let mut m = init(&mut p, "shardId-000000000001");
            common::process_records(&mut p, &mut m, records(0, 3)).unwrap();
            assert_eq!(m.last, Some(esn(2)));
            assert_eq!(finish(&mut p, &mut m), 0, "{}", srv.stderr());
        } else {
            p.send(&common::init_line_at(
                "shardId-000000000001",
                "TRIM_HORIZON",
            ));
            assert_eq!(p.wait(WAIT).unwrap(), 2, "{}\n{}", srv.stderr(), p.stderr());
            assert!(
                srv.stderr_contains("refused an attach: peer uid 65534"),
                "{}",
                srv.stderr()
            );
            assert!(p.recv(Duration::from_millis(200)).is_err());
        }
    }
}

/// A peer that connects and never says hello is refused after the hello timeout (10 s),
/// with status 2, and holds nothing: the server serves the next attach.
#[test]
fn a_silent_peer_is_refused_after_the_hello_timeout() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, socket, _out) = file_server(dir.path());
    let mut silent = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    silent.set_read_timeout(Some(WAIT)).unwrap();
    let mut status = [0u8; 1];
    assert_eq!(silent.read(&mut status).unwrap(), 1, "{}", srv.stderr());
    assert_eq!(status[0], 2);
    assert!(srv.stderr_contains("refused an attach"), "{}", srv.stderr());
    let mut p = attach(dir.path(), &socket, "alpha");
    let mut m = init(&mut p, "shardId-000000000001");
    common::process_records(&mut p, &mut m, records(0, 3)).unwrap();
    assert_eq!(finish(&mut p, &mut m), 0, "{}", srv.stderr());
}

fn sigterm(p: &Proc) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
}

/// SIGTERM: the socket goes (a new attach finds no server), the attached lease goes on
/// under its daemon's control to its last checkpoint and ends, then the server exits 0.
#[test]
fn sigterm_lets_attached_leases_end_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, socket, out) = file_server(dir.path());
    let mut a = attach(dir.path(), &socket, "alpha");
    let mut m = init(&mut a, "shardId-000000000001");
    common::process_records(&mut a, &mut m, records(0, 10)).unwrap();
    sigterm(&srv);
    assert!(
        srv.stderr_contains("stopping: no new attaches"),
        "{}",
        srv.stderr()
    );
    assert!(!socket.exists());
    let mut late = Proc::spawn(&args(&[
        "attach",
        "--socket",
        socket.to_str().unwrap(),
        "--retry-for",
        "0s",
    ]));
    assert_eq!(late.wait(WAIT).unwrap(), 2);
    common::process_records(&mut a, &mut m, records(10, 20)).unwrap();
    assert_eq!(m.last, Some(esn(19)));
    assert!(srv.child.try_wait().unwrap().is_none(), "{}", srv.stderr());
    assert_eq!(finish(&mut a, &mut m), 0, "{}", srv.stderr());
    assert_eq!(srv.wait(WAIT).unwrap(), 0, "{}", srv.stderr());
    assert_eq!(written(&out).len(), 20);
}

/// SIGTERM with a lease that does not end within `--grace`: the server exits 1 after it,
/// and that attach exits non-zero (its socket closed without a status).
#[test]
fn sigterm_grace_ends_and_leaves_the_lease_to_its_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, socket, _out) = file_server_with(dir.path(), &["--grace", "1s"]);
    let mut a = attach(dir.path(), &socket, "alpha");
    let mut m = init(&mut a, "shardId-000000000001");
    common::process_records(&mut a, &mut m, records(0, 5)).unwrap();
    sigterm(&srv);
    assert_eq!(srv.wait(WAIT).unwrap(), 1, "{}", srv.stderr());
    assert!(srv.stderr().contains("still attached"), "{}", srv.stderr());
    assert_eq!(a.wait(WAIT).unwrap(), 1, "{}", a.stderr());
    assert_eq!(m.last, Some(esn(4)));
}

/// `rsmld serve --help` is clap's: serve's own flags and every child-mode option (old
/// code: serve's flags were split by hand and `--help` failed for want of `--socket`).
#[test]
fn serve_help_lists_its_own_flags_and_child_modes() {
    let out = std::process::Command::new(common::rsmld_bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--socket <PATH>",
        "--allow-uid <UID>",
        "--grace <DURATION>",
        "--metrics-listen <ADDR>",
        "--workers",
        "--handler",
        "--properties",
        "--on-error",
        "--log-format",
        "--output",
    ] {
        assert!(help.contains(flag), "{flag} not in:\n{help}");
    }
    // Without --socket: clap's usage error, exit 2.
    let mut p = Proc::spawn(&args(&["serve", "--handler", "discard"]));
    assert_eq!(p.wait(WAIT).unwrap(), 2);
    assert!(p.stderr().contains("--socket <PATH>"), "{}", p.stderr());
    // A bad serve value: exit 2, naming the flag.
    let mut p = Proc::spawn(&args(&[
        "serve",
        "--socket",
        "/nonexistent/s",
        "--grace",
        "soon",
        "--handler",
        "discard",
    ]));
    assert_eq!(p.wait(WAIT).unwrap(), 2);
    assert!(p.stderr().contains("--grace"), "{}", p.stderr());
}

/// Child-mode options from `--properties` in serve mode, serve's own on the command line.
#[test]
fn serve_takes_child_mode_options_from_properties() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let props = dir.path().join("server.properties");
    std::fs::write(
        &props,
        format!(
            "rsmld.handler = file\nrsmld.output = {}\nrsmld.checkpoint_interval = 0s\n",
            out.display()
        ),
    )
    .unwrap();
    let (mut srv, socket) = server(dir.path(), &["--properties", props.to_str().unwrap()]);
    let mut a = attach(dir.path(), &socket, "alpha");
    let mut m = init(&mut a, "shardId-000000000001");
    common::process_records(&mut a, &mut m, records(0, 10)).unwrap();
    assert_eq!(finish(&mut a, &mut m), 0, "{}", srv.stderr());
    assert_eq!(written(&out).len(), 10, "{}", srv.stderr());
}

/// Slow items for shard 7 (0.3 s each), quick ones for the others.
const SLOW_SHARD7: &str = r#"n=0; while read -r l; do n=$((n+1)); case "$l" in *shardId-000000000007*) sleep 0.3;; esac; echo "ok $n"; done"#;

/// An attach killed (SIGKILL) mid-batch while its daemon (this test) keeps the pipes open:
/// the server notices on the attach's socket, ends that lease (nothing checkpointed past
/// processed work), and serves another lease. Old code: the lease ran on until the pipes
/// closed.
#[test]
fn a_killed_attach_ends_its_lease_even_with_the_pipes_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut list = vec!["--handler", "exec", "--workers", "2"];
    list.extend(common::CHECKPOINT_EVERY_BATCH);
    list.extend(["--", "/bin/sh", "-c", SLOW_SHARD7]);
    let (mut srv, socket) = server(dir.path(), &list);
    let mut slow = attach(dir.path(), &socket, "alpha");
    let mut ms = init(&mut slow, "shardId-000000000007");
    ms.deliver_all(&records(0, 40));
    slow.send(&line(&rsmld::testkit::encode::process_records(
        records(0, 40),
        Some(0),
    )));
    std::thread::sleep(Duration::from_millis(500));
    slow.child.kill().unwrap();
    slow.child.wait().unwrap();
    // The pipes stay open: `slow` still holds them.
    let deadline = Instant::now() + WAIT;
    while !srv.stderr_contains("the attach went away") {
        assert!(Instant::now() < deadline, "{}", srv.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = srv.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("alpha/shardId-000000000007") && l.contains("lease ended (Failed)")),
        "{log}"
    );
    // No checkpoint reached the daemon for the abandoned batch.
    assert!(ms.stored.is_empty(), "{:?}", ms.stored);
    let mut b = attach(dir.path(), &socket, "beta");
    let mut mb = init(&mut b, "shardId-000000000001");
    common::process_records(&mut b, &mut mb, records(100, 110)).unwrap();
    assert_eq!(mb.last, Some(esn(109)));
    assert_eq!(finish(&mut b, &mut mb), 0, "{}", srv.stderr());
    assert!(srv.child.try_wait().unwrap().is_none(), "{}", srv.stderr());
    drop(slow);
}

/// Each exec child writes its pid on start and a mark when its stdin closes.
const MARKING_CHILD: &str = r#"echo $$ > "$MARKS/pid.$$"; n=0; while read -r l; do n=$((n+1)); echo "ok $n"; done; touch "$MARKS/closed.$$""#;

fn pids_and_closed(marks: &Path) -> (Vec<i32>, usize) {
    let mut pids = Vec::new();
    let mut closed = 0;
    for e in std::fs::read_dir(marks).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if let Some(pid) = name.strip_prefix("pid.") {
            pids.push(pid.parse().unwrap());
        } else if name.starts_with("closed.") {
            closed += 1;
        }
    }
    (pids, closed)
}

/// A server whose two exec children mark their start and their stdin's close in
/// `dir/marks` (see [`pids_and_closed`]), with `--grace GRACE`: the server, its socket and
/// the marks directory.
fn marking_server(dir: &Path, grace: &str) -> (Proc, PathBuf, PathBuf) {
    let marks = dir.join("marks");
    std::fs::create_dir(&marks).unwrap();
    let socket = dir.join("rsmld.sock");
    let mut list = args(&["serve", "--socket", socket.to_str().unwrap()]);
    list.extend(args(&[
        "--handler",
        "exec",
        "--workers",
        "2",
        "--grace",
        grace,
    ]));
    list.extend(args(&common::CHECKPOINT_EVERY_BATCH));
    list.extend(args(&["--", "/bin/sh", "-c", MARKING_CHILD]));
    let mut srv = Proc::spawn_env(&list, &[("MARKS", marks.to_str().unwrap())]);
    let deadline = Instant::now() + WAIT;
    while !srv.stderr_contains("serving leases on") {
        assert!(Instant::now() < deadline, "{}", srv.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    (srv, socket, marks)
}

/// SIGTERM, the lease ending within the grace: the server shuts the runtime down, so
/// every exec child sees its stdin close (and exits) before the server exits. Old code:
/// the children were killed by the exit sweep, never closed.
#[test]
fn sigterm_shuts_the_handlers_down_before_exit() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, socket, marks) = marking_server(dir.path(), "30s");
    let mut a = attach(dir.path(), &socket, "alpha");
    let mut m = init(&mut a, "shardId-000000000001");
    common::process_records(&mut a, &mut m, records(0, 20)).unwrap();
    sigterm(&srv);
    assert_eq!(finish(&mut a, &mut m), 0, "{}", srv.stderr());
    assert_eq!(srv.wait(WAIT).unwrap(), 0, "{}", srv.stderr());
    let (pids, closed) = pids_and_closed(&marks);
    assert_eq!(pids.len(), 2, "{}", srv.stderr());
    assert_eq!(
        closed,
        2,
        "children not closed before exit:\n{}",
        srv.stderr()
    );
    assert!(pids.iter().all(|&p| !common::alive(p)), "{pids:?}");
}

/// SIGTERM with a lease still attached after `--grace`: the lease is abandoned (its
/// attach exits 1), then the runtime shut down: the children close, the server exits 1.
#[test]
fn sigterm_after_grace_abandons_then_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, socket, marks) = marking_server(dir.path(), "1s");
    let mut a = attach(dir.path(), &socket, "alpha");
    let mut m = init(&mut a, "shardId-000000000001");
    common::process_records(&mut a, &mut m, records(0, 20)).unwrap();
    sigterm(&srv);
    assert_eq!(srv.wait(WAIT).unwrap(), 1, "{}", srv.stderr());
    assert_eq!(a.wait(WAIT).unwrap(), 1, "{}", a.stderr());
    assert!(srv.stderr().contains("abandoning"), "{}", srv.stderr());
    let (pids, closed) = pids_and_closed(&marks);
    assert_eq!((pids.len(), closed), (2, 2), "{}", srv.stderr());
    assert!(pids.iter().all(|&p| !common::alive(p)), "{pids:?}");
    assert_eq!(m.last, Some(esn(19)));
}

/// The hello carries the stream (`streamName`); the server logs it with the application.
#[test]
fn the_stream_name_reaches_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, socket, _out) = file_server(dir.path());
    let props = dir.path().join("orders.properties");
    std::fs::write(
        &props,
        "applicationName = orders\nstreamName = order-events\nexecutableName = rsmld attach\n",
    )
    .unwrap();
    let mut a = Proc::spawn(&args(&[
        "attach",
        "--socket",
        socket.to_str().unwrap(),
        "--properties",
        props.to_str().unwrap(),
    ]));
    let mut m = init(&mut a, "shardId-000000000001");
    common::process_records(&mut a, &mut m, records(0, 3)).unwrap();
    assert_eq!(finish(&mut a, &mut m), 0, "{}", srv.stderr());
    let log = srv.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("\"orders\"") && l.contains("\"order-events\"")),
        "{log}"
    );
}

/// A shard attached twice at once (re-acquired while the first attachment's work is
/// pending): two leases, each with its own files; both complete and checkpoint their own
/// last record. Old code: one LeaseId, so the file handler wrote both into one file.
#[test]
fn two_attachments_of_one_shard_keep_their_files_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, socket, out) = file_server(dir.path());
    let mut a = attach(dir.path(), &socket, "alpha");
    let mut b = attach(dir.path(), &socket, "alpha");
    let mut ma = init(&mut a, "shardId-000000000001");
    let mut mb = init(&mut b, "shardId-000000000001");
    for batch in 0..3u64 {
        let (lo, hi) = (batch * 10, batch * 10 + 10);
        common::process_records(&mut a, &mut ma, records(lo, hi)).unwrap();
        common::process_records(&mut b, &mut mb, records(1000 + lo, 1000 + hi)).unwrap();
    }
    assert_eq!(finish(&mut a, &mut ma), 0, "{}", srv.stderr());
    common::process_records(&mut b, &mut mb, records(1030, 1040)).unwrap();
    assert_eq!(finish(&mut b, &mut mb), 0, "{}", srv.stderr());
    assert_eq!(ma.last, Some(esn(29)));
    assert_eq!(mb.last, Some(esn(1039)));
    let mut by_file: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (file, v) in common::written(&out) {
        let seq = v["sequenceNumber"].as_str().unwrap().to_owned();
        by_file.entry(file.to_string()).or_default().push(seq);
    }
    let mut all: Vec<String> = by_file.values().flatten().cloned().collect();
    all.sort();
    let mut want: Vec<String> = (0..30).chain(1000..1040).map(seq).collect();
    want.sort();
    assert_eq!(all, want);
    let low = seq(1000);
    assert_eq!(low.len(), seq(0).len(), "sequence numbers compare as text");
    for (file, seqs) in &by_file {
        assert!(
            seqs.iter().all(|s| *s < low) || seqs.iter().all(|s| *s >= low),
            "{file} mixes both attachments: {seqs:?}"
        );
    }
}

/// A server's log: in json, the lines of lease events carry application and shard, and each
/// lease has progress lines (old code: no application field, no progress lines in serve
/// mode).
#[test]
fn json_log_lines_name_the_application_and_shard_of_each_lease() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, socket, _out) = file_server_with(
        dir.path(),
        &["--log-format", "json", "--progress-interval", "200ms"],
    );
    let mut a = attach(dir.path(), &socket, "alpha");
    let mut b = attach(dir.path(), &socket, "beta");
    let mut ma = init(&mut a, "shardId-000000000001");
    let mut mb = init(&mut b, "shardId-000000000002");
    common::process_records(&mut a, &mut ma, records(0, 10)).unwrap();
    common::process_records(&mut b, &mut mb, records(10, 20)).unwrap();
    let deadline = Instant::now() + WAIT;
    let progress_of = |log: &str, app: &str| {
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| v["event"] == "Progress" && v["application"] == app)
    };
    while !(progress_of(&srv.stderr(), "alpha") && progress_of(&srv.stderr(), "beta")) {
        assert!(Instant::now() < deadline, "{}", srv.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(finish(&mut a, &mut ma), 0, "{}", srv.stderr());
    assert_eq!(finish(&mut b, &mut mb), 0, "{}", srv.stderr());
    let log = srv.stderr();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for (app, shard) in [
        ("alpha", "shardId-000000000001"),
        ("beta", "shardId-000000000002"),
    ] {
        for event in ["LeaseStarted", "LeaseEnded", "Progress"] {
            assert!(
                lines.iter().any(|v| v["event"] == event
                    && v["application"] == app
                    && v["shard"] == shard
                    && v["lease"] == format!("{app}/{shard}")),
                "no {event} line of {app}/{shard}:\n{log}"
            );
        }
    }
}

/// A server's text log: `rsmld[application/shard] LEVEL message`, progress lines included.
#[test]
fn text_log_lines_name_the_lease_and_have_progress_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, socket, _out) = file_server_with(dir.path(), &["--progress-interval", "200ms"]);
    let mut a = attach(dir.path(), &socket, "alpha");
    let mut ma = init(&mut a, "shardId-000000000001");
    common::process_records(&mut a, &mut ma, records(0, 10)).unwrap();
    let deadline = Instant::now() + WAIT;
    while !srv.stderr_contains("rsmld[alpha/shardId-000000000001] INFO progress: 10 items") {
        assert!(Instant::now() < deadline, "{}", srv.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(finish(&mut a, &mut ma), 0, "{}", srv.stderr());
    let log = srv.stderr();
    assert!(
        log.lines()
            .any(|l| l.starts_with("rsmld[alpha/shardId-000000000001] INFO initialize")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("rsmld[-] INFO serving leases on")),
        "{log}"
    );
}

/// A server (one worker, `--item-timeout 1s`, the hidden delay wrapper sleeping up to 10 s
/// per item with no interrupter) and an attach whose 20 records are sent: the worker will
/// be lost. The server, its socket, the attach and its daemon model.
fn losing_a_worker(dir: &Path) -> (Proc, PathBuf, Proc, CheckpointModel) {
    let mut list = vec!["--handler", "discard", "--workers", "1"];
    list.extend(["--item-timeout", "1s", "--debug-delay-ms", "10000"]);
    list.extend(common::CHECKPOINT_EVERY_BATCH);
    let (srv, socket) = server(dir, &list);
    let mut a = attach(dir, &socket, "alpha");
    let mut model = init(&mut a, "shardId-000000000001");
    model.deliver_all(&records(0, 20));
    a.send(&line(&rsmld::testkit::encode::process_records(
        records(0, 20),
        Some(0),
    )));
    (srv, socket, a, model)
}

/// The lease failed (its attach exits 1, nothing checkpointed) and so did the server.
fn assert_lease_and_server_failed(srv: &mut Proc, a: &mut Proc, model: &CheckpointModel) {
    let wait = Duration::from_secs(60);
    assert_eq!(a.wait(wait).unwrap(), 1, "{}", srv.stderr());
    assert!(model.stored.is_empty(), "checkpointed {:?}", model.stored);
    assert_eq!(srv.wait(wait).unwrap(), 1, "{}", srv.stderr());
}

/// A worker lost to a call that outlives `--item-timeout` and cannot be interrupted (the
/// hidden delay wrapper sleeps, with no interrupter): the attached lease fails (its attach
/// exits 1, nothing checkpointed) and the server stops itself with exit 1, so that its
/// supervisor restarts it, rather than failing every later lease routed to that worker.
#[test]
fn a_lost_worker_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, socket, mut a, model) = losing_a_worker(dir.path());
    assert_lease_and_server_failed(&mut srv, &mut a, &model);
    assert!(srv.stderr_contains("worker(s) lost"), "{}", srv.stderr());
    assert!(!socket.exists(), "socket left behind");
}

/// `--metrics-dir` on a server: one file per lease for node_exporter's textfile collector,
/// as in child mode (named by application and shard, counting the lease's records), gone
/// once the lease ends; with `--metrics-listen` too, a start-up error (each retires ended
/// leases once shown: one reader only).
#[test]
fn a_server_writes_a_metrics_file_per_lease() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics");
    std::fs::create_dir(&metrics).unwrap();
    let mut list = vec!["--handler", "discard", "--metrics-interval", "0.2s"];
    list.extend(["--metrics-dir", metrics.to_str().unwrap()]);
    list.extend(common::CHECKPOINT_EVERY_BATCH);
    let (mut srv, socket) = server(dir.path(), &list);
    let mut a = attach(dir.path(), &socket, "alpha");
    let mut model = init(&mut a, "shardId-000000000001");
    common::process_records(&mut a, &mut model, records(0, 12)).unwrap();
    let file = metrics.join("rsmld-alpha-shardId-000000000001.prom");
    let want = "rsmld_records_total{application=\"alpha\",shard=\"shardId-000000000001\"} 12";
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(&file).is_ok_and(|t| t.contains(want)) {
        assert!(Instant::now() < deadline, "no {want} in {}", file.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(finish(&mut a, &mut model), 0, "{}", srv.stderr());
    let deadline = Instant::now() + WAIT;
    while file.exists() {
        assert!(
            Instant::now() < deadline,
            "{} outlived its lease",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sigterm(&srv);
    assert_eq!(srv.wait(WAIT).unwrap(), 0, "{}", srv.stderr());

    let out = std::process::Command::new(common::rsmld_bin())
        .args(["serve", "--socket", socket.to_str().unwrap()])
        .args(["--metrics-listen", "127.0.0.1:0", "--handler", "discard"])
        .args(["--metrics-dir", metrics.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("choose one"), "{err}");
}

/// The server enlarges each lease's input pipe as child mode enlarges its stdin (to 4 MiB,
/// or the system's pipe-max-size), so a multi-MiB line crosses in a few writes.
#[test]
fn the_server_enlarges_each_lease_input_pipe() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, socket) = server(dir.path(), &["--handler", "discard"]);
    let mut a = attach(dir.path(), &socket, "alpha");
    let mut model = init(&mut a, "shardId-000000000001");
    let max: i32 = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .map_or(1 << 20, |s| s.trim().parse().unwrap());
    let fd = a.stdin.as_ref().unwrap().as_raw_fd();
    // SAFETY: F_GETPIPE_SZ on our own open pipe end (this test holds it).
    let size = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    assert_eq!(size, max.min(4 << 20), "{}", srv.stderr());
    assert_eq!(finish(&mut a, &mut model), 0, "{}", srv.stderr());
    sigterm(&srv);
    assert_eq!(srv.wait(WAIT).unwrap(), 0, "{}", srv.stderr());
}

/// A worker lost during the grace period (SIGTERM already in, the health check stopped):
/// the exit is still 1, not the 0 of a clean stop.
#[test]
fn a_worker_lost_during_the_grace_period_still_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, _socket, mut a, model) = losing_a_worker(dir.path());
    // Before the watchdog's 1 s: the stop is under way when the worker is lost.
    sigterm(&srv);
    assert_lease_and_server_failed(&mut srv, &mut a, &model);
    assert!(srv.stderr_contains("worker(s)"), "{}", srv.stderr());
}

/// The names of `pid`'s threads.
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let mut names: Vec<String> = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim_end().to_owned())
        .collect();
    names.sort();
    names
}

/// The server's mapper threads carry their own name, not that of the lease thread that
/// first mapped a line (which made `top -H` show them as leases).
#[test]
fn the_servers_mapper_threads_are_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, _socket) = server(dir.path(), &["--handler", "discard", "--workers", "2"]);
    let names = thread_names(srv.child.id());
    let mappers = names.iter().filter(|n| n.starts_with("rsmld-map-")).count();
    assert!(mappers >= 1, "{names:?}");
    assert!(!names.iter().any(|n| n == "rsmld-lease"), "{names:?}");
}
