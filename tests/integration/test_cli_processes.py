"""The commands as real processes: configuration errors, the listening line, a busy port,
the demo. Each test starts `trackstore` (about a second each), which is why they are here
and not among the unit tests; what each checks in-process is in tests/unit/test_cli.py
and tests/unit/test_config_errors.py."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.aws_emulators import free_port
from tests.unit.test_cli import TRACKSTORE, Result, assert_one_line_error, process_env
from tests.unit.test_config_errors import (
    BAD_SETTINGS,
    COMMANDS,
    NOWHERE,
    no_credentials_env,
    run_process,
)
from trackstore.aws import NO_CREDENTIALS

pytestmark = pytest.mark.integration


# -- from test_config_errors.py ------------------------------------------------------------


@pytest.mark.parametrize(("variable", "value"), BAD_SETTINGS)
def test_serve_with_a_bad_aws_setting_exits_2_instead_of_serving(
    tmp_path: Path, variable: str, value: str
) -> None:
    # A process with a timeout: a `serve` that got past the check would serve until stopped.
    env = process_env(tmp_path, LOG_LEVEL="DEBUG", **{**NOWHERE, variable: value})
    if variable == "AWS_DEFAULT_REGION":
        del env["AWS_REGION"]
    result, _ = run_process(tmp_path, COMMANDS["serve"], env)
    assert_one_line_error(result, 2, variable, repr(value))
    assert result.out == "", result.out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_bad_endpoint_exits_2_in_a_real_process_at_debug_level(
    tmp_path: Path, command: str
) -> None:
    env = process_env(tmp_path, AWS_ENDPOINT_URL="notaurl", LOG_LEVEL="DEBUG")
    result, _ = run_process(tmp_path, COMMANDS[command], env)
    assert_one_line_error(result, 2, "AWS_ENDPOINT_URL", "'notaurl'")
    assert "Traceback" not in result.out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_credentials_exits_2_at_start_naming_the_credential_chain(
    tmp_path: Path, command: str
) -> None:
    env = no_credentials_env(tmp_path, LOG_LEVEL="DEBUG")
    result, seconds = run_process(tmp_path, COMMANDS[command], env)
    line = assert_one_line_error(result, 2, NO_CREDENTIALS)
    assert "credentials" in line
    assert "Traceback" not in result.out
    assert seconds < 10, f"{command} took {seconds:.1f} s to find no credentials"


def test_partial_credentials_name_the_missing_variable(tmp_path: Path) -> None:
    env = no_credentials_env(tmp_path, AWS_ACCESS_KEY_ID="AKIAEXAMPLE")
    result, _ = run_process(tmp_path, ["init"], env)
    assert_one_line_error(result, 2, "AWS_SECRET_ACCESS_KEY")


def test_an_unknown_profile_is_named(tmp_path: Path) -> None:
    env = no_credentials_env(tmp_path, AWS_PROFILE="no-such-profile")
    result, _ = run_process(tmp_path, ["consume"], env)
    assert_one_line_error(result, 2, "AWS_PROFILE", "no-such-profile")


def test_the_memory_backend_runs_without_credentials(tmp_path: Path) -> None:
    env = no_credentials_env(tmp_path, TRACKSTORE_BACKEND="memory")
    result, _ = run_process(tmp_path, ["init"], env)
    assert result.code == 0, result
    assert result.err == ""


# -- from test_cli.py ------------------------------------------------------------


def test_bad_configuration_exits_2_in_a_real_process(tmp_path: Path) -> None:
    done = subprocess.run(
        [*TRACKSTORE, "init"],
        cwd=tmp_path,
        env=process_env(tmp_path, KINESIS_BATCH_SIZE="abc"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = assert_one_line_error(Result(done.returncode, done.stdout, done.stderr), 2)
    assert "KINESIS_BATCH_SIZE" in line
    assert "abc" in line


def test_serve_logs_the_address_it_listens_on_once_it_answers(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen(
            [*TRACKSTORE, "serve", "--port", "0"],  # 0: only the log line tells the port
            cwd=tmp_path,
            env=process_env(tmp_path, TRACKSTORE_BACKEND="memory"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        lines: list[dict[str, object]] = []
        while not lines:
            assert serve.poll() is None, f"serve exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"no 'listening on' line: {log.read_text()}"
            lines = [
                line
                for line in map(json.loads, log.read_text().splitlines())
                if str(line["message"]).startswith("listening on ")
            ]
            time.sleep(0.05)
        (line,) = lines
        assert line["level"] == "INFO"
        url = str(line["message"]).removeprefix("listening on ")
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), url
        assert not url.endswith(":0")
        # Logged once it answers, so a person (or a script) can use the address right away.
        assert httpx.get(f"{url}/health/live", timeout=5).status_code == 200
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=15)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()


def test_serving_on_a_busy_port_fails_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*TRACKSTORE, "serve", "--port", str(port)],
            cwd=tmp_path,
            env=process_env(tmp_path, TRACKSTORE_BACKEND="memory"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("trackstore: error: ")
    assert str(port) in lines[0]


def test_demo_serves_a_moving_fleet_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [*TRACKSTORE, "demo", "--port", str(port)],
            cwd=tmp_path,
            env=process_env(tmp_path),
            stdout=out,
            stderr=subprocess.PIPE,
        )
    try:
        url = f"http://127.0.0.1:{port}/devices"
        deadline = time.monotonic() + 15
        first: dict[str, datetime] = {}
        while not first:
            assert demo.poll() is None, f"demo exited with {demo.returncode}: {log.read_text()}"
            assert time.monotonic() < deadline, "the demo listed no devices within 15 s"
            try:
                response = httpx.get(url, timeout=2)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            assert response.status_code == 200, response.text
            first = _last_seen(response.json()["devices"])
            if not first:
                time.sleep(0.2)

        time.sleep(2.5)
        response = httpx.get(url, timeout=5)
        assert response.status_code == 200
        devices = response.json()["devices"]
        second = _last_seen(devices)
        assert len(second) == 50  # the documented default fleet
        assert set(first) <= set(second)
        for device_id, seen in first.items():
            assert second[device_id] > seen, f"{device_id} did not move on"
        assert {device["status"] for device in devices} == {"active"}

        started = time.monotonic()
        demo.send_signal(signal.SIGTERM)
        try:
            code = demo.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("the demo did not stop within 10 s of SIGTERM")
        assert code == 0, f"exit code {code} after {time.monotonic() - started:.1f} s"
        assert demo.stderr is not None
        assert b"Traceback" not in demo.stderr.read()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        if demo.stderr is not None:
            demo.stderr.close()


def _last_seen(devices: list[dict[str, object]]) -> dict[str, datetime]:
    seen: dict[str, datetime] = {}
    for device in devices:
        assert isinstance(device["lastSeen"], str), device
        seen[str(device["deviceId"])] = datetime.fromisoformat(device["lastSeen"])
    return seen
