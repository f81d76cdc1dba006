//! `--split cloudwatch-logs`: one item per log event of a CloudWatch Logs subscription
//! `DATA_MESSAGE`, as the JSON object `{"owner","logGroup","logStream","id","timestamp",
//! "message"}`, rendered one event at a time; a `CONTROL_MESSAGE` (the service's health
//! check) yields zero items.

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::SplitError;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CloudWatchPayload<'a> {
    message_type: String,
    #[serde(default, borrow)]
    owner: Option<&'a RawValue>,
    #[serde(default, borrow)]
    log_group: Option<&'a RawValue>,
    #[serde(default, borrow)]
    log_stream: Option<&'a RawValue>,
    #[serde(default, borrow)]
    log_events: Vec<LogEvent<'a>>,
}

#[derive(Deserialize)]
pub(super) struct LogEvent<'a> {
    #[serde(borrow)]
    pub(super) id: &'a RawValue,
    #[serde(borrow)]
    pub(super) timestamp: &'a RawValue,
    #[serde(borrow)]
    pub(super) message: &'a RawValue,
}

/// A `DATA_MESSAGE`'s header and events, ready to render one event at a time.
pub(super) struct LogsPayload<'a> {
    pub(super) owner: &'a str,
    pub(super) log_group: &'a str,
    pub(super) log_stream: &'a str,
    pub(super) log_events: Vec<LogEvent<'a>>,
}

impl LogsPayload<'_> {
    /// The bytes an event's JSON adds to its own three values.
    pub(super) fn header_len(&self) -> usize {
        const FIXED: usize =
            r#"{"owner":,"logGroup":,"logStream":,"id":,"timestamp":,"message":}"#.len();
        FIXED + self.owner.len() + self.log_group.len() + self.log_stream.len()
    }

    /// Appends the item JSON of event `i` to `out`.
    pub(super) fn render(&self, i: usize, out: &mut String) {
        let e = &self.log_events[i];
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            r#"{{"owner":{},"logGroup":{},"logStream":{},"id":{},"timestamp":{},"message":{}}}"#,
            self.owner,
            self.log_group,
            self.log_stream,
            e.id.get(),
            e.timestamp.get(),
            e.message.get()
        );
    }
}

fn raw_or_null(v: Option<&RawValue>) -> &str {
    v.map_or("null", RawValue::get)
}

/// A CloudWatch Logs subscription payload: `None` for a `CONTROL_MESSAGE`.
pub(super) fn payload(bytes: &[u8]) -> Result<Option<LogsPayload<'_>>, SplitError> {
    let p: CloudWatchPayload<'_> =
        serde_json::from_slice(bytes).map_err(|error| SplitError::Json {
            expected: "a CloudWatch Logs subscription payload",
            error,
        })?;
    match p.message_type.as_str() {
        "CONTROL_MESSAGE" => return Ok(None),
        "DATA_MESSAGE" => {}
        other => return Err(SplitError::MessageType(other.to_owned())),
    }
    Ok(Some(LogsPayload {
        owner: raw_or_null(p.owner),
        log_group: raw_or_null(p.log_group),
        log_stream: raw_or_null(p.log_stream),
        log_events: p.log_events,
    }))
}
