"""This process's worker id in the lease table: unique per process, readable by an operator."""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import urllib.request

log = logging.getLogger(__name__)

METADATA_TIMEOUT_S = 1.0


def worker_id() -> str:
    """`<ECS task id or host>:<pid>:<random>`. The random part keeps a restarted process from
    passing for its predecessor, whose leases must expire or be released first."""
    return f"{_ecs_task_id() or socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _ecs_task_id() -> str | None:
    """The task id from the ECS task metadata endpoint (v4), when running on ECS/Fargate."""
    base = os.environ.get("ECS_CONTAINER_METADATA_URI_V4")
    if not base:
        return None
    try:
        with urllib.request.urlopen(f"{base}/task", timeout=METADATA_TIMEOUT_S) as response:
            arn = str(json.load(response).get("TaskARN", ""))
    except (OSError, ValueError) as exc:
        log.warning("ECS task metadata unavailable", extra={"error": str(exc)})
        return None
    # arn:aws:ecs:region:account:task/cluster/task-id
    return arn.rsplit("/", 1)[-1] or None
