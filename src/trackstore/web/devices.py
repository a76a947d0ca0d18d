"""Device listing, lookup and registration."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from litestar import get, post
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import RawBody

from trackstore.domain import MAX_METADATA_BYTES, MAX_NAME_LENGTH
from trackstore.errors import INVALID, Error
from trackstore.service import TrackService
from trackstore.web.params import DeviceId, Limit, NextToken, limit_param
from trackstore.web.problems import BAD_DEVICE, STORE_DOWN, problem_specs
from trackstore.web.wire import DeviceOut, DevicesOut, RegisterIn, device_out

# Metadata is capped at 4 KiB encoded by the service; a body far past that is refused unread.
MAX_REGISTER_BODY = 16 * 1024

_decode_register = msgspec.json.Decoder(RegisterIn).decode


@get(
    "/devices",
    operation_id="listDevices",
    tags=["devices"],
    summary="Every device, registered or seen, one page at a time",
    responses=problem_specs({400: "A malformed limit or next_token", 503: STORE_DOWN}),
)
async def list_devices(
    service: NamedDependency[TrackService], limit: Limit = None, next_token: NextToken = None
) -> DevicesOut:
    page = await service.devices(limit_param(limit), next_token)
    now = service.now_ms()
    return DevicesOut(
        devices=[device_out(device, now) for device in page.items],
        next_token=page.next_token,
    )


@get(
    "/devices/{device_id:str}",
    operation_id="getDevice",
    tags=["devices"],
    summary="One device: status, last location, counters, registration",
    responses=problem_specs({400: BAD_DEVICE, 404: "The device is not known", 503: STORE_DOWN}),
)
async def get_device(service: NamedDependency[TrackService], device_id: DeviceId) -> DeviceOut:
    device = await service.device(device_id)
    return device_out(device, service.now_ms())


@dataclass
class _RegisterOperation(Operation):
    """Documents the body that the handler decodes itself (Litestar sees only raw bytes)."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=False,
            description="Optional; an empty body registers the device without name or metadata",
            content={
                "application/json": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        additional_properties=False,
                        properties={
                            "name": Schema(
                                type=OpenAPIType.STRING, min_length=1, max_length=MAX_NAME_LENGTH
                            ),
                            "metadata": Schema(
                                type=OpenAPIType.OBJECT,
                                description=f"At most {MAX_METADATA_BYTES} bytes as JSON",
                            ),
                        },
                    )
                )
            },
        )


@post(
    "/devices/{device_id:str}/register",
    operation_id="registerDevice",
    tags=["devices"],
    summary="Register a device, optionally with a name and metadata",
    description="A device that already reported keeps its locations, lastSeen and counters.",
    status_code=201,
    request_max_body_size=MAX_REGISTER_BODY,
    operation_class=_RegisterOperation,
    responses=problem_specs(
        {
            400: f"{BAD_DEVICE}, or a malformed body",
            409: "The device is registered already",
            413: "The body is too large",
            503: STORE_DOWN,
        }
    ),
)
async def register_device(
    service: NamedDependency[TrackService], device_id: DeviceId, body: RawBody
) -> DeviceOut:
    request = _register_body(body)
    device = await service.register(device_id, request.name, request.metadata)
    return device_out(device, service.now_ms())


def _register_body(body: bytes) -> RegisterIn:
    # Decoded here, not by Litestar, so each kind of bad body gets a message saying what to fix.
    if not body.strip():
        return RegisterIn()
    try:
        return _decode_register(body)
    except msgspec.ValidationError as error:  # well-formed JSON of the wrong shape
        raise Error(INVALID, f"request body: {error}") from None
    except msgspec.DecodeError:
        raise Error(INVALID, "request body is not valid JSON") from None
