"""Settings, read once from the environment and an optional `.env` in the working directory."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import msgspec

from trackstore.errors import INVALID, Error

# The consumer's metrics port when none is configured; a consumer that finds it taken (another
# consumer on the same host) listens on a port the OS picks rather than failing.
DEFAULT_CONSUMER_METRICS_PORT = 9100


# The map page's background; when tiles cannot load (offline, a private VPC) the markers and
# tracks still draw on a plain background.
DEFAULT_TILE_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
DEFAULT_TILE_ATTRIBUTION = "&copy; OpenStreetMap contributors"


class Backend(StrEnum):
    AWS = "aws"
    MEMORY = "memory"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """What TrackStore is configured with; `from_env` fills it from SETTINGS."""

    aws_region: str = "us-east-1"
    kinesis_stream_name: str = "transport-gps-stream-dev"
    device_table_name: str = "transport-devices-dev"
    location_table_name: str = "transport-locations-dev"
    lease_table_name: str = "transport-leases-dev"
    kinesis_batch_size: int = 1000
    location_ttl_days: int = 30
    location_date_shards: int = 8
    backend: Backend = Backend.AWS
    dead_letter_stream_name: str | None = None
    kinesis_initial_position: str = "TRIM_HORIZON"
    lease_failover_seconds: float = 10.0
    max_leases_per_worker: int = 1000
    consumer_stall_seconds: float = 300.0
    # None: not configured, so DEFAULT_CONSUMER_METRICS_PORT may give way to a free port.
    consumer_metrics_port: int | None = None
    api_key_digests: tuple[bytes, ...] = ()
    metrics_public: bool = False
    log_level: str = "INFO"
    fleet_refresh_seconds: float = 5.0
    gtfs_rt_max_age_seconds: int = 90
    map_tile_url: str = DEFAULT_TILE_URL
    map_tile_attribution: str = DEFAULT_TILE_ATTRIBUTION

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
    ) -> Settings:
        """Settings from `environ` (default os.environ) over `dotenv`; Error(INVALID) when off."""
        values = configuration_values(environ, dotenv)
        chosen: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = next(
                (v.strip() for name in setting.variables if (v := values.get(name, "")).strip()),
                "",
            )
            if raw:
                chosen[setting.field] = setting.parse(setting.variable, raw)
        return cls(**chosen)


Parser = Callable[[str, str], Any]  # (variable, its non-empty value) -> the setting's value


@dataclass(frozen=True)
class Setting:
    """One setting: the Settings field, the variable (then any fallbacks) it is read from, how
    its value is parsed, and its default as the README shows it."""

    field: str
    variable: str
    parse: Parser
    fallbacks: tuple[str, ...] = ()
    shown_default: str | None = None  # when the README says more than the field's default

    @property
    def variables(self) -> tuple[str, ...]:
        return (self.variable, *self.fallbacks)

    @property
    def default(self) -> str:
        """The default as the README's configuration table writes it."""
        if self.shown_default is not None:
            return self.shown_default
        value = getattr(Settings(), self.field)
        if value is None or value == ():
            return "unset"
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)


def _text(variable: str, raw: str) -> str:
    if not 1 <= len(raw) <= 255:
        raise Error(INVALID, f"{variable} must be 1..255 characters")
    return raw


def _integer(low: int, high: int) -> Parser:
    def parse(variable: str, raw: str) -> int:
        try:
            number = int(raw)
        except ValueError:
            raise Error(INVALID, f"{variable} must be an integer, got {raw!r}") from None
        if not low <= number <= high:
            raise Error(INVALID, f"{variable} must be between {low} and {high}, got {number}")
        return number

    return parse


def _number(low: float, high: float) -> Parser:
    def parse(variable: str, raw: str) -> float:
        try:
            number = float(raw)
        except ValueError:
            raise Error(INVALID, f"{variable} must be a number, got {raw!r}") from None
        if not low <= number <= high:  # NaN fails this too
            raise Error(INVALID, f"{variable} must be between {low:g} and {high:g}, got {raw}")
        return number

    return parse


def _choice(*choices: str) -> Parser:
    def parse(variable: str, raw: str) -> str:
        value = raw.upper()
        if value not in choices:
            raise Error(INVALID, f"{variable} must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def _api_keys(variable: str, raw: str) -> tuple[bytes, ...]:
    """Comma-separated keys, or `sha256:<hex>` digests of them, as SHA-256 digests."""
    digests = []
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        if entry.startswith("sha256:"):
            try:
                digest = bytes.fromhex(entry.removeprefix("sha256:"))
            except ValueError:
                digest = b""
            if len(digest) != 32:
                raise Error(INVALID, f"{variable}: a sha256: entry needs 64 hex digits")
            digests.append(digest)
        elif len(entry) < 16:
            raise Error(INVALID, f"{variable}: keys must be at least 16 characters")
        else:
            digests.append(hashlib.sha256(entry.encode()).digest())
    return tuple(digests)


def _flag(variable: str, raw: str) -> bool:
    value = raw.lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise Error(INVALID, f"{variable} must be true or false, got {raw!r}")


def _backend(variable: str, raw: str) -> Backend:
    try:
        return Backend(raw.lower())
    except ValueError:
        raise Error(INVALID, f"{variable} must be 'aws' or 'memory', got {raw!r}") from None


def _log_level(variable: str, raw: str) -> str:
    level = raw.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise Error(INVALID, f"{variable} must be DEBUG, INFO, WARNING, ERROR or CRITICAL: {raw!r}")
    return level


def _as_is(variable: str, raw: str) -> str:
    return raw


def _tile_url(variable: str, raw: str) -> str:
    if not raw.startswith(("https://", "http://", "/")) or not all(
        part in raw for part in ("{z}", "{x}", "{y}")
    ):
        raise Error(
            INVALID,
            f"{variable} must be an http(s) URL or a path with {{z}}, {{x}} and {{y}}, got {raw!r}",
        )
    return _text(variable, raw)


# Every setting, once: the README's configuration table lists these (a test compares them).
SETTINGS: tuple[Setting, ...] = (
    Setting("aws_region", "AWS_REGION", _as_is, fallbacks=("AWS_DEFAULT_REGION",)),
    Setting("kinesis_stream_name", "KINESIS_STREAM_NAME", _text),
    Setting("device_table_name", "DEVICE_TABLE_NAME", _text),
    Setting("location_table_name", "LOCATION_TABLE_NAME", _text),
    Setting("lease_table_name", "LEASE_TABLE_NAME", _text),
    Setting("kinesis_batch_size", "KINESIS_BATCH_SIZE", _integer(1, 10_000)),
    Setting("location_ttl_days", "LOCATION_TTL_DAYS", _integer(1, 3650)),
    Setting("location_date_shards", "LOCATION_DATE_SHARDS", _integer(1, 100)),
    Setting(
        "kinesis_initial_position", "KINESIS_INITIAL_POSITION", _choice("TRIM_HORIZON", "LATEST")
    ),
    Setting("lease_failover_seconds", "LEASE_FAILOVER_SECONDS", _number(2, 600)),
    Setting("max_leases_per_worker", "MAX_LEASES_PER_WORKER", _integer(1, 100_000)),
    Setting("dead_letter_stream_name", "DEAD_LETTER_STREAM_NAME", _text),
    Setting("api_key_digests", "TRACKSTORE_API_KEYS", _api_keys),
    Setting("metrics_public", "METRICS_PUBLIC", _flag),
    Setting(
        "consumer_metrics_port",
        "CONSUMER_METRICS_PORT",
        _integer(0, 65_535),
        shown_default=str(DEFAULT_CONSUMER_METRICS_PORT),
    ),
    Setting("consumer_stall_seconds", "CONSUMER_STALL_SECONDS", _number(10, 86_400)),
    Setting("backend", "TRACKSTORE_BACKEND", _backend),
    Setting("log_level", "LOG_LEVEL", _log_level),
    Setting("fleet_refresh_seconds", "FLEET_REFRESH_SECONDS", _number(0.5, 300)),
    Setting("gtfs_rt_max_age_seconds", "GTFS_RT_MAX_AGE_SECONDS", _integer(1, 86_400)),
    Setting("map_tile_url", "MAP_TILE_URL", _tile_url),
    Setting("map_tile_attribution", "MAP_TILE_ATTRIBUTION", _text),
)


def configuration_values(
    environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
) -> dict[str, str]:
    """The variables as TrackStore sees them: `environ` (default os.environ) over `dotenv`."""
    values = dict(read_dotenv(dotenv)) if dotenv is not None else {}
    values.update(os.environ if environ is None else environ)
    return values


def export_dotenv(path: Path = Path(".env")) -> None:
    """Puts the `.env` file's variables into the process environment, under those already set.

    Libraries read their own variables from the environment, not from our settings: botocore
    its AWS_ENDPOINT_URL*, credentials and AWS_PROFILE, OpenTelemetry its OTEL_*. Without this,
    an endpoint or a key written in `.env` would be ignored while TrackStore's own settings
    there are not.
    """
    for name, value in read_dotenv(path).items():
        os.environ.setdefault(name, value)


def read_dotenv(path: Path) -> dict[str, str]:
    """`KEY=value` lines of a .env file; `#` comments, `export ` prefixes and quotes allowed."""
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise Error(INVALID, f"{path}:{number}: expected KEY=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values
