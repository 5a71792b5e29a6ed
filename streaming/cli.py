"""`ot`: the one command-line entry point.

Subcommands register themselves under the `ot.commands` entry points of pyproject.toml, each a
module with its own `main(argv) -> int`. This module knows none of them by name (so `streaming`
never imports the pipeline or the tools); a command's module is imported only when it is called,
so `ot stack status` does not pay for importing Dagster. `ot --help` reads each command's summary
from the first line of its module docstring without importing the module.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import sys
import tokenize
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from streaming.observability.logs import configure_logging
from streaming.settings import ServiceUnavailable, SettingsError

GROUP = "ot.commands"
OWN_LOGGING = frozenset({"pipeline"})  # commands whose framework configures its own logging
_USAGE_PREFIX = re.compile(r"^`ot [^`]*`:\s*")  # "`ot land`: land ..." -> "land ..."


def commands() -> dict[str, EntryPoint]:
    """The registered subcommands, sorted by name (installed entry points lose the file's order)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep)
    return dict(sorted(found.items()))


def summary(module: str) -> str:
    """First line of a module's docstring, read from its source: importing every command module
    (Dagster, Polars, the Kafka client) would make `ot --help` take seconds."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)  # imports only the top-level package
    if spec is None:
        return ""
    candidates = [Path(spec.origin)] if not rest and spec.origin else []
    for base in spec.submodule_search_locations or []:
        path = Path(base, *rest)
        candidates += [path.with_suffix(".py"), path / "__init__.py"]
    for path in candidates:
        if path.is_file():
            first = _USAGE_PREFIX.sub("", _docstring(path).strip().split("\n", 1)[0])
            return first.rstrip(".")
    return ""


def _docstring(path: Path) -> str:
    """The module docstring: the first token of the file if it is a string (no full parse)."""
    with tokenize.open(path) as source:
        for token in tokenize.generate_tokens(source.readline):
            if token.type in {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE}:
                continue
            if token.type == tokenize.STRING:
                return str(ast.literal_eval(token.string))
            break
    return ""


def _usage(table: dict[str, EntryPoint]) -> str:
    width = max((len(name) for name in table), default=0)
    lines = ["usage: ot COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary(ep.module)}" for name, ep in table.items()]
    lines += ["", "Run `ot COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    table = commands()
    if not table:  # metadata of an install older than the entry points
        print("ot: no commands registered; reinstall the project (make setup)", file=sys.stderr)
        return 2
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage(table))
        return 0
    name, rest = args[0], args[1:]
    if name not in table:
        print(f"ot: unknown command {name!r}\n\n{_usage(table)}", file=sys.stderr)
        return 2
    # Before a command imports numpy: every matrix product of the platform is small (a few
    # thousand rows of a few channels), so OpenBLAS's worker threads would only spin (about 0.1
    # CPU second per process, measured). A setting of the user's own wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    command = table[name].load()
    try:
        # One logging setup for the process; Dagster (`ot pipeline`) keeps its own for its lines.
        configure_logging(libraries=name not in OWN_LOGGING)
        return int(command(rest) or 0)
    except SettingsError as exc:
        print(f"ot {name}: configuration error: {exc}", file=sys.stderr)
        return 2
    except ServiceUnavailable as exc:
        print(f"ot {name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
