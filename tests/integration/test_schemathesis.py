"""schemathesis against the OpenAPI document of `trackstore serve` on the memory backend.

Two servers run as a user runs them, each seeded with 5 devices of 50 points: one open, one with
TRACKSTORE_API_KEYS set (every request then carries the key). For every operation the document
lists, schemathesis generates requests that fit the schema and requests that do not, and each
answer must be: no 5xx, a documented status code, a documented content type, and a body and
headers that match what the document declares. Operations on one device also run on the seeded
devices, so 200 answers with real locations are checked, not only 400s and 404s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.errors import FailureGroup

from tests.aws_emulators import free_port

pytestmark = pytest.mark.integration

TRACKSTORE = [sys.executable, "-m", "trackstore.cli"]
API_KEY = "schemathesis-key-0123456789abcdef"
SEEDED_DEVICES = [f"bus-{n:04d}" for n in range(5)]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Every operation the API has: one missing from the document fails the test as well.
OPERATIONS = {
    "getServiceInfo",
    "getHealth",
    "getLiveness",
    "getLocationHistory",
    "getFleetWindow",
    "getLatestLocation",
    "listDevices",
    "getDevice",
    "registerDevice",
}
# Device ids the document allows (it says "any string") and the contract does not: a slash.
# schemathesis leaves slashes out of the path parameters it generates, so they are sent here.
SLASHED_DEVICE_IDS = ["x/y", "bus-0001/latest", "bus-0001/register"]
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
MAX_EXAMPLES = 25  # per operation and mode, generated and seeded-device requests together


@dataclass(frozen=True)
class Server:
    url: str
    headers: dict[str, str]  # what every request carries: the API key when one is needed
    log: Path


def _serve(workdir: Path, extra_env: dict[str, str]) -> Iterator[Server]:
    port = free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("TRACKSTORE_API_KEYS", "METRICS_PUBLIC") and not name.startswith("OTEL_")
    }
    env.update({"TRACKSTORE_BACKEND": "memory", "OTEL_TRACES_EXPORTER": "none", **extra_env})
    log = workdir / "serve.log"
    # In a directory of its own, so no developer's .env reaches it.
    process = subprocess.Popen(
        [
            *TRACKSTORE,
            "serve",
            "--port",
            str(port),
            "--seed-devices",
            str(len(SEEDED_DEVICES)),
            "--seed-points",
            "50",
        ],
        cwd=workdir,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"serve exited:\n{log.read_text()}"
            try:
                if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"serve did not come up:\n{log.read_text()}"
            time.sleep(0.1)
        headers = (
            {"Authorization": f"Bearer {API_KEY}"} if "TRACKSTORE_API_KEYS" in extra_env else {}
        )
        yield Server(url=url, headers=headers, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(tmp_path_factory.mktemp("open"), {})


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(tmp_path_factory.mktemp("keyed"), {"TRACKSTORE_API_KEYS": API_KEY})


@pytest.fixture(scope="module", params=["open", "with-api-key"])
def server(request: pytest.FixtureRequest) -> Server:
    name = "open_server" if request.param == "open" else "keyed_server"
    server: Server = request.getfixturevalue(name)
    return server


def _load(server: Server) -> Any:
    # A copy: schemathesis adds its User-Agent to the headers it is given.
    return schemathesis.openapi.from_url(
        f"{server.url}/schema/openapi.json", headers=dict(server.headers), timeout=10
    )


@pytest.fixture(scope="module")
def schema(server: Server) -> Any:
    return _load(server)


def _cases(operation: Any, mode: GenerationMode, headers: dict[str, str]) -> Any:
    """schemathesis's cases for the operation, and for the seeded devices when it takes one."""
    generated = operation.as_strategy(generation_mode=mode, headers=headers or None)
    if "device_id" not in operation.path_parameters:
        return generated
    seeded = st.sampled_from(SEEDED_DEVICES).flatmap(
        lambda device_id: operation.as_strategy(
            generation_mode=mode,
            headers=headers or None,
            path_parameters={"device_id": device_id},
        )
    )
    return st.one_of(generated, seeded)


def _failure(
    operation: Any, mode: GenerationMode, server: Server, *, max_examples: int = MAX_EXAMPLES
) -> str | None:
    """Runs the operation's cases against the server; the report of the (shrunk) failure, if
    any."""

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(case=_cases(operation, mode, server.headers))
    def run(case: Any) -> None:
        case.call_and_validate(base_url=server.url, headers=server.headers, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:  # nothing in the operation's schema can be negated: no such requests
        return None
    except (Exception, FailureGroup) as failure:  # check failures, each with a curl command
        return f"{operation.label} ({mode.value}): {failure}"
    return None


def test_the_document_lists_every_operation(schema: Any) -> None:
    listed = {
        result.ok().definition.raw.get("operationId") for result in schema.get_all_operations()
    }
    assert listed == OPERATIONS


@pytest.mark.parametrize("mode", MODES, ids=[mode.value for mode in MODES])
def test_every_answer_matches_the_document(
    schema: Any, server: Server, mode: GenerationMode
) -> None:
    failures = []
    for result in schema.get_all_operations():
        failure = _failure(result.ok(), mode, server)
        if failure is not None:
            failures.append(failure)

    assert not failures, "\n\n".join([*failures, f"server log: {server.log}"])


def test_device_ids_with_a_slash_get_documented_answers(schema: Any, server: Server) -> None:
    """A device id with a slash, percent-encoded as a client sends it (%2F), is a malformed
    parameter: it must get a documented answer of its own operation, not reach another route."""
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if "device_id" not in operation.path_parameters:
            continue
        for device_id in SLASHED_DEVICE_IDS:
            path_parameters = {"device_id": quote(device_id, safe="")}
            case = operation.Case(path_parameters=path_parameters, headers=server.headers)
            try:
                case.call_and_validate(base_url=server.url, headers=server.headers, checks=CHECKS)
            except (Exception, FailureGroup) as failure:
                failures.append(f"{operation.label} with device id {device_id!r}: {failure}")

    assert not failures, "\n\n".join(failures)


OPEN_OPERATIONS = {"getServiceInfo", "getHealth", "getLiveness"}  # open for load balancers


def test_without_the_key_every_answer_matches_the_document_too(keyed_server: Server) -> None:
    """With TRACKSTORE_API_KEYS set, a caller without a key gets 401 problem documents from
    every route but the open ones; those answers must be in the document as well."""
    unkeyed = Server(url=keyed_server.url, headers={}, log=keyed_server.log)
    failures = []
    for result in _load(keyed_server).get_all_operations():
        operation = result.ok()
        failure = _failure(operation, GenerationMode.POSITIVE, unkeyed, max_examples=5)
        if failure is not None:
            failures.append(failure)
        if operation.definition.raw.get("operationId") not in OPEN_OPERATIONS:
            names = [parameter.name for parameter in operation.path_parameters]
            path_parameters = dict.fromkeys(names, SEEDED_DEVICES[0])
            response = operation.Case(path_parameters=path_parameters).call(base_url=unkeyed.url)
            assert response.status_code == 401, operation.label

    assert not failures, "\n\n".join([*failures, f"server log: {keyed_server.log}"])


def test_stateful_sequences_follow_the_documents_links(schema: Any, server: Server) -> None:
    """Sequences of calls along the document's links: pages followed through nextToken with the
    query unchanged, devices listed then read. Every answer must match the document, and a
    followed page must be answered. Registration is left out: a sequence replayed by hypothesis
    would find its device registered already (409), which it takes for a flaky strategy."""
    followed: list[int] = []
    reads = schema.exclude(method="POST")

    class Machine(reads.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": server.url, "headers": dict(server.headers)}

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            if (case.query or {}).get("next_token"):
                followed.append(response.status_code)

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS)

    Machine.run(
        settings=settings(
            # Generation only: a replay (shrinking) meets a server whose state the first run
            # changed (a device registered), which hypothesis takes for a flaky strategy.
            phases=[Phase.generate],
            max_examples=60,
            stateful_step_count=6,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            report_multiple_bugs=False,
        )
    )

    assert followed, "no sequence followed a nextToken"
    # Answered pages among them; the rest are 400s and 401s of negative cases (a generated
    # parameter or key that is invalid), never a 5xx: CHECKS would have failed the sequence.
    assert 200 in followed, followed
