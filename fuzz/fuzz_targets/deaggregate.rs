//! Fuzzes KPL de-aggregation: the input as a whole Kinesis record, and the input
//! as a protobuf body wrapped with magic and a correct MD5 (random bytes almost
//! never carry a valid digest, so without the second form the fuzzer would not
//! reach the protobuf reader).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rsmld_fuzz::invariants::{check_deaggregate, with_valid_digest};

fuzz_target!(|data: &[u8]| {
    check_deaggregate(data);
    check_deaggregate(&with_valid_digest(data));
});
