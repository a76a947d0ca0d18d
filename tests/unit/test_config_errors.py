"""AWS settings that cannot work are found when a command starts, not at its first AWS call: a bad
endpoint URL, a bad region, no credentials. Each exits 2 with one line naming the variable (or the
credential chain) and no traceback, at any log level; the memory backend needs none of them.

The commands stop on the check, before any AWS call, so nothing here reaches the network.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.unit import test_cli
from tests.unit.test_cli import TRACKSTORE, Result, Run, assert_one_line_error, process_env
from trackstore import aws
from trackstore.aws import NO_CREDENTIALS, check_aws_configuration, check_credentials
from trackstore.errors import INVALID, Error

# The consumer's default metrics port is the host's: see tests/conftest.py.
USES_CONSUMER_METRICS_PORT = True

run = test_cli.run  # the fixture: `trackstore` in-process, from an empty directory

# simulate needs its flags to get as far as the configuration.
COMMANDS = {
    "serve": ["serve", "--port", "0"],
    "consume": ["consume", "--metrics-port", "0"],
    "init": ["init"],
    "simulate": ["simulate", "--devices", "2", "--rate", "2", "--duration", "1"],
}
BAD_SETTINGS = [
    ("AWS_ENDPOINT_URL", "notaurl"),
    ("AWS_ENDPOINT_URL", "localhost:4566"),
    ("AWS_ENDPOINT_URL_KINESIS", "ftp://127.0.0.1:4566"),
    ("AWS_ENDPOINT_URL_KINESIS", "http://127.0.0.1:4566 "),
    ("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:99999"),
    ("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:port"),
    ("AWS_REGION", "bad region!"),
    ("AWS_REGION", "EU-WEST-1"),
    ("AWS_DEFAULT_REGION", "eu_west_1"),
]


def run_process(tmp_path: Path, argv: list[str], env: dict[str, str]) -> tuple[Result, float]:
    started = time.monotonic()
    done = subprocess.run(
        [*TRACKSTORE, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )
    return Result(done.returncode, done.stdout, done.stderr), time.monotonic() - started


def no_credentials_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A machine with no AWS credentials anywhere: no keys, an empty home, no config files and
    no instance metadata service."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        name: value
        for name, value in process_env(tmp_path).items()
        if name not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    }
    return {
        **env,
        "HOME": str(home),
        "AWS_CONFIG_FILE": str(tmp_path / "no-such-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-such-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        **extra,
    }


# -- each bad setting, each command -------------------------------------------------------------

# Were a check to let a bad setting through, the command would find this closed local port rather
# than AWS itself.
NOWHERE = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}


@pytest.mark.parametrize(("variable", "value"), BAD_SETTINGS)
@pytest.mark.parametrize("command", ["consume", "init", "simulate"])
def test_a_bad_aws_setting_exits_2_with_one_line_naming_it(
    run: Run, command: str, variable: str, value: str
) -> None:
    # (`run` leaves AWS_REGION unset: AWS_DEFAULT_REGION counts only then.)
    result = run(*COMMANDS[command], LOG_LEVEL="DEBUG", **{**NOWHERE, variable: value})
    assert_one_line_error(result, 2, variable, repr(value))
    assert result.out == "", result.out  # not a log line either, not even at DEBUG


def test_the_endpoint_in_dotenv_is_checked_like_the_variable(run: Run, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("AWS_ENDPOINT_URL=notaurl\n")
    assert_one_line_error(run("init"), 2, "AWS_ENDPOINT_URL")


# -- the memory backend needs no AWS settings -----------------------------------------------------


def test_the_memory_backend_ignores_aws_settings(run: Run) -> None:
    result = run(
        "init", TRACKSTORE_BACKEND="memory", AWS_ENDPOINT_URL="notaurl", AWS_REGION="bad region!"
    )
    assert result.code == 0, result
    assert "nothing to create" in result.out


def test_consume_on_the_memory_backend_still_says_why_it_cannot_run(run: Run) -> None:
    result = run("consume", TRACKSTORE_BACKEND="memory", AWS_REGION="bad region!")
    assert_one_line_error(result, 2, "TRACKSTORE_BACKEND=memory")


# -- the rules themselves -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:5005",
        "http://localhost:4566/",
        "http://localstack:4566",
        "https://kinesis.eu-west-1.amazonaws.com",
        "https://dynamodb.us-gov-west-1.amazonaws.com:443",
        "http://[::1]:4566",
    ],
)
def test_endpoints_that_botocore_and_emulators_use_are_accepted(url: str) -> None:
    for variable in aws.ENDPOINT_VARIABLES:
        check_aws_configuration({variable: url}, "us-east-1")


@pytest.mark.parametrize(
    "region", ["us-east-1", "eu-west-1", "us-gov-west-1", "cn-north-1", "ap-southeast-5", "local"]
)
def test_real_regions_are_accepted(region: str) -> None:
    check_aws_configuration({"AWS_REGION": region}, region)


def test_an_empty_endpoint_variable_means_unset() -> None:
    check_aws_configuration({"AWS_ENDPOINT_URL": ""}, "us-east-1")


class _SlowSession:
    """A credential chain stuck on an instance metadata service that never answers."""

    async def get_credentials(self) -> Any:
        await asyncio.sleep(60)


async def test_a_credential_lookup_that_hangs_gives_up_quickly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(aws, "aws_session", _SlowSession)
    started = time.monotonic()
    with pytest.raises(Error) as raised:
        await check_credentials(timeout_s=0.2)
    assert time.monotonic() - started < 2
    assert raised.value.code is INVALID
    assert raised.value.message.startswith(NO_CREDENTIALS)


def test_credentials_found_by_the_check_need_no_network() -> None:
    # The test session's dummy keys: the check passes on environment credentials alone.
    assert os.environ.get("AWS_ACCESS_KEY_ID")
    asyncio.run(check_credentials(timeout_s=1))
