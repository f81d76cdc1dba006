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

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::metrics::{MetricsSink, CONTENT_TYPE};

/// The status page (`GET /`).
pub const STATUS_PAGE: &str = include_str!("status.html");

/// What every answer reads.
#[derive(Debug)]
pub struct Context {
    metrics: Arc<MetricsSink>,
    started: Instant,
}

impl Context {
    /// Answers from `metrics`; uptime counts from now.
    pub fn new(metrics: Arc<MetricsSink>) -> Self {
        Context {
            metrics,
            started: Instant::now(),
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
/// seconds), `leases_attached`, `workers`, `worker_busy_seconds_total`) and `leases`, the
/// lease table ([`crate::metrics::status::LeaseStatus`]).
pub fn status_json(ctx: &Context) -> serde_json::Value {
    let process = ctx.metrics.process_status();
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": ctx.started.elapsed().as_secs_f64(),
        "time": time,
        "leases_attached": process.leases_attached,
        "workers": process.workers,
        "worker_busy_seconds_total": process.worker_busy_seconds_total,
        "leases": ctx.metrics.status(),
    })
}
