//! Metrics files for node_exporter's textfile collector (child mode, `--metrics-dir DIR`).
//!
//! In child mode the daemon runs one rsmld per shard, and there is no port to scrape each
//! of them on; node_exporter's textfile collector instead reads every `*.prom` file of a
//! directory at each of its scrapes. [`start`] writes, every interval, the file of each
//! lease of this process, `DIR/rsmld-<application>-<shard>.prom` ([`file_name`]), and
//! removes it once the lease has ended (the lease's series are removed then too), and
//! every file it wrote when it stops: a file left behind would show a dead lease's last
//! values as current.
//!
//! Atomic: a file is written under a dot-name in the same directory (the collector reads
//! only `*.prom`) and renamed over the old one, so a scrape never reads half a file. No
//! fsync: after a crash the file is stale anyway. A file holds only its lease's series:
//! the collector rejects a series that two files hold, and every child would write the
//! same process series.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};

use super::{MetricsError, MetricsSink};
use crate::telemetry::LeaseId;

/// The running writer of [`start`]; [`stop`](Self::stop) (or dropping it) ends it.
#[derive(Debug)]
pub struct DirWriter {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DirWriter {
    /// Stops the writer and removes every file it wrote; returns once it has.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::warn!("metrics directory writer panicked");
            }
        }
    }
}

impl Drop for DirWriter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts writing the metrics files of `sink`'s leases into `dir` (which must exist) every
/// `interval`, beginning now, on a thread of its own.
///
/// Like [`MetricsSink::scrape`] it removes the series of ended leases, so a sink has one
/// of the two: this writer (child mode) or a scraped endpoint (a server). Each file is
/// rendered from the whole registry, which is cheap for the one lease of a child.
pub fn start(
    dir: &Path,
    interval: Duration,
    sink: Arc<MetricsSink>,
) -> Result<DirWriter, MetricsError> {
    let meta = std::fs::metadata(dir).map_err(|source| MetricsError::Dir {
        dir: dir.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(MetricsError::Dir {
            dir: dir.to_owned(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let mut files = Files::new(dir.to_owned());
    let thread = std::thread::Builder::new()
        .name("rsmld-metrics".into())
        .spawn(move || {
            loop {
                files.tick(&sink);
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            files.remove_all();
        })
        .map_err(|source| MetricsError::Dir {
            dir: dir.to_owned(),
            source,
        })?;
    Ok(DirWriter {
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// The file name of a lease's metrics: `rsmld-<application>-<shard>.prom`, or
/// `rsmld-<shard>.prom` when the application is unknown (child mode is not told it); any
/// character but ASCII letters, digits, `.`, `_` and `-` becomes `_`.
pub fn file_name(lease: &LeaseId) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    if lease.application.is_empty() {
        format!("rsmld-{}.prom", clean(&lease.shard))
    } else {
        format!(
            "rsmld-{}-{}.prom",
            clean(&lease.application),
            clean(&lease.shard)
        )
    }
}

/// The files one writer keeps.
struct Files {
    dir: PathBuf,
    written: HashMap<LeaseId, PathBuf>,
    /// The last write error logged, so that a full disk is one line, not one per tick.
    last_error: Option<String>,
}

impl Files {
    fn new(dir: PathBuf) -> Self {
        Files {
            dir,
            written: HashMap::new(),
            last_error: None,
        }
    }

    /// Writes the file of every live lease, removes the files (and series) of ended
    /// ones, and the files of leases whose series are gone.
    fn tick(&mut self, sink: &MetricsSink) {
        let leases = sink.leases();
        let live: HashSet<&LeaseId> = leases
            .iter()
            .filter(|(_, ended)| !ended)
            .map(|(id, _)| id)
            .collect();
        let gone: Vec<LeaseId> = self
            .written
            .keys()
            .filter(|id| !live.contains(id))
            .cloned()
            .collect();
        for id in gone {
            self.remove(&id);
        }
        for (id, ended) in &leases {
            if *ended {
                sink.retire(id);
                continue;
            }
            let result = match sink.render_lease(id) {
                Ok(Some(text)) => self.write(id, &text).map_err(|e| e.to_string()),
                Ok(None) => Ok(()),
                Err(e) => Err(e.to_string()),
            };
            self.note(result);
        }
    }

    fn write(&mut self, id: &LeaseId, text: &str) -> io::Result<()> {
        let name = file_name(id);
        let path = self.dir.join(&name);
        let temp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        std::fs::write(&temp, text)
            .and_then(|()| std::fs::rename(&temp, &path))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&temp);
            })
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        self.written.insert(id.clone(), path);
        Ok(())
    }

    fn remove(&mut self, id: &LeaseId) {
        if let Some(path) = self.written.remove(id) {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => self.note(Err(format!("removing {}: {e}", path.display()))),
            }
        }
    }

    fn remove_all(&mut self) {
        let ids: Vec<LeaseId> = self.written.keys().cloned().collect();
        for id in ids {
            self.remove(&id);
        }
    }

    /// Logs a failure once (until something succeeds again).
    fn note(&mut self, result: Result<(), String>) {
        match result {
            Ok(()) => self.last_error = None,
            Err(e) => {
                if self.last_error.as_deref() != Some(&e) {
                    log::warn!("metrics directory {}: {e}", self.dir.display());
                    self.last_error = Some(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{Event, LeaseEnd, Sink};
    use std::process::{Command, Stdio};
    use std::time::Instant;

    fn started(sink: &MetricsSink, id: &LeaseId) {
        sink.emit(Some(id), &crate::metrics::tests::lease_started());
    }

    /// Waits (generously) until `cond` holds; fails the test if it never does.
    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn file_names_are_safe_and_name_the_lease() {
        assert_eq!(
            file_name(&LeaseId::new("orders", "shardId-000000000001")),
            "rsmld-orders-shardId-000000000001.prom"
        );
        assert_eq!(
            file_name(&LeaseId::new("", "shardId-7")),
            "rsmld-shardId-7.prom"
        );
        assert_eq!(
            file_name(&LeaseId::new("a/b", "../x y")),
            "rsmld-a_b-.._x_y.prom"
        );
    }

    #[test]
    fn writes_each_lease_file_atomically_and_removes_it_when_the_lease_ends() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(MetricsSink::new().unwrap());
        let a = LeaseId::new("app", "shardId-1");
        let b = LeaseId::new("app", "shardId-2");
        started(&sink, &a);
        started(&sink, &b);
        sink.emit(
            Some(&a),
            &Event::BatchReceived {
                records: 7,
                bytes: 100,
                millis_behind_latest: Some(5),
            },
        );
        let writer = start(dir.path(), Duration::from_millis(20), sink.clone()).unwrap();
        let file_a = dir.path().join("rsmld-app-shardId-1.prom");
        let file_b = dir.path().join("rsmld-app-shardId-2.prom");
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        wait_for("both files", || file_a.exists() && file_b.exists());
        let text = read(&file_a);
        assert!(
            text.contains(r#"rsmld_records_total{application="app",shard="shardId-1"} 7"#),
            "{text}"
        );
        assert!(!text.contains("shardId-2"), "one lease per file: {text}");
        assert!(
            !text.contains("rsmld_leases_attached"),
            "no process series: {text}"
        );
        // Later counts reach the file on a later tick.
        sink.emit(
            Some(&a),
            &Event::BatchReceived {
                records: 3,
                bytes: 10,
                millis_behind_latest: None,
            },
        );
        wait_for("the new count", || {
            read(&file_a).contains(r#"rsmld_records_total{application="app",shard="shardId-1"} 10"#)
        });
        // An ended lease: its file goes, and so do its series; the other stays.
        sink.emit(
            Some(&a),
            &Event::LeaseEnded {
                end: LeaseEnd::ShardEnded,
            },
        );
        wait_for("the ended lease's file to go", || !file_a.exists());
        wait_for("its series to go", || sink.leases().len() == 1);
        assert!(file_b.exists());
        // Never a temporary file left, never anything but the live lease's file.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["rsmld-app-shardId-2.prom"]);
        // Stopping removes what it wrote.
        writer.stop();
        assert!(!file_b.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_directory_is_an_error_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(MetricsSink::new().unwrap());
        let missing = dir.path().join("nope");
        let e = start(&missing, Duration::from_secs(1), sink.clone()).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        let e = start(&file, Duration::from_secs(1), sink).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }

    #[test]
    fn a_failing_write_is_logged_once_and_the_writer_carries_on() {
        let dir = tempfile::tempdir().unwrap();
        let sink = MetricsSink::new().unwrap();
        let a = LeaseId::new("app", "shardId-1");
        started(&sink, &a);
        // A directory where the file should be: the rename fails.
        std::fs::create_dir(dir.path().join(file_name(&a))).unwrap();
        let mut files = Files::new(dir.path().to_owned());
        files.tick(&sink);
        let first = files.last_error.clone().expect("the failure is noted");
        assert!(first.contains("rsmld-app-shardId-1.prom"), "{first}");
        assert!(files.written.is_empty());
        // No temporary file is left behind by the failed write.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        std::fs::remove_dir(dir.path().join(file_name(&a))).unwrap();
        files.tick(&sink);
        assert_eq!(files.last_error, None);
        assert!(dir.path().join(file_name(&a)).is_file());
    }

    /// node_exporter, unpacked by scripts/install-node-exporter.sh.
    fn node_exporter() -> Option<PathBuf> {
        crate::testkit::tools::installed(
            "node-exporter/prometheus-node-exporter",
            "scripts/install-node-exporter.sh",
            "this test has its textfile collector read the metrics files",
        )
    }

    /// Kills and reaps the child it holds when dropped (a failing test leaves none).
    struct Reaped(std::process::Child);

    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// `GET /metrics` of 127.0.0.1:`port`: the body, or `None` while nothing answers.
    fn get_metrics(port: u16) -> Option<String> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        conn.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        // HTTP/1.0: the body is not chunked and ends with the connection.
        (head.split(' ').nth(1) == Some("200")).then(|| body.to_owned())
    }

    #[test]
    fn node_exporters_textfile_collector_reads_the_files() {
        let Some(bin) = node_exporter() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(MetricsSink::new().unwrap());
        let leases = [
            LeaseId::new("orders", "shardId-000000000000"),
            LeaseId::new("orders", "shardId-000000000001"),
        ];
        for (n, lease) in leases.iter().enumerate() {
            started(&sink, lease);
            sink.emit(
                Some(lease),
                &Event::BatchReceived {
                    records: 10 * (n + 1),
                    bytes: 1000,
                    millis_behind_latest: Some(42),
                },
            );
            sink.emit(
                Some(lease),
                &Event::BatchHandled {
                    worker: 0,
                    items: 10,
                    duration: Duration::from_millis(2),
                },
            );
            sink.emit(
                Some(lease),
                &Event::CheckpointStored {
                    position: "1/0".into(),
                },
            );
        }
        let writer = start(dir.path(), Duration::from_millis(50), sink.clone()).unwrap();
        wait_for("the files", || {
            std::fs::read_dir(dir.path()).unwrap().count() == 2
        });
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let _exporter = Reaped(
            Command::new(bin)
                .arg("--collector.disable-defaults")
                .arg("--collector.textfile")
                .arg(format!(
                    "--collector.textfile.directory={}",
                    dir.path().display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let body = loop {
            if let Some(body) = get_metrics(port) {
                break body;
            }
            assert!(Instant::now() < deadline, "node_exporter never answered");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            body.contains("node_textfile_scrape_error 0"),
            "node_exporter could not read the files:\n{body}"
        );
        assert!(
            body.contains("# TYPE rsmld_records_total counter"),
            "{body}"
        );
        assert!(body.contains("# TYPE rsmld_handler_batch_duration_seconds histogram"));
        for (n, lease) in leases.iter().enumerate() {
            let line = format!(
                r#"rsmld_records_total{{application="orders",shard="{}"}} {}"#,
                lease.shard,
                10 * (n + 1)
            );
            assert!(body.contains(&line), "{line} missing from:\n{body}");
        }
        // An ended lease's file is gone from the next collection.
        sink.emit(
            Some(&leases[0]),
            &Event::LeaseEnded {
                end: LeaseEnd::ShardEnded,
            },
        );
        wait_for("the file to go", || {
            std::fs::read_dir(dir.path()).unwrap().count() == 1
        });
        let body = get_metrics(port).unwrap();
        assert!(body.contains("node_textfile_scrape_error 0"), "{body}");
        assert!(!body.contains(r#"shard="shardId-000000000000""#), "{body}");
        assert!(body.contains(r#"shard="shardId-000000000001""#), "{body}");
        writer.stop();
    }
}
