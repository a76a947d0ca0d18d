"""`trackstore simulate` against moto's Kinesis says what it is doing while it runs: progress lines
every few seconds (records sent per second, refused, retried) and a summary at the end that agrees
with what the stream holds."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import threading
import time
import uuid
from typing import Any

import pytest

from tests.integration.conftest import TRACKSTORE
from trackstore.cli.simulate import simulate
from trackstore.config import Settings
from trackstore.kinesis.client import ensure_stream, kinesis_client

pytestmark = pytest.mark.integration
REGION = "us-east-1"


async def create_stream(endpoint: str, name: str) -> None:
    async with kinesis_client(REGION, endpoint_url=endpoint) as client:
        await ensure_stream(client, name, shards=1)


async def records_in(endpoint: str, name: str) -> int:
    """How many records the stream holds, read from its one shard's start."""
    async with kinesis_client(REGION, endpoint_url=endpoint) as client:
        (shard,) = (await client.list_shards(StreamName=name))["Shards"]
        iterator = (
            await client.get_shard_iterator(
                StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )
        )["ShardIterator"]
        count = 0
        while True:
            answer = await client.get_records(ShardIterator=iterator, Limit=10_000)
            count += len(answer["Records"])
            if not answer["Records"]:
                return count
            iterator = answer["NextShardIterator"]


class Lines:
    """A process's stdout lines as they arrive, each with the time it arrived."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.seen: list[tuple[float, str]] = []
        assert process.stdout is not None
        self._stdout = process.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stdout:
            self.seen.append((time.monotonic(), line.rstrip("\n")))

    def join(self) -> None:
        self._thread.join(10)


def logged(lines: list[tuple[float, str]], prefix: str) -> list[tuple[float, dict[str, Any]]]:
    found = []
    for at, line in lines:
        if line.startswith("{"):
            record = json.loads(line)
            if str(record["message"]).startswith(prefix):
                found.append((at, record))
    return found


def test_simulate_shows_progress_while_it_runs_and_a_summary_that_matches_the_stream(
    moto_endpoint: str,
) -> None:
    stream = f"simulate-{uuid.uuid4().hex[:8]}"
    asyncio.run(create_stream(moto_endpoint, stream))
    env = {
        **os.environ,
        "TRACKSTORE_BACKEND": "aws",
        "AWS_ENDPOINT_URL": moto_endpoint,
        "KINESIS_STREAM_NAME": stream,
        "LOG_LEVEL": "INFO",
    }
    started = time.monotonic()
    process = subprocess.Popen(
        [*TRACKSTORE, "simulate", "--devices", "5", "--rate", "20", "--duration", "12"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = Lines(process)
    try:
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    ended = time.monotonic()
    lines.join()
    assert process.stderr is not None
    err = process.stderr.read()
    process.stderr.close()
    assert process.returncode == 0, err
    assert "Traceback" not in err

    progress = logged(lines.seen, "sent ")
    assert len(progress) >= 2, lines.seen  # every 5 s over 12 s
    first_at, first = progress[0]
    # Counted from the simulation's own start, not from Popen: a busy machine can take seconds
    # to start the process, which says nothing about the progress lines.
    ((began_at, _),) = logged(lines.seen, "simulating ")
    assert started < began_at < first_at
    assert first_at - began_at < 10, "the first progress line came late"
    assert first_at < ended - 3, "progress lines must come while it runs, not at the end"
    for _, record in progress:
        assert record["level"] == "INFO"
        assert record["refused"] == 0
        assert record["retried"] == 0
        assert record["perSecond"] > 0
        assert f"{record['perSecond']}/s" in record["message"]
    assert 10 <= first["perSecond"] <= 30  # the requested 20 records/s

    ((_, summary),) = logged(lines.seen, "simulation done: ")
    published = lines.seen[-1][1]
    assert published == f"published {summary['sent']} records to {stream}"
    assert 200 <= summary["sent"] <= 280  # 20 records/s for 12 s
    assert summary["refused"] == summary["retried"] == 0
    assert 11 <= summary["seconds"] <= 20
    assert summary["sent"] == asyncio.run(records_in(moto_endpoint, stream))


async def test_records_refused_until_the_stream_exists_show_as_refused_and_retried(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Started before `trackstore init` has created its stream: the records are refused and sent
    # again, and the progress lines say so, until the stream appears.
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    stream = f"simulate-late-{uuid.uuid4().hex[:8]}"
    settings = Settings(aws_region=REGION, kinesis_stream_name=stream)
    stop = asyncio.Event()

    def progress() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith("sent ")]

    async def until(what: str, check: Any) -> None:
        deadline = time.monotonic() + 20
        while not any(check(r) for r in progress()):
            assert not run.done(), f"simulate ended early: {run.exception()!r}"
            assert time.monotonic() < deadline, f"no progress line with {what}: {caplog.text}"
            await asyncio.sleep(0.1)

    with caplog.at_level(logging.INFO, logger="trackstore"):
        run = asyncio.create_task(
            simulate(
                settings,
                devices=3,
                rate=30,
                duration_s=None,
                aggregate=False,
                stop=stop,
                progress_s=0.5,
            )
        )
        try:
            await until("records refused", lambda r: r.refused > 0 and r.sent == 0)
            await create_stream(moto_endpoint, stream)
            await until("records sent", lambda r: r.sent > 0)
        finally:
            stop.set()
            sent = await asyncio.wait_for(run, 35)

    (summary,) = [r for r in caplog.records if r.getMessage().startswith("simulation done: ")]
    assert summary.sent == sent > 0
    assert summary.retried > 0
    assert summary.refused >= summary.retried
    assert sum(r.refused for r in progress()) <= summary.refused
    assert f"{summary.refused} refused, {summary.retried} retried" in summary.getMessage()
    assert sent == await records_in(moto_endpoint, stream)
