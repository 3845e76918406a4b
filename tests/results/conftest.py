"""A real PostgreSQL server for the results-database tests, so every store behaviour
is checked on SQLite and on PostgreSQL alike.

The server is private to the test session: a fresh cluster in a temporary folder,
reachable only through a unix socket there, stopped and removed at the end.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

INSTALL_HINT = "install the server with 'apt-get install postgresql' to run the PostgreSQL store tests"


@dataclass
class PgServer:
    socket_dir: Path
    port: int
    # A role that must log in with a password (all others are trusted), for the login error tests.
    password_user: str = "mlgauge_pw"
    password: str = "s3cret-Horse-battery"
    _names: Iterator[int] = field(default_factory=itertools.count)

    def url(self, database: str, *, user: str = "postgres", password: str | None = None,
            scheme: str = "postgresql") -> str:  # fmt: skip
        auth = f"{user}:{password}@" if password is not None else f"{user}@"
        return f"{scheme}://{auth}/{database}?host={self.socket_dir}&port={self.port}"

    def admin(self, sql: str) -> None:
        """Run one statement as the superuser, outside a transaction (CREATE DATABASE needs that)."""
        import psycopg

        with psycopg.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql)

    def create_database(self, owner: str = "postgres") -> str:
        name = f"t{next(self._names)}"
        self.admin(f'CREATE DATABASE {name} OWNER "{owner}"')
        return name


def _bindir() -> Path | None:
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    # Newest major version first: "15" sorts after "9" only as a number.
    found.sort(key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0, reverse=True)
    return Path(found[0]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    bindir = _bindir()
    if bindir is None:
        pytest.skip(f"PostgreSQL server binaries (initdb, pg_ctl) not found; {INSTALL_HINT}")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="mlgauge-pg-"))  # short: unix socket paths are limited to ~100 bytes
    if os.geteuid() == 0:
        # initdb and postgres refuse to run as root.
        if not shutil.which("runuser"):
            pytest.skip(f"running as root without runuser, so PostgreSQL cannot start; {INSTALL_HINT}")
        shutil.chown(root, user="postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data)]
    try:
        _run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "--no-sync",
              "-U", "postgres", "-E", "UTF8", "--locale=C"])  # fmt: skip
        # Written in place, so the file keeps its owner.
        with open(data / "pg_hba.conf", "w") as hba:
            hba.write(f"local all {PgServer.password_user} scram-sha-256\nlocal all all trust\n")
        options = f"-F -k {root} -p {port} -c listen_addresses='' -c max_connections=200"
        _run([*ctl, "-l", str(root / "server.log"), "-w", "-t", "30", "-o", options, "start"])
    except (subprocess.SubprocessError, OSError) as exc:
        log = root / "server.log"
        detail = log.read_text()[-500:] if log.exists() else getattr(exc, "stderr", "") or str(exc)
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"the PostgreSQL server could not start ({detail.strip()}); {INSTALL_HINT}")
    server = PgServer(root, port)
    try:
        server.admin(f"CREATE ROLE {server.password_user} LOGIN PASSWORD '{server.password}'")
        yield server
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A URL of a fresh, empty database of its own."""
    return pg_server.url(pg_server.create_database())


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a store lives: a SQLite file in a folder not made yet, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "nested" / "results.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def raw(location: Path | str) -> Iterator:
    """An independent SQLAlchemy engine on the test's database, to look at what a store wrote."""
    from sqlalchemy import create_engine

    if isinstance(location, Path):
        engine = create_engine(f"sqlite:///{location}")
    else:
        engine = create_engine(location.replace("postgresql://", "postgresql+psycopg://", 1))
    yield engine
    engine.dispose()
