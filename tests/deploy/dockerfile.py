"""A small reader for the repo's Dockerfile: enough to check what the image runs."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def last(self, instruction: str) -> str | None:
        found = [args for name, args in self.instructions if name == instruction]
        return found[-1] if found else None

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]

    def exec_form(self, instruction: str) -> list[str]:
        """The JSON array of the stage's last ENTRYPOINT/CMD; ValueError when absent."""
        args = self.last(instruction)
        if args is None:
            raise ValueError(f"no {instruction} in the stage")
        value = json.loads(args)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{instruction} is not in exec form: {args}")
        return value

    def env(self) -> dict[str, str]:
        """ENV key=value pairs (the `ENV a=1 b=2` form)."""
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for pair in shlex.split(args):
                key, sep, value = pair.partition("=")
                if not sep:
                    raise ValueError(f"ENV without '=': {args}")
                values[key] = value
        return values


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; comments dropped, continuation lines joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        line = pending + line
        pending = ""
        if not line:
            continue
        name, _, args = line.partition(" ")
        result.append((name.upper(), args.strip()))
    return result


def stages(path: Path = DOCKERFILE) -> list[Stage]:
    """The build stages; ARGs before the first FROM are substituted into FROM lines."""
    args: dict[str, str] = {}
    found: list[Stage] = []
    for name, arguments in instructions(path.read_text(encoding="utf-8")):
        if name == "ARG" and not found:
            key, _, default = arguments.partition("=")
            args[key] = default
        elif name == "FROM":
            parts = arguments.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], parts[0])
            alias = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            found.append(Stage(base=base, name=alias))
        elif found:
            found[-1].instructions.append((name, arguments))
    return found


def final_stage() -> Stage:
    return stages()[-1]
