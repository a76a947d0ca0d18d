"""This process's worker id in the lease table: unique per process, readable by an operator."""

from __future__ import annotations

import os
import secrets
import socket


def worker_id() -> str:
    """`host:pid:random`; the random part keeps a restarted process with a recycled pid from
    passing for its predecessor, whose leases must expire first."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
