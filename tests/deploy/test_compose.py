"""deploy/compose.yaml cannot run here (no Docker engine): check what can be checked without one.
Every TrackStore container is the repository's image with the command overridden, pointed at
LocalStack with dummy credentials, and started in the right order."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.dockerfile import REPO_ROOT
from trackstore.cli import build_parser
from trackstore.config import Settings

COMPOSE = REPO_ROOT / "deploy" / "compose.yaml"
TRACKSTORE_SERVICES = ("init", "serve", "consume", "simulate")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    found: dict[str, Any] = document["services"]
    return found


def test_every_trackstore_service_runs_the_repository_image(services: dict[str, Any]) -> None:
    assert set(services) == {"localstack", *TRACKSTORE_SERVICES}
    for name in TRACKSTORE_SERVICES:
        service = services[name]
        assert service["image"] == "trackstore:local"
        context = (COMPOSE.parent / service["build"]["context"]).resolve()
        assert context == REPO_ROOT
        assert (context / service["build"]["dockerfile"]).is_file()
        assert "entrypoint" not in service  # the image's ENTRYPOINT ["trackstore"] stays


def test_the_commands_are_valid_trackstore_commands(services: dict[str, Any]) -> None:
    parser = build_parser()
    commands = {name: parser.parse_args(services[name]["command"]) for name in TRACKSTORE_SERVICES}
    assert {name: args.command for name, args in commands.items()} == {
        name: name for name in TRACKSTORE_SERVICES
    }
    assert commands["serve"].host == "0.0.0.0"


def test_everything_talks_to_localstack_with_dummy_credentials(services: dict[str, Any]) -> None:
    for name in TRACKSTORE_SERVICES:
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        assert env["AWS_ENDPOINT_URL"] == "http://localstack:4566"
        assert env["AWS_ACCESS_KEY_ID"] == "test"
        assert env["AWS_SECRET_ACCESS_KEY"] == "test"
        assert Settings.from_env(env, dotenv=None).backend.value == "aws"


def test_the_start_order(services: dict[str, Any]) -> None:
    assert services["init"]["depends_on"] == {"localstack": {"condition": "service_healthy"}}
    for name in ("serve", "consume", "simulate"):
        assert services[name]["depends_on"] == {
            "init": {"condition": "service_completed_successfully"}
        }
    # The image's HEALTHCHECK probes the API: only `serve` keeps it.
    for name in ("init", "consume", "simulate"):
        assert services[name]["healthcheck"] == {"disable": True}
    assert "healthcheck" not in services["serve"]
