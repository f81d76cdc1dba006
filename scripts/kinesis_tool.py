#!/usr/bin/env python3
"""Drive the local Kinesis and DynamoDB emulators for rsmld's end-to-end tests.

Run it with the venv made by scripts/install-daemon.sh (it needs boto3 and aws-kinesis-agg):

    .state/venv/bin/python scripts/kinesis_tool.py SUBCOMMAND ...

Endpoints come from --kinesis-endpoint / --dynamodb-endpoint or the KINESIS_ENDPOINT /
DYNAMODB_ENDPOINT environment variables (`eval "$(scripts/emulators.sh env)"` sets them).
Credentials are fake; nothing here can reach a real AWS account unless you point it there.

Subcommands
    create-stream NAME --shards N          create a stream and wait until it is ACTIVE
    shards NAME                            list the stream's shards (JSON lines)
    put NAME --plain N [--spread] --manifest FILE
                                           put N plain records (PutRecords); --spread: round
                                           robin over the open shards instead of random keys
    put NAME --aggregated N --per-aggregate K --manifest FILE
                                           put N KPL aggregates of K user records each, made by
                                           aws-kinesis-agg (an implementation independent of rsmld)
    split-shard NAME [--shard ID]          split a shard at the midpoint of its hash key range
    leases create --app APP --stream NAME  create the lease table and one lease item per open shard
    leases create-table --app APP          create the lease table only (with KCL 3.x's index)
    leases dump --app APP [--json]         print the lease table rows
    wait-lease --app APP --shard ID --checkpoint SHARD_END
                                           wait until a lease row has that checkpoint
    wait-records --manifest FILE --output DIR
                                           wait until every manifest record is in DIR/*.jsonl
    wait-checkpoints --app APP --manifest FILE
                                           wait until each shard's lease checkpoint is its last
                                           manifest record (SHARD_END for a closed shard)
    (the wait-* commands take --timeout SECONDS and --watch-pid PID: stop waiting if PID exits)
    check-records --manifest FILE --output DIR
                                           report missing / duplicated / unexpected records

Manifest format (JSON lines, appended to): one object per *user* record put, with
    kind ("plain" | "aggregated"), partitionKey, data (base64 of the user record bytes),
    shard (the shard Kinesis put the record or its aggregate in), sequenceNumber (of the Kinesis
    record), subSequenceNumber (index inside the aggregate, 0 for plain records),
    aggregate (0-based aggregate number within this put, or null), explicitHashKey (or null).

Output directory format that wait-records / check-records read: any number of *.jsonl files,
one JSON object per processed user record with at least "partitionKey" and "data" (base64),
optionally "shard" (or "shardId"), "sequenceNumber", "subSequenceNumber". Lines that do not parse or lack
those fields are ignored (a file being appended to may end in a partial line).
"""

import argparse
import base64
import collections
import glob
import hashlib
import json
import os
import sys
import time
import uuid

import boto3
import botocore.config

try:
    from aws_kinesis_agg.aggregator import RecordAggregator
except ImportError:  # only `put --aggregated` needs it
    RecordAggregator = None

FAKE_KEY_ID = "fakeAccessKeyId"
FAKE_SECRET = "fakeSecretAccessKey"
REGION = "us-east-1"
MAX_HASH_KEY = 2**128 - 1


# --------------------------------------------------------------------------------------------
# clients


def _client(service, endpoint):
    if not endpoint:
        env = "KINESIS_ENDPOINT" if service == "kinesis" else "DYNAMODB_ENDPOINT"
        sys.exit(f"kinesis_tool: no {service} endpoint (pass it or set {env}; "
                 "see scripts/emulators.sh env)")
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_REGION", REGION),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", FAKE_KEY_ID),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", FAKE_SECRET),
        config=botocore.config.Config(
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


def kinesis(args):
    return _client("kinesis", args.kinesis_endpoint)


def dynamodb(args):
    return _client("dynamodb", args.dynamodb_endpoint)


def log(msg):
    print(f"kinesis_tool: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# streams and shards


def wait_stream_active(kc, stream, timeout=60.0):
    deadline = time.time() + timeout
    while True:
        status = kc.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamStatus"]
        if status == "ACTIVE":
            return
        if time.time() > deadline:
            raise SystemExit(f"kinesis_tool: stream {stream} still {status} after {timeout}s")
        time.sleep(0.2)


def list_shards(kc, stream):
    shards, token = [], None
    while True:
        resp = kc.list_shards(NextToken=token) if token else kc.list_shards(StreamName=stream)
        shards.extend(resp["Shards"])
        token = resp.get("NextToken")
        if not token:
            return shards


def is_open(shard):
    return "EndingSequenceNumber" not in shard.get("SequenceNumberRange", {})


def hash_range(shard):
    r = shard["HashKeyRange"]
    return int(r["StartingHashKey"]), int(r["EndingHashKey"])


def pk_hash(partition_key):
    """Kinesis maps a partition key to the 128-bit integer of its MD5 digest (UTF-8 bytes)."""
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


def shard_for_hash(shards, h):
    for s in shards:
        lo, hi = hash_range(s)
        if lo <= h <= hi:
            return s["ShardId"]
    raise SystemExit(f"kinesis_tool: no open shard covers hash key {h}")


def cmd_create_stream(args):
    kc = kinesis(args)
    kc.create_stream(StreamName=args.name, ShardCount=args.shards)
    wait_stream_active(kc, args.name)
    shards = list_shards(kc, args.name)
    log(f"stream {args.name} ACTIVE with {len(shards)} shards: {', '.join(s['ShardId'] for s in shards)}")


def cmd_shards(args):
    for s in list_shards(kinesis(args), args.name):
        print(json.dumps({
            "shardId": s["ShardId"],
            "open": is_open(s),
            "parentShardId": s.get("ParentShardId"),
            "adjacentParentShardId": s.get("AdjacentParentShardId"),
            "startingHashKey": s["HashKeyRange"]["StartingHashKey"],
            "endingHashKey": s["HashKeyRange"]["EndingHashKey"],
        }))


def cmd_split_shard(args):
    kc = kinesis(args)
    shards = [s for s in list_shards(kc, args.name) if is_open(s)]
    if args.shard:
        shards = [s for s in shards if s["ShardId"] == args.shard]
        if not shards:
            raise SystemExit(f"kinesis_tool: no open shard {args.shard} in {args.name}")
    parent = shards[0]
    lo, hi = hash_range(parent)
    mid = (lo + hi + 1) // 2  # the new child's starting hash key
    kc.split_shard(StreamName=args.name, ShardToSplit=parent["ShardId"], NewStartingHashKey=str(mid))
    wait_stream_active(kc, args.name)
    children = [s for s in list_shards(kc, args.name) if s.get("ParentShardId") == parent["ShardId"]]
    log(f"split {parent['ShardId']} at {mid}: children {', '.join(s['ShardId'] for s in children)}")
    print(json.dumps({"parent": parent["ShardId"], "newStartingHashKey": str(mid),
                      "children": [s["ShardId"] for s in children]}))


# --------------------------------------------------------------------------------------------
# putting records


def _append_manifest(path, entries):
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(e, sort_keys=True) + "\n" for e in entries)


def _payload(tag, i, size):
    """Deterministic-looking but unique payload bytes of at least `size` bytes."""
    base = f"{tag}-{i}-{uuid.uuid4().hex[:8]}".encode()
    if len(base) < size:
        base += b"." * (size - len(base))
    return base


def open_shards_by_range(kc, stream):
    return sorted((s for s in list_shards(kc, stream) if is_open(s)), key=lambda s: hash_range(s)[0])


def key_in_shard(prefix, shard):
    """The first partition key prefix-0, prefix-1, ... whose hash falls into the shard."""
    lo, hi = hash_range(shard)
    n = 0
    while not lo <= pk_hash(f"{prefix}-{n}") <= hi:
        n += 1
    return f"{prefix}-{n}"


def put_plain(kc, stream, n, tag, size, spread=False):
    """spread: record i goes to open shard i mod (number of open shards), by choice of key."""
    shards = open_shards_by_range(kc, stream) if spread else None
    entries = []
    for start in range(0, n, 500):  # PutRecords takes at most 500 records
        batch = []
        for i in range(start, min(n, start + 500)):
            pk = f"pk-{tag}-plain-{i}"
            if spread:
                pk = key_in_shard(pk, shards[i % len(shards)])
            batch.append({"Data": _payload(f"{tag}-plain", i, size), "PartitionKey": pk})
        resp = kc.put_records(StreamName=stream, Records=batch)
        if resp.get("FailedRecordCount"):
            raise SystemExit(f"kinesis_tool: {resp['FailedRecordCount']} records failed: {resp['Records']}")
        for rec, res in zip(batch, resp["Records"]):
            entries.append({
                "kind": "plain",
                "partitionKey": rec["PartitionKey"],
                "data": base64.b64encode(rec["Data"]).decode(),
                "shard": res["ShardId"],
                "sequenceNumber": res["SequenceNumber"],
                "subSequenceNumber": 0,
                "aggregate": None,
                "explicitHashKey": None,
            })
    return entries


def put_aggregated(kc, stream, n_aggregates, per_aggregate, tag, size):
    """Each aggregate targets one open shard (round robin) and holds user records whose
    partition keys hash into that shard, as the KPL does: the KCL drops aggregates whose
    user records fall outside the shard's hash key range."""
    if RecordAggregator is None:
        raise SystemExit("kinesis_tool: aws-kinesis-agg is not installed (scripts/install-daemon.sh)")
    shards = open_shards_by_range(kc, stream)
    entries = []
    for a in range(n_aggregates):
        target = shards[a % len(shards)]
        lo, hi = hash_range(target)
        agg = RecordAggregator()
        users = []
        candidate = 0
        while len(users) < per_aggregate:
            pk = f"pk-{tag}-agg-{a}-{len(users)}-{candidate}"
            candidate += 1
            if not lo <= pk_hash(pk) <= hi:
                continue
            data = _payload(f"{tag}-agg-{a}", len(users), size)
            agg.add_user_record(pk, data)
            users.append((pk, data))
        record = agg.clear_and_get()
        if record is None or record.get_num_user_records() != per_aggregate:
            raise SystemExit("kinesis_tool: aggregate too large for one Kinesis record; "
                             "lower --per-aggregate or --size")
        agg_pk, agg_ehk, agg_bytes = record.get_contents()
        kwargs = {"StreamName": stream, "Data": agg_bytes, "PartitionKey": agg_pk}
        if agg_ehk:
            kwargs["ExplicitHashKey"] = agg_ehk
        resp = kc.put_record(**kwargs)
        if resp["ShardId"] != target["ShardId"]:
            raise SystemExit(f"kinesis_tool: aggregate {a} landed in {resp['ShardId']}, "
                             f"expected {target['ShardId']}")
        for sub, (pk, data) in enumerate(users):
            entries.append({
                "kind": "aggregated",
                "partitionKey": pk,
                "data": base64.b64encode(data).decode(),
                "shard": resp["ShardId"],
                "sequenceNumber": resp["SequenceNumber"],
                "subSequenceNumber": sub,
                "aggregate": a,
                "explicitHashKey": None,
            })
    return entries


def cmd_put(args):
    kc = kinesis(args)
    tag = args.tag or uuid.uuid4().hex[:6]
    entries = []
    if args.plain:
        entries += put_plain(kc, args.name, args.plain, tag, args.size, args.spread)
    if args.aggregated:
        entries += put_aggregated(kc, args.name, args.aggregated, args.per_aggregate, tag, args.size)
    _append_manifest(args.manifest, entries)
    per_shard = collections.Counter(e["shard"] for e in entries)
    log(f"put {len(entries)} user records ({args.plain or 0} plain, "
        f"{args.aggregated or 0}x{args.per_aggregate if args.aggregated else 0} aggregated) "
        f"into {args.name}: {dict(sorted(per_shard.items()))}")


# --------------------------------------------------------------------------------------------
# lease table (KCL 2.5.8 layout: DynamoDBLeaseSerializer; KCL 3.x reads the same items)
#
# Table key schema: hash key "leaseKey" (S), no range key. Billing PAY_PER_REQUEST (the KCL
# default). KCL 3.x also needs the global secondary index LeaseOwnerToLeaseKeyIndex (hash
# leaseOwner, range leaseKey, KEYS_ONLY): it adds it with UpdateTable, which dynalite rejects (the
# daemon then retries forever), so the table is created here with the index in CreateTable.
# KCL 2.5.8 ignores the index. One item per shard, as the KCL's shard sync would create it for a new lease:
#   leaseKey                      S   the shard id
#   leaseCounter                  N   0 (incremented by every renewal / take)
#   ownerSwitchesSinceCheckpoint  N   0
#   checkpoint                    S   TRIM_HORIZON | LATEST | AT_TIMESTAMP | <sequence number> | SHARD_END
#   checkpointSubSequenceNumber   N   0
#   startingHashKey / endingHashKey  S  the shard's hash key range (decimal)
#   parentShardId                 SS  only for shards that have parents
# leaseOwner (S) is absent, so the first worker to start takes every lease without waiting.
# Other attributes the KCL may add later: childShardIds (SS), pendingCheckpoint (S),
# pendingCheckpointSubSequenceNumber (N), pendingCheckpointState (B).


LEASE_OWNER_INDEX = "LeaseOwnerToLeaseKeyIndex"


def create_lease_table(dc, table):
    """Create the lease table (with KCL 3.x's GSI) unless it exists; wait until ACTIVE."""
    try:
        dc.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"},
                                  {"AttributeName": "leaseOwner", "AttributeType": "S"}],
            GlobalSecondaryIndexes=[{
                "IndexName": LEASE_OWNER_INDEX,
                "KeySchema": [{"AttributeName": "leaseOwner", "KeyType": "HASH"},
                              {"AttributeName": "leaseKey", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }],
            BillingMode="PAY_PER_REQUEST",
        )
    except dc.exceptions.ResourceInUseException:
        pass
    deadline = time.time() + 30
    while dc.describe_table(TableName=table)["Table"]["TableStatus"] != "ACTIVE":
        if time.time() > deadline:
            raise SystemExit(f"kinesis_tool: table {table} not ACTIVE after 30s")
        time.sleep(0.2)


def cmd_leases_create_table(args):
    create_lease_table(dynamodb(args), args.app)
    log(f"lease table {args.app} ready (with {LEASE_OWNER_INDEX})")


def cmd_leases_create(args):
    kc, dc = kinesis(args), dynamodb(args)
    create_lease_table(dc, args.app)
    created = []
    for s in list_shards(kc, args.stream):
        if not is_open(s) and not args.all_shards:
            continue
        item = {
            "leaseKey": {"S": s["ShardId"]},
            "leaseCounter": {"N": "0"},
            "ownerSwitchesSinceCheckpoint": {"N": "0"},
            "checkpoint": {"S": args.initial_position},
            "checkpointSubSequenceNumber": {"N": "0"},
            "startingHashKey": {"S": s["HashKeyRange"]["StartingHashKey"]},
            "endingHashKey": {"S": s["HashKeyRange"]["EndingHashKey"]},
        }
        parents = [p for p in (s.get("ParentShardId"), s.get("AdjacentParentShardId")) if p]
        if parents:
            item["parentShardId"] = {"SS": parents}
        try:
            dc.put_item(TableName=args.app, Item=item, ConditionExpression="attribute_not_exists(leaseKey)")
            created.append(s["ShardId"])
        except dc.exceptions.ConditionalCheckFailedException:
            pass
    log(f"lease table {args.app}: created leases for {', '.join(created) or 'no new shards'}")


def _number(text):
    try:
        return int(text)
    except ValueError:
        return float(text)


def scan_leases(dc, table):
    items, kwargs = [], {"TableName": table, "ConsistentRead": True}
    while True:
        resp = dc.scan(**kwargs)
        items.extend(resp["Items"])
        if "LastEvaluatedKey" not in resp:
            break
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
    rows = []
    for it in items:
        row = {}
        for k, v in it.items():
            (t, val), = v.items()
            # Numbers are integers except KCL 3.x's throughputKBps.
            row[k] = _number(val) if t == "N" else (sorted(val) if t in ("SS", "NS") else val)
        rows.append(row)
    return sorted(rows, key=lambda r: r.get("leaseKey", ""))


def cmd_leases_dump(args):
    rows = scan_leases(dynamodb(args), args.app)
    if args.json:
        for r in rows:
            print(json.dumps(r, sort_keys=True, default=str))
        return
    print(f"{'leaseKey':<24} {'checkpoint':<60} {'sub':>4} {'owner':<20} {'counter':>7}")
    for r in rows:
        print(f"{r.get('leaseKey', ''):<24} {r.get('checkpoint', '')!s:<60} "
              f"{r.get('checkpointSubSequenceNumber', ''):>4} {r.get('leaseOwner', '-')!s:<20} "
              f"{r.get('leaseCounter', ''):>7}")


def _pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _check_watched(args, what):
    """--watch-pid: give up at once if the watched process (the daemon) has exited."""
    pid = getattr(args, "watch_pid", None)
    if pid and not _pid_alive(pid):
        raise SystemExit(f"kinesis_tool: process {pid} exited while waiting for {what}")


def cmd_wait_lease(args):
    dc = dynamodb(args)
    deadline = time.time() + args.timeout
    while True:
        _check_watched(args, f"lease {args.shard}")
        rows = {r["leaseKey"]: r for r in scan_leases(dc, args.app)}
        row = rows.get(args.shard)
        if row is not None and row.get("checkpoint") == args.checkpoint:
            log(f"lease {args.shard} has checkpoint {args.checkpoint}")
            return
        if time.time() > deadline:
            got = row.get("checkpoint") if row else "no such lease"
            raise SystemExit(f"kinesis_tool: lease {args.shard} checkpoint is {got!r}, "
                             f"not {args.checkpoint!r}, after {args.timeout}s")
        time.sleep(0.5)


# --------------------------------------------------------------------------------------------
# output checks


def read_manifest(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_output(out_dir):
    records = []
    for path in sorted(glob.glob(os.path.join(out_dir, "**", "*.jsonl"), recursive=True)):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    o = json.loads(line)
                except ValueError:
                    continue
                if isinstance(o, dict) and "partitionKey" in o and "data" in o:
                    records.append(o)
    return records


def output_shard(o):
    return o.get("shard") or o.get("shardId")


def compare(manifest, output):
    """Returns (missing, duplicated, unexpected, wrong_shard) lists of (partitionKey, data)."""
    want = collections.Counter((m["partitionKey"], m["data"]) for m in manifest)
    got = collections.Counter((o["partitionKey"], o["data"]) for o in output)
    missing = [k for k in want if got[k] == 0]
    duplicated = [k for k in want if got[k] > want[k]]
    unexpected = [k for k in got if k not in want]
    shard_of = {(m["partitionKey"], m["data"]): m["shard"] for m in manifest}
    wrong_shard = [(o["partitionKey"], o["data"]) for o in output
                   if output_shard(o) and (o["partitionKey"], o["data"]) in shard_of
                   and output_shard(o) != shard_of[(o["partitionKey"], o["data"])]]
    return missing, duplicated, unexpected, wrong_shard


def cmd_wait_records(args):
    manifest = read_manifest(args.manifest)
    deadline = time.time() + args.timeout
    while True:
        _check_watched(args, "records")
        missing, _, _, _ = compare(manifest, read_output(args.output))
        if not missing:
            log(f"all {len(manifest)} manifest records are in {args.output}")
            return
        if time.time() > deadline:
            raise SystemExit(f"kinesis_tool: {len(missing)} of {len(manifest)} records still missing "
                             f"from {args.output} after {args.timeout}s (first: {missing[0][0]})")
        time.sleep(0.5)


def esn(seq, sub):
    """An extended sequence number as a comparable tuple (SHARD_END above everything)."""
    if seq == "SHARD_END":
        return (2**200, 0)
    if seq in (None, "TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"):
        return (-1, 0)
    return (int(seq), int(sub or 0))


def last_esn_by_shard(entries):
    """{shard: the greatest extended sequence number of its entries} (manifest or output)."""
    last = {}
    for m in entries:
        s = m.get("shard") or m.get("shardId")
        e = esn(m["sequenceNumber"], m["subSequenceNumber"])
        last[s] = max(last.get(s, e), e)
    return last


def cmd_wait_checkpoints(args):
    """Every shard of the manifest checkpointed at its last record (a closed shard: SHARD_END)."""
    last = last_esn_by_shard(read_manifest(args.manifest))
    dc = dynamodb(args)
    deadline = time.time() + args.timeout
    while True:
        _check_watched(args, "checkpoints")
        rows = {r["leaseKey"]: r for r in scan_leases(dc, args.app)}
        behind = []
        for shard, want in sorted(last.items()):
            row = rows.get(shard, {})
            got = esn(row.get("checkpoint"), row.get("checkpointSubSequenceNumber"))
            if got != want and got[0] != 2**200:
                behind.append(shard)
        if not behind:
            log(f"every shard is checkpointed at its last record (or SHARD_END): {len(last)} shards")
            return
        if time.time() > deadline:
            raise SystemExit(f"kinesis_tool: checkpoints of {', '.join(behind)} still behind their last "
                             f"record after {args.timeout}s")
        time.sleep(0.5)


def cmd_check_records(args):
    manifest = read_manifest(args.manifest)
    output = read_output(args.output)
    missing, duplicated, unexpected, wrong_shard = compare(manifest, output)
    report = {"manifest": len(manifest), "output": len(output), "missing": len(missing),
              "duplicated": len(duplicated), "unexpected": len(unexpected),
              "wrong_shard": len(wrong_shard)}
    print(json.dumps(report))
    bad = missing or unexpected or wrong_shard or (duplicated and not args.allow_duplicates)
    if bad:
        for name, keys in (("missing", missing), ("duplicated", duplicated),
                           ("unexpected", unexpected), ("wrong_shard", wrong_shard)):
            for pk, _ in keys[:5]:
                log(f"{name}: {pk}")
        sys.exit(1)


# --------------------------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kinesis-endpoint", default=os.environ.get("KINESIS_ENDPOINT"))
    p.add_argument("--dynamodb-endpoint", default=os.environ.get("DYNAMODB_ENDPOINT"))
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("create-stream", help="create a stream and wait until ACTIVE")
    s.add_argument("name")
    s.add_argument("--shards", type=int, default=1)
    s.set_defaults(func=cmd_create_stream)

    s = sub.add_parser("shards", help="list shards as JSON lines")
    s.add_argument("name")
    s.set_defaults(func=cmd_shards)

    s = sub.add_parser("put", help="put plain and/or KPL-aggregated records")
    s.add_argument("name")
    s.add_argument("--plain", type=int, default=0, help="number of plain records")
    s.add_argument("--aggregated", type=int, default=0, help="number of KPL aggregates")
    s.add_argument("--per-aggregate", type=int, default=5, help="user records per aggregate")
    s.add_argument("--spread", action="store_true",
                   help="choose plain records' keys so that they go round robin over the open shards")
    s.add_argument("--size", type=int, default=0, help="minimum user record size in bytes")
    s.add_argument("--tag", help="string embedded in keys and payloads (default: random)")
    s.add_argument("--manifest", help="append one JSON line per user record to this file")
    s.set_defaults(func=cmd_put)

    s = sub.add_parser("split-shard", help="split an open shard at its hash range midpoint")
    s.add_argument("name")
    s.add_argument("--shard", help="shard id (default: the first open shard)")
    s.set_defaults(func=cmd_split_shard)

    leases = sub.add_parser("leases", help="the KCL lease table").add_subparsers(dest="lcmd", required=True)
    s = leases.add_parser("create", help="create the lease table and one lease per open shard")
    s.add_argument("--app", required=True, help="applicationName (= lease table name)")
    s.add_argument("--stream", required=True)
    s.add_argument("--initial-position", default="TRIM_HORIZON", choices=["TRIM_HORIZON", "LATEST"])
    s.add_argument("--all-shards", action="store_true", help="also closed shards")
    s.set_defaults(func=cmd_leases_create)
    s = leases.add_parser("create-table", help="create the lease table only (with the KCL 3.x index), if missing")
    s.add_argument("--app", required=True, help="applicationName (= lease table name)")
    s.set_defaults(func=cmd_leases_create_table)
    s = leases.add_parser("dump", help="print the lease table rows")
    s.add_argument("--app", required=True)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_leases_dump)

    s = sub.add_parser("wait-lease", help="wait until a lease row has a given checkpoint")
    s.add_argument("--app", required=True)
    s.add_argument("--shard", required=True)
    s.add_argument("--checkpoint", default="SHARD_END")
    s.add_argument("--timeout", type=float, default=60)
    s.add_argument("--watch-pid", type=int, help="give up at once if this process (the daemon) exits")
    s.set_defaults(func=cmd_wait_lease)

    s = sub.add_parser("wait-records", help="wait until every manifest record is in the output dir")
    s.add_argument("--manifest", required=True)
    s.add_argument("--output", required=True)
    s.add_argument("--timeout", type=float, default=60)
    s.add_argument("--watch-pid", type=int, help="give up at once if this process (the daemon) exits")
    s.set_defaults(func=cmd_wait_records)

    s = sub.add_parser("wait-checkpoints",
                       help="wait until every manifest shard's lease is checkpointed at its last record")
    s.add_argument("--app", required=True)
    s.add_argument("--manifest", required=True)
    s.add_argument("--timeout", type=float, default=60)
    s.add_argument("--watch-pid", type=int, help="give up at once if this process (the daemon) exits")
    s.set_defaults(func=cmd_wait_checkpoints)

    s = sub.add_parser("check-records", help="compare the output dir with the manifest")
    s.add_argument("--manifest", required=True)
    s.add_argument("--output", required=True)
    s.add_argument("--allow-duplicates", action="store_true",
                   help="at-least-once: redelivered records are not an error")
    s.set_defaults(func=cmd_check_records)

    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
