"""uvicorn or granian for `serve`: TrackStore's own app on both servers, every endpoint of the API
benchmark, the memory backend seeded as `benchmarks/api.py` seeds it.

    .venv/bin/python benchmarks/server_choice.py          # granian installed in the venv by hand

uvicorn runs as `trackstore serve` runs it (uvloop, httptools, the socket handed over, no access
log, TCP_NODELAY); granian (a Rust HTTP server) as `--interface asgi --http 1 --workers 1 --loop
uvloop --no-ws`, importing the same app, built by the same code, from a module this script
writes. Each server pinned to core 1 and wrk -t1 -c32 to core 0; runs alternate A B B A per
endpoint; medians per side and the median of the paired ratios. Not run in CI.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.api import (
    BIN,
    ENDPOINTS,
    SEED_DEVICES,
    SEED_POINTS,
    WRK_SCRIPT,
    abba,
    free_port,
    measured,
    run_wrk,
    start_server,
    stop_server,
    trackstore_argv,
)

# What `trackstore serve --seed-devices N --seed-points M` builds, as a module granian imports.
GRANIAN_APP = """
import contextlib, os
from trackstore.cli.seed import seed
from trackstore.config import Settings
from trackstore.container import build_container, opened
from trackstore.web import create_app

settings = Settings.from_env(os.environ, dotenv=None)
container = build_container(settings)


@contextlib.asynccontextmanager
async def seeded(_app):
    async with opened(container):
        await seed(container.locations(), container.devices(), {devices}, {points},
                   container.clock()())
        yield
        await container.fleet().close()


app = create_app(container.service(), container.metrics(), container.fleet(), lifespan=[seeded])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8, help="seconds per wrk run")
    parser.add_argument("--pairs", type=int, default=2, help="A B pairs per endpoint")
    parser.add_argument("--max-wait", type=float, default=20)
    parser.add_argument("--attempts", type=int, default=2)
    args = parser.parse_args()
    logdir = Path(tempfile.mkdtemp(prefix="server-choice-"))
    script = logdir / "rotate.lua"
    script.write_text(WRK_SCRIPT)
    (logdir / "trackstore_app.py").write_text(
        GRANIAN_APP.format(devices=SEED_DEVICES, points=SEED_POINTS)
    )
    env = {"TRACKSTORE_BACKEND": "memory", "LOG_LEVEL": "WARNING"}
    uvicorn_port, granian_port = free_port(), free_port()
    uvicorn_argv = trackstore_argv(
        *("serve", "--port", str(uvicorn_port)),
        *("--seed-devices", str(SEED_DEVICES), "--seed-points", str(SEED_POINTS)),
    )
    granian_argv = [
        *(str(BIN / "granian"), "--interface", "asgi", "--host", "127.0.0.1"),
        *("--loop", "uvloop", "--http", "1", "--workers", "1", "--no-ws"),
        *("--log-level", "warning", "--working-dir", str(logdir)),
        *("--port", str(granian_port), "trackstore_app:app"),
    ]
    ready = ENDPOINTS["latest"] % 1
    servers = {
        "uvicorn": start_server("uvicorn", uvicorn_argv, env, uvicorn_port, ready, logdir),
    }
    try:
        servers["granian"] = start_server("granian", granian_argv, env, granian_port, ready, logdir)
        medians: dict[str, tuple[float, float, float]] = {}
        for name, template in ENDPOINTS.items():
            for server in servers.values():
                run_wrk(server, template, SEED_DEVICES, 2, script)  # warm-up
            rps: dict[str, list[float]] = {"uvicorn": [], "granian": []}
            pairs: dict[int, dict[str, float]] = {}
            for pair, side in abba(args.pairs):
                label = "uvicorn" if side == "A" else "granian"
                server = servers[label]
                result = measured(
                    lambda s=server, t=template: run_wrk(s, t, SEED_DEVICES, args.duration, script),
                    args,
                )
                rps[label].append(result.rps)
                pairs.setdefault(pair, {})[label] = result.rps
                print(
                    f"  {name:8} {label:8} {result.rps:8,.0f} req/s  "
                    f"(others {result.others_share:.0%})",
                    flush=True,
                )
            medians[name] = (
                statistics.median(rps["uvicorn"]),
                statistics.median(rps["granian"]),
                statistics.median(p["granian"] / p["uvicorn"] for p in pairs.values()),
            )
    finally:
        for server in servers.values():
            stop_server(server)
    print("\nmedian req/s (wrk -t1 -c32, server pinned to core 1, client to core 0):")
    print(f"  {'endpoint':8} {'uvicorn':>9} {'granian':>9} {'granian/uvicorn':>16}")
    for name, (uvicorn_rps, granian_rps, ratio) in medians.items():
        print(f"  {name:8} {uvicorn_rps:9,.0f} {granian_rps:9,.0f} {ratio:16.2f}")
    print(f"reproduce: .venv/bin/python benchmarks/server_choice.py --pairs {args.pairs}")


if __name__ == "__main__":
    main()
