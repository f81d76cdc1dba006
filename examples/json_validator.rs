//! A compiled-in processor: every item must be a JSON document.
//!
//! This is the Rust API in full. `Validator` is the per-worker handler; it is handed
//! batches, and answers which items failed (invalid JSON) — the failure policy
//! (`--on-error fail|retry|skip`) decides what happens to them. Valid documents are
//! printed with `println!`: that is deliberate, to show that nothing a handler prints can
//! reach the daemon's protocol pipe (rsmld points fd 1 at stderr and keeps the protocol
//! on a private descriptor).
//!
//! Run it like the `rsmld` binary, without `--handler`:
//! `executableName = /opt/bin/json_validator --workers 4 --on-error skip --dead-letter /var/lib/dlq`

use std::sync::Arc;

use rsmld::handler::{BatchError, Handler, HandlerError, HandlerFactory, WorkerContext};
use rsmld::pipeline::item::Item;
use rsmld::telemetry::LeaseId;

struct Validator {
    worker: usize,
}

impl Handler for Validator {
    fn process(&mut self, _lease: &LeaseId, items: &[Item]) -> Result<(), BatchError> {
        let mut failed = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let bytes = match item.data.bytes() {
                Ok(b) => b,
                Err(e) => {
                    failed.push((i, HandlerError::new(format!("bad base64: {e}"))));
                    continue;
                }
            };
            match serde_json::from_slice::<serde_json::Value>(&bytes) {
                #[expect(clippy::print_stdout, reason = "deliberate: see the module docs")]
                Ok(doc) => println!(
                    "worker {} valid {}/{}: {doc}",
                    self.worker, item.sequence_number, item.sub_sequence_number
                ),
                Err(e) => failed.push((i, HandlerError::new(format!("not JSON: {e}")))),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(BatchError::Items(failed))
        }
    }
}

struct Factory;

impl HandlerFactory for Factory {
    fn create(&self, ctx: &WorkerContext) -> Result<Box<dyn Handler>, HandlerError> {
        Ok(Box::new(Validator { worker: ctx.worker }))
    }
}

fn main() -> std::process::ExitCode {
    rsmld::app::main(Some(Arc::new(Factory)))
}
