//! Routing: which worker an item goes to. The only place it is computed.
//!
//! Per-key order is the promise the pool keeps (same key → same worker → FIFO), so every
//! path that sorts items into per-worker blocks (the mapper, and the pool for a block
//! handed over unsorted) must agree on the worker of a key, and a restart must too (a
//! handler may keep per-key state in files). Hence one function, stable forever:
//! FNV-1a 64 of the partition key, modulo the number of workers.

use super::item::Item;

/// The stable partition function: FNV-1a 64 of `key`, modulo `workers`.
pub fn partition(key: &[u8], workers: usize) -> usize {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    (h % workers.max(1) as u64) as usize
}

/// The worker `item` goes to, out of `workers` (by its partition key; one worker needs
/// no hash).
#[inline]
pub fn worker_of(item: &Item<'_>, workers: usize) -> usize {
    if workers == 1 {
        0
    } else {
        partition(item.partition_key.as_bytes(), workers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_stable_and_documented() {
        // FNV-1a 64 test vectors: "" -> cbf29ce484222325, "a" -> af63dc4c8601ec8c.
        assert_eq!(
            partition(b"", 1_000_003),
            (0xcbf2_9ce4_8422_2325u64 % 1_000_003) as usize
        );
        assert_eq!(
            partition(b"a", 1000),
            (0xaf63_dc4c_8601_ec8cu64 % 1000) as usize
        );
        assert_eq!(partition(b"anything", 1), 0);
    }
}
