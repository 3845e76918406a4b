"""Where the results database lives: a SQLite file or a PostgreSQL URL, and what its driver says.

A file path opens a SQLite file (the default: nothing to install or run); a
``postgresql://user:password@host:port/dbname`` URL opens a database a team shares.
:class:`Database` turns either into a SQLAlchemy engine and owns everything that
depends on which one it is: the name shown to users (password masked), the
transaction locks, and the translation of driver errors (unreachable server,
login refused, missing database, a file that is not a database, ...) into
:class:`OutputError` with a hint. The schema and the records know neither.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from mlgauge.errors import OutputError

# Concurrent benchmark processes share one file; writers wait for the lock
# rather than failing with "database is locked".
_LOCK_TIMEOUT_S = 60.0
_CONNECT_TIMEOUT_S = 10
_WRITE = "mlgauge_write"

_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_POSTGRES_DRIVERS = ("postgresql", "postgres", "postgresql+psycopg")
_URL_HINT = "Give a file path (SQLite) or a URL like postgresql://user:password@host:5432/dbname"
# (pattern in the driver's message, what happened, how to fix it)
_PG_CONNECT_ERRORS = (
    (r'database "[^"]*" does not exist', "the PostgreSQL database does not exist",
     "Create it (createdb NAME) or fix the database name in the URL"),
    (r"password|authentication failed|role \"[^\"]*\" does not exist",
     "the PostgreSQL server refused the user name or password",
     "Check the user and password in the URL (or in ~/.pgpass)"),
    (r"refused|No such file or directory|resolve host|translate host|timeout expired|unreachable|No route",
     "cannot reach the PostgreSQL server",
     "Check that the server is running and that the URL's host and port (or ?host=/socket/folder) are right"),
)  # fmt: skip


def is_database_url(location: str | Path) -> bool:
    """Whether ``location`` is a URL (``scheme://...``) rather than a file path."""
    return isinstance(location, str) and bool(_URL_SCHEME.match(location))


def mask_password(url: str) -> str:
    """``url`` with its password shown as ``***``, also when the URL cannot be parsed."""
    url = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@?]*:)[^/?]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


def _parse_url(text: str) -> URL:
    display = mask_password(text)
    try:
        url = make_url(text)
        url.port  # noqa: B018 - parsed lazily; a bad port should fail here, not on connect
    except (ArgumentError, ValueError):
        raise OutputError(f"cannot parse the results database URL {display}", hint=_URL_HINT) from None
    if url.drivername not in _POSTGRES_DRIVERS:
        raise OutputError(
            f"unsupported results database URL scheme '{url.drivername}'", hint=_URL_HINT, database=display
        )
    # psycopg 3 is the driver; SQLAlchemy would pick psycopg2 for a plain postgresql://.
    return url.set(drivername="postgresql+psycopg")


def _sqlite_on_connect(dbapi_conn, _record) -> None:
    # The driver would begin DEFERRED transactions itself; _sqlite_on_begin does it instead.
    dbapi_conn.isolation_level = None


def _sqlite_on_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock before anything is read, so two processes opening a
    # fresh file do not both create the tables. Readers take no write lock.
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


class Database:
    """The engine for one results database, with its name for messages and its errors translated.

    ``location`` is a path or a URL; ``self.location`` is it for display (password
    masked) and ``self.path`` the SQLite file, None for PostgreSQL.
    """

    def __init__(self, location: str | Path) -> None:
        if is_database_url(location) and not str(location).startswith("sqlite:"):
            url = _parse_url(str(location))
            self.path: Path | None = None
            self.location = mask_password(str(location))
            self.where: dict[str, object] = {"database": self.location}
            secrets = (url.password, url.query.get("password"))
            self._secrets = tuple(s for s in secrets if isinstance(s, str) and s)
            self.engine = self._postgres_engine(url)
        else:
            if is_database_url(location):  # sqlite:///path
                location = make_url(str(location)).database or ""
                if not location:
                    raise OutputError("the sqlite:// URL names no file", hint=_URL_HINT)
            self.path = Path(location)
            self.location = str(self.path)
            self.where = {"path": self.path}
            self._secrets = ()
            self.engine = self._sqlite_engine(self.path)

    @property
    def sqlite(self) -> bool:
        return self.path is not None

    def _sqlite_engine(self, path: Path) -> Engine:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"cannot create the folder for the results database: {exc.strerror or exc}",
                hint="Choose a results path in a writable folder",
                path=path,
            ) from exc
        url = URL.create("sqlite", database=str(path))
        engine = create_engine(url, connect_args={"timeout": _LOCK_TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine

    def _postgres_engine(self, url: URL) -> Engine:
        connect_args = {} if "connect_timeout" in url.query else {"connect_timeout": _CONNECT_TIMEOUT_S}
        try:
            # pre_ping: a long benchmark run must not fail on a connection the server closed meanwhile.
            return create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        except ImportError as exc:
            raise OutputError(
                "the PostgreSQL driver (psycopg 3) is not installed",
                hint="Install it with: pip install 'psycopg[binary]'",
                **self.where,
            ) from exc

    @contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[Connection]:
        """A connection in a transaction; ``write`` takes SQLite's write lock at BEGIN (see above)."""
        try:
            conn = self.engine.connect()
        except DBAPIError as exc:
            raise self._connect_error(exc) from exc
        with conn:
            if write:
                conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()

    # -- errors -------------------------------------------------------------

    def hint(self, sqlite: str, postgresql: str) -> str:
        """The hint that fits this kind of database."""
        return sqlite if self.sqlite else postgresql

    def _reason(self, exc: BaseException) -> str:
        """The driver's own words on one line, with any password masked."""
        text = " ".join(str(getattr(exc, "orig", None) or exc).split())
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def fail(self, what: str, hint: str, exc: BaseException | None = None) -> OutputError:
        """The error to raise: ``what`` went wrong, the driver's reason (if any) and where."""
        detail = f": {self._reason(exc)}" if exc is not None else ""
        return OutputError(f"{what}{detail}", hint=hint, **self.where)

    def not_ours(self, exc: BaseException | None = None) -> OutputError:
        """The error for a file or database that holds something other than mlgauge results."""
        if self.sqlite:
            return self.fail(
                "the file is not an mlgauge results database",
                "Point mlgauge at a different results file, or move this one away",
                exc,
            )
        return self.fail(
            "the database has a 'results' table that mlgauge did not create",
            "Point mlgauge at a different database, or rename that table",
            exc,
        )

    def _connect_error(self, exc: DBAPIError) -> OutputError:
        if self.sqlite:
            if not isinstance(exc, OperationalError):
                return self.not_ours(exc)
            return self.fail(
                "cannot open the results database", "Check that the folder exists and is writable", exc
            )
        reason = self._reason(exc)
        for pattern, what, hint in _PG_CONNECT_ERRORS:
            if re.search(pattern, reason, re.IGNORECASE):
                return self.fail(what, hint)
        return self.fail("cannot connect to the PostgreSQL database", "Check the URL and server log", exc)
