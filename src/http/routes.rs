//! What the metrics listener answers (pure: a method and a target in, a response out).
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /metrics` | [`MetricsSink::scrape`], as [`CONTENT_TYPE`] |
//! | `GET /status.json` | the lease table and the process's row ([`status_json`]) |
//! | `GET /` | the status page: one self-contained HTML file (inline CSS and JS, no outside asset) that polls `/status.json` every 2 s |
//! | another method on these | 405, with `Allow: GET` |
//! | any other path | 404 |
//!
//! A query string is ignored. Every answer says `Cache-Control: no-store` (it is live
//! data) and `Connection: close`.
//!
//! Rates (items/s per lease, workers busy) are computed here, from the change of the
//! counters between two status snapshots at least [`RATE_WINDOW`] apart: whoever polls
//! (the page every 2 s, a script, several browsers at once) reads rates over a real
//! second or more, and a browser whose clock runs differently (a headless one with
//! virtual time) shows the same numbers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::metrics::status::{LeaseState, LeaseStatus};
use crate::metrics::{MetricsSink, CONTENT_TYPE};

/// The shortest time over which rates are computed.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

/// The longest: after a longer pause in polling the rates start afresh (`null` once)
/// rather than show an average over the pause.
pub const RATE_MAX_WINDOW: Duration = Duration::from_secs(60);

/// The status page (`GET /`).
pub const STATUS_PAGE: &str = include_str!("status.html");

/// What every answer reads.
#[derive(Debug)]
pub struct Context {
    metrics: Arc<MetricsSink>,
    started: Instant,
    rates: Mutex<Rates>,
}

impl Context {
    /// Answers from `metrics`; uptime counts from now.
    pub fn new(metrics: Arc<MetricsSink>) -> Self {
        Context {
            metrics,
            started: Instant::now(),
            rates: Mutex::new(Rates::default()),
        }
    }
}

/// An answer: status code, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its body.
    pub body: Vec<u8>,
}

impl Response {
    /// A plain-text answer.
    pub fn text(status: u16, body: &str) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
        }
    }

    /// The whole HTTP/1.1 response: status line, headers, body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let allow = if self.status == 405 {
            "Allow: GET\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    }
}

/// The answer to `method target`.
pub fn respond(method: &str, target: &str, ctx: &Context) -> Response {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if !matches!(path, "/" | "/metrics" | "/status.json") {
        return Response::text(404, "not found: try /, /metrics or /status.json\n");
    }
    if method != "GET" {
        return Response::text(405, "only GET\n");
    }
    match path {
        "/metrics" => match ctx.metrics.scrape() {
            Ok(text) => Response {
                status: 200,
                content_type: CONTENT_TYPE,
                body: text.into_bytes(),
            },
            Err(e) => {
                log::error!("rendering the metrics: {e}");
                Response::text(500, "the metrics could not be rendered\n")
            }
        },
        "/status.json" => Response {
            status: 200,
            content_type: "application/json",
            body: status_json(ctx).to_string().into_bytes(),
        },
        _ => Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: STATUS_PAGE.as_bytes().to_vec(),
        },
    }
}

/// `GET /status.json`: the process's row (`version`, `uptime_seconds`, `time` (Unix
/// seconds), `leases_attached`, `workers`, `worker_busy_seconds_total`, `workers_busy`)
/// and `leases`, the lease table ([`LeaseStatus`], each row with its `items_per_second`).
/// A rate is `null` until there are two snapshots to compute it from.
pub fn status_json(ctx: &Context) -> serde_json::Value {
    let process = ctx.metrics.process_status();
    let leases = ctx.metrics.status();
    let rates = ctx
        .rates
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .update(Instant::now(), &leases, process.worker_busy_seconds_total);
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let rows: Vec<serde_json::Value> = leases
        .iter()
        .map(|l| {
            let mut v = serde_json::to_value(l).unwrap_or_default();
            if let Some(row) = v.as_object_mut() {
                let rate = rates.items.get(&key(l)).copied();
                row.insert("items_per_second".into(), rate.into());
            }
            v
        })
        .collect();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": ctx.started.elapsed().as_secs_f64(),
        "time": time,
        "leases_attached": process.leases_attached,
        "workers": process.workers,
        "worker_busy_seconds_total": process.worker_busy_seconds_total,
        "workers_busy": rates.busy,
        "leases": rows,
    })
}

fn key(l: &LeaseStatus) -> Key {
    (l.application.clone(), l.shard.clone())
}

/// A lease's key in the rate tables: application, shard.
type Key = (String, String);

/// The start of a rate window: when, each lease's completed items (and when that lease
/// started), the workers' busy time.
type Base = (Instant, HashMap<Key, (u64, Instant)>, f64);

/// The counters at the start of the current rate window, and the rates of the last one.
#[derive(Debug, Default)]
struct Rates {
    base: Option<Base>,
    last: Computed,
}

/// Rates of one window: items/s per running lease, workers busy on average.
#[derive(Debug, Default, Clone)]
struct Computed {
    items: HashMap<Key, f64>,
    busy: Option<f64>,
}

impl Rates {
    /// Takes a snapshot at `now`; the rates of the last window of at least
    /// [`RATE_WINDOW`] that ended by `now`.
    fn update(&mut self, now: Instant, leases: &[LeaseStatus], busy: f64) -> Computed {
        let fresh = || {
            let items = leases
                .iter()
                .map(|l| (key(l), (l.items, l.started)))
                .collect();
            Some((now, items, busy))
        };
        match &self.base {
            None => self.base = fresh(),
            Some((at, items, base_busy)) => {
                let dt = now.saturating_duration_since(*at);
                if dt >= RATE_WINDOW {
                    self.last = Computed::default();
                    if dt <= RATE_MAX_WINDOW {
                        let secs = dt.as_secs_f64();
                        for l in leases.iter().filter(|l| l.state != LeaseState::Ended) {
                            // A lease new in this window, or leased again (its counters
                            // restarted, whether or not they are past the old ones yet),
                            // has no rate yet.
                            let same = |&&(b, started): &&(u64, Instant)| {
                                started == l.started && b <= l.items
                            };
                            if let Some(&(before, _)) = items.get(&key(l)).filter(same) {
                                self.last
                                    .items
                                    .insert(key(l), (l.items - before) as f64 / secs);
                            }
                        }
                        self.last.busy = Some(((busy - base_busy) / secs).max(0.0));
                    }
                    self.base = fresh();
                }
            }
        }
        self.last.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{Event, LeaseId, Sink};

    /// Leases `a` and `b` of `app`, started in a sink of their own.
    fn two_leases() -> MetricsSink {
        let sink = MetricsSink::new().unwrap();
        for shard in ["a", "b"] {
            let id = LeaseId::new("app", shard);
            let started = Event::LeaseStarted {
                shard: shard.into(),
                checkpoint: None,
            };
            sink.emit(Some(&id), &started);
        }
        sink
    }

    /// The rows of `sink`'s leases with `items` completed each.
    fn with_items(sink: &MetricsSink, items: u64) -> Vec<LeaseStatus> {
        let mut rows = sink.status();
        for r in &mut rows {
            r.items = items;
        }
        rows
    }

    #[test]
    fn rates_are_deltas_over_a_window_of_at_least_a_second() {
        let sink = two_leases();
        let rows = |items| with_items(&sink, items);
        let mut rates = Rates::default();
        let t0 = Instant::now();
        let first = rates.update(t0, &rows(100), 1.0);
        assert!(
            first.items.is_empty() && first.busy.is_none(),
            "no rate from one snapshot"
        );
        // Too soon: still none, and the window keeps its start.
        let soon = rates.update(t0 + Duration::from_millis(300), &rows(150), 1.2);
        assert!(soon.items.is_empty());
        let r = rates.update(t0 + Duration::from_secs(2), &rows(300), 4.0);
        assert_eq!(r.items[&("app".to_owned(), "a".to_owned())], 100.0);
        assert_eq!(r.busy, Some(1.5));
        // Polls inside the next window repeat the last rates.
        let again = rates.update(t0 + Duration::from_millis(2500), &rows(9999), 4.0);
        assert_eq!(again.items[&("app".to_owned(), "b".to_owned())], 100.0);
        // A counter that went back (the shard leased again) has no rate; nor has an ended
        // lease.
        let mut back = rows(10);
        back[1].state = LeaseState::Ended;
        back[1].end = Some("lease_lost");
        let r = rates.update(t0 + Duration::from_secs(4), &back, 5.0);
        assert!(r.items.is_empty(), "{r:?}");
        // After a long pause in polling: nothing averaged over it.
        let r = rates.update(t0 + Duration::from_secs(400), &rows(5000), 50.0);
        assert!(r.items.is_empty() && r.busy.is_none(), "{r:?}");
    }

    /// A shard leased again whose new counters are already past the old ones: no rate
    /// from the old lease's count (before, 150 new items read as 50 since the window began).
    #[test]
    fn a_shard_leased_again_has_no_rate_in_its_first_window() {
        let sink = two_leases();
        let mut rates = Rates::default();
        let t0 = Instant::now();
        rates.update(t0, &with_items(&sink, 100), 1.0);
        let b = LeaseId::new("app", "b");
        sink.emit(
            Some(&b),
            &Event::LeaseEnded {
                end: crate::telemetry::LeaseEnd::LeaseLost,
            },
        );
        sink.emit(
            Some(&b),
            &Event::LeaseStarted {
                shard: "b".into(),
                checkpoint: None,
            },
        );
        let r = rates.update(t0 + Duration::from_secs(2), &with_items(&sink, 150), 2.0);
        assert_eq!(
            r.items.get(&("app".to_owned(), "a".to_owned())),
            Some(&25.0)
        );
        assert_eq!(
            r.items.get(&("app".to_owned(), "b".to_owned())),
            None,
            "{r:?}"
        );
        // The window after: the new lease's own rate.
        let r = rates.update(t0 + Duration::from_secs(4), &with_items(&sink, 170), 3.0);
        assert_eq!(
            r.items.get(&("app".to_owned(), "b".to_owned())),
            Some(&10.0)
        );
    }

    #[test]
    fn status_json_carries_the_rates() {
        let sink = Arc::new(MetricsSink::new().unwrap());
        let id = LeaseId::new("app", "s");
        sink.emit(
            Some(&id),
            &Event::LeaseStarted {
                shard: "s".into(),
                checkpoint: None,
            },
        );
        let ctx = Context::new(sink.clone());
        let v = status_json(&ctx);
        assert_eq!(v["leases"][0]["items_per_second"], serde_json::Value::Null);
        assert_eq!(v["workers_busy"], serde_json::Value::Null);
        // Move the window's start back instead of sleeping.
        if let Some((at, _, _)) = &mut ctx.rates.lock().unwrap().base {
            *at -= Duration::from_secs(2);
        }
        sink.emit(Some(&id), &Event::ItemsCompleted { items: 10 });
        let v = status_json(&ctx);
        let rate = v["leases"][0]["items_per_second"].as_f64().unwrap();
        assert!(rate > 0.0 && rate <= 5.0, "{rate}");
        assert_eq!(v["workers_busy"], 0.0);
    }
}
