//! `--split kpl` (the default): KPL aggregates, recognised exactly as the Java KCL does
//! ([`crate::kpl::deaggregate`]), become one item per user record; anything else is one
//! item, untouched (and never even base64-decoded: see `Splitter::payload`).

use super::SplitError;
use crate::kpl::{deaggregate_at_most, DeaggregateError, Deaggregated, UserRecord};

/// The user records of an aggregate, at most `max_items`, and how it broke off, if it
/// did; `None`: not an aggregate (deliver the record whole).
#[allow(clippy::type_complexity)]
pub(super) fn user_records(
    bytes: &[u8],
    max_items: usize,
) -> Result<Option<(Vec<UserRecord<'_>>, Option<DeaggregateError>)>, SplitError> {
    match deaggregate_at_most(bytes, max_items) {
        Ok(Deaggregated::Plain) => Ok(None),
        Ok(Deaggregated::Aggregated { records, partial }) => Ok(Some((records, partial))),
        Err(_) => Err(SplitError::TooManyItems(max_items)),
    }
}
