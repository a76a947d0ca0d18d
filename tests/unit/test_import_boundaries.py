"""Which package may import which (docs/architecture.md): the adapters and the web app know
neither the composition root, nor the commands, nor one another; only the commands know the
container. (The core's own rule is tested in test_service.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import trackstore

PACKAGE = Path(trackstore.__file__).parent
ADAPTERS = ("memory", "dynamodb", "kinesis", "web")


def modules() -> dict[str, Path]:
    """Every module of trackstore by dotted name."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(source: str, module: str, is_package: bool = False) -> set[str]:
    """The trackstore modules `module`'s source imports, anywhere in it, relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            # `from trackstore import web` imports trackstore.web
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {name for name in names if name.partition(".")[0] == "trackstore"}
    return found


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


def imports_of(module: str) -> set[str]:
    path = modules()[module]
    return imports(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("import json\nimport msgspec", "trackstore.web.app", set()),
        (
            "from trackstore.domain import Location",
            "trackstore.web.app",
            {"trackstore.domain", "trackstore.domain.Location"},
        ),
        (
            "from trackstore import container",
            "trackstore.web.app",
            {"trackstore", "trackstore.container"},
        ),
        (
            "from ..memory import MemoryStore",
            "trackstore.web.app",
            {"trackstore.memory", "trackstore.memory.MemoryStore"},
        ),
        ("from . import app", "trackstore.web", {"trackstore.web", "trackstore.web.app"}),
        (
            "def f():\n    import trackstore.kinesis.client",
            "trackstore.dynamodb.tables",
            {"trackstore.kinesis.client"},
        ),
    ],
)
def test_the_scanner_finds_every_kind_of_import(
    source: str, module: str, expected: set[str]
) -> None:
    assert imports(source, module, is_package=module == "trackstore.web") == expected


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_an_adapter_imports_neither_the_wiring_nor_another_adapter(adapter: str) -> None:
    forbidden = [
        "trackstore.container",
        "trackstore.cli",
        *(f"trackstore.{other}" for other in ADAPTERS if other != adapter),
    ]
    offences = {
        module: sorted(
            name for name in imports_of(module) if any(within(name, f) for f in forbidden)
        )
        for module in modules()
        if within(module, f"trackstore.{adapter}")
    }

    assert {module: names for module, names in offences.items() if names} == {}


def test_only_the_commands_and_the_composition_root_know_the_container_and_the_commands() -> None:
    offences = {
        module: sorted(
            name
            for name in imports_of(module)
            if within(name, "trackstore.container") or within(name, "trackstore.cli")
        )
        for module in modules()
        if not within(module, "trackstore.cli") and module != "trackstore.container"
    }

    assert {module: names for module, names in offences.items() if names} == {}


def test_the_root_package_holds_no_command() -> None:
    commands = {"serve", "consume", "demo", "init", "simulate"}
    in_cli = {path.stem for path in (PACKAGE / "cli").glob("*.py")}
    in_root = {path.stem for path in PACKAGE.glob("*.py")}

    assert commands <= in_cli
    assert not commands & in_root
