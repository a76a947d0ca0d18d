"""`trackstore` as a user runs it: help, configuration errors, .env handling, exit codes, and the
demo as a real process.

Most cases call `trackstore.cli.main(argv)` in-process (fast), from an empty working directory with
the configuration variables cleared; the cases that are about the process itself (a busy port, the
demo, signals) start the installed console script with a controlled environment. No network beyond
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import pytest

from tests.aws_emulators import DUMMY_CREDENTIALS, port_taken
from trackstore import __version__, cli
from trackstore.cli.consume import consume
from trackstore.cli.process import listen
from trackstore.config import DEFAULT_CONSUMER_METRICS_PORT, Backend, Settings
from trackstore.container import build_container

# The consumer's default metrics port is the host's: see tests/conftest.py.
USES_CONSUMER_METRICS_PORT = True

CONFIG_VARIABLES = (
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "KINESIS_STREAM_NAME",
    "DEVICE_TABLE_NAME",
    "LOCATION_TABLE_NAME",
    "LEASE_TABLE_NAME",
    "KINESIS_BATCH_SIZE",
    "LOCATION_TTL_DAYS",
    "LOCATION_DATE_SHARDS",
    "TRACKSTORE_BACKEND",
    "LOG_LEVEL",
    "CONSUMER_METRICS_PORT",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_KINESIS",
    "AWS_ENDPOINT_URL_DYNAMODB",
)
QUIETED_LOGGERS = ("uvicorn.access", "botocore", "aiobotocore")
_SCRIPT = Path(sys.executable).with_name("trackstore")
TRACKSTORE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "trackstore.cli"]


@dataclass(frozen=True)
class Result:
    code: int | str | None
    out: str
    err: str


class Run(Protocol):
    def __call__(self, *argv: str, **env: str) -> Result: ...


@pytest.fixture
def run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Iterator[Run]:
    """Runs `trackstore ARGV` in-process from an empty directory with only `env` configured."""
    monkeypatch.chdir(tmp_path)
    for name in CONFIG_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # main() configures logging for the process: put the test process's logging back after.
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in QUIETED_LOGGERS}

    def invoke(*argv: str, **env: str) -> Result:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        try:
            code: int | str | None = cli.main(list(argv))
        except SystemExit as exit_:  # argparse: --help, --version, usage errors
            code = exit_.code
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    # main() also exports a .env file into os.environ, as the process it normally is should:
    # here that would outlive the test and configure every later one in this process.
    saved_environ = dict(os.environ)
    yield invoke
    os.environ.clear()
    os.environ.update(saved_environ)
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)


def process_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment for a `trackstore` process: no configuration from this machine."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        **DUMMY_CREDENTIALS,
        "AWS_EC2_METADATA_DISABLED": "true",
        **extra,
    }


def assert_one_line_error(result: Result, code: int, *mentions: str) -> str:
    """Exit `code` with exactly one `trackstore: error:` line on stderr and no traceback."""
    assert result.code == code, result
    assert "Traceback" not in result.err + result.out
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("trackstore: error: "), lines[0]
    for mention in mentions:
        assert mention in lines[0], lines[0]
    return lines[0]


# -- help -----------------------------------------------------------------------------------------


def test_help_lists_every_command(run: Run) -> None:
    result = run("--help")
    assert result.code == 0
    assert result.out.startswith("usage: trackstore")
    for command in ("serve", "consume", "demo", "init", "simulate", "--version"):
        assert command in result.out


def test_version_prints_the_package_version(run: Run) -> None:
    result = run("--version")
    assert result.code == 0
    assert result.out.strip() == f"trackstore {__version__}"


@pytest.mark.parametrize(
    ("command", "mentions"),
    [
        ("serve", ["--host", "--port", "8000"]),
        ("consume", ["SIGTERM"]),
        ("demo", ["--host", "--port", "--devices", "--rate"]),
        ("init", ["--shards"]),
        ("simulate", ["--devices", "--rate", "--duration"]),
    ],
)
def test_command_help_describes_its_flags(run: Run, command: str, mentions: list[str]) -> None:
    result = run(command, "--help")
    assert result.code == 0
    assert result.out.startswith(f"usage: trackstore {command}")
    for mention in mentions:
        assert mention in result.out
    assert result.err == ""


# -- usage errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--port", "70000"],
        ["serve", "--port", "-1"],
        ["serve", "--port", "http"],
        ["demo", "--devices", "0"],
        ["demo", "--rate", "-5"],
        ["simulate", "--devices", "3"],  # --rate is required
        ["launch"],
        [],
    ],
)
def test_bad_flags_are_usage_errors(run: Run, argv: list[str]) -> None:
    result = run(*argv, TRACKSTORE_BACKEND="memory")
    assert result.code == 2
    assert "usage: trackstore" in result.err
    assert "Traceback" not in result.err
    assert result.out == ""


def test_out_of_range_port_names_the_flag_and_the_range(run: Run) -> None:
    result = run("serve", "--port", "70000", TRACKSTORE_BACKEND="memory")
    assert result.code == 2
    error_line = result.err.strip().splitlines()[-1]
    assert "--port" in error_line
    assert "65535" in error_line


# -- configuration --------------------------------------------------------------------------------


def test_a_shard_is_read_faster_than_it_can_be_written_by_default() -> None:
    # At most 5 GetRecords calls a second per shard, which accepts 1,000 records a second.
    settings = Settings.from_env({}, dotenv=None)
    assert settings.kinesis_batch_size * 5 >= 2 * 1000
    assert settings.kinesis_batch_size == 1000  # the README's default


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KINESIS_BATCH_SIZE", "0"),
        ("KINESIS_BATCH_SIZE", "10001"),
        ("KINESIS_BATCH_SIZE", "abc"),
        ("LOCATION_TTL_DAYS", "0"),
        ("TRACKSTORE_BACKEND", "bogus"),
        ("LOG_LEVEL", "loud"),
    ],
)
@pytest.mark.parametrize("command", ["init", "serve", "consume"])
def test_bad_configuration_exits_2_with_one_line(
    run: Run, command: str, variable: str, value: str
) -> None:
    result = run(command, **{variable: value})
    assert_one_line_error(result, 2, variable)


def test_malformed_dotenv_line_exits_2_naming_file_and_line(run: Run, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "# local settings\nTRACKSTORE_BACKEND=memory\nthis line is no assignment\n"
    )
    result = run("init")
    assert_one_line_error(result, 2, ".env", ":3")


def test_dotenv_in_working_directory_is_read(run: Run, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        '# copied from .env.template\n\nexport TRACKSTORE_BACKEND="memory"\nLOG_LEVEL=warning\n'
    )
    result = run("init")
    assert result.code == 0, result
    assert "memory" in result.out
    assert result.err == ""


def test_dotenv_values_are_validated_like_variables(run: Run, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TRACKSTORE_BACKEND=memory\nKINESIS_BATCH_SIZE=0\n")
    assert_one_line_error(run("init"), 2, "KINESIS_BATCH_SIZE")


def test_environment_variables_override_dotenv(run: Run, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "TRACKSTORE_BACKEND=bogus\nKINESIS_BATCH_SIZE=0\nLOG_LEVEL=loud\n"
    )
    result = run("init", TRACKSTORE_BACKEND="memory", KINESIS_BATCH_SIZE="500", LOG_LEVEL="ERROR")
    assert result.code == 0, result
    assert result.err == ""


def test_environment_wins_over_dotenv_even_when_it_is_wrong(run: Run, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TRACKSTORE_BACKEND=memory\n")
    assert_one_line_error(run("init", TRACKSTORE_BACKEND="bogus"), 2, "TRACKSTORE_BACKEND")


def test_dotenv_outside_the_working_directory_is_ignored(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("TRACKSTORE_BACKEND=bogus\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run("init", TRACKSTORE_BACKEND="memory")
    assert result.code == 0, result


# -- commands on the memory backend ---------------------------------------------------------------


def test_init_with_memory_backend_has_nothing_to_create(run: Run) -> None:
    result = run("init", TRACKSTORE_BACKEND="memory")
    assert result.code == 0, result
    assert "nothing to create" in result.out
    assert result.err == ""


def test_consume_with_memory_backend_exits_2_with_one_line(run: Run) -> None:
    result = run("consume", TRACKSTORE_BACKEND="memory")
    assert_one_line_error(result, 2, "memory")


# -- the consumer's metrics port ------------------------------------------------------------------

# Were a port check to pass by mistake, `consume` would go on to AWS: here it finds nothing.
OFFLINE = {
    **DUMMY_CREDENTIALS,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
}


async def _logged(caplog: pytest.LogCaptureFixture, prefix: str, task: asyncio.Task[None]) -> str:
    deadline = time.monotonic() + 10
    while True:
        for record in caplog.records:
            if record.getMessage().startswith(prefix):
                return record.getMessage()
        assert not task.done(), f"consume ended early: {task.exception()!r}"
        assert time.monotonic() < deadline, f"no {prefix!r} line within 10 s: {caplog.text}"
        await asyncio.sleep(0.05)


async def test_consumer_finding_the_default_port_taken_serves_on_a_free_port_it_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(backend=Backend.MEMORY, kinesis_stream_name="gps-shared-host")
    assert settings.consumer_metrics_port is None  # nothing configured: the default applies
    stop = asyncio.Event()
    with (
        port_taken(DEFAULT_CONSUMER_METRICS_PORT),
        caplog.at_level(logging.INFO, logger="trackstore"),
    ):
        task = asyncio.create_task(consume(build_container(settings), stop, "127.0.0.1", None))
        try:
            line = await _logged(caplog, "metrics and health on http://127.0.0.1:", task)
            url = line.removeprefix("metrics and health on ")
            assert not url.endswith(f":{DEFAULT_CONSUMER_METRICS_PORT}"), line
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:
                assert (await client.get("/health/live")).status_code == 200
                health = await client.get("/health")
                assert "checks" in health.json(), health.text
                metrics = await client.get("/metrics")
                assert metrics.status_code == 200
                assert "trackstore_records_stored_total" in metrics.text
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"port {DEFAULT_CONSUMER_METRICS_PORT} is taken" in m for m in messages), messages
    (start,) = [r for r in caplog.records if r.getMessage() == "consumer starting"]
    assert getattr(start, "stream", None) == "gps-shared-host"


def test_consumer_on_an_explicit_port_that_is_taken_exits_1_with_one_line(run: Run) -> None:
    # Held the way a consumer holds its port between start and serving: a second one must be
    # refused right away, not find out after it has taken leases.
    with listen("127.0.0.1", 0) as held:
        port = held.getsockname()[1]
        by_flag = run("consume", "--metrics-port", str(port), **OFFLINE)
        by_variable = run("consume", CONSUMER_METRICS_PORT=str(port), **OFFLINE)
    for result in (by_flag, by_variable):
        assert_one_line_error(result, 1, f"cannot listen on 127.0.0.1:{port}")


def test_default_port_named_explicitly_is_not_given_up(run: Run) -> None:
    with port_taken(DEFAULT_CONSUMER_METRICS_PORT):
        result = run("consume", CONSUMER_METRICS_PORT=str(DEFAULT_CONSUMER_METRICS_PORT), **OFFLINE)
    assert_one_line_error(result, 1, f":{DEFAULT_CONSUMER_METRICS_PORT}")


# -- the demo as a process ------------------------------------------------------------------------
