"""Ingest pipeline on one core, no network: raw Kinesis records -> DynamoDB request payloads.

    .venv-bench/bin/python benchmarks/ingest.py            # TrackStore and the old-stack baseline
    .venv/bin/python benchmarks/ingest.py                  # TrackStore side only

TrackStore side: GetRecords-shaped record dicts (Data bytes, PartitionKey, SequenceNumber,
ApproximateArrivalTimestamp) go through the shard reader's own conversion (KPL deaggregation
included) into StreamRecords, then `TrackService.ingest` over the real DynamoLocationRepository
and DynamoDeviceRepository. Their client is a fake in-process DynamoDB that answers every call at
once: BatchWriteItem succeeds, BatchGetItem returns the device marks the UpdateItems left,
UpdateItem and the conditional PutItem check their conditions against what was written, so the
marks, replays and late records take the production paths. `--wire` also encodes every request
body as each side's real client would (TrackStore: msgspec; boto3: validation and botocore's
model walk), which is where the old stack spends most of its time.

Baseline (benchmarks/baselines/old_ingest.py): json.loads + pydantic v2 + boto3's TypeSerializer,
over the same input, into the same Locations items; needs pydantic and boto3 (.venv-bench).

Input: batches of 500 records from the simulated fleet, a third in the legacy field names; per
batch 10% repeats (half a producer's resends of a recent record, half a replay of the previous
batch's tail with its sequence numbers), 5% bad (not JSON, latitude out of range, a field
missing), and about a fifth of the fresh records in KPL aggregates of 10.

Both sides run in one process pinned to one core, alternating A B B A, on the same input with
fresh state each run. Reports per-side medians of records/s (wall) and CPU us/record
(time.process_time), and the median of the per-round paired ratios. `--gc-freeze` freezes the
heap after setup, as a service can after startup. To profile one side:

    .venv-bench/bin/py-spy record -n -r 250 -f raw -o ts.folded -- \
        .venv-bench/bin/python benchmarks/ingest.py --sides trackstore --rounds 4
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import botocore.session
import msgspec
from botocore.exceptions import ClientError
from botocore.serialize import create_serializer

from trackstore.cli.fleet import Fleet
from trackstore.cli.process import settle_garbage_collector
from trackstore.clock import FakeClock
from trackstore.domain import StreamRecord
from trackstore.dynamodb.devices import DynamoDeviceRepository
from trackstore.dynamodb.locations import DynamoLocationRepository
from trackstore.kinesis.kpl import aggregate
from trackstore.kinesis.reader import ShardReader
from trackstore.leasing import TRIM_HORIZON
from trackstore.service import TrackService

WIRE = False  # --wire
START_MS = 1_800_000_000_000
SHARD_ID = "shardId-000000000000"
# Kinesis sequence numbers are 56-digit decimals that grow along a shard.
SEQUENCE_BASE = 49_590_338_271_490_256_608_559_692_538_361_571_095_921_575_989_136_588_898
SEQUENCE_STEP = 1 << 20
LOCATIONS, DEVICES = "Locations", "Devices"
TTL_DAYS, DATE_SHARDS = 30, 8  # the service's defaults
BATCH_SIZE = 500
KPL_GROUP = 10

# -- input ---------------------------------------------------------------------------------------


@dataclass
class Workload:
    batches: list[list[dict[str, Any]]]  # raw GetRecords records, one list per batch
    records: int  # user records once deaggregated
    now_ms: int
    mix: Counter[str]


def build_workload(batches: int, devices: int, kpl_share: float, seed: int) -> Workload:
    rng = random.Random(seed)
    fleet = Fleet(devices=devices, rate=devices, start_ms=START_MS, seed=seed, legacy_share=1 / 3)
    pending: list[tuple[str, bytes, int]] = []
    clock = {"second": 0, "sequence": 0}
    mix: Counter[str] = Counter()

    def report() -> tuple[str, bytes, int]:
        while not pending:
            clock["second"] += 1
            now = START_MS + clock["second"] * 1000
            reports = fleet.advance(now)
            pending.extend((key, data, now + rng.randint(20, 900)) for key, data in reports)
            pending.reverse()
        return pending.pop()

    def raw(key: str, data: bytes, arrival_ms: int) -> dict[str, Any]:
        clock["sequence"] += 1
        return {
            "SequenceNumber": str(SEQUENCE_BASE + clock["sequence"] * SEQUENCE_STEP),
            "ApproximateArrivalTimestamp": datetime.fromtimestamp(arrival_ms / 1000, tz=UTC),
            "Data": data,
            "PartitionKey": key,
        }

    bad_kinds = ("truncated", "binary", "latitude", "missing")
    recent: list[tuple[str, bytes]] = []  # fresh records of this batch and the last one
    previous_plain: list[dict[str, Any]] = []
    out: list[list[dict[str, Any]]] = []
    bad_count = round(BATCH_SIZE * 0.05)
    repeat_count = round(BATCH_SIZE * 0.10)
    for _ in range(batches):
        replays = [dict(r) for r in previous_plain[-(repeat_count // 2) :]]
        resend_count = repeat_count - len(replays)
        fresh = [report() for _ in range(BATCH_SIZE - bad_count - repeat_count)]
        recent = recent[-BATCH_SIZE:] + [(key, data) for key, data, _ in fresh]

        units: list[list[tuple[str, bytes, int]]] = []  # raw records to be, as sub-records
        for start in range(0, len(fresh), KPL_GROUP):
            group = fresh[start : start + KPL_GROUP]
            if len(group) == KPL_GROUP and rng.random() < kpl_share:
                units.append(group)
            else:
                units.extend([item] for item in group)
        extra: list[list[tuple[str, bytes, int]]] = []
        last_arrival = fresh[-1][2]
        for i in range(bad_count):
            kind = bad_kinds[i % len(bad_kinds)]
            key, data, arrival = report()
            extra.append([(key, _spoil(data, kind, rng), arrival)])
            mix[f"bad: {kind}"] += 1
        for _ in range(resend_count):
            key, data = rng.choice(recent)
            extra.append([(key, data, last_arrival)])
        mix["repeat: producer resend"] += resend_count
        mix["repeat: replay of the previous batch's tail"] += len(replays)
        for unit in extra:
            units.insert(rng.randrange(len(units) + 1), unit)

        batch = list(replays)
        plain: list[dict[str, Any]] = []
        for unit in units:
            if len(unit) == 1:
                key, data, arrival = unit[0]
                batch.append(raw(key, data, arrival))
                plain.append(batch[-1])
            else:
                batch.append(raw(unit[0][0], aggregate([(k, d) for k, d, _ in unit]), unit[0][2]))
                mix["fresh, in KPL aggregates"] += len(unit)
        mix["fresh"] += len(fresh)
        mix["fresh, legacy field names"] += sum(1 for _, data, _ in fresh if data[:3] == b'{"b')
        previous_plain = [r for r in plain if _is_good(r["Data"])]
        out.append(batch)
    mix["raw Kinesis records"] = sum(len(b) for b in out)
    return Workload(
        batches=out,
        records=batches * BATCH_SIZE,
        now_ms=START_MS + (clock["second"] + 60) * 1000,
        mix=mix,
    )


def _spoil(data: bytes, kind: str, rng: random.Random) -> bytes:
    if kind == "truncated":
        return data[: len(data) // 2]
    if kind == "binary":
        return bytes(rng.randrange(256) for _ in range(64))
    record = json.loads(data)
    if kind == "latitude":
        record["lat" if "lat" in record else "latitude"] = round(rng.uniform(90.5, 200), 6)
    else:
        record.pop("ts" if "ts" in record else "timestamp")
    return json.dumps(record, separators=(",", ":")).encode()


def _is_good(data: bytes) -> bool:
    try:
        record = json.loads(data)
    except ValueError:
        return False
    lat = record.get("lat", record.get("latitude"))
    return ("ts" in record or "timestamp" in record) and -90 <= lat <= 90


# -- DynamoDB, in process ------------------------------------------------------------------------


def _condition_failed(operation: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": "ConditionalCheckFailedException", "Message": "condition failed"}},
        operation,
    )


Encode = Callable[[str, dict[str, Any]], object]


def _no_encoding(_operation: str, _parameters: dict[str, Any]) -> object:
    return None


def wire_encoder(ours: bool) -> Encode:
    """`--wire`: the request body each side's client would put on the wire. TrackStore sends
    these calls straight (trackstore.aws_direct), the body encoded by msgspec from the
    parameters, Locations items already rendered as JSON (trackstore.dynamodb.item_json); boto3,
    as the old service used it, validates the parameters and walks botocore's model."""
    if ours:
        encode = msgspec.json.Encoder().encode
        return lambda _operation, parameters: encode(parameters)
    model = botocore.session.get_session().get_service_model("dynamodb")
    serializer: Any = create_serializer("json", include_validation=True)
    operations = {
        name: model.operation_model(name)
        for name in ("BatchWriteItem", "PutItem", "UpdateItem", "BatchGetItem")
    }
    return lambda operation, parameters: serializer.serialize_to_request(
        parameters, operations[operation]
    )


class _S(msgspec.Struct):
    S: str


class _N(msgspec.Struct):
    N: str


class _Keyed(msgspec.Struct):
    deviceId: _S
    timestamp: _N
    streamPosition: _S


class _Put(msgspec.Struct):
    Item: _Keyed


class _Written(msgspec.Struct):
    PutRequest: _Put


_read_written = msgspec.json.Decoder(_Written).decode


class FakeDynamoDB:
    """The calls the adapters make, answered at once. Keeps what their conditions need (each
    location's streamPosition, each device's lastSeen and appliedThrough); with `capture`, also
    every item written, for the payload check."""

    def __init__(self, capture: bool = False, encode: Encode = _no_encoding) -> None:
        self.encode = encode
        self.calls: Counter[str] = Counter()
        self.positions: dict[tuple[str, str], str] = {}
        self.devices: dict[str, dict[str, Any]] = {}
        self.items: dict[tuple[str, str], dict[str, Any]] | None = {} if capture else None
        self.updates: list[dict[str, Any]] | None = [] if capture else None

    async def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls["BatchWriteItem"] += 1
        self.encode("BatchWriteItem", {"RequestItems": RequestItems})
        for requests in RequestItems.values():
            for request in requests:
                # Rendered as DynamoDB JSON (trackstore.dynamodb.item_json): read back only what
                # the conditions need, unless the payload check wants every item.
                if isinstance(request, dict):  # as TrackStore wrote them before 2026-12-05
                    self._store(request["PutRequest"]["Item"])
                elif self.items is not None:
                    self._store(msgspec.json.decode(request)["PutRequest"]["Item"])
                else:
                    item = _read_written(request).PutRequest.Item
                    self.positions[item.deviceId.S, item.timestamp.N] = item.streamPosition.S
        return {"UnprocessedItems": {}}

    async def put_item(self, **request: Any) -> dict[str, Any]:
        self.calls["PutItem"] += 1
        self.encode("PutItem", request)
        item = request["Item"]
        stored = self.positions.get((item["deviceId"]["S"], item["timestamp"]["N"]))
        # attribute_not_exists(#dev) OR #pos = :pos
        if stored is not None and stored != request["ExpressionAttributeValues"][":pos"]["S"]:
            self.calls["PutItem condition failed"] += 1
            raise _condition_failed("PutItem")
        self._store(item)
        return {}

    def _store(self, item: dict[str, Any]) -> None:
        key = (item["deviceId"]["S"], item["timestamp"]["N"])
        self.positions[key] = item["streamPosition"]["S"]
        if self.items is not None:
            self.items[key] = item

    async def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls["BatchGetItem"] += 1
        self.encode("BatchGetItem", {"RequestItems": RequestItems})
        ((table, request),) = RequestItems.items()
        found = []
        for key in request["Keys"]:
            device_id = key["deviceId"]["S"]
            state = self.devices.get(device_id)
            if state is not None:
                found.append({"deviceId": key["deviceId"], **state})
        return {"Responses": {table: found}, "UnprocessedKeys": {}}

    async def update_item(self, **request: Any) -> dict[str, Any]:
        self.calls["UpdateItem"] += 1
        self.encode("UpdateItem", request)
        device_id = request["Key"]["deviceId"]["S"]
        names = request["ExpressionAttributeNames"]
        values = request["ExpressionAttributeValues"]
        state = self.devices.get(device_id, {})
        if not _activity_condition_holds(state, names, values):
            raise _condition_failed("UpdateItem")
        state = self.devices.setdefault(device_id, {})
        if ":ls" in values:
            state["lastSeen"] = values[":ls"]
        marks = state.setdefault("appliedThrough", {"M": {}})["M"]
        if ":at" in values:
            marks.clear()
            marks.update(values[":at"]["M"])
        for key, shard in names.items():
            if _is_shard_name(key):
                marks[shard] = values[f":p{key[2:]}"]
        if self.updates is not None:
            self.updates.append(request)
        return {}


def _activity_condition_holds(
    state: dict[str, Any], names: dict[str, str], values: dict[str, Any]
) -> bool:
    """DynamoDeviceRepository's condition: lastSeen as read (or absent), and each named shard's
    mark as read (or absent); a whole new map only where no map is stored."""
    if values.get(":seen") != state.get("lastSeen"):
        return False
    marks = state.get("appliedThrough", {}).get("M")
    if ":at" in values:
        return marks is None
    if marks is None:
        return False
    return all(
        marks.get(shard) == values.get(f":w{key[2:]}")
        for key, shard in names.items()
        if _is_shard_name(key)
    )


def _is_shard_name(key: str) -> bool:
    return key.startswith("#s") and key[2:].isdigit()  # #s0, #s1, ...; not #st (status)


class SyncFakeDynamoDB:
    """The baseline's boto3 client: every write succeeds at once."""

    def __init__(self, capture: bool = False, encode: Encode = _no_encoding) -> None:
        self.encode = encode
        self.calls: Counter[str] = Counter()
        self.items: dict[tuple[str, str], dict[str, Any]] | None = {} if capture else None
        self.updates: list[dict[str, Any]] | None = [] if capture else None

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls["BatchWriteItem"] += 1
        self.encode("BatchWriteItem", {"RequestItems": RequestItems})
        if self.items is not None:
            for requests in RequestItems.values():
                for request in requests:
                    item = request["PutRequest"]["Item"]
                    self.items[(item["deviceId"]["S"], item["timestamp"]["N"])] = item
        return {"UnprocessedItems": {}}

    def update_item(self, **request: Any) -> dict[str, Any]:
        self.calls["UpdateItem"] += 1
        self.encode("UpdateItem", request)
        if self.updates is not None:
            self.updates.append(request)
        return {}


# -- the two sides -------------------------------------------------------------------------------


@dataclass
class Run:
    wall_s: float
    cpu_s: float
    gc_s: float  # of the wall time, in the cyclic garbage collector
    outcome: Counter[str]
    client: Any


class GcClock:
    """Time spent in the cyclic garbage collector, through gc.callbacks."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __enter__(self) -> GcClock:
        gc.collect()
        gc.callbacks.append(self._note)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self._note)

    def _note(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


async def _unused(*_: Any) -> None:
    raise AssertionError("the benchmark never runs the reader's loop")


def shard_reader() -> ShardReader:
    """The reader, for its GetRecords-to-StreamRecord conversion only: no client is called."""
    return ShardReader(
        client=None,
        stream="bench",
        shard_id=SHARD_ID,
        checkpoint=TRIM_HORIZON,
        checkpoint_sub=0,
        batch_size=BATCH_SIZE,
        idle_s=1.0,
        hand_out=_unused,
        commit=_unused,
    )


def to_stream_records(reader: ShardReader, raw: list[dict[str, Any]]) -> list[StreamRecord]:
    return reader._records(raw)  # the reader's own conversion, KPL deaggregation included


async def run_trackstore(work: Workload, capture: bool = False) -> Run:
    client = FakeDynamoDB(capture, wire_encoder(ours=True) if WIRE else _no_encoding)
    service = TrackService(
        DynamoLocationRepository(client, LOCATIONS, TTL_DAYS, DATE_SHARDS),
        DynamoDeviceRepository(client, DEVICES),
        FakeClock(work.now_ms),
        TTL_DAYS,
    )
    reader = shard_reader()
    outcome: Counter[str] = Counter()
    with GcClock() as collector:
        wall, cpu = time.perf_counter(), time.process_time()
        for raw in work.batches:
            result = await service.ingest(to_stream_records(reader, raw))
            outcome["received"] += result.received
            outcome["stored"] += result.stored
            outcome["duplicates"] += result.duplicates
            outcome["rejected"] += len(result.rejections)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return Run(wall, cpu, collector.seconds, outcome, client)


def run_baseline(work: Workload, capture: bool = False) -> Run:
    from baselines.old_ingest import OldIngest

    client = SyncFakeDynamoDB(capture, wire_encoder(ours=False) if WIRE else _no_encoding)
    old = OldIngest(client, LOCATIONS, DEVICES, TTL_DAYS, DATE_SHARDS, FakeClock(work.now_ms))
    outcome: Counter[str] = Counter()
    with GcClock() as collector:
        wall, cpu = time.perf_counter(), time.process_time()
        for raw in work.batches:
            outcome.update(old.ingest(raw))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return Run(wall, cpu, collector.seconds, outcome, client)


def check_payloads(ours: Run, theirs: Run) -> list[str]:
    """The Locations table both sides leave behind must match item for item. streamPosition and
    receivedAt may differ only where a resend came in a later batch: TrackStore keeps the first
    write (conditional put), the old service overwrites."""
    problems = []
    a, b = ours.client.items, theirs.client.items
    if a.keys() != b.keys():
        problems.append(f"different keys: {len(a.keys() - b.keys())} / {len(b.keys() - a.keys())}")
    moved = 0
    for key in a.keys() & b.keys():
        x, y = dict(a[key]), dict(b[key])
        if x["streamPosition"] != y["streamPosition"]:
            moved += 1
            for name in ("streamPosition", "receivedAt"):
                x.pop(name), y.pop(name)
        if x != y:
            problems.append(f"item {key} differs:\n  trackstore {x}\n  baseline   {y}")
            if len(problems) > 3:
                break
    print(
        f"payload check: {len(a):,} Locations items from each side, "
        f"{'identical' if not problems else 'NOT identical'}"
        f" ({moved} re-sent in a later batch keep their first streamPosition/receivedAt in"
        " TrackStore, the later one in the baseline)"
    )
    if _last_seen(ours.client.updates) != _last_seen(theirs.client.updates):
        problems.append("the devices' final lastSeen differ")
    return problems


def _last_seen(updates: list[dict[str, Any]]) -> dict[str, int]:
    seen: dict[str, int] = {}
    for update in updates:
        value = update["ExpressionAttributeValues"].get(":ls")
        if value is not None:
            device_id = update["Key"]["deviceId"]["S"]
            seen[device_id] = max(seen.get(device_id, 0), int(value["N"]))
    return seen


# -- driver --------------------------------------------------------------------------------------


def _versions() -> str:
    names = ("msgspec", "pydantic", "pydantic-core", "boto3", "botocore")
    found = []
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{name} {importlib.metadata.version(name)}")
    return ", ".join(found)


def _source_state() -> str:
    """The commit measured, and whether src/ differs from it: src/ moves under benchmarks."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "src"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown (no git)"
    return f"{commit or 'unknown'}" + (" + uncommitted changes in src/" if dirty else "")


def _baseline_importable() -> str | None:
    try:
        import baselines.old_ingest  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def _per_record_us(run: Run, records: int) -> float:
    return run.cpu_s / records * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=100, help="batches of 500 records")
    parser.add_argument("--devices", type=int, default=250, help="devices on the shard")
    parser.add_argument("--kpl-share", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=6, help="rounds of A B (then B A)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cpu", type=int, help="core to pin to (default: the last allowed)")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() once set up, as a service can after startup (both sides)",
    )
    parser.add_argument(
        "--wire",
        action="store_true",
        help="also encode each request body as each side's client would (see wire_encoder)",
    )
    parser.add_argument(
        "--sides",
        choices=("both", "trackstore", "baseline"),
        help="default: both in .venv-bench, trackstore elsewhere (baseline: for profiling)",
    )
    args = parser.parse_args()
    global WIRE
    WIRE = args.wire

    in_bench_venv = os.path.basename(sys.prefix.rstrip("/")) == ".venv-bench"
    sides = args.sides or ("both" if in_bench_venv else "trackstore")
    if sides != "trackstore":
        missing = _baseline_importable()
        if missing:
            print(f"cannot run the baseline here ({missing}); use .venv-bench", file=sys.stderr)
            return 2
        if not in_bench_venv:
            print("warning: the baseline's figures of record are .venv-bench's", file=sys.stderr)
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})

    work = build_workload(args.batches, args.devices, args.kpl_share, args.seed)
    command = (
        f"{os.path.relpath(sys.executable)} benchmarks/ingest.py --batches {args.batches} "
        f"--devices {args.devices} --kpl-share {args.kpl_share} --rounds {args.rounds} "
        f"--seed {args.seed} --cpu {cpu}"
        + (" --gc-freeze" if args.gc_freeze else "")
        + (" --wire" if args.wire else "")
        + (f" --sides {sides}" if sides != "both" else "")
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, pinned to cpu {cpu}; "
        f"python {platform.python_version()} ({sys.prefix}); {_versions()}"
    )
    print(f"trackstore source: {_source_state()}")
    print(
        "sides run: "
        + {
            "both": "TrackStore and the old-stack baseline (json.loads, pydantic, TypeSerializer)",
            "trackstore": "TrackStore only (baseline skipped: run from .venv-bench to compare)",
            "baseline": "baseline only (no comparison)",
        }[sides]
    )
    print(
        f"input: {work.records:,} records in {args.batches} batches of {BATCH_SIZE}, "
        f"{args.devices} devices; " + ", ".join(f"{k} {v:,}" for k, v in sorted(work.mix.items()))
    )

    if args.gc_freeze:
        _baseline_importable()  # its modules too, whichever sides run
        settle_garbage_collector()  # what `trackstore consume` does after start
    print(
        "garbage collector: "
        + (
            f"as the service sets it: frozen after setup ({gc.get_freeze_count():,} objects"
            f" out of its reach), thresholds {gc.get_threshold()}"
            if args.gc_freeze
            else f"as started ({len(gc.get_objects()):,} tracked objects, thresholds"
            f" {gc.get_threshold()}); --gc-freeze to freeze them"
        )
    )
    return asyncio.run(measure(work, sides, args.rounds, command))


async def measure(work: Workload, sides: str, rounds: int, command: str) -> int:
    # Warm-up pass of each side, which also checks that they write the same payloads.
    warm: dict[str, Run] = {}
    if sides != "baseline":
        warm["trackstore"] = await run_trackstore(work, capture=True)
    if sides != "trackstore":
        warm["baseline"] = run_baseline(work, capture=True)
    for side, run in warm.items():
        print(f"{side + ':':11}", dict(run.outcome), "calls", dict(run.client.calls))
    if sides == "both":
        problems = check_payloads(warm["trackstore"], warm["baseline"])
        if problems:
            print("\n".join(problems), file=sys.stderr)
            return 1
    del warm

    runs: dict[str, list[Run]] = {"trackstore": [], "baseline": []}
    ratios_rate: list[float] = []
    ratios_cpu: list[float] = []
    for round_ in range(rounds):
        order = ["trackstore", "baseline"] if round_ % 2 == 0 else ["baseline", "trackstore"]
        this: dict[str, Run] = {}
        for side in order:
            if sides not in ("both", side):
                continue
            run = await run_trackstore(work) if side == "trackstore" else run_baseline(work)
            this[side] = run
            runs[side].append(run)
            run.client = None
        line = f"round {round_ + 1} ({' '.join('A' if s == 'trackstore' else 'B' for s in this)}):"
        for side, run in this.items():
            line += (
                f"  {side} {work.records / run.wall_s:,.0f} rec/s "
                f"{_per_record_us(run, work.records):.1f} us/rec"
                f" (on cpu {run.cpu_s / run.wall_s:.0%})"
            )
        if len(this) == 2:
            ratios_rate.append(this["baseline"].wall_s / this["trackstore"].wall_s)
            ratios_cpu.append(this["baseline"].cpu_s / this["trackstore"].cpu_s)
            line += f"  ratios {ratios_rate[-1]:.2f}x wall, {ratios_cpu[-1]:.2f}x cpu"
        print(line, flush=True)

    print("\nmedians (records/s by the wall clock; CPU us/record by time.process_time):")
    for side, side_runs in runs.items():
        if not side_runs:
            continue
        rate = statistics.median(work.records / r.wall_s for r in side_runs)
        us = statistics.median(_per_record_us(r, work.records) for r in side_runs)
        on_cpu = statistics.median(r.cpu_s / r.wall_s for r in side_runs)
        in_gc = statistics.median(r.gc_s / r.wall_s for r in side_runs)
        name = "TrackStore" if side == "trackstore" else "baseline (old stack)"
        print(
            f"  {name:22} {rate:>8,.0f} records/s  {us:6.2f} CPU us/record"
            f" (= {1e6 / us:,.0f} records per CPU second; on cpu {on_cpu:.0%} of the wall time;"
            f" cyclic GC {in_gc:.0%} of the wall time)"
        )
    if ratios_rate:
        print(
            f"  paired ratios TrackStore/baseline, median of {len(ratios_rate)} rounds: "
            f"{statistics.median(ratios_rate):.2f}x records/s, "
            f"{statistics.median(ratios_cpu):.2f}x less CPU per record"
        )
    shared = [r for side_runs in runs.values() for r in side_runs if r.cpu_s < 0.9 * r.wall_s]
    if shared:
        print(
            f"  note: in {len(shared)} runs the process had its core less than 90% of the time"
            " (other load on it): the CPU figures are the steadier ones"
        )
    print(f"reproduce: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
