//! `--handler discard`: counts items and drops them; no flags of its own.

use std::sync::Arc;

use super::{General, HandlerDescriptor, HandlerGroup};
use crate::cli::error::ConfigError;
use crate::handler::discard::DiscardFactory;
use crate::handler::HandlerFactory;

/// The discard handler's flags: none.
#[derive(Clone, Debug, clap::Args)]
pub struct DiscardArgs {}

impl HandlerGroup for DiscardArgs {
    fn build(&self, _: &General<'_>) -> Result<Arc<dyn HandlerFactory>, ConfigError> {
        Ok(Arc::new(DiscardFactory::new()))
    }
}

/// The discard handler.
pub fn descriptor() -> HandlerDescriptor {
    HandlerDescriptor::new::<DiscardArgs>("discard", "Count items and drop them")
}
