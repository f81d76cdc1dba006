//! `--split lines`: one item per non-empty line (`\n`, a trailing `\r` removed), refused
//! at the first line past the item bound.

use super::SplitError;

/// The non-empty lines of `bytes`, at most `max_items` of them.
pub(super) fn lines(bytes: &[u8], max_items: usize) -> Result<Vec<&[u8]>, SplitError> {
    let mut lines = Vec::new();
    let all = bytes
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty());
    for l in all {
        if lines.len() == max_items {
            return Err(SplitError::TooManyItems(max_items));
        }
        lines.push(l);
    }
    Ok(lines)
}
