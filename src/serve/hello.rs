//! What `rsmld attach` tells the server, and what the server answers.
//!
//! The hello is one JSON line, `{"version":1,"application":"orders","stream":"order-events"}`
//! (`stream` added within version 1: optional both ways), sent with the
//! daemon's stdin and stdout attached (SCM_RIGHTS, [`super::fd`]). The answer, once the
//! lease has ended, is one byte: the lease's exit status, which attach exits with. A closed
//! socket without that byte means the server went away: attach exits non-zero at once.

use serde::{Deserialize, Serialize};

/// The version of this exchange; a server refuses another.
pub const VERSION: u32 = 1;

/// Longest hello line accepted (an application name is short).
pub const MAX_HELLO: usize = 4096;

/// The attach's hello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`VERSION`].
    pub version: u32,
    /// The KCL application (`applicationName` of the daemon's properties), or empty.
    #[serde(default)]
    pub application: String,
    /// The stream (`streamName` of the daemon's properties), or empty. Added within
    /// version 1: a hello without it (an older attach) is served with an empty stream,
    /// and an older server ignores it.
    #[serde(default)]
    pub stream: String,
}

/// A hello that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    /// Not the JSON of a hello.
    #[error("bad hello: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Another version of the exchange.
    #[error("hello version {got}, this server speaks {VERSION}")]
    Version {
        /// The version the attach sent.
        got: u32,
    },
    /// Longer than [`MAX_HELLO`] without a newline.
    #[error("hello longer than {MAX_HELLO} bytes")]
    TooLong,
}

impl Hello {
    /// A hello of this version for `application` and `stream`.
    pub fn new(application: &str, stream: &str) -> Hello {
        Hello {
            version: VERSION,
            application: application.to_owned(),
            stream: stream.to_owned(),
        }
    }

    /// The line sent (newline included).
    pub fn encode(&self) -> Vec<u8> {
        // A struct of a number and a string always serializes.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// Parses one line (without its newline) and checks the version.
    pub fn decode(line: &[u8]) -> Result<Hello, HelloError> {
        let hello: Hello = serde_json::from_slice(line)?;
        if hello.version != VERSION {
            return Err(HelloError::Version { got: hello.version });
        }
        Ok(hello)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let line = Hello::new("orders", "order-events").encode();
        assert_eq!(
            line,
            b"{\"version\":1,\"application\":\"orders\",\"stream\":\"order-events\"}\n"
        );
        assert_eq!(
            Hello::decode(&line[..line.len() - 1]).unwrap(),
            Hello::new("orders", "order-events")
        );
        assert_eq!(Hello::decode(br#"{"version":1}"#).unwrap().application, "");
        // An older attach's hello, without the stream.
        assert_eq!(
            Hello::decode(br#"{"version":1,"application":"orders"}"#).unwrap(),
            Hello::new("orders", "")
        );
        assert!(matches!(
            Hello::decode(br#"{"version":2,"application":"x"}"#),
            Err(HelloError::Version { got: 2 })
        ));
        assert!(matches!(
            Hello::decode(b"nope"),
            Err(HelloError::Malformed(_))
        ));
    }
}
