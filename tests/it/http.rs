//! `rsmld serve --metrics-listen`: a real server with leases attached through real `rsmld
//! attach` processes (driven by the daemon model, as in `serve.rs`), read over HTTP as
//! Prometheus, a script and a browser read it: `/metrics` parsed by the Prometheus Python
//! client's parser (not rsmld's code), `/status.json`, and the status page rendered by a
//! headless Chromium.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rsmld::codec::message::Action;

use crate::common::{self, args, line, record, run_action, CheckpointModel, Proc};

const WAIT: Duration = Duration::from_secs(60);

const ALPHA_SHARD: &str = "shardId-000000000001";
const BETA_SHARD: &str = "shardId-000000000002";

/// A server with the file handler (checkpoint after every batch) and `--metrics-listen
/// 127.0.0.1:0`, once it serves: the server, its socket, the metrics address it logged.
fn metrics_server(dir: &Path, extra: &[&str]) -> (Proc, PathBuf, SocketAddr) {
    let socket = dir.join("rsmld.sock");
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    let mut list = vec![
        "serve",
        "--socket",
        socket.to_str().unwrap(),
        "--metrics-listen",
        "127.0.0.1:0",
        "--handler",
        "file",
        "--output",
        out.to_str().unwrap(),
    ];
    list.extend(common::CHECKPOINT_EVERY_BATCH);
    list.extend(extra);
    let mut p = Proc::spawn(&args(&list));
    let deadline = Instant::now() + WAIT;
    while !p.stderr().contains("serving leases on") {
        assert!(Instant::now() < deadline, "no start:\n{}", p.stderr());
        assert!(
            p.child.try_wait().unwrap().is_none(),
            "exited:\n{}",
            p.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = p.stderr();
    let addr = err
        .split("metrics and status page on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address logged:\n{err}"));
    (p, socket, addr)
}

/// An attach for `application`, initialized for `shard` at TRIM_HORIZON.
fn lease(dir: &Path, socket: &Path, application: &str, shard: &str) -> (Proc, CheckpointModel) {
    let props = dir.join(format!("{application}.properties"));
    std::fs::write(
        &props,
        format!("applicationName = {application}\nexecutableName = rsmld attach\n"),
    )
    .unwrap();
    let mut p = Proc::spawn(&args(&[
        "attach",
        "--socket",
        socket.to_str().unwrap(),
        "--properties",
        props.to_str().unwrap(),
    ]));
    let mut model = CheckpointModel::default();
    model.initialize(Some("TRIM_HORIZON"), Some(0));
    let l = common::init_line_at(shard, "TRIM_HORIZON");
    run_action(&mut p, &mut model, &l, Action::Initialize).unwrap();
    (p, model)
}

/// One `processRecords` of records `from..to`, `lag` ms behind, answered (and, with a
/// checkpoint after every batch, checkpointed).
fn batch(p: &mut Proc, model: &mut CheckpointModel, from: u64, to: u64, lag: i64) {
    let records: Vec<_> = (from..to).map(|i| record(i, &format!("k{i}"))).collect();
    model.deliver_all(&records);
    let l = line(&rsmld::testkit::encode::process_records(records, Some(lag)));
    run_action(p, model, &l, Action::ProcessRecords).unwrap();
}

/// `GET path` over a fresh connection: status code, body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head[9..12].parse().unwrap(), body.to_owned())
}

fn status(addr: SocketAddr) -> serde_json::Value {
    let (code, body) = get(addr, "/status.json");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The per-lease samples of a scrape as the Prometheus Python client read it:
/// (sample name, application, shard, outcome) -> value.
type Samples = BTreeMap<(String, String, String, String), f64>;

fn lease_samples(families: &[serde_json::Value]) -> Samples {
    let mut out = Samples::new();
    for f in families {
        for s in f["samples"].as_array().unwrap() {
            let label = |k: &str| s["labels"][k].as_str().unwrap_or("").to_owned();
            if s["labels"].get("shard").is_none() {
                continue;
            }
            out.insert(
                (
                    s["name"].as_str().unwrap().to_owned(),
                    label("application"),
                    label("shard"),
                    label("outcome"),
                ),
                s["value"].as_f64().unwrap(),
            );
        }
    }
    out
}

fn sample(samples: &Samples, name: &str, app: &str, shard: &str, outcome: &str) -> f64 {
    let key = (name.into(), app.into(), shard.into(), outcome.into());
    *samples
        .get(&key)
        .unwrap_or_else(|| panic!("no sample {key:?} in {samples:#?}"))
}

fn lease_row<'a>(status: &'a serde_json::Value, app: &str, shard: &str) -> &'a serde_json::Value {
    status["leases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["application"] == app && l["shard"] == shard)
        .unwrap_or_else(|| panic!("no lease {app}/{shard} in {status:#}"))
}

/// Two leases (two applications) on one server: `/metrics`, read by the Prometheus Python
/// client, counts per application and shard exactly the records, items and checkpoints the
/// daemon model put and saw stored, and the lag it said; `/status.json` shows the same;
/// an ended lease shows how it ended.
#[test]
fn metrics_and_status_count_what_two_leases_were_given() {
    let Some(python) = rsmld::testkit::tools::metrics_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, socket, addr) = metrics_server(dir.path(), &[]);
    let (mut a, mut ma) = lease(dir.path(), &socket, "alpha", ALPHA_SHARD);
    let (mut b, mut mb) = lease(dir.path(), &socket, "beta", BETA_SHARD);
    for i in 0..3u64 {
        batch(&mut a, &mut ma, i * 10, i * 10 + 10, 1500 + i as i64);
        if i < 2 {
            batch(&mut b, &mut mb, 1000 + i * 7, 1000 + i * 7 + 7, 90_000);
        }
    }
    // Every batch was answered after its checkpoint: every item completed, every count
    // final (the scrape reads what the lease loop counted before it answered).
    let (code, text) = get(addr, "/metrics");
    assert_eq!(code, 200);
    let s = lease_samples(&rsmld::testkit::tools::prom_parse(&python, &text));
    let want = [
        ("alpha", ALPHA_SHARD, 30.0, ma.stored.len(), 1502.0),
        ("beta", BETA_SHARD, 14.0, mb.stored.len(), 90_000.0),
    ];
    for (app, shard, records, stored, lag) in want {
        assert!(stored > 0, "{app}: no checkpoint stored");
        let at = |name: &str| sample(&s, name, app, shard, "");
        assert_eq!(at("rsmld_records_total"), records, "{app}\n{text}");
        assert_eq!(at("rsmld_items_received_total"), records, "{app}");
        assert_eq!(at("rsmld_items_total"), records, "{app}");
        assert_eq!(at("rsmld_in_flight_items"), 0.0, "{app}");
        assert_eq!(at("rsmld_millis_behind_latest"), lag, "{app}");
        assert_eq!(at("rsmld_item_failures_total"), 0.0, "{app}");
        assert_eq!(
            sample(&s, "rsmld_checkpoints_total", app, shard, "stored"),
            stored as f64,
            "{app}"
        );
        assert!(
            at("rsmld_last_checkpoint_timestamp_seconds") > 1.6e9,
            "{app}"
        );
        assert!(
            at("rsmld_handler_batch_duration_seconds_count") >= 1.0,
            "{app}"
        );
    }
    assert!(text.contains("\nrsmld_leases_attached 2\n"), "{text}");

    let st = status(addr);
    assert_eq!(st["leases_attached"], 2, "{st:#}");
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    for (app, shard, records, stored, lag) in want {
        let l = lease_row(&st, app, shard);
        assert_eq!(l["state"], "running", "{l:#}");
        assert_eq!(l["end"], serde_json::Value::Null);
        assert_eq!(l["records"].as_f64(), Some(records), "{l:#}");
        assert_eq!(l["items"].as_f64(), Some(records), "{l:#}");
        assert_eq!(l["checkpoints"].as_u64(), Some(stored as u64));
        assert_eq!(l["millis_behind_latest"].as_f64(), Some(lag));
        assert_eq!(l["in_flight_items"], 0);
        let age = l["last_checkpoint_age_seconds"].as_f64().unwrap();
        assert!((0.0..WAIT.as_secs_f64() * 2.0).contains(&age), "{age}");
    }

    // alpha ends (leaseLost, then EOF): shown as ended, how, with its final counts; beta
    // runs on.
    common::lease_lost(&mut a, &mut ma).unwrap();
    a.close_stdin();
    assert_eq!(a.wait(WAIT).unwrap(), 0, "{}", srv.stderr());
    let deadline = Instant::now() + WAIT;
    let st = loop {
        let st = status(addr);
        if st["leases_attached"] == 1 {
            break st;
        }
        assert!(Instant::now() < deadline, "alpha never ended: {st:#}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let l = lease_row(&st, "alpha", ALPHA_SHARD);
    assert_eq!(l["state"], "ended", "{l:#}");
    assert_eq!(l["end"], "lease_lost", "{l:#}");
    assert_eq!(l["items"], 30);
    assert_eq!(lease_row(&st, "beta", BETA_SHARD)["state"], "running");
    // The scrape shows the ended lease once; the status page still does after it.
    assert!(get(addr, "/metrics").1.contains("application=\"alpha\""));
    assert!(!get(addr, "/metrics").1.contains("application=\"alpha\""));
    assert_eq!(
        lease_row(&status(addr), "alpha", ALPHA_SHARD)["state"],
        "ended"
    );
    assert_eq!(srv.child.try_wait().unwrap(), None);
    // Never a byte on the server's stdout.
    assert!(srv.lines.try_recv().is_err(), "the server wrote to stdout");
}

/// A metrics address that cannot be bound is a start-up error: exit 2, one line, and no
/// socket left behind; so is one that is not HOST:PORT.
#[test]
fn a_metrics_address_that_cannot_be_used_fails_start_up() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("rsmld.sock");
    for (value, says) in [
        (addr.as_str(), "cannot listen"),
        // clap's usage error, as for every bad flag value: one error line and its hint.
        ("nowhere", "invalid socket address"),
    ] {
        let out = Command::new(common::rsmld_bin())
            .args(["serve", "--socket", socket.to_str().unwrap()])
            .args(["--metrics-listen", value, "--handler", "discard"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {err}");
        let errors: Vec<&str> = err
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
            .collect();
        assert_eq!(errors.len(), 1, "{value}: {err}");
        assert!(
            errors[0].contains("--metrics-listen") && errors[0].contains(says),
            "{err}"
        );
        assert!(out.stdout.is_empty());
        assert!(!socket.exists(), "socket left behind");
    }
}

/// Chromium from the Debian package (scripts/install-browser.sh): skipped with a notice
/// when missing, except under CI (`CI=true`), where it must be there.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let message = "chromium not found on PATH: run scripts/install-browser.sh \
                       (the status page test renders the page in it)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("skipping: {message}");
    }
    found
}

/// Runs headless Chromium on `url` with `what` (`--dump-dom`, `--screenshot=..`, and how
/// long to let the page run: `--virtual-time-budget=MS` of the page's virtual time, in
/// which timers fire at once but fetches take real time, or `--timeout=MS` of real time);
/// its stdout.
fn headless(chromium: &Path, url: &str, what: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(what)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = reader.join().unwrap();
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    assert!(child.wait().unwrap().success(), "chromium failed:\n{err}");
    out
}

/// The rows the page rendered: (data-application, data-shard) -> (data-state, text of the
/// `items` cell).
fn rendered_rows(dom: &str) -> BTreeMap<(String, String), (String, String)> {
    let attr = |tag: &str, name: &str| -> String {
        let key = format!("{name}=\"");
        tag.split(&key)
            .nth(1)
            .and_then(|v| v.split('"').next())
            .unwrap_or("")
            .to_owned()
    };
    let mut rows = BTreeMap::new();
    for part in dom.split("<tr ").skip(1) {
        let Some((tag, rest)) = part.split_once('>') else {
            continue;
        };
        if !tag.contains("data-shard=") {
            continue;
        }
        let row = rest.split("</tr>").next().unwrap();
        let items = row
            .split("class=\"items\"")
            .nth(1)
            .and_then(|r| r.split_once('>'))
            .and_then(|(_, r)| r.split("</td>").next())
            .unwrap_or("")
            .to_owned();
        rows.insert(
            (attr(tag, "data-application"), attr(tag, "data-shard")),
            (attr(tag, "data-state"), items),
        );
    }
    rows
}

/// The status page in a real headless browser: its JS fetched `/status.json` and drew
/// both leases of a running server, each with its shard and its items (non-zero, the
/// count the metrics hold). `RSMLD_STATUS_SCREENSHOT=PATH` also saves a screenshot of the
/// page (1200x500) with a few more leases: the README's picture.
#[test]
fn the_status_page_shows_the_leases_of_a_running_server_in_chromium() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, socket, addr) = metrics_server(dir.path(), &[]);
    let (mut a, mut ma) = lease(dir.path(), &socket, "alpha", ALPHA_SHARD);
    let (mut b, mut mb) = lease(dir.path(), &socket, "beta", BETA_SHARD);
    batch(&mut a, &mut ma, 0, 12, 800);
    batch(&mut b, &mut mb, 100, 105, 0);
    let url = format!("http://{addr}/");
    // 5 s of virtual time: the page polls three times.
    let dom = headless(
        &chromium,
        &url,
        &["--virtual-time-budget=5000", "--dump-dom"],
    );
    let rows = rendered_rows(&dom);
    let alpha = ("alpha".to_owned(), ALPHA_SHARD.to_owned());
    let beta = ("beta".to_owned(), BETA_SHARD.to_owned());
    assert_eq!(rows.len(), 2, "rows: {rows:?}\n{dom}");
    assert_eq!(
        rows[&alpha],
        ("running".to_owned(), "12".to_owned()),
        "{dom}"
    );
    assert_eq!(rows[&beta], ("running".to_owned(), "5".to_owned()), "{dom}");
    assert!(dom.contains(ALPHA_SHARD) && dom.contains(BETA_SHARD));
    let error = dom.split("id=\"error\"").nth(1).unwrap();
    let error = error
        .split_once('>')
        .unwrap()
        .1
        .split("</p>")
        .next()
        .unwrap();
    assert_eq!(error, "", "the page says it could not poll");

    if let Some(path) = std::env::var_os("RSMLD_STATUS_SCREENSHOT") {
        // A few more leases, one of them ended, and work going on while the page polls.
        let (mut c, mut mc) = lease(dir.path(), &socket, "alpha", "shardId-000000000003");
        let (mut d, mut md) = lease(dir.path(), &socket, "beta", "shardId-000000000004");
        batch(&mut c, &mut mc, 200, 260, 2_400);
        batch(&mut d, &mut md, 300, 340, 61_000);
        common::lease_lost(&mut d, &mut md).unwrap();
        d.close_stdin();
        assert_eq!(d.wait(WAIT).unwrap(), 0);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let feeder = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 1000;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    batch(&mut a, &mut ma, n, n + 20, 650);
                    batch(&mut c, &mut mc, 5000 + n, 5000 + n + 5, 2_300);
                    n += 20;
                    std::thread::sleep(Duration::from_millis(10));
                }
                (a, c)
            })
        };
        // The server's rates are over at least a second between two snapshots: a window
        // that starts with every lease here (the first snapshot may close one that began
        // before them), then the page's first poll after a second and a half of work.
        for _ in 0..2 {
            let _ = status(addr);
            std::thread::sleep(Duration::from_millis(1500));
        }
        let path = PathBuf::from(path);
        headless(
            &chromium,
            &url,
            &[
                &format!("--screenshot={}", path.display()),
                "--window-size=1200,500",
                "--hide-scrollbars",
                "--virtual-time-budget=5000",
            ],
        );
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = feeder.join().unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 1000);
    }
    assert_eq!(srv.child.try_wait().unwrap(), None, "{}", srv.stderr());
}

/// Names are data, never markup: an application and a shard named like HTML (an `<img>`
/// whose `onerror` would retitle the page, a closing `</td>`) show as their text in the
/// browser, and no element or script of theirs gets into the page.
#[test]
fn the_status_page_shows_hostile_names_as_text_in_chromium() {
    let Some(chromium) = chromium() else {
        return;
    };
    let app = r#"<img src=x onerror="document.title='pwned'">"#;
    let shard = "shardId-</td><b>x</b>";
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, socket, addr) = metrics_server(dir.path(), &[]);
    let (mut a, mut ma) = lease(dir.path(), &socket, app, shard);
    batch(&mut a, &mut ma, 0, 3, 0);
    let now = status(addr);
    let row = lease_row(&now, app, shard);
    assert_eq!(row["items"], 3, "{row}");
    let dom = headless(
        &chromium,
        &format!("http://{addr}/"),
        &["--virtual-time-budget=5000", "--dump-dom"],
    );
    assert!(dom.contains("<title>rsmld status</title>"), "{dom}");
    assert!(!dom.contains("<img") && !dom.contains("<b>x"), "{dom}");
    let escaped = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    assert!(
        dom.contains(&escaped(app)),
        "the name is not shown as text:\n{dom}"
    );
    assert!(dom.contains(&escaped(shard)), "{dom}");
    assert_eq!(srv.child.try_wait().unwrap(), None, "{}", srv.stderr());
}
