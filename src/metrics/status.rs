//! The lease table of the status page (`GET /status.json` and `GET /` of
//! `rsmld serve --metrics-listen`): a snapshot of every lease read from the same per-lease
//! handles the metrics count into, so the page and a scrape can never disagree and nothing
//! is counted twice.
//!
//! A lease is `running`, `failing` (running, with a problem in the last [`FAILING_WINDOW`]:
//! an item failure or retry, a dead letter, a checkpoint error, a handler child restart) or
//! `ended` (with how: `shard_ended`, `shutdown_requested`, `lease_lost`, `eof`, `failed`).
//! An ended lease stays in the table while its series do, and after a scrape removed them
//! (a scrape shows an ended lease once) its final status stays for the rest of
//! [`ENDED_LINGER`](super::ENDED_LINGER) after its end, at most [`RETIRED_SHOWN`] of them:
//! what the page shows does not depend on how often Prometheus scrapes.

use std::sync::atomic::Ordering;
use std::sync::PoisonError;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{end_name, Entry, MetricsSink, C, ENDED_LINGER, G};
use crate::telemetry::LeaseId;

/// How long after its last problem a running lease is `failing`.
pub const FAILING_WINDOW: Duration = Duration::from_secs(60);

/// How many ended leases whose series are gone the table keeps (the newest).
pub const RETIRED_SHOWN: usize = 64;

/// What a lease is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Attached, no recent problem.
    Running,
    /// Attached, with a problem in the last [`FAILING_WINDOW`].
    Failing,
    /// Ended (`end` says how).
    Ended,
}

/// One row of the lease table (its JSON is an object of these fields; README, *Status
/// page and metrics*). Times are Unix seconds, ages seconds, both as of the snapshot.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LeaseStatus {
    /// The application (or stream); empty when unknown.
    pub application: String,
    /// The shard id.
    pub shard: String,
    /// Running, failing or ended.
    pub state: LeaseState,
    /// How the lease ended (`shard_ended`, `shutdown_requested`, `lease_lost`, `eof`,
    /// `failed`); `None` while it runs.
    pub end: Option<&'static str>,
    /// When it ended.
    pub ended_at: Option<f64>,
    /// Seconds since it ended.
    pub ended_age_seconds: Option<f64>,
    /// Records received (`rsmld_records_total`).
    pub records: u64,
    /// Items delivered to the workers (`rsmld_items_received_total`).
    pub items_received: u64,
    /// Items completed (`rsmld_items_total`).
    pub items: u64,
    /// The daemon's `millisBehindLatest` of the last batch (0 before the first).
    pub millis_behind_latest: i64,
    /// Items delivered and not yet completed.
    pub in_flight_items: i64,
    /// Bytes the unfinished records keep alive.
    pub in_flight_bytes: i64,
    /// Checkpoints stored.
    pub checkpoints: u64,
    /// Checkpoint answers that were errors (every kind).
    pub checkpoint_errors: u64,
    /// When the daemon last stored a checkpoint; `None`: not yet in this lease.
    pub last_checkpoint_at: Option<f64>,
    /// Seconds since then.
    pub last_checkpoint_age_seconds: Option<f64>,
    /// Items failed for good (`rsmld_item_failures_total`).
    pub item_failures: u64,
    /// Item retries scheduled.
    pub item_retries: u64,
    /// Items dead-lettered.
    pub dead_letters: u64,
    /// When the lease last had a problem; `None`: never.
    pub last_problem_at: Option<f64>,
    /// When this lease of the shard started: tells a shard leased again (its counters
    /// restarted from zero) from the lease before it, for rates. Not in the JSON.
    #[serde(skip)]
    pub started: Instant,
}

/// The process's row: what every lease shares.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ProcessStatus {
    /// Leases attached now (`rsmld_leases_attached`).
    pub leases_attached: i64,
    /// Worker threads of the pool (`rsmld_workers`; 0 before the first lease).
    pub workers: i64,
    /// Handler wall time of all workers (`rsmld_worker_busy_seconds_total`): its rate
    /// between two snapshots is the number of workers busy on average.
    pub worker_busy_seconds_total: f64,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl LeaseStatus {
    /// The row of a lease in the map, as of `now` (Unix seconds).
    fn of(id: &LeaseId, e: &Entry, now: f64) -> Self {
        let m = &e.metrics;
        let count = |c: C| m.counters[c as usize].get();
        let gauge = |g: G| m.gauges[g as usize].get();
        let last_checkpoint = m.last_checkpoint.get();
        let last_problem = m.last_problem.load(Ordering::Relaxed);
        let mut row = LeaseStatus {
            application: id.application.to_string(),
            shard: id.shard.to_string(),
            state: LeaseState::Running,
            end: e.end.map(end_name),
            ended_at: e.ended.map(|at| now - at.elapsed().as_secs_f64()),
            ended_age_seconds: None,
            records: count(C::Records),
            items_received: count(C::ItemsReceived),
            items: count(C::Items),
            millis_behind_latest: gauge(G::MillisBehind),
            in_flight_items: gauge(G::InFlightItems),
            in_flight_bytes: gauge(G::InFlightBytes),
            checkpoints: m.checkpoints[0].get(),
            checkpoint_errors: m.checkpoints[1..].iter().map(|c| c.get()).sum(),
            last_checkpoint_at: (last_checkpoint > 0.0).then_some(last_checkpoint),
            last_checkpoint_age_seconds: None,
            item_failures: count(C::ItemFailures),
            item_retries: count(C::ItemRetries),
            dead_letters: count(C::DeadLetters),
            last_problem_at: (last_problem > 0).then(|| last_problem as f64 / 1000.0),
            started: e.started,
        };
        row.age(now);
        row
    }

    /// Sets the state and the ages as of `now` (Unix seconds).
    fn age(&mut self, now: f64) {
        let since = |t: Option<f64>| t.map(|t| (now - t).max(0.0));
        self.ended_age_seconds = since(self.ended_at);
        self.last_checkpoint_age_seconds = since(self.last_checkpoint_at);
        let recent_problem =
            since(self.last_problem_at).is_some_and(|a| a < FAILING_WINDOW.as_secs_f64());
        self.state = match (self.end, recent_problem) {
            (Some(_), _) => LeaseState::Ended,
            (None, true) => LeaseState::Failing,
            (None, false) => LeaseState::Running,
        };
    }
}

impl MetricsSink {
    /// Every lease this sink knows, live and recently ended, sorted by application and
    /// shard (an ended lease leased again shows once, as the new lease).
    pub fn status(&self) -> Vec<LeaseStatus> {
        let now = unix_now();
        let mut rows: Vec<LeaseStatus> = self
            .leases
            .iter()
            .flat_map(|s| {
                let map = s.read().unwrap_or_else(PoisonError::into_inner);
                map.iter()
                    .map(|(id, e)| LeaseStatus::of(id, e, now))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        retired.retain(|r| {
            r.ended_at
                .is_none_or(|t| now - t < ENDED_LINGER.as_secs_f64())
        });
        let shown: Vec<LeaseStatus> = retired
            .iter()
            .filter(|r| {
                !rows
                    .iter()
                    .any(|l| l.application == r.application && l.shard == r.shard)
            })
            .cloned()
            .collect();
        drop(retired);
        for mut r in shown {
            r.age(now);
            rows.push(r);
        }
        rows.sort_by(|a, b| (&a.application, &a.shard).cmp(&(&b.application, &b.shard)));
        rows
    }

    /// The process's row.
    pub fn process_status(&self) -> ProcessStatus {
        ProcessStatus {
            leases_attached: self.families.leases_attached.get(),
            workers: self.families.workers.get(),
            worker_busy_seconds_total: self.families.busy.get(),
        }
    }

    /// Keeps the final status of an ended lease whose series are being removed (called
    /// under its shard's write lock).
    pub(super) fn keep_retired(&self, id: &LeaseId, e: &Entry) {
        let row = LeaseStatus::of(id, e, unix_now());
        let mut retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        retired.retain(|r| !(r.application == row.application && r.shard == row.shard));
        if retired.len() >= RETIRED_SHOWN {
            retired.pop_front();
        }
        retired.push_back(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{CheckpointRetry, Event, LeaseEnd, Sink};

    fn started(sink: &MetricsSink, id: &LeaseId) {
        sink.emit(
            Some(id),
            &Event::LeaseStarted {
                shard: id.shard.to_string(),
                checkpoint: None,
            },
        );
        sink.emit(
            Some(id),
            &Event::WorkersStarted {
                workers: 3,
                max_in_flight: 100,
                checkpoint_interval: Duration::from_secs(1),
            },
        );
    }

    /// A lease that received 10 records (30 items), completed 25, is 1500 ms behind, has
    /// 5 in flight and one stored checkpoint.
    fn busy(sink: &MetricsSink, id: &LeaseId) {
        started(sink, id);
        let e = |event: Event| sink.emit(Some(id), &event);
        e(Event::BatchReceived {
            records: 10,
            bytes: 999,
            millis_behind_latest: Some(1500),
        });
        e(Event::RecordsDelivered {
            records: 10,
            items: 30,
            millis_behind_latest: Some(1500),
        });
        e(Event::ItemsCompleted { items: 25 });
        e(Event::InFlight {
            items: 5,
            bytes: 640,
        });
        e(Event::CheckpointStored {
            position: "7/0".into(),
        });
    }

    fn row<'a>(rows: &'a [LeaseStatus], shard: &str) -> &'a LeaseStatus {
        rows.iter()
            .find(|r| r.shard == shard)
            .unwrap_or_else(|| panic!("no row of {shard}: {rows:?}"))
    }

    #[test]
    fn a_running_lease_shows_what_its_metrics_count() {
        let sink = MetricsSink::new().unwrap();
        let id = LeaseId::new("app", "shardId-1");
        busy(&sink, &id);
        let rows = sink.status();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            (r.application.as_str(), r.shard.as_str()),
            ("app", "shardId-1")
        );
        assert_eq!(r.state, LeaseState::Running);
        assert_eq!((r.end, r.ended_at), (None, None));
        assert_eq!((r.records, r.items_received, r.items), (10, 30, 25));
        assert_eq!(r.millis_behind_latest, 1500);
        assert_eq!((r.in_flight_items, r.in_flight_bytes), (5, 640));
        assert_eq!((r.checkpoints, r.checkpoint_errors), (1, 0));
        let age = r.last_checkpoint_age_seconds.unwrap();
        assert!((0.0..60.0).contains(&age), "{age}");
        assert_eq!(r.last_problem_at, None);
        // The scrape says the same numbers.
        let text = sink.render().unwrap();
        assert!(text.contains(r#"rsmld_items_total{application="app",shard="shardId-1"} 25"#));
        assert!(text.contains(r#"rsmld_records_total{application="app",shard="shardId-1"} 10"#));
    }

    #[test]
    fn a_problem_makes_a_running_lease_failing() {
        let sink = MetricsSink::new().unwrap();
        let (a, b, c) = (
            LeaseId::new("app", "a"),
            LeaseId::new("app", "b"),
            LeaseId::new("app", "c"),
        );
        for id in [&a, &b, &c] {
            busy(&sink, id);
        }
        sink.emit(
            Some(&a),
            &Event::ItemsFailed {
                worker: 0,
                items: 2,
                error: "boom".into(),
                retry: None,
            },
        );
        sink.emit(
            Some(&b),
            &Event::CheckpointFailed {
                position: "7/0".into(),
                error: "ThrottlingException".into(),
                next: CheckpointRetry::RetryIn {
                    retry: 1,
                    of: 3,
                    delay: Duration::from_millis(10),
                },
            },
        );
        let rows = sink.status();
        let (ra, rb, rc) = (row(&rows, "a"), row(&rows, "b"), row(&rows, "c"));
        assert_eq!((ra.state, ra.item_failures), (LeaseState::Failing, 2));
        assert_eq!((rb.state, rb.checkpoint_errors), (LeaseState::Failing, 1));
        assert_eq!(rc.state, LeaseState::Running);
        assert!(ra.last_problem_at.is_some() && rc.last_problem_at.is_none());
        // A problem long ago is no longer failing.
        let mut old = ra.clone();
        old.age(ra.last_problem_at.unwrap() + FAILING_WINDOW.as_secs_f64() + 1.0);
        assert_eq!(old.state, LeaseState::Running);
    }

    #[test]
    fn an_ended_lease_stays_with_its_end_after_the_scrape_removed_its_series() {
        let sink = MetricsSink::new().unwrap();
        let (ended, live) = (LeaseId::new("app", "ended"), LeaseId::new("app", "live"));
        busy(&sink, &ended);
        busy(&sink, &live);
        sink.emit(
            Some(&ended),
            &Event::LeaseEnded {
                end: LeaseEnd::ShardEnded,
            },
        );
        let before = sink.status();
        let r = row(&before, "ended");
        assert_eq!((r.state, r.end), (LeaseState::Ended, Some("shard_ended")));
        assert!(r.ended_age_seconds.unwrap() < 60.0);
        assert_eq!(row(&before, "live").state, LeaseState::Running);
        assert_eq!(sink.process_status().leases_attached, 1);

        assert!(sink.scrape().unwrap().contains(r#"shard="ended""#));
        assert!(
            !sink.scrape().unwrap().contains(r#"shard="ended""#),
            "series removed"
        );
        let after = sink.status();
        assert_eq!(after.len(), 2, "{after:?}");
        let r = row(&after, "ended");
        assert_eq!((r.state, r.end), (LeaseState::Ended, Some("shard_ended")));
        assert_eq!(
            (r.records, r.items, r.checkpoints),
            (10, 25, 1),
            "final counts"
        );

        // Leased again: one row, the new lease's.
        started(&sink, &ended);
        let again = sink.status();
        assert_eq!(again.len(), 2, "{again:?}");
        let r = row(&again, "ended");
        assert_eq!((r.state, r.end, r.records), (LeaseState::Running, None, 0));
    }

    #[test]
    fn ended_leases_kept_are_bounded() {
        let sink = MetricsSink::new().unwrap();
        for i in 0..RETIRED_SHOWN + 10 {
            let id = LeaseId::new("app", &format!("s{i:03}"));
            started(&sink, &id);
            sink.emit(
                Some(&id),
                &Event::LeaseEnded {
                    end: LeaseEnd::LeaseLost,
                },
            );
            assert!(sink.retire(&id));
        }
        let rows = sink.status();
        assert_eq!(rows.len(), RETIRED_SHOWN);
        // The newest are kept.
        assert_eq!(rows[0].shard, "s010");
        assert!(rows.iter().all(|r| r.end == Some("lease_lost")));
    }

    #[test]
    fn the_process_row_counts_leases_workers_and_busy_time() {
        let sink = MetricsSink::new().unwrap();
        busy(&sink, &LeaseId::new("a", "1"));
        busy(&sink, &LeaseId::new("b", "1"));
        sink.emit(
            None,
            &Event::BatchHandled {
                worker: 0,
                items: 3,
                duration: Duration::from_millis(1500),
            },
        );
        let p = sink.process_status();
        assert_eq!((p.leases_attached, p.workers), (2, 3));
        assert!((p.worker_busy_seconds_total - 1.5).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn a_row_serializes_with_snake_case_state_and_nulls() {
        let sink = MetricsSink::new().unwrap();
        started(&sink, &LeaseId::new("app", "s"));
        let v = serde_json::to_value(&sink.status()[0]).unwrap();
        assert_eq!(v["state"], "running");
        assert_eq!(v["end"], serde_json::Value::Null);
        assert_eq!(v["last_checkpoint_at"], serde_json::Value::Null);
        assert_eq!(v["items"], 0);
    }
}
