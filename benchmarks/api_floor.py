"""The frameworks' floor: how many requests/s Litestar and FastAPI serve on uvicorn (uvloop,
httptools, no access log) when the handler does nothing but return one small constant location,
the same Litestar app on granian (HTTP/1, one worker, uvloop), and TrackStore's real `latest`
endpoint, all on the same core under the same wrk load.

    .venv-bench/bin/python benchmarks/api_floor.py

An endpoint cannot be faster than its framework's empty handler: this puts a ceiling on what any
work inside TrackStore's handlers could win, and on the ratio to the FastAPI baseline.
Runs alternate A B C C B A ...; medians per side. Not run in CI.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.api import (
    BIN,
    ENDPOINTS,
    SEED_DEVICES,
    WRK_SCRIPT,
    free_port,
    measured,
    run_wrk,
    start_server,
    stop_server,
)

LOCATION = {
    "deviceId": "bus-0001",
    "timestamp": "2026-11-28T12:00:00.000Z",
    "latitude": 52.370216,
    "longitude": 4.895168,
    "speed": 42.5,
    "heading": 180.0,
    "receivedAt": "2026-11-28T12:00:00.150Z",
}

# Each app is started by `python -c`, so the floor apps need no module of their own.
LITESTAR_APP = """
import sys, uvicorn
from litestar import Litestar, get
LOCATION = {location!r}
@get("/locations/{{device_id:str}}/latest")
async def latest(device_id: str) -> dict:
    return {{**LOCATION, "deviceId": device_id}}
app = Litestar([latest], logging_config=None)
uvicorn.run(app, port=int(sys.argv[1]), loop="uvloop", http="httptools", access_log=False,
            log_level="warning", proxy_headers=False, server_header=False)
"""
# The same Litestar app for granian (a Rust HTTP server), which imports it by module path.
LITESTAR_MODULE = """
from litestar import Litestar, get
LOCATION = {location!r}
@get("/locations/{{device_id:str}}/latest")
async def latest(device_id: str) -> dict:
    return {{**LOCATION, "deviceId": device_id}}
app = Litestar([latest], logging_config=None)
"""
FASTAPI_APP = """
import sys, uvicorn
from fastapi import FastAPI
LOCATION = {location!r}
app = FastAPI()
@app.get("/locations/{{device_id}}/latest")
async def latest(device_id: str) -> dict:
    return {{**LOCATION, "deviceId": device_id}}
uvicorn.run(app, port=int(sys.argv[1]), loop="uvloop", http="httptools", access_log=False,
            log_level="warning", proxy_headers=False, server_header=False)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="A B C C B A rounds")
    parser.add_argument("--max-wait", type=float, default=20)
    parser.add_argument("--attempts", type=int, default=2)
    args = parser.parse_args()
    logdir = Path(tempfile.mkdtemp(prefix="api-floor-"))
    script = logdir / "rotate.lua"
    script.write_text(WRK_SCRIPT)
    template = ENDPOINTS["latest"]
    (logdir / "floor_app.py").write_text(LITESTAR_MODULE.format(location=LOCATION))
    granian = [str(BIN / "granian"), "--interface", "asgi", "--host", "127.0.0.1"]
    granian += ["--loop", "uvloop", "--http", "1", "--workers", "1", "--no-ws"]
    granian += ["--log-level", "warning", "--working-dir", str(logdir), "--port"]
    sides = {
        "Litestar floor": [sys.executable, "-c", LITESTAR_APP.format(location=LOCATION)],
        "Litestar granian": granian,
        "FastAPI floor": [sys.executable, "-c", FASTAPI_APP.format(location=LOCATION)],
        "TrackStore latest": [str(BIN / "trackstore"), "serve", "--port"],
    }
    servers: dict[str, Any] = {}
    try:
        for name, argv in sides.items():
            port = free_port()
            if name.startswith("TrackStore"):
                argv = [
                    *argv,
                    str(port),
                    "--seed-devices",
                    str(SEED_DEVICES),
                    "--seed-points",
                    "100",
                ]
            elif name.endswith("granian"):
                argv = [*argv, str(port), "floor_app:app"]
            else:
                argv = [*argv, str(port)]
            env = {"TRACKSTORE_BACKEND": "memory", "LOG_LEVEL": "WARNING"}
            servers[name] = start_server(
                name.split()[0].lower(), argv, env, port, template % 1, logdir
            )
        rps: dict[str, list[float]] = {name: [] for name in servers}
        order = list(servers)
        for round_ in range(args.rounds):
            for name in order if round_ % 2 == 0 else order[::-1]:
                server = servers[name]
                run_wrk(server, template, SEED_DEVICES, 1, script)  # warm-up
                result = measured(
                    lambda s=server: run_wrk(s, template, SEED_DEVICES, args.duration, script), args
                )
                rps[name].append(result.rps)
                print(f"  {name:18} {result.rps:8,.0f} req/s (others {result.others_share:.0%})")
    finally:
        for server in servers.values():
            stop_server(server)
    medians = {name: statistics.median(values) for name, values in rps.items()}
    fastapi = medians["FastAPI floor"]
    print("\nmedian req/s (wrk -t1 -c32, server pinned to core 1, client to core 0):")
    for name, value in medians.items():
        print(f"  {name:18} {value:8,.0f}   {value / fastapi:.2f}x FastAPI's floor")
    print(f"reproduce: .venv-bench/bin/python benchmarks/api_floor.py --rounds {args.rounds}")


if __name__ == "__main__":
    main()
