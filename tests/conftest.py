"""Session-wide test setup: dummy AWS credentials, so no test can reach a real account; the
local emulators the integration and contract suites share; and the order and grouping of the
tests for pytest-xdist.

The README's `.venv/bin/pytest` runs the tests on several processes (`-n auto --dist
loadgroup` in pyproject.toml): one per core for the unit tests alone, which keep the cores busy,
and two per core otherwise, since the integration tests spend much of their time waiting on
emulators and subprocesses. Each process is a pytest session of its own: it starts the
emulators it needs once (each on a free port; they start in well under a second) and shares
them among its tests, which use tables and streams of their own. Tests that share a fixture
wider than one test (a module's server, the image's venv) are kept on one process, so it is
built once; the others go one at a time to whichever process is free, the slowest directories
first. `-n 0` runs them all in this process (e.g. with `-s`, to see what tests print).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.aws_emulators import (
    DUMMY_CREDENTIALS,
    EMULATORS_DIR,
    docker_available,
    dynalite,
    ensure_node_modules,
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


def install_emulators_once() -> None:
    """npm installs the emulators on first use; test processes starting together take turns,
    so that the first installs them and the others find them installed."""
    digest = hashlib.sha256(str(EMULATORS_DIR.resolve()).encode()).hexdigest()[:16]
    lock = Path(tempfile.gettempdir()) / f"trackstore-emulators-{digest}.lock"
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            ensure_node_modules()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def dynalite_endpoint() -> Iterator[str]:
    install_emulators_once()
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
    install_emulators_once()
    with kinesis_local() as endpoint:
        yield endpoint


# -- processes, order and grouping for pytest-xdist ------------------------------------------------

UNIT_TESTS = Path(__file__).parent / "unit"


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: a process per core for the unit tests alone, two per core (at most 8) when
    anything else runs too."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    paths = [Path(arg.split("::", 1)[0]).resolve() for arg in config.args]
    only_unit = bool(paths) and all(path.is_relative_to(UNIT_TESTS) for path in paths)
    return cores if only_unit else min(2 * cores, 8)


# Session-wide fixtures every process may start for itself: cheap, and the tests using them
# keep apart by naming their own tables and streams.
PER_PROCESS_FIXTURES = frozenset({"moto_endpoint", "dynalite_endpoint", "kinesis_local_endpoint"})
# Slowest first, so that no long test starts last while the other processes are idle.
RUN_ORDER = ("integration", "deploy", "contract", "unit")


def _shared_fixture_group(item: pytest.Item) -> str | None:
    """The xdist group of a test that uses a fixture wider than one test: its module's, or the
    session fixture's; None when it can run on any process."""
    module = getattr(item, "module", None)
    if getattr(module, "USES_CONSUMER_METRICS_PORT", False):
        # It holds, or needs free, or may take (a `consume` that stops after it listens) the
        # consumer's default metrics port: a host-wide resource, so these modules run on one
        # process, one test after another.
        return "default-consumer-metrics-port"
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    # The project's own fixtures only: a plugin's session fixtures (pytest-asyncio's event loop
    # policy, tmp_path_factory) are every process's anyway.
    scopes = {
        name: definitions[-1].scope
        for name, definitions in info.name2fixturedefs.items()
        if definitions and definitions[-1].baseid.startswith("tests")
    }
    if any(scope in ("package", "module", "class") for scope in scopes.values()):
        return item.nodeid.split("::", 1)[0]
    shared = sorted(
        name
        for name, scope in scopes.items()
        if scope == "session" and name not in PER_PROCESS_FIXTURES
    )
    return f"session-{shared[0]}" if shared else None


def _run_order(item: pytest.Item) -> int:
    parts = item.nodeid.split("/")
    directory = parts[1] if len(parts) > 2 and parts[0] == "tests" else ""
    return RUN_ORDER.index(directory) if directory in RUN_ORDER else len(RUN_ORDER)


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Loud, not flaky, if xdist stops honouring the groups (it did with pytest 9.2)."""
    if not getattr(session.config.option, "loadgroup", False):  # set on xdist's processes only
        return
    for item in session.items:
        if item.get_closest_marker("xdist_group") and "@" not in item.nodeid:
            raise pytest.UsageError(
                f"pytest-xdist ignored the xdist_group of {item.nodeid}: tests that share a "
                "port or a module's fixtures would run at once (pytest-dev/pytest-xdist#1386)"
            )


# First: xdist's own hook on each process reads the xdist_group marks to name the groups.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_run_order)  # stable: each module's tests stay together, in their order
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        group = _shared_fixture_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
