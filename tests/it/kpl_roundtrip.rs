//! Property tests: user records encoded with `Aggregator` come back unchanged
//! from `deaggregate`, aggregates respect the size limit and are packed
//! greedily, and prost (an independent decoder) reads the same records.

use md5::{Digest, Md5};
use proptest::prelude::*;
use prost::Message as _;
use rsmld::kpl::{self, proto, Aggregator, Deaggregated, DEFAULT_MAX_AGGREGATE_BYTES};

/// A user record as pushed: partition key, explicit hash key, data.
type User = (String, Option<String>, Vec<u8>);

fn partition_key() -> impl Strategy<Value = String> {
    prop_oneof![
        // Few distinct values, so tables de-duplicate.
        "[ab]{0,2}",
        // Any non-control text: Latin-1, CJK, astral, combining marks...
        "\\PC{0,24}",
        "[\u{e9}\u{65e5}\u{1F600}x]{1,6}",
        Just(String::new()),
    ]
}

fn explicit_hash_key() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => Just(None),
        2 => any::<u128>().prop_map(|v| Some(v.to_string())),
        1 => (0u128..4).prop_map(|v| Some(v.to_string())),
        1 => Just(Some(u128::MAX.to_string())),
    ]
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 0..700),
    ]
}

fn users() -> impl Strategy<Value = Vec<User>> {
    proptest::collection::vec((partition_key(), explicit_hash_key(), data()), 0..60)
}

fn max_bytes() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..64,
        64usize..3000,
        Just(DEFAULT_MAX_AGGREGATE_BYTES),
        Just(usize::MAX),
    ]
}

/// Encodes `users` with a limit; returns each aggregate with how many records it holds.
fn encode(users: &[User], max_bytes: usize) -> Vec<(Vec<u8>, usize)> {
    let mut aggregator = Aggregator::new(max_bytes);
    let mut out = Vec::new();
    let mut in_current = 0;
    for (pk, ehk, data) in users {
        if let Some(done) = aggregator.push(pk, ehk.as_deref(), data) {
            out.push((done, in_current));
            in_current = 0;
        }
        in_current += 1;
        assert_eq!(aggregator.len(), in_current);
    }
    if let Some(done) = aggregator.finish() {
        out.push((done, in_current));
    }
    assert!(aggregator.is_empty() && aggregator.finish().is_none());
    out
}

/// The length of one aggregate holding exactly `users`.
fn unlimited_len(users: &[User]) -> usize {
    encode(users, usize::MAX).iter().map(|(a, _)| a.len()).sum()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn encode_then_decode_gives_the_records_back(users in users(), max_bytes in max_bytes()) {
        let aggregates = encode(&users, max_bytes);
        prop_assert_eq!(aggregates.iter().map(|(_, n)| n).sum::<usize>(), users.len());

        let mut decoded: Vec<User> = Vec::new();
        let mut start = 0;
        for (index, (aggregate, count)) in aggregates.iter().enumerate() {
            let mine = &users[start..start + count];
            // The limit holds unless a lone record is larger on its own.
            prop_assert!(aggregate.len() <= max_bytes || *count == 1,
                "aggregate {} is {} bytes for limit {} with {} records",
                index, aggregate.len(), max_bytes, count);
            // Greedy: the next record would not have fitted.
            if let Some(next) = users.get(start + count) {
                let mut grown = mine.to_vec();
                grown.push(next.clone());
                prop_assert!(unlimited_len(&grown) > max_bytes,
                    "aggregate {} was closed although the next record fitted", index);
            }

            // Our decoder.
            match kpl::deaggregate(aggregate) {
                Deaggregated::Aggregated { records, partial: None } => {
                    prop_assert_eq!(records.len(), *count);
                    decoded.extend(records.iter().map(|r| (
                        r.partition_key.to_string(),
                        r.explicit_hash_key.as_ref().map(|k| k.to_string()),
                        r.data.to_vec(),
                    )));
                }
                other => prop_assert!(false, "aggregate {} decoded as {:?}", index, other),
            }

            // prost, independently: the body and digest as written.
            let body = &aggregate[4..aggregate.len() - 16];
            prop_assert_eq!(&aggregate[..4], &kpl::MAGIC[..]);
            let digest = Md5::digest(body);
            prop_assert_eq!(&aggregate[aggregate.len() - 16..], digest.as_slice());
            let message = proto::AggregatedRecord::decode(body).expect("prost decodes our output");
            let mut distinct_pks: Vec<&String> = mine.iter().map(|u| &u.0).collect();
            distinct_pks.sort();
            distinct_pks.dedup();
            prop_assert_eq!(message.partition_key_table.len(), distinct_pks.len(), "de-duplicated");
            for (record, user) in message.records.iter().zip(mine) {
                let pk = &message.partition_key_table[record.partition_key_index as usize];
                prop_assert_eq!(pk, &user.0);
                let ehk = record.explicit_hash_key_index
                    .map(|i| message.explicit_hash_key_table[i as usize].clone());
                prop_assert_eq!(&ehk, &user.1);
                prop_assert_eq!(&record.data, &user.2);
            }
            start += count;
        }
        prop_assert_eq!(decoded, users);
    }
}

#[test]
fn mixed_explicit_hash_keys_stay_where_they_were() {
    let users: Vec<User> = vec![
        ("a".into(), None, b"1".to_vec()),
        ("b".into(), Some("5".into()), b"2".to_vec()),
        ("c".into(), None, b"3".to_vec()),
    ];
    let aggregates = encode(&users, usize::MAX);
    let [(aggregate, 3)] = &aggregates[..] else {
        panic!("one aggregate");
    };
    let Deaggregated::Aggregated {
        records,
        partial: None,
    } = kpl::deaggregate(aggregate)
    else {
        panic!("aggregated");
    };
    let ehks: Vec<Option<&str>> = records
        .iter()
        .map(|r| r.explicit_hash_key.as_deref())
        .collect();
    assert_eq!(ehks, [None, Some("5"), None]);
}
