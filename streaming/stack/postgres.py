"""PostgreSQL in the local stack: from Debian, run through `pg_ctl` (as the `postgres` OS user
when started as root), role and database `ot`, TimescaleDB when its library is installed."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from streaming.stack.processes import (
    PortTaken,
    StackError,
    apt_install,
    fail,
    is_root,
    port_taken,
    process_is,
    refuse_foreign,
    reuse,
)

NAME = "postgres"
VARIABLE = "OT_STACK_PG_PORT"


def reachable_by_postgres(path: Path) -> bool:
    """Can the `postgres` OS user enter `path` (every ancestor searchable)?"""
    try:
        return (
            subprocess.run(
                ["test", "-x", str(path)], user="postgres", stdin=subprocess.DEVNULL
            ).returncode
            == 0
        )
    except (OSError, KeyError):
        return False


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def timescale_library(bindir: Path) -> bool:
    pg_config = bindir / "pg_config"
    try:
        libdir = subprocess.run(
            [str(pg_config), "--pkglibdir"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return False
    return Path(libdir, "timescaledb.so").exists()


@dataclass(frozen=True)
class Postgres:
    root: Path
    port: int

    @property
    def dsn(self) -> str:
        return f"postgresql://ot:ot@127.0.0.1:{self.port}/ot"

    @property
    def folder(self) -> Path:
        """PostgreSQL's folder: `<root>/postgres`, unless the `postgres` OS user cannot reach it
        (a checkout under a private folder, e.g. 0700): then a folder under /var/tmp it owns,
        linked from `<root>/postgres` so everything stays findable in one place."""
        link = self.root / "postgres"
        if link.is_symlink() or not is_root():
            return link.resolve() if link.is_symlink() else link
        if link.exists() or reachable_by_postgres(self.root):
            return link
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:12]
        target = Path("/var/tmp") / f"ot-stack-postgres-{digest}"
        target.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target, target_is_directory=True)
        return target

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def _found(self, name: str) -> Path:
        """A path inside PostgreSQL's folder, without creating that folder (for probes)."""
        return (self.root / "postgres").resolve() / name

    def timescaledb(self) -> str:
        """What the last start found: "enabled", "not available" or "unknown"."""
        note = self._found("timescaledb.txt")
        return note.read_text().strip() if note.exists() else "unknown"

    def _run(self, cmd: list[str], log: Path) -> subprocess.CompletedProcess[bytes]:
        """Run a PostgreSQL tool as the `postgres` OS user when root (initdb refuses root)."""
        user = "postgres" if is_root() else None
        with log.open("ab") as out:
            return subprocess.run(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                user=user,
                group=user,
            )

    def _socket_dsn(self, dbname: str = "postgres") -> str:
        """Superuser access over the Unix socket (trust), for bootstrapping only."""
        run = self.folder / "run"
        return f"host={run} port={self.port} user=postgres dbname={dbname} connect_timeout=3"

    def owned_pid(self) -> int | None:
        """This stack's server: the pid in its data folder's `postmaster.pid`, alive and a
        `postgres` process (not a pid reused by something else since)."""
        try:
            pid = int(self._found("data/postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if process_is(pid, "postgres") else None

    def conflict(self) -> PortTaken | None:
        if self.owned_pid() is None and port_taken(self.port):
            return refuse_foreign(NAME, self.port, VARIABLE, self.root)
        return None

    def answers(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.dsn, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return True
        except Exception:
            return False

    def up(self, logs: Path) -> list[str]:
        """Start PostgreSQL unless this stack's runs; return ["postgres"] when started now."""
        own = self.owned_pid()
        if own is not None:
            reuse(NAME, own, self.answers, 60, self.folder / "postgres.log")
            return []
        conflict = self.conflict()
        if conflict is not None:
            raise conflict
        # pg_ctl writes its log as the postgres user: keep it in a folder that user owns.
        folder = self.folder
        log = folder / "postgres.log"
        bindir = pg_bin()
        if bindir is None:
            apt_install(["postgresql"], NAME, logs / "apt.log")
            bindir = pg_bin()
            if bindir is None:
                raise StackError("postgres: installed but no /usr/lib/postgresql/*/bin/postgres")
        data, run = folder / "data", folder / "run"
        run.mkdir(parents=True, exist_ok=True)
        if is_root():
            shutil.chown(folder, "postgres", "postgres")
            shutil.chown(run, "postgres", "postgres")
            log.touch()
            shutil.chown(log, "postgres", "postgres")
        if not (data / "PG_VERSION").exists():
            cmd = [
                str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
                "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256",
            ]  # fmt: skip
            if self._run(cmd, log).returncode:
                raise fail(NAME, cmd, log, "initdb failed")
        options = [
            f"-p {self.port}",
            f"-k {run}",
            "-c listen_addresses=127.0.0.1",
            "-c shared_buffers=256MB",
            "-c max_wal_size=2GB",
            "-c synchronous_commit=off",
            "-c max_connections=100",
        ]
        timescale = timescale_library(bindir)
        if timescale:
            options.append("-c shared_preload_libraries=timescaledb")
        cmd = [
            str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
            "-o", " ".join(options), "start",
        ]  # fmt: skip
        if self._run(cmd, log).returncode:
            raise fail(NAME, cmd, log, "pg_ctl start failed")
        self._bootstrap(timescale)
        if not self.answers():
            raise fail(NAME, cmd, log, f"started but {self.dsn} does not answer")
        return [NAME]

    def _bootstrap(self, timescale: bool) -> None:
        """Create the `ot` role and database once; enable timescaledb when it is there."""
        import psycopg

        with psycopg.connect(self._socket_dsn(), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'ot'").fetchone():
                conn.execute("CREATE ROLE ot LOGIN PASSWORD 'ot' CREATEDB")
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'ot'").fetchone():
                conn.execute("CREATE DATABASE ot OWNER ot")
        note = self.folder / "timescaledb.txt"
        with psycopg.connect(self._socket_dsn("ot"), autocommit=True) as conn:
            if timescale:
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                note.write_text("enabled\n")
            elif not note.exists():
                print(
                    "[stack] postgres: the timescaledb extension is not available; the pipeline "
                    "uses plain tables and materialized views",
                    flush=True,
                )
                note.write_text("not available\n")

    def running(self) -> bool:
        """Has this stack's data folder a `postmaster.pid` (a server started, not stopped)?"""
        return self._found("data/postmaster.pid").exists()

    def stop(self) -> bool:
        data = self.data
        if not (data / "postmaster.pid").exists():
            return False
        bindir = pg_bin()
        if bindir is None:
            return False
        cmd = [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
        return self._run(cmd, self.folder / "postgres.log").returncode == 0
