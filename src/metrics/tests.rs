use super::*;
use crate::telemetry::CheckpointRetry;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

fn sink() -> MetricsSink {
    MetricsSink::new().unwrap()
}

/// `LeaseStarted` (the events whose fields the restructuring changes are made here only).
pub(super) fn lease_started() -> Event {
    Event::LeaseStarted {
        shard: String::new(),
        checkpoint: None,
    }
}

/// A checkpoint answered with the daemon's `error`.
fn checkpoint_failed(error: &str) -> Event {
    Event::CheckpointFailed {
        position: "9/0".into(),
        error: error.into(),
        next: CheckpointRetry::RetryIn {
            retry: 1,
            of: 3,
            delay: Duration::from_millis(100),
        },
    }
}

fn batch(records: usize, bytes: usize, lag: i64) -> Event {
    Event::BatchReceived {
        records,
        bytes,
        millis_behind_latest: Some(lag),
    }
}

/// The sample lines of a scrape: `name{labels}` -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// The metric names a scrape exposes (sample names: `_bucket`, `_sum`, `_count` included).
fn exposed_names(text: &str) -> BTreeSet<String> {
    samples(text)
        .keys()
        .map(|s| s.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

/// What one realistic lease does: started, workers ready, `batches` batches of 100 records
/// split into 3 items each, all handled and completed, a checkpoint stored after each; one
/// throttled checkpoint, one retried failure, one dead letter, a broken KPL aggregate.
fn feed_lease(sink: &MetricsSink, lease: &LeaseId, batches: usize, lag: i64) {
    let e = |event: Event| sink.emit(Some(lease), &event);
    e(lease_started());
    e(Event::WorkersStarted {
        workers: 2,
        max_in_flight: 1000,
        checkpoint_interval: Duration::from_secs(1),
    });
    for i in 0..batches {
        e(batch(100, 20_000, lag + i as i64));
        e(Event::RecordsDelivered {
            records: 100,
            items: 300,
            millis_behind_latest: Some(lag + i as i64),
        });
        e(Event::InFlight {
            items: 300,
            bytes: 20_000,
        });
        for worker in 0..2 {
            e(Event::BatchHandled {
                worker,
                items: 150,
                duration: Duration::from_millis(3 + worker as u64 * 40),
            });
        }
        e(Event::ItemsCompleted { items: 300 });
        e(Event::InFlight { items: 0, bytes: 0 });
        e(Event::CheckpointStored {
            position: format!("{i}/0"),
        });
    }
    e(checkpoint_failed("ThrottlingException"));
    e(Event::ItemsFailed {
        worker: 1,
        items: 2,
        error: "boom".into(),
        retry: Some((1, Duration::from_millis(10))),
    });
    e(Event::ItemsFailed {
        worker: 1,
        items: 1,
        error: "boom".into(),
        retry: None,
    });
    e(Event::DeadLettered {
        worker: 1,
        items: 1,
    });
    e(Event::RecordNote {
        position: "5/0".into(),
        note: "KPL aggregate broke off".into(),
        lost_user_records: 4,
    });
    e(Event::Backpressure {
        waited: Duration::from_millis(250),
    });
    e(Event::ChildRestarted {
        worker: 0,
        reason: "exited with 1".into(),
    });
    e(Event::InFlight {
        items: 17,
        bytes: 4096,
    });
}

#[test]
fn every_required_metric_is_exposed_with_a_shard_label() {
    let s = sink();
    let lease = LeaseId::new("app", "shardId-000000000000");
    feed_lease(&s, &lease, 1, 0);
    let text = s.render().unwrap();
    for name in [
        "rsmld_records_total",
        "rsmld_items_total",
        "rsmld_millis_behind_latest",
        "rsmld_in_flight_items",
        "rsmld_checkpoints_total",
        "rsmld_item_failures_total",
        "rsmld_handler_batch_duration_seconds_bucket",
    ] {
        let with_shard = format!(r#"{name}{{application="app","#);
        assert!(
            text.lines().any(
                |l| l.starts_with(&with_shard) && l.contains(r#"shard="shardId-000000000000""#)
            ),
            "{name} with a shard label missing from:\n{text}"
        );
    }
    // Classic text format: counters are typed under their `_total` name, no OpenMetrics EOF.
    assert!(
        text.contains("# TYPE rsmld_records_total counter\n"),
        "{text}"
    );
    assert!(!text.contains("# EOF"));
    assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4");
}

#[test]
fn counts_follow_the_events() {
    let s = sink();
    let lease = LeaseId::new("app", "shardId-1");
    feed_lease(&s, &lease, 3, 1000);
    let got = samples(&s.render().unwrap());
    let l = r#"application="app",shard="shardId-1""#;
    let v = |name: &str| got[&format!("{name}{{{l}}}")];
    assert_eq!(v("rsmld_records_total"), 300.0);
    assert_eq!(v("rsmld_received_bytes_total"), 60_000.0);
    assert_eq!(v("rsmld_items_received_total"), 900.0);
    assert_eq!(v("rsmld_items_total"), 900.0);
    assert_eq!(v("rsmld_millis_behind_latest"), 1002.0);
    assert_eq!(v("rsmld_in_flight_items"), 17.0);
    assert_eq!(v("rsmld_in_flight_bytes"), 4096.0);
    assert_eq!(v("rsmld_item_failures_total"), 1.0);
    assert_eq!(v("rsmld_item_retries_total"), 2.0);
    assert_eq!(v("rsmld_dead_letters_total"), 1.0);
    assert_eq!(v("rsmld_kpl_user_records_lost_total"), 4.0);
    assert_eq!(v("rsmld_handler_child_restarts_total"), 1.0);
    assert_eq!(v("rsmld_backpressure_wait_seconds_total"), 0.25);
    assert_eq!(v("rsmld_handler_batch_duration_seconds_count"), 6.0);
    // The encoder writes labels sorted by name.
    let outcome = |o: &str| {
        got[&format!(
            r#"rsmld_checkpoints_total{{application="app",outcome="{o}",shard="shardId-1"}}"#
        )]
    };
    let stored = outcome("stored");
    assert_eq!(stored, 3.0);
    let throttled = outcome("ThrottlingException");
    assert_eq!(throttled, 1.0);
    let at = v("rsmld_last_checkpoint_timestamp_seconds");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    assert!(at > 0.0 && at <= now.as_secs_f64(), "{at}");
    assert_eq!(got["rsmld_leases_attached"], 1.0);
    assert_eq!(got["rsmld_workers"], 2.0);
}

#[test]
fn unknown_checkpoint_errors_count_as_other() {
    assert_eq!(
        CHECKPOINT_OUTCOMES[outcome_index("ShutdownException")],
        "ShutdownException"
    );
    assert_eq!(CHECKPOINT_OUTCOMES[outcome_index("SomethingNew")], "other");
    assert_eq!(CHECKPOINT_OUTCOMES[outcome_index("stored")], "other");
}

#[test]
fn an_ended_lease_is_in_one_more_scrape_then_gone() {
    let s = sink();
    let a = LeaseId::new("app", "shardId-1");
    let b = LeaseId::new("app", "shardId-2");
    feed_lease(&s, &a, 1, 0);
    feed_lease(&s, &b, 1, 0);
    s.emit(Some(&a), &batch(5, 50, 0));
    s.emit(
        Some(&a),
        &Event::LeaseEnded {
            end: LeaseEnd::ShardEnded,
        },
    );
    let final_scrape = samples(&s.scrape().unwrap());
    assert_eq!(
        final_scrape[r#"rsmld_records_total{application="app",shard="shardId-1"}"#], 105.0,
        "the final counts are scraped once"
    );
    assert_eq!(final_scrape["rsmld_leases_attached"], 1.0);
    assert_eq!(
        final_scrape[r#"rsmld_lease_ends_total{end="shard_ended"}"#],
        1.0
    );
    let after = s.scrape().unwrap();
    assert!(
        !after.contains("shardId-1"),
        "removed after the final scrape:\n{after}"
    );
    assert!(after.contains(r#"shard="shardId-2""#));
    assert_eq!(s.leases(), [(b.clone(), false)]);
    // A late event of the removed lease does not bring its series back.
    s.emit(Some(&a), &Event::ItemsCompleted { items: 3 });
    let late = s.scrape().unwrap();
    assert!(!late.contains("shardId-1"));
    assert!(late.contains(r#"rsmld_unattributed_events_total{event="ItemsCompleted"} 1"#));
    // The same shard leased again starts from zero.
    s.emit(Some(&a), &lease_started());
    let again = samples(&s.render().unwrap());
    assert_eq!(
        again[r#"rsmld_records_total{application="app",shard="shardId-1"}"#],
        0.0
    );
}

/// Two attachments of one application+shard at once (`LeaseId::serial`, a shard
/// re-acquired on a server): one series, no panic; the first's end and removal leave the
/// second's series in place.
#[test]
fn two_attachments_of_one_shard_share_a_series_until_both_are_gone() {
    let s = sink();
    let first = LeaseId::new("app", "shardId-1").with_serial(1);
    let second = LeaseId::new("app", "shardId-1").with_serial(2);
    feed_lease(&s, &first, 1, 0);
    feed_lease(&s, &second, 1, 0);
    let key = r#"rsmld_records_total{application="app",shard="shardId-1"}"#;
    let both = samples(&s.render().unwrap());
    assert_eq!(both[key], 200.0);
    assert_eq!(both["rsmld_leases_attached"], 2.0);
    s.emit(
        Some(&first),
        &Event::LeaseEnded {
            end: LeaseEnd::LeaseLost,
        },
    );
    s.scrape().unwrap();
    let after = samples(&s.scrape().unwrap());
    assert_eq!(after[key], 200.0, "the live attachment's series stays");
    assert_eq!(after["rsmld_leases_attached"], 1.0);
    assert_eq!(s.leases(), [(second.clone(), false)]);
    s.emit(Some(&second), &batch(5, 50, 0));
    assert_eq!(samples(&s.render().unwrap())[key], 205.0);
    s.emit(
        Some(&second),
        &Event::LeaseEnded {
            end: LeaseEnd::ShardEnded,
        },
    );
    s.scrape().unwrap();
    assert!(!s.scrape().unwrap().contains("shardId-1"));
}

#[test]
fn a_lease_leased_again_before_its_removal_starts_from_zero() {
    let s = sink();
    let a = LeaseId::new("", "shardId-1");
    feed_lease(&s, &a, 2, 0);
    s.emit(
        Some(&a),
        &Event::LeaseEnded {
            end: LeaseEnd::LeaseLost,
        },
    );
    s.emit(Some(&a), &lease_started());
    let got = samples(&s.render().unwrap());
    assert_eq!(
        got[r#"rsmld_records_total{application="",shard="shardId-1"}"#],
        0.0
    );
    assert_eq!(got["rsmld_leases_attached"], 1.0);
    assert_eq!(s.leases(), [(a, false)]);
}

#[test]
fn render_lease_holds_only_that_lease() {
    let s = sink();
    let a = LeaseId::new("app", "shardId-1");
    let b = LeaseId::new("app", "shardId-2");
    feed_lease(&s, &a, 1, 0);
    feed_lease(&s, &b, 1, 0);
    let text = s.render_lease(&a).unwrap().unwrap();
    assert!(text.contains(r#"shard="shardId-1""#));
    assert!(!text.contains("shardId-2"));
    assert!(!text.contains("rsmld_leases_attached"));
    assert_eq!(s.render_lease(&LeaseId::new("app", "x")).unwrap(), None);
}

use crate::testkit::tools::metrics_python;

#[test]
fn the_prometheus_python_client_reads_a_scrape_of_two_leases() {
    let Some(python) = metrics_python() else {
        return;
    };
    let s = sink();
    let a = LeaseId::new("orders", "shardId-000000000000");
    let b = LeaseId::new("orders", "shardId-000000000001");
    feed_lease(&s, &a, 4, 500);
    feed_lease(&s, &b, 2, 70);
    s.emit(Some(&b), &checkpoint_failed("Weird \"quoted\"\nerror"));
    // Label values are escaped: an application name with a quote, a backslash, a newline.
    let odd = LeaseId::new("we\"ird\\app\n", "shardId-000000000002");
    feed_lease(&s, &odd, 1, 9);
    let text = s.scrape().unwrap();
    let families = crate::testkit::tools::prom_parse(&python, &text);
    let families = &families;
    let family = |name: &str| {
        families
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no family {name} in {families:?}"))
    };
    // value of the sample `name` of family `fam` with these labels besides the lease's.
    let value = |fam: &str, name: &str, lease: &LeaseId, extra: &[(&str, &str)]| -> f64 {
        let f = family(fam);
        let found = f["samples"].as_array().unwrap().iter().find(|s| {
            let labels = s["labels"].as_object().unwrap();
            s["name"] == name
                && labels["application"] == *lease.application
                && labels["shard"] == *lease.shard
                && extra.iter().all(|(k, v)| labels[*k] == *v)
        });
        found.unwrap_or_else(|| panic!("no {name} of {lease} {extra:?} in {f}"))["value"]
            .as_f64()
            .unwrap()
    };
    for (lease, batches, lag) in [(&a, 4.0, 503.0), (&b, 2.0, 71.0), (&odd, 1.0, 9.0)] {
        assert_eq!(family("rsmld_records")["type"], "counter");
        assert_eq!(
            value("rsmld_records", "rsmld_records_total", lease, &[]),
            100.0 * batches
        );
        assert_eq!(
            value("rsmld_items", "rsmld_items_total", lease, &[]),
            300.0 * batches
        );
        assert_eq!(
            value(
                "rsmld_items_received",
                "rsmld_items_received_total",
                lease,
                &[]
            ),
            300.0 * batches
        );
        assert_eq!(family("rsmld_millis_behind_latest")["type"], "gauge");
        assert_eq!(
            value(
                "rsmld_millis_behind_latest",
                "rsmld_millis_behind_latest",
                lease,
                &[]
            ),
            lag
        );
        assert_eq!(
            value("rsmld_in_flight_items", "rsmld_in_flight_items", lease, &[]),
            17.0
        );
        assert_eq!(
            value(
                "rsmld_checkpoints",
                "rsmld_checkpoints_total",
                lease,
                &[("outcome", "stored")]
            ),
            batches
        );
        assert_eq!(
            value(
                "rsmld_item_failures",
                "rsmld_item_failures_total",
                lease,
                &[]
            ),
            1.0
        );
        let h = "rsmld_handler_batch_duration_seconds";
        assert_eq!(family(h)["type"], "histogram");
        assert_eq!(value(h, &format!("{h}_count"), lease, &[]), 2.0 * batches);
        // 3 ms and 43 ms per batch: half of them at or under 5 ms, all under 50 ms.
        assert_eq!(
            value(h, &format!("{h}_bucket"), lease, &[("le", "0.005")]),
            batches
        );
        assert_eq!(
            value(h, &format!("{h}_bucket"), lease, &[("le", "0.05")]),
            2.0 * batches
        );
        assert_eq!(
            value(h, &format!("{h}_bucket"), lease, &[("le", "+Inf")]),
            2.0 * batches
        );
        let sum = value(h, &format!("{h}_sum"), lease, &[]);
        assert!((sum - 0.046 * batches).abs() < 1e-9, "{sum}");
    }
    assert_eq!(
        value(
            "rsmld_checkpoints",
            "rsmld_checkpoints_total",
            &b,
            &[("outcome", "other")]
        ),
        1.0
    );
    let attached = &family("rsmld_leases_attached")["samples"][0]["value"];
    assert_eq!(attached.as_f64(), Some(3.0));
}

/// Every `rsmld_*` name in the dashboard's queries (`expr`, variable queries).
fn dashboard_names(dashboard: &serde_json::Value) -> (BTreeSet<String>, usize) {
    fn walk(v: &serde_json::Value, names: &mut BTreeSet<String>, exprs: &mut usize) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    if let (true, Some(q)) = (
                        matches!(k.as_str(), "expr" | "query" | "definition"),
                        v.as_str(),
                    ) {
                        let before = names.len();
                        let mut rest = q;
                        while let Some(at) = rest.find("rsmld_") {
                            let name: String = rest[at..]
                                .chars()
                                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                                .collect();
                            rest = &rest[at + name.len()..];
                            names.insert(name);
                        }
                        if k == "expr" {
                            *exprs += 1;
                            assert!(
                                names.len() > before || q.contains("rsmld_"),
                                "a query of no rsmld metric: {q}"
                            );
                        }
                    }
                    walk(v, names, exprs);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, names, exprs)),
            _ => {}
        }
    }
    let mut names = BTreeSet::new();
    let mut exprs = 0;
    walk(dashboard, &mut names, &mut exprs);
    (names, exprs)
}

#[test]
fn the_dashboard_queries_only_metrics_rsmld_exposes() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/grafana/rsmld.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let s = sink();
    feed_lease(&s, &LeaseId::new("app", "shardId-1"), 1, 0);
    let exposed = exposed_names(&s.render().unwrap());
    let (used, exprs) = dashboard_names(&dashboard);
    assert!(exprs >= 10, "the dashboard has {exprs} queries");
    let unknown: Vec<&String> = used.difference(&exposed).collect();
    assert!(
        unknown.is_empty(),
        "{} queries metrics rsmld does not expose: {unknown:?} (exposed: {exposed:?})",
        path.display()
    );
    // It shows what the operator asks about.
    for name in [
        "rsmld_items_total",
        "rsmld_millis_behind_latest",
        "rsmld_in_flight_items",
        "rsmld_last_checkpoint_timestamp_seconds",
        "rsmld_item_failures_total",
        "rsmld_handler_batch_duration_seconds_bucket",
    ] {
        assert!(used.contains(name), "the dashboard does not query {name}");
    }
    // The check itself finds a wrong name.
    let wrong =
        serde_json::json!({"panels": [{"targets": [{"expr": "rate(rsmld_itemz_total[1m])"}]}]});
    let (names, _) = dashboard_names(&wrong);
    assert!(names.difference(&exposed).any(|n| n == "rsmld_itemz_total"));
}

#[test]
fn emit_is_cheap_and_exact_from_many_threads() {
    let s = Arc::new(sink());
    let leases: Vec<LeaseId> = (0..4)
        .map(|i| LeaseId::new("app", &format!("shardId-{i}")))
        .collect();
    for l in &leases {
        s.emit(Some(l), &lease_started());
    }
    let per_thread = 200_000u64;
    let threads = 4;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let s = &s;
            let leases = &leases;
            scope.spawn(move || {
                for i in 0..per_thread {
                    // Every thread hits every lease, as the workers of a shared pool do.
                    let lease = &leases[(i as usize + t) % leases.len()];
                    s.emit(Some(lease), &Event::ItemsCompleted { items: 1 });
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let handled = Event::BatchHandled {
        worker: 0,
        items: 1,
        duration: Duration::from_micros(700),
    };
    let t1 = Instant::now();
    for _ in 0..per_thread {
        s.emit(Some(&leases[0]), &handled);
    }
    let histogram = t1.elapsed();
    let total = per_thread * threads as u64;
    eprintln!(
        "MetricsSink::emit: ItemsCompleted from {threads} threads on every lease: {total} emits \
         in {elapsed:?}, {:.0} ns each in all, {:.0} ns of wall time per emit per thread; \
         BatchHandled (histogram), one thread: {:.0} ns",
        elapsed.as_nanos() as f64 / total as f64,
        elapsed.as_nanos() as f64 / per_thread as f64,
        histogram.as_nanos() as f64 / per_thread as f64,
    );
    let got = samples(&s.render().unwrap());
    let sum: f64 = leases
        .iter()
        .map(|l| {
            got[&format!(
                r#"rsmld_items_total{{application="app",shard="{}"}}"#,
                l.shard
            )]
        })
        .sum();
    assert_eq!(sum, total as f64, "no count lost between threads");
}

#[test]
fn events_of_no_lease_are_counted_apart() {
    let s = sink();
    s.emit(None, &Event::ItemsCompleted { items: 3 });
    s.emit(
        None,
        &Event::WorkersStarted {
            workers: 8,
            max_in_flight: 1,
            checkpoint_interval: Duration::from_secs(1),
        },
    );
    s.emit(Some(&LeaseId::new("", "never-started")), &batch(1, 1, 1));
    let got = samples(&s.render().unwrap());
    assert_eq!(
        got[r#"rsmld_unattributed_events_total{event="ItemsCompleted"}"#],
        1.0
    );
    assert_eq!(
        got[r#"rsmld_unattributed_events_total{event="BatchReceived"}"#],
        1.0
    );
    assert_eq!(got["rsmld_workers"], 8.0);
    assert!(s.leases().is_empty());
}

/// Two attachments of one shard share its gauges; the newer one owns them: the older one's
/// abandon (in flight set to 0) and its late lag do not overwrite what the newer one has in
/// flight and says. On the old code the older attachment's last write won.
#[test]
fn the_older_attachment_of_a_shard_does_not_overwrite_the_newer_ones_gauges() {
    let s = sink();
    let first = LeaseId::new("app", "shardId-1").with_serial(1);
    let second = LeaseId::new("app", "shardId-1").with_serial(2);
    s.emit(Some(&first), &lease_started());
    s.emit(Some(&first), &batch(10, 100, 900));
    s.emit(Some(&second), &lease_started());
    s.emit(Some(&second), &batch(10, 100, 40));
    s.emit(
        Some(&second),
        &Event::InFlight {
            items: 5,
            bytes: 50,
        },
    );
    s.emit(Some(&first), &batch(1, 10, 900));
    s.emit(
        Some(&first),
        &Event::Abandoned {
            action: "leaseLost",
            items: 7,
        },
    );
    let labels = r#"{application="app",shard="shardId-1"}"#;
    let got = samples(&s.render().unwrap());
    assert_eq!(got[&format!("rsmld_in_flight_items{labels}")], 5.0);
    assert_eq!(got[&format!("rsmld_in_flight_bytes{labels}")], 50.0);
    assert_eq!(got[&format!("rsmld_millis_behind_latest{labels}")], 40.0);
    // Counters still add up over both attachments.
    assert_eq!(got[&format!("rsmld_records_total{labels}")], 21.0);
}
