//! Gzip payloads in the parsing modes (`lines`, `json-array`, `cloudwatch-logs`): inflated
//! before they are split, to a bound, so that a decompression bomb is an error and not an
//! allocation.

use std::io::Read;

use super::SplitError;

/// Inflates a gzip payload (magic 1F 8B), to at most `max_inflated` bytes; anything else
/// is returned as it is.
pub(super) fn inflate(bytes: Vec<u8>, max_inflated: usize) -> Result<Vec<u8>, SplitError> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(max_inflated));
    let limit = max_inflated as u64 + 1;
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .take(limit)
        .read_to_end(&mut out)
        .map_err(SplitError::Gzip)?;
    if out.len() > max_inflated {
        return Err(SplitError::TooLarge(max_inflated));
    }
    Ok(out)
}
