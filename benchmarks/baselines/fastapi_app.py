"""The API benchmark's yardstick: the contract endpoints that `benchmarks/api.py` drives, written
the way a strong FastAPI developer would, on the same seeded data as `trackstore serve
--seed-devices N --seed-points M`.

- pydantic v2 models with camelCase aliases as response models; FastAPI's default response class,
  so the response is validated (a returned model instance passes through) and dumped to JSON bytes
  by pydantic-core in one step (FastAPI's `dump_json` fast path).
- Timestamps held as aware UTC datetimes, sent as ISO-8601 with milliseconds and `Z`
  (`2026-11-28T12:00:00.123Z`), as TrackStore does. A location's optional fields are set only when
  the record had them and `response_model_exclude_unset` leaves the others out, while device and
  page fields are always set (null when unknown): the same JSON as TrackStore.
- Data in memory: per device a sorted list of timestamps beside its list of Location models, so a
  window is two bisects and a slice; devices in a dict with a sorted id list for paging; opaque
  base64url page tokens bound to their query.
- Errors as RFC 9457 problem+json, 400 for bad parameters, as the contract asks.

The data comes from `trackstore.cli.seed.seed` itself (same ids, timestamps, values), captured by
two small recording repositories and turned into this app's own models.

Run: `python benchmarks/baselines/fastapi_app.py --port 8001 --seed-devices 100 --seed-points 2000`
(uvicorn, uvloop, httptools, no access log, one worker).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import bisect
import json
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, PlainSerializer
from pydantic.alias_generators import to_camel

SEED_DEVICES = 100
SEED_POINTS = 2000
TTL_DAYS = 30
ACTIVE_WINDOW = timedelta(minutes=5)
MAX_LIMIT = 1000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DeviceId = Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]


# -- models -------------------------------------------------------------------------------------


def _iso_ms(moment: datetime) -> str:
    # isoformat of an aware UTC datetime ends in "+00:00"; the contract wants "Z".
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


UtcTime = Annotated[datetime, PlainSerializer(_iso_ms, return_type=str)]
Scalar = str | int | float | bool | None


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class Location(CamelModel):
    device_id: str
    timestamp: UtcTime
    latitude: float
    longitude: float
    speed: float | None = None
    heading: float | None = None
    altitude: float | None = None
    accuracy: float | None = None
    battery: float | None = None
    attributes: dict[str, Scalar] | None = None
    received_at: UtcTime


class History(CamelModel):
    device_id: str
    locations: list[Location]
    next_token: str | None


class DeviceRecord(CamelModel):
    """A device as stored."""

    device_id: str
    last_seen: datetime | None = None
    last_location: Location | None = None
    total_updates: int = 0
    registered_at: datetime | None = None
    name: str | None = None
    metadata: dict[str, Any] | None = None


class DeviceOut(CamelModel):
    device_id: str
    status: Literal["registered", "active", "inactive"]
    last_seen: UtcTime | None
    last_location: Location | None
    total_updates: int
    registered_at: UtcTime | None
    name: str | None
    metadata: dict[str, Any] | None


class DeviceList(CamelModel):
    devices: list[DeviceOut]
    next_token: str | None


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str


# -- store --------------------------------------------------------------------------------------


class Track:
    __slots__ = ("locations", "times")

    def __init__(self) -> None:
        self.times: list[datetime] = []  # sorted
        self.locations: list[Location] = []  # in the same order


class Store:
    def __init__(self) -> None:
        self.tracks: dict[str, Track] = {}
        self.devices: dict[str, DeviceRecord] = {}
        self.device_ids: list[str] = []  # sorted, for paging

    def add_track(self, device_id: str, locations: Sequence[Location]) -> None:
        track = self.tracks.setdefault(device_id, Track())
        merged = sorted([*track.locations, *locations], key=lambda loc: loc.timestamp)
        track.locations = merged
        track.times = [loc.timestamp for loc in merged]

    def put_device(self, device: DeviceRecord) -> None:
        if device.device_id not in self.devices:
            bisect.insort(self.device_ids, device.device_id)
        self.devices[device.device_id] = device


def _ms_to_datetime(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


class _Recorder:
    """Stands in for both repositories while trackstore.cli.seed.seed runs, to capture its data."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def put_many(self, arrivals: Sequence[Any]) -> None:
        by_device: dict[str, list[Location]] = {}
        for arrival in arrivals:
            by_device.setdefault(arrival.location.device_id, []).append(_location(arrival.location))
        for device_id, locations in by_device.items():
            self.store.add_track(device_id, locations)

    async def apply_activity(self, activities: Sequence[Any]) -> None:
        for activity in activities:
            newest = activity.newest
            self.store.put_device(
                DeviceRecord(
                    device_id=activity.device_id,
                    last_seen=None if newest is None else _ms_to_datetime(newest.timestamp),
                    last_location=None if newest is None else _location(newest),
                    total_updates=activity.added,
                )
            )


_OPTIONAL = ("speed", "heading", "altitude", "accuracy", "battery", "attributes")


def _location(location: Any) -> Location:
    # Only the fields the record had are set, so `response_model_exclude_unset` leaves the others
    # out of the JSON (as TrackStore does) while explicit nulls elsewhere stay.
    present = {name: value for name in _OPTIONAL if (value := getattr(location, name)) is not None}
    return Location(
        device_id=location.device_id,
        timestamp=_ms_to_datetime(location.timestamp),
        latitude=location.latitude,
        longitude=location.longitude,
        received_at=_ms_to_datetime(location.received_at),
        **present,
    )


async def seeded_store(devices: int, points: int) -> Store:
    from trackstore.cli.seed import seed  # the same formula as `trackstore serve --seed-...`

    store = Store()
    recorder = _Recorder(store)
    await seed(recorder, recorder, devices, points, time.time_ns() // 1_000_000)  # type: ignore[arg-type]
    return store


# -- parameters and tokens ----------------------------------------------------------------------


class BadRequest(Exception):
    def __init__(self, detail: str) -> None:
        self.detail = detail


def _parse_time(name: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    text = text.strip()
    if re.fullmatch(r"-?\d{1,15}", text):
        return _ms_to_datetime(int(text))
    try:
        moment = datetime.fromisoformat(text.upper())
    except ValueError:
        raise BadRequest(f"{name} must be an ISO-8601 date-time or epoch milliseconds") from None
    if moment.tzinfo is None:
        raise BadRequest(f"{name} needs a UTC offset")
    return moment


def _encode_token(scope: str, key: Any) -> str:
    raw = json.dumps({"s": scope, "k": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode_token(token: str, scope: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        decoded = json.loads(raw)
        if decoded["s"] == scope:
            return decoded["k"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        pass
    raise BadRequest("next_token is not valid")


# -- app ----------------------------------------------------------------------------------------


def _device_out(device: DeviceRecord, now: datetime) -> DeviceOut:
    if device.last_seen is None:
        status = "registered"
    elif now - device.last_seen <= ACTIVE_WINDOW:
        status = "active"
    else:
        status = "inactive"
    return DeviceOut(
        device_id=device.device_id,
        status=status,
        last_seen=device.last_seen,
        last_location=device.last_location,
        total_updates=device.total_updates,
        registered_at=device.registered_at,
        name=device.name,
        metadata=device.metadata,
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Errors as RFC 9457 problem+json, 400 for bad parameters, as the contract asks."""

    def problem(request: Request, status: int, title: str, detail: str) -> JSONResponse:
        body = Problem(title=title, status=status, detail=detail, instance=request.url.path)
        return JSONResponse(
            body.model_dump(), status_code=status, media_type="application/problem+json"
        )

    @app.exception_handler(HTTPException)
    async def http_problem(request: Request, exc: HTTPException) -> JSONResponse:
        title = "Not Found" if exc.status_code == 404 else "Error"
        return problem(request, exc.status_code, title, str(exc.detail))

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return problem(request, 400, "Bad Request", exc.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid_parameters(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        return problem(request, 400, "Bad Request", detail)


def create_app(devices: int = SEED_DEVICES, points: int = SEED_POINTS) -> FastAPI:
    store = Store()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        seeded = await seeded_store(devices, points)
        store.tracks, store.devices, store.device_ids = (
            seeded.tracks,
            seeded.devices,
            seeded.device_ids,
        )
        yield

    app = FastAPI(title="TrackStore baseline (FastAPI)", lifespan=lifespan)
    ttl = timedelta(days=TTL_DAYS)

    @app.get(
        "/locations/{device_id}/latest",
        response_model=Location,
        response_model_exclude_unset=True,
    )
    async def latest_location(device_id: DeviceId) -> Location:
        track = store.tracks.get(device_id)
        if not track or track.times[-1] < datetime.now(UTC) - ttl:
            raise HTTPException(404, f"device {device_id} has no retained location")
        return track.locations[-1]

    @app.get(
        "/locations/{device_id}",
        response_model=History,
        response_model_exclude_unset=True,
    )
    async def location_history(
        device_id: DeviceId,
        start_time: str | None = None,
        end_time: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        order: Literal["asc", "desc"] = "asc",
        next_token: str | None = None,
    ) -> History:
        start = _parse_time("start_time", start_time)
        end = _parse_time("end_time", end_time)
        oldest = datetime.now(UTC) - ttl
        start = oldest if start is None else max(start, oldest)
        track = store.tracks.get(device_id)
        times = track.times if track else []
        lo = bisect.bisect_left(times, start)
        hi = len(times) if end is None else bisect.bisect_right(times, end)
        scope = f"{device_id}:{order}"
        if next_token is not None:
            after = _decode_token(next_token, scope)
            if not isinstance(after, int):
                raise BadRequest("next_token is not valid")
            after_time = _ms_to_datetime(after)
            if order == "asc":
                lo = max(lo, bisect.bisect_right(times, after_time))
            else:
                hi = min(hi, bisect.bisect_left(times, after_time))
        if track is None or lo >= hi:
            return History(device_id=device_id, locations=[], next_token=None)
        if order == "asc":
            chosen = track.locations[lo : min(hi, lo + limit)]
            more = hi - lo > limit
        else:
            chosen = track.locations[max(lo, hi - limit) : hi][::-1]
            more = hi - lo > limit
        token = None
        if more:
            last_ms = (chosen[-1].timestamp - EPOCH) // timedelta(milliseconds=1)
            token = _encode_token(scope, last_ms)
        return History(device_id=device_id, locations=chosen, next_token=token)

    @app.get("/devices/{device_id}", response_model=DeviceOut, response_model_exclude_unset=True)
    async def get_device(device_id: DeviceId) -> DeviceOut:
        device = store.devices.get(device_id)
        if device is None:
            raise HTTPException(404, f"device {device_id} is not known")
        return _device_out(device, datetime.now(UTC))

    @app.get("/devices", response_model=DeviceList, response_model_exclude_unset=True)
    async def list_devices(
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
        next_token: str | None = None,
    ) -> DeviceList:
        start = 0
        if next_token is not None:
            after = _decode_token(next_token, "devices")
            if not isinstance(after, str):
                raise BadRequest("next_token is not valid")
            start = bisect.bisect_right(store.device_ids, after)
        chosen = store.device_ids[start : start + limit]
        more = start + limit < len(store.device_ids)
        now = datetime.now(UTC)
        return DeviceList(
            devices=[_device_out(store.devices[i], now) for i in chosen],
            next_token=_encode_token("devices", chosen[-1]) if more else None,
        )

    install_problem_handlers(app)
    return app


def serve(app: FastAPI, host: str, port: int) -> None:
    """As both baselines are measured: uvicorn, uvloop, httptools, no access log, one worker."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        workers=1,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--seed-devices", type=int, default=SEED_DEVICES)
    parser.add_argument("--seed-points", type=int, default=SEED_POINTS)
    args = parser.parse_args()
    serve(create_app(args.seed_devices, args.seed_points), args.host, args.port)


if __name__ == "__main__":
    main()
