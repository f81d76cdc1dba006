//! The mapper: records → items → one block per worker, numbered from an admission.
//!
//! Why it exists: splitting a line's records into items is most of the CPU a line costs
//! before its items reach the workers, so it must be fast (several threads for a large
//! line), bounded (a line's items are not bounded by its size, so they are made in
//! *parts* of at most a [`PartBudget`]) and sorted (each item goes into the block of the
//! worker [`worker_of`] names, so a block is handed over, and dropped, by one thread).
//! The protocol core only learns each record's position and item count ([`Part::records`]).
//!
//! Two inputs, one output: records decoded on the lease's thread ([`Mapper::map_decoded`],
//! sequential), or a large line's records as the structural scan found them
//! ([`Mapper::map_scanned`], parsed and split in parallel chunks on the mapper threads, the
//! global rayon pool). Either way the records are numbered from the admission's next id
//! ([`crate::protocol::session::Admission::next_id`]), so the ids the items carry are the
//! ids the tracker counts.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::item::ItemBlock;
use super::partition::worker_of;
use super::share::MapperShare;
use super::split::{SplitNote, Splitter};
use crate::codec::parser::parse_record_at;
use crate::codec::scan::ProcessRecordsLayout;
use crate::codec::{LineBuf, Record};
use crate::protocol::budget::PartBudget;
use crate::protocol::sequence::{DigitsSlab, Esn, SequenceNumber, SlabSpan};
use crate::protocol::tracker::RecordId;

/// A part of a line, mapped: its records and their items.
#[derive(Debug, Default)]
pub struct Part {
    /// (record, number of its items), in delivery order.
    pub records: Vec<(Esn, u32)>,
    /// The items, in blocks in record order, each with the worker it goes to.
    pub blocks: Vec<(Option<usize>, ItemBlock)>,
}

impl Part {
    /// Heap bytes of the part's blocks (see [`ItemBlock::heap_bytes`]).
    pub fn heap_bytes(&self) -> usize {
        self.blocks.iter().map(|(_, b)| b.heap_bytes()).sum()
    }

    /// Items in the part.
    pub fn items(&self) -> usize {
        self.blocks.iter().map(|(_, b)| b.len()).sum()
    }

    /// The blocks to dispatch: without the items of `duplicates` (ascending record ids,
    /// as the session returns them), and without empty blocks.
    pub fn into_blocks(self, duplicates: &[RecordId]) -> Vec<(Option<usize>, ItemBlock)> {
        let mut blocks = self.blocks;
        if !duplicates.is_empty() {
            // Ids increase, so a binary search finds a duplicate's items.
            for (_, block) in &mut blocks {
                block.retain_records(|id| duplicates.binary_search(&id).is_err());
            }
        }
        blocks.retain(|(_, block)| !block.is_empty());
        blocks
    }
}

/// Splits records into per-worker blocks; see the module docs.
pub struct Mapper<'a> {
    splitter: &'a Splitter,
    shard: &'a str,
    workers: usize,
    budget: PartBudget,
    share: Option<(&'a MapperShare, u64)>,
}

impl<'a> Mapper<'a> {
    /// A mapper for one lease (`shard` names it in warnings) over `workers` workers, whose
    /// parts end at `budget`.
    pub fn new(splitter: &'a Splitter, shard: &'a str, workers: usize, budget: PartBudget) -> Self {
        Mapper {
            splitter,
            shard,
            workers: workers.max(1),
            budget,
            share: None,
        }
    }

    /// The same mapper, for the lease that holds `token` ([`MapperShare::token`]),
    /// mapping large lines in parallel only when `share` says so (see [`MapperShare`]);
    /// without it, always in parallel.
    pub fn sharing(mut self, share: &'a MapperShare, token: u64) -> Self {
        self.share = Some((share, token));
        self
    }

    /// Maps decoded records from the front of `records`, numbered from `first`, until
    /// the part reaches the budget (at least one record, if there is one). Payloads may
    /// point into `line`.
    pub fn map_decoded(
        &self,
        records: &[Record],
        first: RecordId,
        line: Option<&Arc<LineBuf>>,
    ) -> Part {
        let workers = self.workers;
        let mut blocks: Vec<ItemBlock> = (0..workers)
            .map(|_| ItemBlock::new(line.cloned()))
            .collect();
        let mut part = Part::default();
        let (mut items, mut bytes) = (0usize, 0usize);
        for (i, record) in records.iter().enumerate() {
            let id = RecordId(first.0 + i as u64);
            let n = self
                .splitter
                .split_into(self.shard, record.into(), id, &mut |item| {
                    blocks[worker_of(item, workers)].push(item)
                });
            part.records.push((record.esn(), n));
            items += n as usize;
            if n > 1 || i % 64 == 63 {
                bytes = blocks.iter().map(ItemBlock::heap_bytes).sum();
            }
            if items >= self.budget.items || bytes >= self.budget.bytes {
                break;
            }
        }
        part.blocks = blocks
            .into_iter()
            .enumerate()
            .map(|(w, b)| (Some(w), b))
            .collect();
        part
    }

    /// Maps a large `processRecords` line on several threads: the scan found the records,
    /// chunks of them are parsed and split in parallel, and the results are concatenated
    /// in order: `(part, true)`. When the items reach the budget, every chunk stops and the
    /// part holds the records split up to the first gap, a prefix of the line:
    /// `(part, false)`; the rest is then decoded and mapped in parts. `None` (a record
    /// parse declines) means: use the ordinary decoder, which also reports errors.
    /// Problems found while splitting are reported only for records in the part, so a
    /// record split again later warns once.
    pub fn map_scanned(
        &self,
        line: &Arc<LineBuf>,
        layout: &ProcessRecordsLayout<'_>,
        first: RecordId,
    ) -> Option<(Part, bool)> {
        use rayon::prelude::*;
        let chunk = (layout.records.len() / (rayon::current_num_threads().max(1) * 4)).max(64);
        let (splitter, workers, budget) = (self.splitter, self.workers, self.budget);
        let first_id = first.0;
        let (items, bytes) = (AtomicUsize::new(0), AtomicUsize::new(0));
        // Each chunk parses its records and sorts their items into one block per worker
        // (so a block's items are dropped by one thread only).
        let over = AtomicBool::new(false);
        type Notes = Vec<(String, i64, SplitNote)>;
        // A chunk's records (fewer than its ranges once the budget is exhausted), blocks
        // and notes.
        type Chunk = (Vec<(Esn, u32)>, Vec<ItemBlock>, Notes);
        let map_chunk = |(c, ranges): (usize, &[std::ops::Range<usize>])| -> Option<Chunk> {
            let mut blocks: Vec<ItemBlock> = (0..workers)
                .map(|_| ItemBlock::with_capacity(Some(line.clone()), ranges.len() / workers + 8))
                .collect();
            // Sequence numbers: digits into one slab for the chunk (a sentinel or a
            // malformed one, parsed alone), made into numbers when the chunk is done.
            // (Kinesis sequence numbers have 56 digits.)
            let mut digits = DigitsSlab::with_capacity(ranges.len() * 56);
            let mut seqs: Vec<(Result<SlabSpan, SequenceNumber>, i64, u32)> =
                Vec::with_capacity(ranges.len());
            let mut last: Option<SlabSpan> = None;
            let mut notes = Vec::new();
            let mut held = 0;
            for (k, range) in ranges.iter().enumerate() {
                if over.load(Ordering::Relaxed) {
                    break;
                }
                let text = match layout.record(&line[..], c * chunk + k) {
                    Some(text) => text,
                    None => parse_record_at(line, range.clone()).ok()?,
                };
                let seq = match digits.push_reusing(&text.sequence_number, last) {
                    Some(span) => Ok(span),
                    None => Err(SequenceNumber::parse(&text.sequence_number).ok()?),
                };
                last = seq.as_ref().ok().copied();
                let id = RecordId(first_id + (c * chunk + k) as u64);
                let (n, note) = splitter.split_into_quiet((&text).into(), id, &mut |item| {
                    blocks[worker_of(item, workers)].push(item)
                });
                if let Some(note) = note {
                    let sub = text.sub_sequence_number.unwrap_or(0);
                    notes.push((text.sequence_number.to_string(), sub, note));
                }
                let total_items = items.fetch_add(n as usize, Ordering::Relaxed) + n as usize;
                if n > 1 || k % 64 == 63 {
                    let now: usize = blocks.iter().map(ItemBlock::heap_bytes).sum();
                    bytes.fetch_add(now - held, Ordering::Relaxed);
                    held = now;
                }
                seqs.push((seq, text.sub_sequence_number.unwrap_or(0), n));
                if total_items > budget.items || bytes.load(Ordering::Relaxed) > budget.bytes {
                    // Enough for one part: every chunk stops; the records after the
                    // split prefix are split again, in parts.
                    over.store(true, Ordering::Relaxed);
                }
            }
            let digits = digits.finish();
            let records = seqs
                .into_iter()
                .map(|(seq, sub, n)| {
                    let seq = seq.map_or_else(|own| own, |span| digits.get(span));
                    (Esn::new(seq, sub), n)
                })
                .collect();
            Some((records, blocks, notes))
        };
        let turn = self.share.map(|(share, token)| share.enter(token));
        let chunks: Vec<Option<Chunk>> = if turn.as_ref().is_some_and(|t| !t.is_parallel()) {
            // Chunked all the same, so the result is the same as in parallel.
            let ranges = layout.records.chunks(chunk).enumerate();
            ranges.map(map_chunk).collect()
        } else {
            let ranges = layout.records.par_chunks(chunk).enumerate();
            ranges.map(map_chunk).collect()
        };
        drop(turn);
        let mut part = Part {
            records: Vec::with_capacity(layout.records.len()),
            blocks: Vec::with_capacity(chunks.len() * workers),
        };
        let mut notes = Vec::new();
        let mut complete = true;
        for (c, chunk_result) in chunks.into_iter().enumerate() {
            let (mut records, blocks, mut chunk_notes) = chunk_result?;
            if !complete {
                // After a gap: split again later (its notes are dropped with it).
                continue;
            }
            let chunk_len = layout.records.len().min((c + 1) * chunk) - c * chunk;
            complete = records.len() == chunk_len;
            part.records.append(&mut records);
            part.blocks
                .extend(blocks.into_iter().enumerate().map(|(w, b)| (Some(w), b)));
            notes.append(&mut chunk_notes);
        }
        for (seq, sub, note) in &notes {
            splitter.report(self.shard, seq, *sub, note);
        }
        Some((part, complete))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode::DaemonMessage;
    use crate::codec::scan::scan_process_records;
    use crate::pipeline::split::Splitter;

    /// A `processRecords` line of `n` plain records, then three user records of one
    /// aggregate (one sequence number, sub-sequence numbers 0..3).
    fn line(n: usize) -> Vec<u8> {
        let mut records: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"data":"aGk=","partitionKey":"k{i}","sequenceNumber":"4968044549884195349469830793625622790741666244619{i:07}","approximateArrivalTimestamp":1}}"#
                )
            })
            .collect();
        for sub in 0..3 {
            records.push(format!(
                r#"{{"data":"aGk=","partitionKey":"a{sub}","sequenceNumber":"99{n}","subSequenceNumber":{sub},"approximateArrivalTimestamp":1}}"#
            ));
        }
        format!(
            r#"{{"action":"processRecords","records":[{}]}}"#,
            records.join(",")
        )
        .into_bytes()
    }

    #[test]
    fn a_scanned_line_maps_to_the_decoded_records_with_shared_digits() {
        let bytes = line(300);
        let shared = Arc::new(LineBuf::new(bytes.clone(), None));
        let layout = scan_process_records(&bytes).unwrap();
        let splitter = Splitter::default();
        let mapper = Mapper::new(&splitter, "shardId-0", 2, PartBudget::of(100_000, 1 << 30));
        let (part, complete) = mapper.map_scanned(&shared, &layout, RecordId(1)).unwrap();
        assert!(complete);
        let DaemonMessage::ProcessRecords { records, .. } = DaemonMessage::decode(&bytes).unwrap()
        else {
            panic!("not processRecords");
        };
        let want: Vec<Esn> = records.iter().map(Record::esn).collect();
        let got: Vec<Esn> = part.records.iter().map(|(esn, _)| esn.clone()).collect();
        assert_eq!(got, want);
        // One allocation per chunk of records, not one per record.
        let seqs: Vec<&SequenceNumber> = part.records.iter().map(|(esn, _)| &esn.seq).collect();
        let storages = 1 + seqs
            .windows(2)
            .filter(|w| !w[0].shares_storage_with(w[1]))
            .count();
        let chunks = 303usize.div_ceil((303 / (rayon::current_num_threads().max(1) * 4)).max(64));
        assert!(
            storages <= chunks,
            "{storages} allocations for {chunks} chunks"
        );
        // The aggregate's user records share one number.
        let agg = &seqs[300..];
        assert!(agg[0].shares_storage_with(agg[1]) && agg[1].shares_storage_with(agg[2]));

        // While another lease maps, the line is mapped on this thread, to the same part.
        let share = MapperShare::default();
        let (ours, theirs) = (share.token(), share.token());
        let other = share.enter(theirs);
        let mapper = Mapper::new(&splitter, "shardId-0", 2, PartBudget::of(100_000, 1 << 30))
            .sharing(&share, ours);
        let (alone, complete) = mapper.map_scanned(&shared, &layout, RecordId(1)).unwrap();
        assert!(complete);
        assert_eq!(alone.records, part.records);
        let items = |p: &Part| -> Vec<(Option<usize>, Vec<String>)> {
            p.blocks
                .iter()
                .map(|(w, b)| (*w, b.iter().map(|item| format!("{item:?}")).collect()))
                .collect()
        };
        assert_eq!(items(&alone), items(&part));
        drop(other);
        assert_eq!(share.mapping(), 0);
    }
}
