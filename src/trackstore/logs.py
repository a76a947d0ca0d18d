"""JSON-lines logs on stdout, one object per line, as CloudWatch Logs and its Insights read them."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec
from opentelemetry import trace

from trackstore.telemetry import xray_trace_id

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
# uvicorn adds `color_message`, a terminal-coloured copy of the message.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "color_message",
}
_encode = msgspec.json.Encoder(enc_hook=str).encode


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            # Both spellings: OpenTelemetry's, and X-Ray's for CloudWatch's trace links.
            line["traceId"] = f"{span.trace_id:032x}"
            line["spanId"] = f"{span.span_id:016x}"
            line["xrayTraceId"] = xray_trace_id(span.trace_id)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encode(line).decode()


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log repeats what the request metrics already count, and botocore's INFO
    # lines (credentials found, endpoint chosen) repeat on every client.
    quiet = max(logging.WARNING, logging.getLevelName(level))
    for name in ("uvicorn.access", "botocore", "aiobotocore"):
        logging.getLogger(name).setLevel(quiet)
