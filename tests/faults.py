"""Every crash and fault the tests inject, in one place.

In-process wrappers around a port (they stand in for a process that died, or a store that
refuses, at one exact point of TrackService's work):

- `SimulatedCrash`, `CrashingApply`: the process dies after the location writes, before the
  device update; `CrashingPutNew`: it dies after `put_new` wrote, before it answered;
- `RacedApply`: another worker writes between the location writes and the device update;
- `RefusingLocations`: the store refuses one value, as DynamoDB refuses an unstorable number;
- `Outage`: every call fails with Error(UNAVAILABLE) while it is on, as when the store is down.

On the wire, for the emulators and the processes under test:

- `TcpProxy`: a TCP proxy that can be cut (connections refused and reset) and restored;
- `FaultyDynamo`: an HTTP proxy in front of dynalite that answers as a busy or unlucky DynamoDB
  does (throttling, unprocessed items, lost answers), and can hold a lease checkpoint.

The proxies run on an event loop of their own in a daemon thread (`LoopThread`), so they keep
relaying while the test's own loop, or the test's thread, is busy or blocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from trackstore.domain import Arrival, DeviceActivity, Location
from trackstore.errors import CONFLICT, INVALID, UNAVAILABLE, Error

T = TypeVar("T")

# -- in-process: crashes and refusals at one point of TrackService's work -----------------------


class SimulatedCrash(Exception):
    """The process died: nothing after this point ran."""


class CrashingApply:
    """A DeviceRepository whose apply_activity dies `times` times before it does anything, as if
    the consumer crashed after the location writes and before DeviceRepository.apply_activity."""

    def __init__(self, inner: Any, times: int = 1) -> None:
        self._inner = inner
        self.crashes_left = times

    async def apply_activity(self, activities: Sequence[DeviceActivity]) -> None:
        if self.crashes_left:
            self.crashes_left -= 1
            raise SimulatedCrash
        await self._inner.apply_activity(activities)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class RacedApply:
    """A DeviceRepository where, once, another writer runs between the location writes and
    apply_activity; counts the CONFLICTs apply_activity meets."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.other_writer: Callable[[], Awaitable[object]] | None = None
        self.conflicts = 0

    async def apply_activity(self, activities: Sequence[DeviceActivity]) -> None:
        if self.other_writer is not None:
            other_writer, self.other_writer = self.other_writer, None
            await other_writer()
        try:
            await self._inner.apply_activity(activities)
        except Error as error:
            if error.code is CONFLICT:
                self.conflicts += 1
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class CrashingPutNew:
    """A LocationRepository whose put_new, `times` times, does its writes and then dies before
    answering: the consumer crashed after put_new and before DeviceRepository.apply_activity."""

    def __init__(self, inner: Any, times: int = 1) -> None:
        self._inner = inner
        self.crashes_left = times
        self.calls: list[list[Arrival]] = []

    async def put_new(self, arrivals: Sequence[Arrival]) -> list[Location]:
        self.calls.append(list(arrivals))
        counted: list[Location] = await self._inner.put_new(arrivals)
        if self.crashes_left:
            self.crashes_left -= 1
            raise SimulatedCrash
        return counted

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class RefusingLocations:
    """A LocationRepository that refuses, as DynamoDB refuses an unstorable value, every write
    holding a location whose `battery` is 13.0 (a stand-in for a value the rules let through)."""

    def __init__(self, locations: Any) -> None:
        self._locations = locations
        self.refused_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._locations, name)

    def _check(self, arrivals: Sequence[Arrival]) -> None:
        if any(a.location.battery == 13.0 for a in arrivals):
            self.refused_calls += 1
            raise Error(INVALID, "refused")

    async def put_many(self, arrivals: Sequence[Arrival]) -> None:
        self._check(arrivals)
        await self._locations.put_many(arrivals)

    async def put_new(self, arrivals: Sequence[Arrival]) -> Any:
        self._check(arrivals)
        return await self._locations.put_new(arrivals)


class Outage:
    """A repository (any port) whose every call fails with Error(UNAVAILABLE) while `down` is
    set, before it reaches the store: the store is unreachable."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.down = False

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._inner, name)
        if not callable(real):
            return real

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise Error(UNAVAILABLE, f"{name}: the store is down", retry_after=1)
            return await real(*args, **kwargs)

        return call


# -- on the wire: proxies on a loop of their own --------------------------------------------------


class LoopThread:
    """An asyncio event loop running in a daemon thread; `call()` runs a coroutine on it from
    any other thread and returns its result."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            self.loop.close()


def upstream_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"{url!r} names no host and port")
    return parts.hostname, parts.port


CHUNK = 64 * 1024


class TcpProxy:
    """Relays every connection to 127.0.0.1:`port` to `upstream_url`'s host and port.

    `cut()` stops listening (new connections are refused, as by a host that is down) and resets
    every connection open through it; `restore()` listens on the same port again. Use it as a
    context manager: it starts listening on entry and is gone on exit.
    """

    def __init__(self, upstream_url: str) -> None:
        self._upstream = upstream_address(upstream_url)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = LoopThread(f"tcp-proxy-{self.port}")

    def __enter__(self) -> TcpProxy:
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()
        self._loop.stop()

    def restore(self) -> None:
        self._loop.call(self._listen())

    def cut(self) -> None:
        self._loop.call(self._cut())

    async def _listen(self) -> None:
        if self._server is not None:
            return
        if self._socket.fileno() == -1:  # closed by an earlier cut: bind the same port again
            self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind(("127.0.0.1", self.port))
        self._server = await asyncio.start_server(self._relay, sock=self._socket, backlog=128)

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()  # closes the listening socket: connection attempts are refused now
        for writer in list(self._open):
            writer.transport.abort()  # an RST, not a polite close: the peer sees a reset
        self._open.clear()

    async def _relay(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        if self._server is None:
            client.transport.abort()
            return
        try:
            upstream_reader, upstream = await asyncio.wait_for(
                asyncio.open_connection(*self._upstream), 5
            )
        except (OSError, TimeoutError):
            client.transport.abort()
            return
        self._open |= {client, upstream}
        try:
            await asyncio.gather(
                self._pump(client_reader, upstream), self._pump(upstream_reader, client)
            )
        finally:
            for writer in (client, upstream):
                self._open.discard(writer)
                writer.transport.abort()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        # One side is done (or gone): so is the connection, both ways.
        writer.transport.abort()


# -- DynamoDB misbehaving, in front of dynalite ---------------------------------------------------

THROTTLED = "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"
JSON_TYPE = "application/x-amz-json-1.0"
SCRIPTED_FAULTS = ("throttle", "unprocessed")


def dynamodb_answer(status: int, payload: dict[str, Any]) -> web.Response:
    """An answer as DynamoDB gives it: JSON, a request id and the body's CRC32 (botocore checks
    it)."""
    body = json.dumps(payload).encode()
    return web.Response(
        status=status,
        body=body,
        headers={
            "Content-Type": JSON_TYPE,
            "x-amzn-RequestId": uuid.uuid4().hex,
            "x-amz-crc32": str(zlib.crc32(body)),
        },
    )


class HeldCheckpoint(NamedTuple):
    """A lease checkpoint the proxy holds: the shard and the position it would record."""

    shard_id: str
    sequence_number: str
    sub_sequence_number: int


class FaultyDynamo:
    """An HTTP proxy in front of dynalite that misbehaves as DynamoDB does under load, at the
    rates given per operation (the X-Amz-Target's name, e.g. "BatchWriteItem"):

    - `throttle`: answers 400 ProvisionedThroughputExceededException, without forwarding;
    - `partial` (BatchWriteItem, BatchGetItem): forwards only the first half of the request's
      items or keys and hands the rest back as UnprocessedItems / UnprocessedKeys, unwritten;
    - `lose` (only requests naming a table in `lose_tables`): forwards the request, so DynamoDB
      applies it, then resets the connection instead of answering; the first `lose_first` such
      requests always, so that a run cannot pass without the fault;
    - `burst(seconds)`: throttles every request of `burst_ops` for a while (more than botocore's
      own retries absorb, so the caller sees the throttling).

    And at exact requests, for tests that need one fault at one point:

    - `inject(operation, fault, times)`: the next `times` requests of the operation get `fault`:
      "throttle" (as above) or "unprocessed" (BatchWriteItem, BatchGetItem: nothing is forwarded,
      every item or key is handed back);
    - `hold_checkpoint(skip)`: the lease checkpoint after the next `skip` ones (an UpdateItem on
      a table named `lease_prefix`... that sets `checkpoint`) is held: neither forwarded nor
      answered until `drop_held()`, which resets its connection. `wait_held()` waits for it.

    Counts the requests it received in `requests[operation]`, what it did in
    `done[(operation, fault)]`, and the items (BatchWriteItem) or keys (BatchGetItem) it handed
    back in `handed_back[operation]`.
    """

    def __init__(
        self,
        upstream_url: str,
        seed: int = 0,
        throttle: dict[str, float] | None = None,
        partial: dict[str, float] | None = None,
        lose: dict[str, float] | None = None,
        lose_tables: tuple[str, ...] = (),
        lose_first: int = 0,
        burst_ops: frozenset[str] = frozenset(),
        lease_prefix: str = "leases-",
    ) -> None:
        host, port = upstream_address(upstream_url)
        self._upstream = f"http://{host}:{port}"
        self._rng = random.Random(seed)
        self._throttle = throttle or {}
        self._partial = partial or {}
        self._lose = lose or {}
        self.lose_tables = lose_tables
        self._lose_first = lose_first
        self._burst_ops = burst_ops
        self._burst_until = 0.0
        self._calm = False
        self._lease_prefix = lease_prefix
        self._scripted: dict[str, list[str]] = {}
        self._script_lock = threading.Lock()
        self._hold_after: int | None = None  # checkpoints to let through before holding one
        self._held = threading.Event()
        self._release = threading.Event()
        self.held: HeldCheckpoint | None = None
        self.requests: Counter[str] = Counter()
        self.done: Counter[tuple[str, str]] = Counter()
        self.handed_back: Counter[str] = Counter()  # items or keys, by operation
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._loop = LoopThread("faulty-dynamo")
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def __enter__(self) -> FaultyDynamo:
        self._loop.call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()  # a held request, if any, is dropped
        self._loop.call(self._stop())
        self._loop.stop()

    def burst(self, seconds: float) -> None:
        self._burst_until = time.monotonic() + seconds

    def calm(self) -> None:
        """No more faults from now on."""
        self._calm = True

    def inject(self, operation: str, fault: str, times: int = 1) -> None:
        assert fault in SCRIPTED_FAULTS, fault
        with self._script_lock:
            self._scripted.setdefault(operation, []).extend([fault] * times)

    def hold_checkpoint(self, skip: int = 0) -> None:
        """Holds the lease checkpoint that comes after the next `skip` ones."""
        assert self.held is None or self._release.is_set(), "a checkpoint is held already"
        self.held = None
        self._held.clear()
        self._release.clear()
        self._hold_after = skip

    async def wait_held(self, timeout_s: float) -> HeldCheckpoint:
        """The checkpoint held, once one is; fails after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not self._held.is_set():
            assert time.monotonic() < deadline, f"no lease checkpoint held in {timeout_s} s"
            await asyncio.sleep(0.01)
        assert self.held is not None
        return self.held

    def drop_held(self) -> None:
        """Resets the held checkpoint's connection: DynamoDB never sees it."""
        self._release.set()

    @property
    def answers_lost(self) -> int:
        return sum(n for (_, fault), n in self.done.items() if fault == "answer lost")

    def figures(self) -> str:
        done = ", ".join(f"{op} {fault} {n}" for (op, fault), n in sorted(self.done.items()))
        back = ", ".join(f"{op} {n}" for op, n in sorted(self.handed_back.items()))
        return f"{done or 'no faults'}; handed back unprocessed: {back or 'none'}"

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100), auto_decompress=True
        )
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.SockSite(self._runner, self._socket).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _next_scripted(self, operation: str) -> str | None:
        with self._script_lock:
            queue = self._scripted.get(operation)
            return queue.pop(0) if queue else None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        operation = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        self.requests[operation] += 1
        if self._hold_after is not None and operation == "UpdateItem":
            checkpoint = self._checkpoint_in(body)
            if checkpoint is not None:
                if self._hold_after > 0:
                    self._hold_after -= 1
                else:
                    return await self._hold(request, operation, checkpoint)
        scripted = self._next_scripted(operation)
        if scripted == "unprocessed":
            self.done[operation, "unprocessed"] += 1
            return dynamodb_answer(200, self._hand_back(operation, b"{}", self._all(body)))
        roll = 2.0 if self._calm else self._rng.random()
        throttle = self._throttle.get(operation, 0.0)
        if not self._calm and operation in self._burst_ops and time.monotonic() < self._burst_until:
            throttle = 1.0
        if scripted == "throttle" or roll < throttle:
            self.done[operation, "throttled"] += 1
            return dynamodb_answer(
                400, {"__type": THROTTLED, "message": "Rate of requests exceeds the allowed"}
            )
        held_back: dict[str, Any] | None = None
        if roll < throttle + self._partial.get(operation, 0.0):
            body, held_back = self._split(operation, body)
        lose = False
        if operation in self._lose and not self._calm and self._names(body, self.lose_tables):
            if self._lose_first > 0:
                lose, self._lose_first = True, self._lose_first - 1
            else:
                lose = 1.0 - self._lose[operation] <= roll < 1.0
        assert self._session is not None
        async with self._session.request(
            request.method,
            f"{self._upstream}{request.path_qs}",
            data=body,
            headers={
                name: value
                for name, value in request.headers.items()
                if name.lower() not in {"host", "content-length", "connection", "accept-encoding"}
            },
        ) as upstream:
            status, answer = upstream.status, await upstream.read()
        if lose:
            self.done[operation, "answer lost"] += 1
            assert request.transport is not None
            request.transport.abort()  # applied by DynamoDB; the caller hears nothing
            return web.Response()
        if held_back and status == 200:
            self.done[operation, "partial"] += 1
            return dynamodb_answer(200, self._hand_back(operation, answer, held_back))
        return dynamodb_answer(status, json.loads(answer or b"{}"))

    async def _hold(
        self, request: web.Request, operation: str, checkpoint: HeldCheckpoint
    ) -> web.StreamResponse:
        self._hold_after = None
        self.held = checkpoint
        self._held.set()
        await asyncio.to_thread(self._release.wait)  # the test's call, from its own thread
        self.done[operation, "checkpoint held and dropped"] += 1
        if request.transport is not None:
            request.transport.abort()
        return web.Response()

    def _checkpoint_in(self, body: bytes) -> HeldCheckpoint | None:
        """The checkpoint a lease-table UpdateItem would record, if it records one."""
        request = json.loads(body)
        values = request.get("ExpressionAttributeValues", {})
        position = values.get(":cp", {}).get("S", "")
        if not (
            str(request.get("TableName", "")).startswith(self._lease_prefix)
            and "checkpoint = :cp" in request.get("UpdateExpression", "")
            and position.isdigit()
        ):
            return None
        return HeldCheckpoint(
            shard_id=request["Key"]["leaseKey"]["S"],
            sequence_number=position,
            sub_sequence_number=int(values.get(":sub", {}).get("N", "0")),
        )

    @staticmethod
    def _names(body: bytes, tables: tuple[str, ...]) -> bool:
        request = json.loads(body)
        named = {request.get("TableName"), *request.get("RequestItems", {})}
        return any(name and name.startswith(tables) for name in named) if tables else False

    @staticmethod
    def _all(body: bytes) -> dict[str, Any]:
        items: dict[str, Any] = json.loads(body).get("RequestItems", {})
        return items

    @staticmethod
    def _split(operation: str, body: bytes) -> tuple[bytes, dict[str, Any] | None]:
        request = json.loads(body)
        kept: dict[str, Any] = {}
        back: dict[str, Any] = {}
        for table, spec in request.get("RequestItems", {}).items():
            if operation == "BatchWriteItem":
                half = (len(spec) + 1) // 2
                kept[table] = spec[:half]
                if spec[half:]:
                    back[table] = spec[half:]
            elif operation == "BatchGetItem":
                half = (len(spec["Keys"]) + 1) // 2
                kept[table] = {**spec, "Keys": spec["Keys"][:half]}
                if spec["Keys"][half:]:
                    back[table] = {**spec, "Keys": spec["Keys"][half:]}
            else:
                kept[table] = spec
        if not back:
            return body, None
        request["RequestItems"] = kept
        return json.dumps(request).encode(), back

    def _hand_back(self, operation: str, answer: bytes, back: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = json.loads(answer)
        if operation == "BatchWriteItem":
            unprocessed = response.get("UnprocessedItems") or {}
            for table, writes in back.items():
                unprocessed[table] = unprocessed.get(table, []) + writes
                self.handed_back[operation] += len(writes)
            response["UnprocessedItems"] = unprocessed
        else:
            response.setdefault("Responses", {})
            unprocessed_keys = response.get("UnprocessedKeys") or {}
            for table, spec in back.items():
                if table in unprocessed_keys:
                    spec = {**spec, "Keys": unprocessed_keys[table]["Keys"] + spec["Keys"]}
                unprocessed_keys[table] = spec
                self.handed_back[operation] += len(back[table]["Keys"])
            response["UnprocessedKeys"] = unprocessed_keys
        return response
