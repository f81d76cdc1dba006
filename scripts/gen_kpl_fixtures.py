#!/usr/bin/env python3
"""Writes the KPL de-aggregation fixtures under tests/fixtures/kpl/.

Regenerate (from the repository root; the output is deterministic):

    python3 -m venv /tmp/kpl-venv
    /tmp/kpl-venv/bin/pip install -r scripts/requirements-kpl.txt
    /tmp/kpl-venv/bin/python scripts/gen_kpl_fixtures.py

then run `cargo test --test it kpl_fixtures` and commit tests/fixtures/kpl/.

Each fixture is NAME.bin (the Kinesis record's bytes) and NAME.json:

    {"name", "description",
     "source":   how the bytes were made,
     "expected": {"kind": "plain" | "aggregated",
                  "plainReason": "no_magic" | "no_body" | "checksum" | "protobuf" (plain only),
                  "records": [{"partitionKey", "explicitHashKey" (null if none),
                               "data" (base64), or "dataLen" + "dataMd5" (hex) over 4 KiB}],
                  "partial": null | "PartitionKeyIndexOutOfRange" | "ExplicitHashKeyIndexOutOfRange"
                             | "ExplicitHashKeyNotANumber" | "ExplicitHashKeyOutOfRange"},
     "encoderMatches": true if rsmld's Aggregator must reproduce the bytes exactly,
     "pythonLibrary":  where aws_kinesis_agg's own deaggregator differs, a summary of its answer,
     "note": why the expectation is what it is, where that is not obvious}

The expected values follow the Java KCL (AggregatorUtil + protobuf-java), not the
Python library: they are written out by hand per case below, never computed by
a de-aggregator. Where the Python deaggregator disagrees (missing required
fields, mixed explicit hash keys, ...) the fixture records both.

Aggregates of valid user records are made by the independent implementation
(aws_kinesis_agg.aggregator.RecordAggregator); malformed shapes are assembled
by the small protobuf writer below, so that they can break the rules on purpose.
"""

import base64
import contextlib
import hashlib
import io
import json
import os
import random
import sys

import aws_kinesis_agg
import aws_kinesis_agg.aggregator as py_aggregator
import aws_kinesis_agg.deaggregator as py_deaggregator

MAGIC = aws_kinesis_agg.MAGIC
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "kpl")
# Seeds for the fuzz target `deaggregate` (fuzz/fuzz_targets/deaggregate.rs):
# every fixture under 64 KiB as a whole record ("fixture-NAME") and, for those
# that start with the magic, its protobuf body alone ("body-NAME"), since the
# target also wraps its input with magic and a correct MD5.
CORPUS_DIR = os.path.join(ROOT, "fuzz", "corpus", "deaggregate")
SEED_LIMIT = 65536
FFFD = "\ufffd"


# --- a minimal protobuf writer --------------------------------------------------

def varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(field, wire_type):
    return varint((field << 3) | wire_type)


def f_varint(field, value):
    return key(field, 0) + varint(value)


def f_bytes(field, payload):
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return key(field, 2) + varint(len(payload)) + payload


def record(pk_index=None, data=None, ehk_index=None, extra=b""):
    """A Record message; None leaves a field out."""
    body = b""
    if pk_index is not None:
        body += f_varint(1, pk_index)
    if ehk_index is not None:
        body += f_varint(2, ehk_index)
    if data is not None:
        body += f_bytes(3, data)
    return body + extra


def tag(key_=None, value=None, extra=b""):
    """A Record.tags entry (field 4) holding a Tag message."""
    body = b""
    if key_ is not None:
        body += f_bytes(1, key_)
    if value is not None:
        body += f_bytes(2, value)
    return f_bytes(4, body + extra)


def body(pks=(), ehks=(), records=(), extra=b""):
    """An AggregatedRecord body from tables and encoded Record messages."""
    out = b"".join(f_bytes(1, k) for k in pks)
    out += b"".join(f_bytes(2, k) for k in ehks)
    out += b"".join(f_bytes(3, r) for r in records)
    return out + extra


def wrap(protobuf_body):
    return MAGIC + protobuf_body + hashlib.md5(protobuf_body).digest()


# --- expectations -----------------------------------------------------------------

def user(pk, data, ehk=None):
    """An expected user record; data over 4 KiB is given by length and MD5."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    expected = {"partitionKey": pk, "explicitHashKey": ehk}
    if len(data) > 4096:
        expected["dataLen"] = len(data)
        expected["dataMd5"] = hashlib.md5(data).hexdigest()
    else:
        expected["data"] = base64.b64encode(data).decode("ascii")
    return expected


def plain(reason):
    return {"kind": "plain", "plainReason": reason, "records": [], "partial": None}


def aggregated(records, partial=None):
    return {"kind": "aggregated", "records": records, "partial": partial}


# --- the Python library's own view, for documentation -----------------------------

def python_view(data):
    """What aws_kinesis_agg's deaggregator makes of the record."""
    kinesis_record = {"kinesis": {
        "kinesisSchemaVersion": "1.0", "sequenceNumber": "1",
        "approximateArrivalTimestamp": 0, "partitionKey": "outer",
        "data": base64.b64encode(data).decode("ascii")}}
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            out = py_deaggregator.deaggregate_records([kinesis_record])
    except Exception as error:  # noqa: BLE001  the library raises anything from its own error path
        return {"raises": f"{type(error).__name__}: {error}"}
    if len(out) == 1 and not out[0]["kinesis"].get("aggregated"):
        view = {"kind": "plain", "records": []}
    else:
        view = {"kind": "aggregated", "records": []}
        for r in out:
            pk, ehk = r["kinesis"]["partitionKey"], r["kinesis"]["explicitHashKey"]
            view["records"].append({
                "partitionKey": pk if isinstance(pk, str) else repr(pk),
                "explicitHashKey": ehk if ehk is None or isinstance(ehk, str) else repr(ehk),
                "data": r["kinesis"]["data"].decode("ascii"),
            })
    if stderr.getvalue():
        view["stderr"] = stderr.getvalue().splitlines()[0]
    return view


def comparable(records):
    out = []
    for r in records:
        data = r.get("data")
        if data is None:
            data = r["dataMd5"]
        elif len(data) > 4096 * 4 // 3:
            data = hashlib.md5(base64.b64decode(data)).hexdigest()
        out.append((r["partitionKey"], r["explicitHashKey"], data))
    return out


def python_difference(view, expected):
    """None when the Python library agrees with the expectation, else a summary."""
    if "raises" in view or view["kind"] != expected["kind"]:
        if "records" in view:
            view = dict(view, records=view["records"][:5])
        return view
    got, want = comparable(view["records"]), comparable(expected["records"])
    if got == want:
        return None
    index = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))
    summary = {"kind": view["kind"], "recordCount": len(got), "firstDifferenceAt": index,
               "pythonRecord": view["records"][index] if index < len(got) else None}
    if "stderr" in view:
        summary["stderr"] = view["stderr"]
    return summary


# --- writing ------------------------------------------------------------------------

FIXTURES = []

MIXED_EHK_BUG = ("Python library bug: a record without explicit_hash_key_index gets "
                 "explicit_hash_key_table[0]; Java gives it no explicit hash key")
NO_BIGINTEGER = ("the Python library never parses explicit hash keys (no BigInteger, no range "
                 "check) and delivers every record")
REQUIRED_NOT_CHECKED = "the Python library (upb) does not enforce proto2 required fields"

# Why the Python library's answer differs from Java's, per fixture (write_all
# refuses a difference that is not explained here).
PYTHON_DIFFERS = {
    "lib_mixed_ehk": MIXED_EHK_BUG,
    "lib_unicode_keys": MIXED_EHK_BUG,
    "lib_many": MIXED_EHK_BUG,
    "unknown_fields_and_tags": MIXED_EHK_BUG,
    "wrong_wire_types": MIXED_EHK_BUG,
    "ehk_not_a_number": NO_BIGINTEGER + "; also " + MIXED_EHK_BUG,
    "ehk_out_of_range": NO_BIGINTEGER + "; also " + MIXED_EHK_BUG,
    "ehk_negative": NO_BIGINTEGER + "; also " + MIXED_EHK_BUG,
    "ehk_index_out_of_range": "the Python library raises IndexError from its own error handler",
    "invalid_utf8_keys": "the Python library returns undecoded bytes for invalid UTF-8 keys, "
                         "does not parse the explicit hash key, and has the mixed-EHK bug",
    "pk_index_2_pow_32": "the Python library does not truncate the index like Java's (int) cast: "
                         "2^32 is already out of range there",
    "missing_data": REQUIRED_NOT_CHECKED,
    "missing_pk_index": REQUIRED_NOT_CHECKED,
    "missing_tag_key": REQUIRED_NOT_CHECKED,
}


def fixture(name, data, expected, description, source, note=None, encoder_matches=False):
    FIXTURES.append((name, bytes(data), expected, description, source, note, encoder_matches))


def write_all():
    os.makedirs(OUT_DIR, exist_ok=True)
    for old in os.listdir(OUT_DIR):
        if old.endswith((".bin", ".json")):
            os.remove(os.path.join(OUT_DIR, old))
    for name, data, expected, description, source, note, encoder_matches in FIXTURES:
        view = python_view(data)
        difference = python_difference(view, expected)
        if difference is not None:
            if name not in PYTHON_DIFFERS:
                sys.exit(f"fixture {name}: the Python library differs, explain it in PYTHON_DIFFERS: "
                         f"{json.dumps(difference)}")
            difference["why"] = PYTHON_DIFFERS[name]
        elif name in PYTHON_DIFFERS:
            sys.exit(f"fixture {name}: listed in PYTHON_DIFFERS but the Python library agrees")
        doc = {
            "name": name,
            "description": description,
            "source": source,
            "expected": expected,
            "encoderMatches": encoder_matches,
            "pythonLibrary": difference,
            "note": note,
        }
        with open(os.path.join(OUT_DIR, name + ".bin"), "wb") as out:
            out.write(data)
        with open(os.path.join(OUT_DIR, name + ".json"), "w", encoding="ascii") as out:
            json.dump(doc, out, indent=2, ensure_ascii=True)
            out.write("\n")
    print(f"wrote {len(FIXTURES)} fixtures to {os.path.normpath(OUT_DIR)}")
    write_seeds()


def write_seeds():
    os.makedirs(CORPUS_DIR, exist_ok=True)
    for old in os.listdir(CORPUS_DIR):
        if old.startswith(("fixture-", "body-")):
            os.remove(os.path.join(CORPUS_DIR, old))
    count = 0
    for name, data, *_ in FIXTURES:
        if len(data) > SEED_LIMIT:
            continue
        seeds = {"fixture-" + name: data}
        if data.startswith(MAGIC) and len(data) > 20:
            seeds["body-" + name] = data[4:-16]
        for seed_name, seed in seeds.items():
            with open(os.path.join(CORPUS_DIR, seed_name), "wb") as out:
                out.write(seed)
            count += 1
    print(f"wrote {count} fuzz seeds to {os.path.normpath(CORPUS_DIR)}")


# --- aggregates made by the Python aggregator ----------------------------------------

LIBRARY = "aws-kinesis-agg 1.2.3 RecordAggregator"


def python_aggregates(users, max_size=aws_kinesis_agg.MAX_BYTES_PER_RECORD):
    """Aggregates `users` (pk, ehk, data) with the Python aggregator; returns
    [(bytes, [users in it])]."""
    aggregator = py_aggregator.RecordAggregator(max_size)
    done = []
    for pk, ehk, data in users:
        full = aggregator.add_user_record(pk, data, ehk)
        if full is not None:
            done.append(full)
    last = aggregator.clear_and_get()
    if last is not None:
        done.append(last)
    out, position = [], 0
    for agg in done:
        count = agg.get_num_user_records()
        out.append((agg.get_contents()[2], users[position:position + count]))
        position += count
    assert position == len(users)
    return out


def expected_users(users):
    return [user(pk, data, ehk) for pk, ehk, data in users]


def library_fixture(name, users, description, note=None):
    [(data, in_it)] = python_aggregates(users)
    fixture(name, data, aggregated(expected_users(in_it)), description,
            {"tool": LIBRARY}, note=note, encoder_matches=True)


def make_library_fixtures(rng):
    library_fixture("lib_simple", [("pk-a", None, b"hello"), ("pk-b", None, b"world"),
                                   ("pk-a", None, b"again")],
                    "three user records, two partition keys, no explicit hash key")
    library_fixture("lib_single", [("only", None, b"\x00\x01\x02")],
                    "one user record (the Java KPL would send it plain; an aggregate is still valid)")
    library_fixture("lib_empty_data", [("k", None, b""), ("k", None, b""), ("k2", None, b"x")],
                    "user records with empty data")
    library_fixture("lib_all_ehk", [(f"pk-{i}", str(i * 1000003 + 7), b"d%d" % i) for i in range(5)]
                    + [("pk-0", "340282366920938463463374607431768211455", b"max"),
                       ("pk-1", "0", b"zero")],
                    "every user record has an explicit hash key, including 0 and 2^128-1")
    library_fixture("lib_mixed_ehk", [("a", None, b"1"), ("b", "12345", b"2"), ("c", None, b"3"),
                                      ("d", "67890", b"4"), ("a", "12345", b"5")],
                    "some user records have an explicit hash key, some not (KPL writes such mixes)",
                    note="Java: a record without explicit_hash_key_index has no explicit hash key. "
                         "The Python deaggregator gives it explicit_hash_key_table[0] (bug).")
    library_fixture("lib_unicode_keys", [("cl\u00e9", None, b"e-acute"),
                                         ("\u65e5\u672c", "42", b"cjk"),
                                         ("\U0001F600 grin", None, b"astral"),
                                         ("cl\u00e9", None, b"again")],
                    "non-ASCII partition keys (2-, 3- and 4-byte UTF-8)")
    many = []
    keys = [f"key-{i}" for i in range(37)]
    for i in range(500):
        size = rng.choice([0, 1, 50, 100, 300])
        ehk = str(rng.getrandbits(128)) if i % 3 == 0 else None
        many.append((rng.choice(keys), ehk, bytes(rng.getrandbits(8) for _ in range(size))))
    library_fixture("lib_many", many, "500 user records: 37 keys, random binary data, a third with "
                                      "random explicit hash keys")
    # A stream split into several aggregates by the aggregator's size limit.
    stream = [(f"split-{i % 5}", None, bytes([i % 256]) * 200) for i in range(40)]
    parts = python_aggregates(stream, max_size=2000)
    assert len(parts) > 2
    for index, (data, in_it) in enumerate(parts):
        fixture(f"lib_split_{index}", data, aggregated(expected_users(in_it)),
                f"part {index + 1} of {len(parts)} of 40 records aggregated with a 2000-byte limit",
                {"tool": LIBRARY, "maxSize": 2000}, encoder_matches=True)


# --- malformed and unusual shapes --------------------------------------------------------

HAND = {"tool": "hand-assembled protobuf (scripts/gen_kpl_fixtures.py)"}


def make_shape_fixtures():
    good = body(pks=["k0", "k1"], records=[record(0, b"first"), record(1, b"second"), record(0, b"third")])
    good_users = [user("k0", b"first"), user("k1", b"second"), user("k0", b"third")]
    valid = wrap(good)
    fixture("hand_valid", valid, aggregated(good_users),
            "a plain valid aggregate, the base of the malformed ones", HAND)

    bad = bytearray(valid)
    bad[-1] ^= 0x01
    fixture("bad_checksum", bad, plain("checksum"), "last digest byte flipped", HAND)

    fixture("truncated_record", valid[:-5], plain("checksum"),
            "a valid aggregate with its last 5 bytes cut off: the digest no longer matches", HAND)

    truncated_body = good[:-3]
    fixture("truncated_body", wrap(truncated_body), plain("protobuf"),
            "the protobuf body cut inside the last record, with a digest that matches the cut body",
            HAND, note="protobuf-java: truncated message -> InvalidProtocolBufferException -> plain")

    fixture("magic_only", MAGIC, plain("no_body"), "just the 4 magic bytes", HAND)
    fixture("magic_md5_of_empty", MAGIC + hashlib.md5(b"").digest(), plain("no_body"),
            "magic + exactly 16 bytes (the MD5 of an empty body)", HAND,
            note="Java requires more than 16 bytes after the magic; an empty body never counts")
    fixture("magic_prefix", MAGIC[:3], plain("no_magic"), "3 bytes, the start of the magic", HAND)
    fixture("empty_record", b"", plain("no_magic"), "zero bytes", HAND)
    fixture("not_kpl", b'{"plain":"json","n":1}', plain("no_magic"), "ordinary data", HAND)

    other = body(pks=["x"], records=[record(0, b"other")])
    fixture("wrong_md5", MAGIC + good + hashlib.md5(other).digest(), plain("checksum"),
            "a valid protobuf body followed by the MD5 of a different body", HAND)
    fixture("md5_over_garbage", wrap(b"\x0a\xff\x01garbage"), plain("protobuf"),
            "a correct MD5 over bytes that are not a valid protobuf (length past the end)", HAND)

    fixture("missing_data", wrap(body(pks=["k"], records=[record(0, b"ok"), record(0, None)])),
            plain("protobuf"), "second record has no data (proto2 required)", HAND,
            note="protobuf-java enforces required fields -> plain; the Python library (upb) does not")
    fixture("missing_pk_index", wrap(body(pks=["k"], records=[record(None, b"no index")])),
            plain("protobuf"), "a record without partition_key_index (proto2 required)", HAND,
            note="protobuf-java enforces required fields -> plain; the Python library (upb) does not")
    fixture("missing_tag_key",
            wrap(body(pks=["k"], records=[record(0, b"x", extra=tag(None, "v"))])),
            plain("protobuf"), "a record with a Tag that has a value but no key (Tag.key is required)",
            HAND, note="required fields are checked in nested messages too")

    fixture("pk_index_out_of_range",
            wrap(body(pks=["k0", "k1"], records=[record(0, b"a"), record(1, b"b"), record(2, b"c"),
                                                 record(0, b"d")])),
            aggregated([user("k0", b"a"), user("k1", b"b")], "PartitionKeyIndexOutOfRange"),
            "third record points past the 2-entry partition key table", HAND,
            note="Java catches the IndexOutOfBoundsException: records before it stay, the rest "
                 "are lost, the record is not re-sent plain")
    fixture("ehk_index_out_of_range",
            wrap(body(pks=["k"], ehks=["7"], records=[record(0, b"a", 0), record(0, b"b", 1),
                                                      record(0, b"c")])),
            aggregated([user("k", b"a", "7")], "ExplicitHashKeyIndexOutOfRange"),
            "second record's explicit hash key index points past the 1-entry table", HAND,
            note="The Python library raises IndexError from its own error handler")
    fixture("pk_index_2_pow_32",
            wrap(body(pks=["k"], records=[record(0, b"a"), record(1 << 32, b"b"),
                                          record((1 << 32) + 1, b"c"), record(0, b"d")])),
            aggregated([user("k", b"a"), user("k", b"b")], "PartitionKeyIndexOutOfRange"),
            "indexes 2^32 and 2^32+1 with a 1-entry table", HAND,
            note="Java casts the uint64 index to int: 2^32 wraps to 0 and picks 'k' (the record "
                 "is delivered); 2^32+1 is 1, out of range -> partial")
    fixture("pk_index_2_pow_31",
            wrap(body(pks=["k"], records=[record(0, b"a"), record(1 << 31, b"b")])),
            aggregated([user("k", b"a")], "PartitionKeyIndexOutOfRange"),
            "index 2^31 with a 1-entry table", HAND,
            note="(int) 2^31 is negative in Java -> IndexOutOfBoundsException -> partial")
    fixture("invalid_utf8_keys",
            wrap(body(pks=[b"ab\xffcd", b"\xed\xa0\x80x", b"\xf0\x9f\x98"],
                      ehks=[b"1\xc3"],
                      records=[record(0, b"1"), record(1, b"2"), record(2, b"3"), record(0, b"4", 0)])),
            aggregated([user("ab" + FFFD + "cd", b"1"), user(FFFD + "x", b"2"), user(FFFD, b"3")],
                       "ExplicitHashKeyNotANumber"),
            "partition keys with invalid UTF-8, and an explicit hash key '1' + a truncated sequence",
            HAND,
            note="protobuf-java decodes proto2 strings with new String(bytes, UTF_8): each malformed "
                 "sequence becomes U+FFFD, an encoded surrogate (ED A0 80) is ONE U+FFFD (Rust's "
                 "from_utf8_lossy would give three). '1\\ufffd' is not a number for BigInteger -> partial.")

    unknown = (f_varint(15, 99) + key(14, 5) + b"\x01\x02\x03\x04" + key(13, 1) + b"\x00" * 8
               + f_bytes(12, b"skip me") + key(11, 3) + f_varint(1, 5) + f_bytes(2, b"in group")
               + key(11, 4) + f_varint(1000, 1))
    fixture("unknown_fields_and_tags",
            wrap(body(pks=["k"], ehks=["99"],
                      records=[record(0, b"a", extra=tag("t", "v") + tag("only-key", extra=unknown) + unknown),
                               record(0, b"b", 0, extra=unknown)],
                      extra=unknown)),
            aggregated([user("k", b"a"), user("k", b"b", "99")]),
            "unknown fields of every wire type (varint, fixed32, fixed64, bytes, group) at both "
            "levels and inside a Tag message, plus valid Tags", HAND,
            note="unknown fields and tags are skipped")

    wrong_wire = (f_varint(1, 7)            # partition_key_table as a varint: unknown, skipped
                  + f_bytes(1, "k")
                  + f_bytes(2, "5")
                  + f_bytes(3, record(0, b"x", extra=f_bytes(2, b"\x00")))  # ehk index as bytes
                  + f_varint(3, 1))         # records as a varint: skipped
    fixture("wrong_wire_types", wrap(wrong_wire), aggregated([user("k", b"x")]),
            "known field numbers with the wrong wire type (table as varint, "
            "explicit_hash_key_index as bytes, records as varint)", HAND,
            note="protobuf-java matches the whole tag: a known number with another wire type is an "
                 "unknown field and is skipped; so the record has NO explicit hash key")

    fixture("duplicate_singular_fields",
            wrap(body(pks=["k0", "k1"], records=[record(0, b"old") + f_varint(1, 1) + f_bytes(3, b"new")])),
            aggregated([user("k1", b"new")]), "partition_key_index and data written twice", HAND,
            note="the last occurrence of a singular field wins")

    fixture("zero_records", wrap(body(pks=["unused"])), aggregated([]),
            "a valid aggregate whose body has a key table entry but no records", HAND,
            note="Java: aggregated, and it yields nothing (the record is not delivered at all)")
    fixture("unknown_field_only", wrap(f_varint(9, 0)), aggregated([]),
            "the smallest aggregate: a 2-byte body holding one unknown field", HAND)

    fixture("ehk_not_a_number",
            wrap(body(pks=["k"], ehks=["12", "abc"], records=[record(0, b"a", 0), record(0, b"b"),
                                                              record(0, b"c", 1), record(0, b"d", 0)])),
            aggregated([user("k", b"a", "12"), user("k", b"b")], "ExplicitHashKeyNotANumber"),
            "third record's explicit hash key is 'abc'", HAND,
            note="new BigInteger('abc') throws NumberFormatException, caught by the loop -> partial")
    fixture("ehk_out_of_range",
            wrap(body(pks=["k"], ehks=["1", "340282366920938463463374607431768211456"],
                      records=[record(0, b"a", 0), record(0, b"b"), record(0, b"c", 1)])),
            aggregated([], "ExplicitHashKeyOutOfRange"),
            "third record's explicit hash key is 2^128", HAND,
            note="AggregatorUtil's range check [0, 2^128-1] (applied even without a shard) removes "
                 "every sub-record already produced: the whole aggregate yields nothing")
    fixture("ehk_negative",
            wrap(body(pks=["k"], ehks=["-5"], records=[record(0, b"a"), record(0, b"b", 0)])),
            aggregated([], "ExplicitHashKeyOutOfRange"),
            "second record's explicit hash key is -5", HAND,
            note="below the range: the whole aggregate yields nothing")
    fixture("ehk_unicode_digits",
            wrap(body(pks=["k"], ehks=["\u0661\u0662\u0663", "+0042", "-0"],
                      records=[record(0, b"a", 0), record(0, b"b", 1), record(0, b"c", 2)])),
            aggregated([user("k", b"a", "\u0661\u0662\u0663"), user("k", b"b", "+0042"),
                        user("k", b"c", "-0")]),
            "explicit hash keys that BigInteger accepts: Arabic-Indic digits, a plus sign with "
            "leading zeros, minus zero", HAND,
            note="BigInteger(String) takes any Unicode decimal digit and one leading sign")

    def nested_groups(levels):
        return key(10, 3) * levels + key(10, 4) * levels
    fixture("group_nesting_100", wrap(body(pks=["k"], records=[record(0, b"deep")],
                                           extra=nested_groups(100))),
            aggregated([user("k", b"deep")]), "100 nested unknown groups at the top level", HAND,
            note="protobuf-java's recursion limit is 100: this is the deepest that parses")
    fixture("group_nesting_101", wrap(body(pks=["k"], records=[record(0, b"deep")],
                                           extra=nested_groups(101))),
            plain("protobuf"), "101 nested unknown groups at the top level", HAND,
            note="one level past protobuf-java's recursion limit -> plain")
    fixture("stray_end_group", wrap(body(pks=["k"], records=[record(0, b"x")]) + key(5, 4)),
            plain("protobuf"), "an end-group tag with no open group", HAND,
            note="protobuf-java stops at it and then fails the 'last tag was 0' check")

    # Over 1 MiB: Kinesis takes records up to 10 MiB and the KPL may aggregate that far.
    chunk = bytes(range(256)) * 64  # 16 KiB
    big_records = [record(i % 2, chunk) for i in range(70)]
    big = wrap(body(pks=["big-0", "big-1"], records=big_records))
    assert len(big) > 1048576
    fixture("over_1mib", big,
            aggregated([user(f"big-{i % 2}", chunk) for i in range(70)]),
            f"a {len(big)}-byte aggregate (70 records of 16 KiB)", HAND,
            note="decoding never rejects aggregates over 1 MiB (the Python aggregator cannot "
                 "write one, hence hand-assembled)")


def main():
    rng = random.Random(20261122)
    make_library_fixtures(rng)
    make_shape_fixtures()
    write_all()


if __name__ == "__main__":
    main()
