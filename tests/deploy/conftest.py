"""The image's Python environment, built the way the Dockerfile builds it, without Docker."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.dockerfile import REPO_ROOT


def _uv() -> str:
    # The dev extra installs uv into the venv next to the interpreter.
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if found is None:
        pytest.fail("uv is needed to build the image's environment (pip install -e '.[dev]')")
    return found


@pytest.fixture(scope="session")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with requirements.lock (hash-checked, no dependency resolution) and the project's
    wheel, nothing else: what /opt/trackstore holds in the image. Returns its bin directory.

    uv rather than pip for speed (seconds, from its cache); the Dockerfile uses pip with the same
    flags. A runtime import missing from the lock fails here, not in production.
    """
    uv = _uv()
    root = tmp_path_factory.mktemp("image")
    venv = root / "venv"
    python = venv / "bin" / "python"

    def run(*args: str) -> None:
        done = subprocess.run(
            [uv, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
        )
        if done.returncode != 0:
            pytest.fail(f"uv {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")

    run("venv", "--quiet", "--python", sys.executable, str(venv))
    run(
        "pip", "install", "--quiet", "--python", str(python),
        "--require-hashes", "--no-deps", "-r", "requirements.lock",
    )  # fmt: skip
    run("build", "--quiet", "--wheel", "--out-dir", str(root / "wheels"), str(REPO_ROOT))
    wheels = sorted((root / "wheels").glob("trackstore-*.whl"))
    assert len(wheels) == 1, wheels
    run("pip", "install", "--quiet", "--python", str(python), "--no-deps", str(wheels[0]))
    run("pip", "check", "--quiet", "--python", str(python))
    return venv / "bin"
