"""The package map holds: `streaming` never reaches into `ot_pipeline`, `ot_pipeline` uses only the
public contract modules of `streaming`, and neither runtime package uses the tools (`ot_tools`)
(docs/architecture.md). Subcommands and benchmarks register through entry points instead."""

from __future__ import annotations

import ast
import importlib
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ot_pipeline_tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
OURS = {"streaming", "ot_pipeline", "ot_tools"}

# What `ot_pipeline` may import from `streaming`: the contracts and the settings, nothing that
# belongs to a running process (consumers, simulator, stack, CLI).
PUBLIC_STREAMING = (
    "streaming.settings",
    "streaming.events",
    "streaming.lake",
    "streaming.redis_keys",
    "streaming.kafka.config",
    "streaming.warehouse_schema",
)
# A string naming a module of ours the way import strings and entry points do (`pkg.mod[:attr]`).
_MODULE_STRING = re.compile(r"^(?P<module>[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+)(?::\w+)?$")


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    """Every module a file imports (top level or inside functions), and every string that names a
    module of ours (`importlib.import_module("pkg.mod")`, a command table of `"pkg.mod:main"`).
    Relative imports stay inside their own package and are not reported."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = _MODULE_STRING.match(node.value)
            if m and m["module"].split(".")[0] in OURS:
                yield node.lineno, m["module"]


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(package: str, allowed: Callable[[str], bool]) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in imports_of(path):
            if not allowed(module):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


def test_streaming_never_imports_the_pipeline() -> None:
    found = violations("streaming", lambda m: not _within(m, ("ot_pipeline",)))
    assert not found, "\n".join(found)


def test_the_pipeline_imports_only_public_contract_modules_of_streaming() -> None:
    def allowed(module: str) -> bool:
        if not _within(module, ("streaming",)) or module == "streaming":
            return True
        return _within(module, PUBLIC_STREAMING)

    found = violations("ot_pipeline", allowed)
    assert not found, "\n".join(found)


@pytest.mark.parametrize("package", ["streaming", "ot_pipeline"])
def test_no_runtime_package_imports_the_tools(package: str) -> None:
    found = violations(package, lambda m: not _within(m, ("ot_tools",)))
    assert not found, "\n".join(found)


def _entry_points(group: str) -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return dict(project["entry-points"][group])


@pytest.mark.parametrize("group", ["ot.commands", "ot.benchmarks"])
def test_every_registered_command_and_benchmark_resolves(group: str) -> None:
    """pyproject.toml names a module and a callable for each; a typo would only show at run time."""
    entries = _entry_points(group)
    assert entries
    for name, target in entries.items():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), f"{group} {name}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import ot_pipeline.cli\n", "ot_pipeline.cli"),
        ("def f():\n    from ot_pipeline.instance import x\n", "ot_pipeline.instance"),
        ("COMMANDS = {'p': 'ot_pipeline.cli:main'}\n", "ot_pipeline.cli"),
        ("importlib.import_module('ot_tools.bench.events')\n", "ot_tools.bench.events"),
    ],
)
def test_the_walk_sees_every_kind_of_import(tmp_path: Path, source: str, expected: str) -> None:
    path = tmp_path / "m.py"
    path.write_text(source)
    assert expected in {module for _, module in imports_of(path)}
