"""Settings, read once from the environment and an optional `.env` in the working directory."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path

import msgspec

from trackstore.errors import INVALID, Error

# The consumer's metrics port when none is configured; a consumer that finds it taken (another
# consumer on the same host) listens on a port the OS picks rather than failing.
DEFAULT_CONSUMER_METRICS_PORT = 9100


class Backend(StrEnum):
    AWS = "aws"
    MEMORY = "memory"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
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

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
    ) -> Settings:
        """Settings from `environ` (default os.environ) over `dotenv`; Error(INVALID) when off."""
        values = configuration_values(environ, dotenv)
        return cls(
            aws_region=values.get("AWS_REGION") or values.get("AWS_DEFAULT_REGION") or "us-east-1",
            kinesis_stream_name=_name(values, "KINESIS_STREAM_NAME", "transport-gps-stream-dev"),
            device_table_name=_name(values, "DEVICE_TABLE_NAME", "transport-devices-dev"),
            location_table_name=_name(values, "LOCATION_TABLE_NAME", "transport-locations-dev"),
            lease_table_name=_name(values, "LEASE_TABLE_NAME", "transport-leases-dev"),
            kinesis_batch_size=_int(values, "KINESIS_BATCH_SIZE", 1000, 1, 10_000),
            location_ttl_days=_int(values, "LOCATION_TTL_DAYS", 30, 1, 3650),
            location_date_shards=_int(values, "LOCATION_DATE_SHARDS", 8, 1, 100),
            backend=_backend(values.get("TRACKSTORE_BACKEND", "aws")),
            dead_letter_stream_name=values.get("DEAD_LETTER_STREAM_NAME", "").strip() or None,
            kinesis_initial_position=_choice(
                values, "KINESIS_INITIAL_POSITION", ("TRIM_HORIZON", "LATEST")
            ),
            lease_failover_seconds=_int(values, "LEASE_FAILOVER_SECONDS", 10, 2, 600),
            max_leases_per_worker=_int(values, "MAX_LEASES_PER_WORKER", 1000, 1, 100_000),
            consumer_stall_seconds=_int(values, "CONSUMER_STALL_SECONDS", 300, 10, 86_400),
            consumer_metrics_port=(
                _int(values, "CONSUMER_METRICS_PORT", 0, 0, 65_535)
                if values.get("CONSUMER_METRICS_PORT", "").strip()
                else None
            ),
            api_key_digests=_api_keys(values.get("TRACKSTORE_API_KEYS", "")),
            metrics_public=_bool(values, "METRICS_PUBLIC"),
            log_level=_log_level(values.get("LOG_LEVEL", "INFO")),
        )


def configuration_values(
    environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
) -> dict[str, str]:
    """The variables as TrackStore sees them: `environ` (default os.environ) over `dotenv`."""
    values = dict(read_dotenv(dotenv)) if dotenv is not None else {}
    values.update(os.environ if environ is None else environ)
    return values


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


def _name(values: Mapping[str, str], key: str, default: str) -> str:
    value = values.get(key, "").strip() or default
    if not 1 <= len(value) <= 255:
        raise Error(INVALID, f"{key} must be 1..255 characters")
    return value


def _int(values: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = values.get(key, "").strip()
    if not raw:
        return default
    try:
        number = int(raw)
    except ValueError:
        raise Error(INVALID, f"{key} must be an integer, got {raw!r}") from None
    if not low <= number <= high:
        raise Error(INVALID, f"{key} must be between {low} and {high}, got {number}")
    return number


def _choice(values: Mapping[str, str], key: str, choices: tuple[str, ...]) -> str:
    raw = values.get(key, "").strip().upper() or choices[0]
    if raw not in choices:
        raise Error(INVALID, f"{key} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _api_keys(raw: str) -> tuple[bytes, ...]:
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
                raise Error(INVALID, "TRACKSTORE_API_KEYS: a sha256: entry needs 64 hex digits")
            digests.append(digest)
        elif len(entry) < 16:
            raise Error(INVALID, "TRACKSTORE_API_KEYS: keys must be at least 16 characters")
        else:
            digests.append(hashlib.sha256(entry.encode()).digest())
    return tuple(digests)


def _bool(values: Mapping[str, str], key: str) -> bool:
    raw = values.get(key, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise Error(INVALID, f"{key} must be true or false, got {raw!r}")


def _backend(raw: str) -> Backend:
    try:
        return Backend(raw.strip().lower() or "aws")
    except ValueError:
        raise Error(INVALID, f"TRACKSTORE_BACKEND must be 'aws' or 'memory', got {raw!r}") from None


def _log_level(raw: str) -> str:
    level = raw.strip().upper() or "INFO"
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise Error(INVALID, f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL: {raw!r}")
    return level
