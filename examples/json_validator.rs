//! A custom rsmld binary: every item must be a JSON document — copy this to start yours.
//!
//! This is the Rust API in full, and it uses only the crate root (`rsmld::…`):
//!
//! - `Validator` is the per-worker [`Handler`]. It is handed batches and answers which
//!   items failed (invalid JSON, a missing field); the failure policy (`--on-error
//!   fail|retry|skip`) decides what happens to them. Valid documents are printed with
//!   `println!`: that is deliberate, to show that nothing a handler prints can reach the
//!   daemon's protocol pipe (rsmld points fd 1 at stderr and keeps the protocol on a
//!   private descriptor).
//! - `JsonArgs` is the handler's own flag group, `--json-require FIELD`, shown in
//!   `--help` under "JSON validator" and read from `rsmld.json.require` in the
//!   `--properties` file (`json_validator check --properties FILE` knows it too).
//! - `main` names the binary (`--help`, `--version`) and makes the handler the default,
//!   so the daemon starts it without `--handler`:
//!   `executableName = /opt/bin/json_validator --workers 4 --on-error skip --dead-letter /var/lib/dlq`

use std::process::ExitCode;
use std::sync::Arc;

use rsmld::{
    BatchError, ConfigError, General, Handler, HandlerDescriptor, HandlerError, HandlerFactory,
    HandlerGroup, Item, LeaseId, Program, WorkerContext,
};

/// The handler's flags (each long flag `--json-x` is also the key `rsmld.json.x`).
#[derive(Clone, Debug, clap::Args)]
struct JsonArgs {
    /// Every document must be an object with this field (repeat for several).
    #[arg(long = "json-require", value_name = "FIELD")]
    require: Vec<String>,
}

impl HandlerGroup for JsonArgs {
    fn check(&self, _general: &General<'_>) -> Result<(), ConfigError> {
        match self.require.iter().find(|f| f.is_empty()) {
            // Named as the user wrote it: `--json-require`, or `rsmld.json.require` with
            // its file and line when it came from --properties.
            Some(_) => Err(ConfigError::flag("json-require", "needs a field name")),
            None => Ok(()),
        }
    }

    fn build(&self, _general: &General<'_>) -> Result<Arc<dyn HandlerFactory>, ConfigError> {
        Ok(Arc::new(Factory {
            require: self.require.clone(),
        }))
    }
}

struct Factory {
    require: Vec<String>,
}

impl HandlerFactory for Factory {
    fn create(&self, ctx: &WorkerContext) -> Result<Box<dyn Handler>, HandlerError> {
        Ok(Box::new(Validator {
            worker: ctx.worker,
            require: self.require.clone(),
        }))
    }
}

struct Validator {
    worker: usize,
    require: Vec<String>,
}

impl Validator {
    /// Whether one item is a valid document; prints it if so.
    fn validate(&self, item: &Item<'_>) -> Result<(), HandlerError> {
        let bytes = item
            .data
            .bytes()
            .map_err(|e| HandlerError::with_source("bad base64", e))?;
        let doc: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| HandlerError::with_source("not JSON", e))?;
        if let Some(field) = self.require.iter().find(|f| doc.get(f.as_str()).is_none()) {
            return Err(HandlerError::new(format!("no field {field:?}")));
        }
        #[expect(clippy::print_stdout, reason = "deliberate: see the module docs")]
        {
            println!(
                "worker {} valid {}/{}: {doc}",
                self.worker, item.sequence_number, item.sub_sequence_number
            );
        }
        Ok(())
    }
}

impl Handler for Validator {
    fn process(&mut self, _lease: &LeaseId, items: &[Item]) -> Result<(), BatchError> {
        let failed: Vec<(usize, HandlerError)> = items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.validate(item).err().map(|e| (i, e)))
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(BatchError::Items(failed))
        }
    }
}

fn main() -> ExitCode {
    let validator =
        HandlerDescriptor::new::<JsonArgs>("json", "Every item must be a JSON document")
            .with_heading("JSON validator");
    let program = Program::new("json_validator", env!("CARGO_PKG_VERSION"))
        .about("json_validator: a KCL record processor that checks every item is a JSON document.")
        .default_handler(validator);
    rsmld::run(program)
}
