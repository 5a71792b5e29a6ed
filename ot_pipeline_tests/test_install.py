"""The install is reproducible: `make setup` installs exactly requirements.lock, and the lock
covers every dependency pyproject.toml declares."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version

from ot_pipeline_tests.support.paths import REPO_ROOT

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)$")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO_ROOT / "requirements.lock").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _PIN.match(line.strip())
        assert m, f"requirements.lock: {line!r} is not NAME==VERSION"
        pins[_canonical(m["name"])] = m["version"]
    return pins


def test_the_installed_packages_are_exactly_the_locked_versions() -> None:
    wrong = {}
    for name, pinned in locked().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "missing"
        if installed != pinned:
            wrong[name] = f"installed {installed}, locked {pinned}"
    assert wrong == {}, "run `make setup` (or `make lock` for a deliberate upgrade)"


def test_the_lock_covers_every_declared_dependency() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    names = {_canonical(re.split(r"[\[<>=!~; ]", d, maxsplit=1)[0]) for d in declared}
    assert names - set(locked()) == set()
