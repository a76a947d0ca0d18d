"""The image's two entrypoints start and stop cleanly, run as the image runs them: the Dockerfile's
ENTRYPOINT and CMD (read from the Dockerfile, not restated here), configuration from the
environment only, an empty working directory, the image's own Python environment (the lock and
the wheel, no dev packages), and SIGTERM to stop, as ECS does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.aws_emulators import DUMMY_CREDENTIALS, free_port
from tests.deploy.dockerfile import final_stage, stages

SERVE_STOP_S = 10
CONSUME_STOP_S = 30


# --- What the image runs -----------------------------------------------------------------------


def test_the_image_runs_trackstore_serve_by_default_as_a_non_root_user() -> None:
    image = final_stage()
    assert image.exec_form("ENTRYPOINT") == ["trackstore"]
    assert image.exec_form("CMD") == ["serve", "--host", "0.0.0.0"]
    assert image.last("EXPOSE") == "8000"
    user = image.last("USER")
    assert user is not None
    assert user.split(":")[0] not in {"0", "root"}
    assert {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}.items() <= image.env().items()


def test_the_image_is_multi_stage_on_python_311_slim() -> None:
    built = stages()
    assert len(built) >= 2
    assert {stage.base for stage in built} == {"python:3.11-slim"}
    final = built[-1]
    # The runtime stage installs nothing itself: it copies the built environment.
    assert all("pip" not in run for run in final.all("RUN"))
    assert any("--from=" in copy for copy in final.all("COPY"))
    build = "\n".join(run for stage in built[:-1] for run in stage.all("RUN"))
    assert "--require-hashes --no-deps -r requirements.lock" in build


def _healthcheck_command() -> list[str]:
    healthcheck = final_stage().last("HEALTHCHECK")
    assert healthcheck is not None
    _, _, command = healthcheck.partition(" CMD ")
    value = json.loads(command)
    assert isinstance(value, list)
    return [str(part) for part in value]


# --- Running it ----------------------------------------------------------------------------------


def image_env(bin_dir: Path, **settings: str) -> dict[str, str]:
    """The container's environment: the image's ENV, PATH to its venv, the given settings."""
    image = final_stage().env()
    image["PATH"] = f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"
    return {**image, "HOME": "/nonexistent", "LANG": "C.UTF-8", **settings}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The image's WORKDIR: empty, so no .env is read."""
    path = tmp_path / "app"
    path.mkdir()
    return path


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def start(
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    processes: list[subprocess.Popen[str]],
    log: Path,
) -> subprocess.Popen[str]:
    with log.open("w") as out:
        process = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, text=True
        )
    processes.append(process)
    return process


def stop(process: subprocess.Popen[str], timeout_s: float, log: Path) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"no exit within {timeout_s} s of SIGTERM; output:\n{log.read_text()}")


def get_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def wait_healthy(process: subprocess.Popen[str], url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"exited with {process.returncode}:\n{log.read_text()}")
        if get_status(url) == 200:
            return
        time.sleep(0.1)
    pytest.fail(f"{url} not 200 after {timeout_s} s:\n{log.read_text()}")


def assert_json_logs(log: Path) -> None:
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines, "no output at all"
    for line in lines:
        assert isinstance(json.loads(line), dict), line  # JSON lines only, no stray traceback


def test_serve_answers_health_then_stops_on_sigterm(
    image_venv: Path, workdir: Path, processes: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    image = final_stage()
    entrypoint, command = image.exec_form("ENTRYPOINT"), image.exec_form("CMD")
    port = free_port()
    # The default command, on a free port instead of 8000 (the task definition passes --port).
    argv = [*entrypoint, *command, "--port", str(port)]
    env = image_env(image_venv, TRACKSTORE_BACKEND="memory")
    log = tmp_path / "serve.log"
    process = start(argv, env, workdir, processes, log)

    wait_healthy(process, f"http://127.0.0.1:{port}/health", log, timeout_s=30)
    # The image's HEALTHCHECK probe works with what the image has (no curl), on this port.
    probe = [part.replace("8000", str(port)) for part in _healthcheck_command()]
    assert subprocess.run(probe, env=env, cwd=workdir, timeout=10, check=False).returncode == 0

    assert stop(process, SERVE_STOP_S, log) == 0
    assert_json_logs(log)
    # With the server gone, the probe fails, as Docker would need it to.
    assert subprocess.run(probe, env=env, cwd=workdir, timeout=10, check=False).returncode != 0


def test_consume_runs_against_the_stream_then_stops_on_sigterm(
    image_venv: Path,
    moto_endpoint: str,
    workdir: Path,
    processes: list[subprocess.Popen[str]],
    tmp_path: Path,
) -> None:
    image = final_stage()
    entrypoint = image.exec_form("ENTRYPOINT")
    suffix = uuid.uuid4().hex[:8]
    env = image_env(
        image_venv,
        **DUMMY_CREDENTIALS,
        AWS_ENDPOINT_URL=moto_endpoint,
        AWS_EC2_METADATA_DISABLED="true",
        TRACKSTORE_BACKEND="aws",
        KINESIS_STREAM_NAME=f"gps-{suffix}",
        LOCATION_TABLE_NAME=f"locations-{suffix}",
        DEVICE_TABLE_NAME=f"devices-{suffix}",
        LEASE_TABLE_NAME=f"leases-{suffix}",
        # The command line stays the image's; only the port of /metrics moves off 9100, which
        # another process on this host may hold.
        CONSUMER_METRICS_PORT=str(free_port()),
    )
    init = subprocess.run(
        [*entrypoint, "init", "--shards", "2"],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert init.returncode == 0, init.stdout + init.stderr

    # The task definition's command: the image's entrypoint with the command overridden.
    log = tmp_path / "consume.log"
    process = start([*entrypoint, "consume"], env, workdir, processes, log)
    # Stopped once it holds its shards: SIGTERM must then end it cleanly. (Waiting on the log,
    # not a fixed sleep: the image's interpreter writes no bytecode, so a busy host starts slowly.)
    deadline = time.monotonic() + 60
    while log.read_text().count('"lease taken"') < 2:
        assert process.poll() is None, f"exited with {process.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"never took its leases:\n{log.read_text()}"
        time.sleep(0.1)

    assert stop(process, CONSUME_STOP_S, log) == 0, log.read_text()
    assert_json_logs(log)


def test_consume_refuses_the_memory_backend_with_a_usage_error(
    image_venv: Path, workdir: Path
) -> None:
    """A consumer task misconfigured with the memory backend exits at once with a one-line
    error and exit code 2, so ECS shows the failure instead of an idle task."""
    entrypoint = final_stage().exec_form("ENTRYPOINT")
    env = image_env(image_venv, TRACKSTORE_BACKEND="memory")
    done = subprocess.run(
        [*entrypoint, "consume"],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert os.linesep not in done.stderr.strip()  # one line, no traceback
