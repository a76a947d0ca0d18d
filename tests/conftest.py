"""Session-wide test setup: dummy AWS credentials, so no test can reach a real account, and the
local emulators the integration and contract suites share."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.aws_emulators import (
    DUMMY_CREDENTIALS,
    docker_available,
    dynalite,
    kinesis_local,
    localstack,
    moto_server,
)

for _name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE"):
    os.environ.pop(_name, None)
os.environ.update(DUMMY_CREDENTIALS)
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def dynalite_endpoint() -> Iterator[str]:
    with dynalite() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def localstack_endpoint() -> Iterator[str]:
    """LocalStack where a Docker engine exists; the tests using it skip where none does."""
    if not docker_available():
        pytest.skip("no Docker engine here: the LocalStack variant runs where one exists")
    with localstack() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def kinesis_local_endpoint() -> Iterator[str]:
    with kinesis_local() as endpoint:
        yield endpoint
