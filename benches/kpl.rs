//! De-aggregation throughput (MD5 check included) on realistic ~1 MiB
//! aggregates, with an MD5-only baseline: the digest is most of the cost.
//!
//! ```text
//! cargo bench --bench kpl -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use md5::{Digest, Md5};
use rsmld::kpl::{self, Aggregator, Deaggregated, DEFAULT_MAX_AGGREGATE_BYTES};

/// A full 1 MiB aggregate of `record_len`-byte user records with 500 distinct
/// partition keys, a third of them with an explicit hash key.
fn full_aggregate(record_len: usize) -> Vec<u8> {
    let mut aggregator = Aggregator::new(DEFAULT_MAX_AGGREGATE_BYTES);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for i in 0u64.. {
        let data: Vec<u8> = (0..record_len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let key = format!("user-{:05}", i % 500);
        let hash_key = (i % 3 == 0).then(|| (u128::from(state) * 7_919).to_string());
        if let Some(aggregate) = aggregator.push(&key, hash_key.as_deref(), &data) {
            return aggregate;
        }
    }
    unreachable!("the aggregator fills up")
}

fn deaggregation(c: &mut Criterion) {
    let mut group = c.benchmark_group("kpl");
    for (name, record_len) in [("100B_records", 100), ("1KiB_records", 1024)] {
        let aggregate = full_aggregate(record_len);
        let Deaggregated::Aggregated {
            records,
            partial: None,
        } = kpl::deaggregate(&aggregate)
        else {
            panic!("benchmark input must be a complete aggregate");
        };
        let count = records.len();
        group.throughput(Throughput::Bytes(aggregate.len() as u64));
        group.bench_function(format!("deaggregate/{name}/{count}_records"), |b| {
            b.iter(|| match kpl::deaggregate(black_box(&aggregate)) {
                Deaggregated::Aggregated { records, .. } => black_box(records.len()),
                Deaggregated::Plain => 0,
            })
        });
        group.bench_function(format!("md5_only/{name}"), |b| {
            b.iter(|| black_box(Md5::digest(black_box(&aggregate[4..aggregate.len() - 16]))))
        });
    }
    group.finish();
}

criterion_group!(benches, deaggregation);
criterion_main!(benches);
