"""`trackstore init` and `trackstore serve` on the real DynamoDB adapters, run as a user runs them.

dynalite serves the tables and moto server the Kinesis stream that `init` also creates. The tables
are filled in-process through TrackService.ingest with DynamoDB repositories (what the consumer
does), with a realistic stream: a few thousand recent locations of 20 devices in mixed record
formats, out-of-order arrivals, producer resends, a replayed batch and a few invalid records. Then
`trackstore serve` runs as a subprocess and everything is checked over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.aws_emulators import DUMMY_CREDENTIALS, free_port
from trackstore.clock import wall_clock_ms
from trackstore.config import Settings
from trackstore.domain import StreamRecord
from trackstore.dynamodb import DynamoDeviceRepository, DynamoLocationRepository, dynamodb_client
from trackstore.kinesis.client import kinesis_client
from trackstore.service import TrackService

pytestmark = pytest.mark.integration

_SCRIPT = Path(sys.executable).with_name("trackstore")
TRACKSTORE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "trackstore.cli"]
PROBLEM = "application/problem+json"

DEVICES = [f"bus-{n:03d}" for n in range(1, 21)]
TICKS = 150  # reports per device
TICK_MS = 18_000  # 150 ticks of 18 s: the last 45 minutes
BATCH = 250  # records per ingested batch, as GetRecords would hand them out
SHARDS = 4
# Ticks whose window the fleet-window test reads; even ticks are shared by every device.
WINDOW_TICKS = (30, 110)
GHOSTS = ("ghost-1", "ghost-2", "ghost-3")  # device ids that only ever sent invalid records


def iso(ms: int) -> str:
    """The API's time format, computed independently: ISO-8601 UTC with milliseconds."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def iso_with_offset(ms: int, hours: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return moment.astimezone(timezone(timedelta(hours=hours))).isoformat(timespec="milliseconds")


@dataclass
class Fleet:
    """What was ingested, and so what the API must answer."""

    now_ms: int
    ticks: list[int]  # the tick times shared by every device on even ticks
    locations: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    spoiled: set[bytes] = field(default_factory=set)  # data of the invalid records
    delivered_spoiled: int = 0  # invalid records in every delivery, replays included
    rejected: list[bytes] = field(default_factory=list)  # data TrackService rejected

    def timestamps(self, device_id: str) -> list[int]:
        return sorted(ts for (device, ts) in self.locations if device == device_id)

    def expected(self, device_id: str, ts: int) -> dict[str, Any]:
        return {"deviceId": device_id, "timestamp": iso(ts), **self.locations[(device_id, ts)]}


# -- the stream --------------------------------------------------------------------------------


def build_stream(now_ms: int, rng: random.Random) -> tuple[Fleet, list[tuple[str, bytes]]]:
    """Valid reports in mixed formats, then moved, resent and spoiled as a real stream would be.

    Returns the expectations and (partition key, data) in arrival order.
    """
    first = now_ms - TICKS * TICK_MS
    fleet = Fleet(now_ms=now_ms, ticks=[first + k * TICK_MS for k in range(TICKS)])
    arrivals: list[tuple[str, bytes]] = []
    for k, tick in enumerate(fleet.ticks):
        for i in rng.sample(range(len(DEVICES)), len(DEVICES)):
            device_id = DEVICES[i]
            ts = tick if k % 2 == 0 else tick + rng.randrange(1, TICK_MS)
            latitude = round(52.30 + i * 0.01 + k * 0.0001, 6)
            longitude = round(4.85 + k * 0.0002 + rng.uniform(-1e-4, 1e-4), 6)
            speed = round(rng.uniform(0, 80), 1)
            body: dict[str, Any]
            if k % 3 == 0:  # ISO-8601, sometimes with a non-UTC offset
                heading = round(rng.uniform(0, 359.9), 1)
                stamp = iso_with_offset(ts, 2) if k % 6 == 0 else iso(ts)
                body = {"deviceId": device_id, "timestamp": stamp, "latitude": latitude}
                body |= {"longitude": longitude, "speed": speed, "heading": heading}
                shown = {"latitude": latitude, "longitude": longitude, "speed": speed}
                shown["heading"] = heading
            elif k % 3 == 1:  # epoch milliseconds, more optional fields
                accuracy, battery = round(rng.uniform(3, 12), 1), round(rng.uniform(20, 100), 1)
                body = {"deviceId": device_id, "timestamp": ts, "latitude": latitude}
                body |= {"longitude": longitude, "accuracy": accuracy, "battery": battery}
                shown = {"latitude": latitude, "longitude": longitude, "accuracy": accuracy}
                shown["battery"] = battery
            else:  # the legacy producers' format: epoch seconds, aliases, extra fields
                body = {"busId": device_id, "ts": ts / 1000, "lat": latitude, "lon": longitude}
                body |= {"speed": speed, "region": "eu-west", "quality_score": 0.9}
                shown = {"latitude": latitude, "longitude": longitude, "speed": speed}
                shown["attributes"] = {"region": "eu-west", "quality_score": 0.9}
            fleet.locations[(device_id, ts)] = shown
            arrivals.append((device_id, msgspec.json.encode(body)))

    # Out of order: some reports arrive up to a couple of batches late.
    for _ in range(len(arrivals) // 25):
        index = rng.randrange(len(arrivals) - 600)
        late = arrivals.pop(index)
        arrivals.insert(index + rng.randrange(20, 600), late)
    # Producer resends: the same data again, some right behind, some much later.
    for n in range(len(arrivals) // 30):
        index = rng.randrange(len(arrivals) - 800)
        gap = 1 if n % 3 == 0 else rng.randrange(50, 800)
        arrivals.insert(index + gap, arrivals[index])

    ok = fleet.ticks[-3] + 1234  # a valid time that no valid report uses
    spoiled: list[tuple[str, bytes]] = [
        ("bus-001", b'{"deviceId": "bus-001", "timestamp": '),
        ("bus-002", b"[52.3, 4.9]"),
        ("ghost-1", msgspec.json.encode(_body("ghost-1", ok, latitude=95.0))),
        ("ghost-2", msgspec.json.encode(_body("ghost-2", now_ms + 20 * 60_000))),
        ("ghost-3", msgspec.json.encode(_body("ghost-3", now_ms - 40 * 86_400_000))),
        ("bus-003", msgspec.json.encode(_body("bus-003", "last tuesday"))),
        ("bus-004", msgspec.json.encode(_body("bus-004", ok, longitude=200.0))),
        ("bus-005", msgspec.json.encode(_body("bus-005", ok, heading=360))),
        ("bus-006", msgspec.json.encode(_body("bus-006", ok, speed=-3))),
        ("bus 007", msgspec.json.encode(_body("bus 007", ok))),
        ("bus-008", msgspec.json.encode({"deviceId": "bus-008", "timestamp": ok, "latitude": 1})),
    ]
    for spoilt in spoiled:
        arrivals.insert(rng.randrange(len(arrivals)), spoilt)
    fleet.spoiled = {data for _, data in spoiled}
    return fleet, arrivals


def _body(device_id: str, timestamp: Any, **fields: Any) -> dict[str, Any]:
    body = {"deviceId": device_id, "timestamp": timestamp, "latitude": 52.3, "longitude": 4.9}
    return body | fields


def to_records(arrivals: list[tuple[str, bytes]], now_ms: int) -> list[StreamRecord]:
    """Stream records with increasing sequence numbers; a partition key always maps to one shard."""
    records = []
    for n, (key, data) in enumerate(arrivals):
        shard = sum(key.encode()) % SHARDS
        records.append(
            StreamRecord(
                data=data,
                partition_key=key,
                shard_id=f"shardId-{shard:012d}",
                sequence_number=str(49_650_000_000_000_000_000_000 + n * 1000),
                arrival_ms=now_ms - (len(arrivals) - n),
            )
        )
    return records


async def ingest(
    settings: Settings, endpoint: str, records: list[StreamRecord], fleet: Fleet
) -> None:
    async with dynamodb_client(settings.aws_region, endpoint_url=endpoint) as client:
        service = TrackService(
            locations=DynamoLocationRepository(
                client,
                settings.location_table_name,
                settings.location_ttl_days,
                settings.location_date_shards,
            ),
            devices=DynamoDeviceRepository(client, settings.device_table_name),
            clock=wall_clock_ms,
            ttl_days=settings.location_ttl_days,
        )
        batches = [records[i : i + BATCH] for i in range(0, len(records), BATCH)]
        # At-least-once delivery: an earlier batch comes again, and the last one, as after a crash.
        deliveries = [*batches[:6], batches[3], *batches[6:], batches[-1]]
        for batch in deliveries:
            result = await service.ingest(batch)
            fleet.rejected += [rejection.record.data for rejection in result.rejections]
            fleet.delivered_spoiled += sum(record.data in fleet.spoiled for record in batch)


async def drop(settings: Settings, dynamodb_endpoint: str, kinesis_endpoint: str) -> None:
    async with dynamodb_client(settings.aws_region, endpoint_url=dynamodb_endpoint) as client:
        for table in (
            settings.location_table_name,
            settings.device_table_name,
            settings.lease_table_name,
        ):
            with contextlib.suppress(Exception):
                await client.delete_table(TableName=table)
    async with kinesis_client(settings.aws_region, endpoint_url=kinesis_endpoint) as kinesis:
        with contextlib.suppress(Exception):
            await kinesis.delete_stream(StreamName=settings.kinesis_stream_name)


# -- processes ---------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def get_when_up(self, path: str, timeout: float = 30.0) -> httpx.Response:
        """GET `path`, retrying while the server is still starting up (connection refused)."""
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            assert code is None, f"serve exited {code}: {self.output()}"
            try:
                return httpx.get(f"{self.url}{path}", timeout=60)
            except httpx.ConnectError:
                assert time.monotonic() < deadline, f"serve not up in {timeout} s: {self.output()}"
                time.sleep(0.1)


@contextlib.contextmanager
def running_server(env: dict[str, str], workdir: Path, name: str) -> Iterator[Server]:
    """`trackstore serve` on a free port, killed at the end unless it stopped already."""
    port = free_port()
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*TRACKSTORE, "serve", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Server(process, f"http://127.0.0.1:{port}", log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def stop_with_sigterm(server: Server) -> None:
    server.process.send_signal(signal.SIGTERM)
    try:
        code = server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve did not stop within 10 s of SIGTERM: {server.output()}")
    assert code == 0, f"serve exited {code} after SIGTERM: {server.output()}"
    assert "Traceback" not in server.output()


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve-dynamodb")


@pytest.fixture(scope="module")
def aws_env(dynalite_endpoint: str, moto_endpoint: str, workdir: Path) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        **DUMMY_CREDENTIALS,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "TRACKSTORE_BACKEND": "aws",
        "AWS_ENDPOINT_URL": dynalite_endpoint,
        "AWS_ENDPOINT_URL_KINESIS": moto_endpoint,
        "DEVICE_TABLE_NAME": f"it-devices-{suffix}",
        "LOCATION_TABLE_NAME": f"it-locations-{suffix}",
        "LEASE_TABLE_NAME": f"it-leases-{suffix}",
        "KINESIS_STREAM_NAME": f"it-stream-{suffix}",
        "LOG_LEVEL": "WARNING",
    }


@pytest.fixture(scope="module")
def settings(aws_env: dict[str, str]) -> Settings:
    return Settings.from_env(aws_env, dotenv=None)


@pytest.fixture(scope="module")
def init_runs(
    aws_env: dict[str, str],
    workdir: Path,
    settings: Settings,
    dynalite_endpoint: str,
    moto_endpoint: str,
) -> Iterator[list[subprocess.CompletedProcess[str]]]:
    runs = [
        subprocess.run(
            [*TRACKSTORE, "init"],
            cwd=workdir,
            env=aws_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        for _ in range(2)
    ]
    yield runs
    asyncio.run(drop(settings, dynalite_endpoint, moto_endpoint))


@pytest.fixture(scope="module")
def fleet(
    init_runs: list[subprocess.CompletedProcess[str]], settings: Settings, dynalite_endpoint: str
) -> Fleet:
    assert init_runs[0].returncode == 0, init_runs[0].stderr
    now = wall_clock_ms()
    fleet, arrivals = build_stream(now, random.Random(1128))
    asyncio.run(ingest(settings, dynalite_endpoint, to_records(arrivals, now), fleet))
    return fleet


@pytest.fixture(scope="module")
def server(fleet: Fleet, aws_env: dict[str, str], workdir: Path) -> Iterator[Server]:
    with running_server(aws_env, workdir, "serve") as server:
        server.get_when_up("/health")  # ready once its health check answers
        yield server


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


# -- helpers -----------------------------------------------------------------------------------


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert "Traceback" not in response.text
    return body


def follow(
    api: httpx.Client, path: str, key: str, params: dict[str, Any], max_pages: int = 200
) -> list[list[dict[str, Any]]]:
    """Every page of a listing, following nextToken until it is null."""
    pages: list[list[dict[str, Any]]] = []
    token: str | None = None
    while True:
        query = dict(params) | ({"next_token": token} if token is not None else {})
        response = api.get(path, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body[key])
        token = body["nextToken"]
        if token is None:
            return pages
        assert len(pages) < max_pages, f"{path} never reaches a page without nextToken"


def without_received_at(location: dict[str, Any]) -> dict[str, Any]:
    received = location.get("receivedAt")
    assert isinstance(received, str)
    assert received.endswith("Z")
    return {k: v for k, v in location.items() if k != "receivedAt"}


# -- init --------------------------------------------------------------------------------------


def test_init_creates_everything_and_is_safe_to_run_again(
    init_runs: list[subprocess.CompletedProcess[str]], settings: Settings
) -> None:
    first, second = init_runs
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    names = [
        settings.location_table_name,
        settings.device_table_name,
        settings.lease_table_name,
        settings.kinesis_stream_name,
    ]
    # Logs are JSON lines on stdout too (dynalite has no TTL: a warning); the rest is for people.
    said = [
        [line for line in run.stdout.splitlines() if not line.startswith("{")] for run in init_runs
    ]
    for name in names:
        [created] = [line for line in said[0] if name in line]
        assert created.endswith(": created"), first.stdout
        [found] = [line for line in said[1] if name in line]
        assert found.endswith(": exists"), second.stdout
    assert "Traceback" not in first.stderr + second.stderr


@pytest.fixture(scope="module")
def init_without_kinesis(
    aws_env: dict[str, str], workdir: Path, moto_endpoint: str
) -> Iterator[subprocess.CompletedProcess[str]]:
    """`trackstore init` with DynamoDB up and the Kinesis endpoint refusing connections."""
    suffix = uuid.uuid4().hex[:10]
    env = aws_env | {
        "AWS_ENDPOINT_URL_KINESIS": f"http://127.0.0.1:{free_port()}",
        "DEVICE_TABLE_NAME": f"it-nok-devices-{suffix}",
        "LOCATION_TABLE_NAME": f"it-nok-locations-{suffix}",
        "LEASE_TABLE_NAME": f"it-nok-leases-{suffix}",
        "KINESIS_STREAM_NAME": f"it-nok-stream-{suffix}",
    }
    yield subprocess.run(
        [*TRACKSTORE, "init"], cwd=workdir, env=env, capture_output=True, text=True, timeout=60
    )
    settings = Settings.from_env(env, dotenv=None)
    asyncio.run(drop(settings, aws_env["AWS_ENDPOINT_URL"], moto_endpoint))


def test_init_with_kinesis_unreachable_exits_1_with_one_line(
    init_without_kinesis: subprocess.CompletedProcess[str],
) -> None:
    done = init_without_kinesis
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr + done.stdout
    [line] = done.stderr.splitlines()
    assert line.startswith("trackstore: error: ")
    assert "it-nok-stream-" in line


def test_init_with_kinesis_unreachable_names_kinesis_not_dynamodb(
    init_without_kinesis: subprocess.CompletedProcess[str],
) -> None:
    assert "Kinesis" in init_without_kinesis.stderr
    assert "DynamoDB" not in init_without_kinesis.stderr


def test_only_the_invalid_records_were_rejected(fleet: Fleet) -> None:
    # The setup's own check: each invalid record rejected in every delivery of it, nothing else.
    assert len(fleet.rejected) == fleet.delivered_spoiled
    assert set(fleet.rejected) == fleet.spoiled
    assert len(fleet.locations) == len(DEVICES) * TICKS


# -- system endpoints --------------------------------------------------------------------------


def test_health_is_ok_with_every_check_ok(api: httpx.Client) -> None:
    response = api.get("/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]
    assert set(body["checks"].values()) == {"ok"}


def test_index_names_the_service_and_links(api: httpx.Client) -> None:
    response = api.get("/")
    assert response.status_code == 200
    body = response.json()
    assert body["service"] == "trackstore"
    assert body["version"]
    assert body["links"]["health"] == "/health"
    assert api.get(body["links"]["openapi"]).status_code == 200


def test_metrics_are_prometheus_text(api: httpx.Client) -> None:
    api.get("/devices/bus-001")
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    requests = families["trackstore_http_requests"]
    routes = {sample.labels.get("route") for sample in requests.samples}
    assert "/devices/{device_id:str}" in routes or "/devices/{device_id}" in routes, routes


# -- devices -----------------------------------------------------------------------------------


def test_devices_paged_by_7_list_every_device_once(api: httpx.Client) -> None:
    pages = follow(api, "/devices", "devices", {"limit": 7})
    assert all(len(page) <= 7 for page in pages)
    listed = [device["deviceId"] for page in pages for device in page]
    assert len(listed) == len(set(listed)), "a device was listed twice"
    reporting = [device_id for device_id in listed if not device_id.startswith("spare-")]
    assert sorted(reporting) == DEVICES
    assert not set(listed) & set(GHOSTS)


def test_device_has_newest_time_distinct_count_and_is_active(
    api: httpx.Client, fleet: Fleet
) -> None:
    for device_id in DEVICES:
        timestamps = fleet.timestamps(device_id)
        response = api.get(f"/devices/{device_id}")
        assert response.status_code == 200, response.text
        device = response.json()
        assert device["deviceId"] == device_id
        assert device["lastSeen"] == iso(timestamps[-1]), device_id
        assert device["totalUpdates"] == len(timestamps), device_id
        assert device["status"] == "active"
        last = without_received_at(device["lastLocation"])
        assert last == fleet.expected(device_id, timestamps[-1])


def test_register_then_register_again_conflicts(api: httpx.Client) -> None:
    device_id = f"spare-{uuid.uuid4().hex[:6]}"
    body = {"name": "Spare bus", "metadata": {"depot": "north", "seats": 40}}
    response = api.post(f"/devices/{device_id}/register", json=body)
    assert response.status_code == 201, response.text
    device = response.json()
    assert device["deviceId"] == device_id
    assert device["status"] == "registered"
    assert device["name"] == "Spare bus"
    assert device["metadata"] == {"depot": "north", "seats": 40}
    assert device["lastSeen"] is None
    assert device["totalUpdates"] == 0
    assert device["registeredAt"].endswith("Z")

    assert_problem(api.post(f"/devices/{device_id}/register", json=body), 409)
    assert api.get(f"/devices/{device_id}").json() == device


def test_registering_a_reporting_device_keeps_its_history(api: httpx.Client, fleet: Fleet) -> None:
    device_id = "bus-020"
    before = api.get(f"/devices/{device_id}").json()
    response = api.post(f"/devices/{device_id}/register", json={"name": "Line 20"})
    assert response.status_code == 201, response.text
    after = response.json()
    assert after["name"] == "Line 20"
    assert after["status"] == "active"
    assert after["lastSeen"] == before["lastSeen"]
    assert after["totalUpdates"] == before["totalUpdates"] == len(fleet.timestamps(device_id))
    assert_problem(api.post(f"/devices/{device_id}/register"), 409)


@pytest.mark.parametrize("device_id", ["nobody-here", *GHOSTS])
def test_unknown_device_is_404(api: httpx.Client, device_id: str) -> None:
    assert_problem(api.get(f"/devices/{device_id}"), 404)
    assert_problem(api.get(f"/locations/{device_id}/latest"), 404)
    # Its history holds nothing: an empty page, or a 404 like the device itself.
    response = api.get(f"/locations/{device_id}")
    if response.status_code == 200:
        assert response.json()["locations"] == []
    else:
        assert_problem(response, 404)


# -- locations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_history_pages_return_every_location_once_in_order(
    api: httpx.Client, fleet: Fleet, order: str
) -> None:
    def check(device_id: str) -> None:
        pages = follow(api, f"/locations/{device_id}", "locations", {"limit": 50, "order": order})
        assert all(len(page) <= 50 for page in pages)
        assert all(pages[:-1]), "an empty page before the last one"
        got = [without_received_at(location) for page in pages for location in page]
        timestamps = fleet.timestamps(device_id)
        if order == "desc":
            timestamps.reverse()
        assert [location["timestamp"] for location in got] == [iso(ts) for ts in timestamps]
        assert got == [fleet.expected(device_id, ts) for ts in timestamps]

    with ThreadPoolExecutor(max_workers=5) as pool:
        list(pool.map(check, DEVICES))


def test_history_window_is_inclusive_at_both_ends(api: httpx.Client, fleet: Fleet) -> None:
    device_id = "bus-007"
    timestamps = fleet.timestamps(device_id)
    start, end = timestamps[40], timestamps[61]
    for params in (
        {"start_time": iso(start), "end_time": iso(end)},
        {"start_time": str(start), "end_time": str(end)},
        {"start_time": iso(start), "end_time": str(end), "order": "desc", "limit": 1000},
    ):
        response = api.get(f"/locations/{device_id}", params=params)
        assert response.status_code == 200, response.text
        got = [location["timestamp"] for location in response.json()["locations"]]
        expected = [iso(ts) for ts in timestamps[40:62]]
        if params.get("order") == "desc":
            expected.reverse()
        assert got == expected, params
    # One millisecond inside each end leaves both ends out.
    response = api.get(
        f"/locations/{device_id}", params={"start_time": start + 1, "end_time": end - 1}
    )
    got = [location["timestamp"] for location in response.json()["locations"]]
    assert got == [iso(ts) for ts in timestamps[41:61]]


def test_latest_is_the_newest_location(api: httpx.Client, fleet: Fleet) -> None:
    for device_id in ("bus-001", "bus-004", "bus-013"):
        response = api.get(f"/locations/{device_id}/latest")
        assert response.status_code == 200, response.text
        newest = fleet.timestamps(device_id)[-1]
        assert without_received_at(response.json()) == fleet.expected(device_id, newest)


def test_fleet_window_pages_every_location_once_by_time_then_device(
    api: httpx.Client, fleet: Fleet
) -> None:
    start, end = (fleet.ticks[k] for k in WINDOW_TICKS)  # every device reported at both
    params = {"start_time": iso(start), "end_time": str(end), "limit": 100}
    pages = follow(api, "/locations", "locations", params, max_pages=400)
    assert all(len(page) <= 100 for page in pages)
    got = [(location["timestamp"], location["deviceId"]) for page in pages for location in page]
    expected = sorted((ts, device_id) for (device_id, ts) in fleet.locations if start <= ts <= end)
    assert len(got) == len(set(got)), "a location came twice"
    assert got == [(iso(ts), device_id) for ts, device_id in expected]
    # Every device reported at the start: ties are ordered by device id.
    assert got[: len(DEVICES)] == [(iso(start), device_id) for device_id in DEVICES]
    locations = [without_received_at(location) for page in pages for location in page]
    assert locations == [fleet.expected(device_id, ts) for ts, device_id in expected]


def test_a_token_only_works_for_its_own_query(api: httpx.Client) -> None:
    history = api.get("/locations/bus-001", params={"limit": 5}).json()
    token = history["nextToken"]
    assert token
    foreign = api.get("/locations/bus-002", params={"limit": 5, "next_token": token})
    assert_problem(foreign, 400)
    other_order = api.get(
        "/locations/bus-001", params={"limit": 5, "order": "desc", "next_token": token}
    )
    assert_problem(other_order, 400)
    devices_token = api.get("/devices", params={"limit": 3}).json()["nextToken"]
    assert devices_token
    assert_problem(
        api.get("/locations/bus-001", params={"limit": 5, "next_token": devices_token}), 400
    )
    assert_problem(api.get("/devices", params={"next_token": token}), 400)
    assert_problem(api.get("/locations", params={"next_token": token}), 400)
    assert_problem(api.get("/locations/bus-001", params={"next_token": "garbage!"}), 400)
    # The token still works where it came from.
    own = api.get("/locations/bus-001", params={"limit": 5, "next_token": token})
    assert own.status_code == 200


# -- a store that is down ----------------------------------------------------------------------


def test_with_dynamodb_unreachable_answers_503_with_retry_after(
    aws_env: dict[str, str], workdir: Path, fleet: Fleet
) -> None:
    closed = free_port()  # nothing listens here
    env = {k: v for k, v in aws_env.items() if k != "AWS_ENDPOINT_URL_KINESIS"}
    env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{closed}"
    with (
        running_server(env, workdir, "serve-down") as down,
        ThreadPoolExecutor(max_workers=5) as pool,
    ):
        # Each answer waits out the DynamoDB client's retries (seconds): all go out together, as
        # soon as the server accepts connections.
        paths = ("/health", "/locations/bus-001", "/locations/bus-001/latest", "/devices", "/")
        health, history, latest, devices, index = pool.map(down.get_when_up, paths)

        assert health.status_code == 503, health.text
        assert health.headers["retry-after"].isdigit()
        body = health.json()
        if health.headers["content-type"].startswith(PROBLEM):
            assert body["status"] == 503
        else:
            assert body["status"] != "ok"
            assert any(value != "ok" for value in body["checks"].values()), body
        for response in (history, latest, devices):
            assert_problem(response, 503)
            assert response.headers["retry-after"].isdigit()
            assert int(response.headers["retry-after"]) >= 1
        # Service information does not need the store.
        assert index.status_code == 200
        stop_with_sigterm(down)


def test_sigterm_stops_the_server_with_exit_0(server: Server, api: httpx.Client) -> None:
    assert api.get("/health").status_code == 200
    stop_with_sigterm(server)
