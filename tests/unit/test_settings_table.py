"""Every setting is declared once (config.SETTINGS), and the README's configuration table says
the same: the same variables, the same defaults."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from trackstore.config import SETTINGS, Settings, export_dotenv
from trackstore.errors import Error

README = Path(__file__).resolve().parents[2] / "README.md"
# Read by botocore or OpenTelemetry themselves, documented beside ours.
NOT_OURS = {"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KINESIS", "AWS_ENDPOINT_URL_DYNAMODB", "OTEL_*"}


def readme_table() -> dict[str, str]:
    """Variable -> default, from the rows of the README's "Configuration" table."""
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        default = cells[1].strip("`")
        for variable in re.findall(r"`([A-Z_*]+)`", cells[0]):
            rows[variable] = default
    return rows


def test_the_readme_lists_every_setting_with_its_default() -> None:
    table = readme_table()

    assert {s.variable: s.default for s in SETTINGS} == {
        variable: default for variable, default in table.items() if variable not in NOT_OURS
    }


def test_every_settings_field_is_declared_once() -> None:
    fields = [s.field for s in SETTINGS]

    assert len(fields) == len(set(fields))
    assert set(fields) == set(Settings.__struct_fields__)


def test_seconds_are_numbers_not_only_integers() -> None:
    settings = Settings.from_env(
        {"LEASE_FAILOVER_SECONDS": "2.5", "CONSUMER_STALL_SECONDS": "12.5"}, dotenv=None
    )

    assert (settings.lease_failover_seconds, settings.consumer_stall_seconds) == (2.5, 12.5)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LEASE_FAILOVER_SECONDS", "nan"),
        ("LEASE_FAILOVER_SECONDS", "1"),
        ("KINESIS_BATCH_SIZE", "1.5"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(Error) as raised:
        Settings.from_env({variable: value}, dotenv=None)

    assert variable in raised.value.message


def test_a_fallback_variable_is_read_when_the_first_is_unset() -> None:
    assert Settings.from_env({"AWS_DEFAULT_REGION": "eu-west-1"}, dotenv=None).aws_region == (
        "eu-west-1"
    )


def test_dotenv_variables_reach_libraries_that_read_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("AWS_ENDPOINT_URL=http://127.0.0.1:4566\nOTEL_SERVICE_NAME=from-dotenv\n")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-environment")

    export_dotenv(dotenv)

    assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:4566"
    assert os.environ["OTEL_SERVICE_NAME"] == "from-environment"  # the environment wins
