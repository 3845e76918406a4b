"""The results database on PostgreSQL: URL forms, login and connection errors that never
show the password, the append-only trigger, and sharing a database with other programs.

The behaviour both backends share is tested in test_store.py, on both.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from test_store import make_record

from mlgauge.cli import main
from mlgauge.errors import OutputError
from mlgauge.results.store import ResultStore, mask_password, open_store


def _assert_clear(err: OutputError, secret: str, *needles: str) -> None:
    """One line that says what and how to fix it, without the secret."""
    text = str(err)
    assert "\n" not in text
    assert err.hint
    assert secret not in text and secret not in repr(err.to_dict())
    for needle in needles:
        assert needle in text, text


def test_url_forms_open_the_same_database(pg_server) -> None:
    db = pg_server.create_database()
    forms = [
        pg_server.url(db),
        pg_server.url(db, scheme="postgresql+psycopg"),
        pg_server.url(db, scheme="postgres"),
        # No host in the authority: libpq takes the socket folder from ?host=.
        f"postgresql:///{db}?host={pg_server.socket_dir}&port={pg_server.port}&user=postgres",
    ]
    with open_store(forms[0]) as s:
        s.add(make_record(record_id="shared"))
        assert s.path is None
    for url in forms[1:]:
        with ResultStore(url) as s:
            assert s.location == url
            assert s.path is None
            assert [r.record_id for r in s.query()] == ["shared"]


def test_password_login_works_and_is_never_shown(pg_server) -> None:
    db = pg_server.create_database(owner=pg_server.password_user)
    url = pg_server.url(db, user=pg_server.password_user, password=pg_server.password)
    with ResultStore(url) as s:
        s.add(make_record())
        assert s.location == url.replace(f":{pg_server.password}@", ":***@")
        assert pg_server.password not in s.location
    query_form = (
        f"postgresql:///{db}?host={pg_server.socket_dir}&port={pg_server.port}"
        f"&user={pg_server.password_user}&password={pg_server.password}"
    )
    with ResultStore(query_form) as s:
        assert s.count() == 1
        assert pg_server.password not in s.location and "password=***" in s.location


@pytest.mark.parametrize("almost", [False, True])
def test_wrong_password_is_a_clear_error(pg_server, almost: bool) -> None:
    wrong = pg_server.password[:-1] if almost else "not-the-password"
    db = pg_server.create_database(owner=pg_server.password_user)
    with pytest.raises(OutputError, match="refused the user name or password") as info:
        ResultStore(pg_server.url(db, user=pg_server.password_user, password=wrong))
    _assert_clear(info.value, wrong, f"{pg_server.password_user}:***@")
    assert "password" in (info.value.hint or "")


def test_missing_database_is_a_clear_error(pg_server) -> None:
    with pytest.raises(OutputError, match="database does not exist") as info:
        ResultStore(pg_server.url("no_such_db", user=pg_server.password_user, password=pg_server.password))
    _assert_clear(info.value, pg_server.password, "no_such_db")
    assert "createdb" in (info.value.hint or "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    # Nothing listens on either: a TCP port just freed, and a socket folder with no server in it.
    for url in (
        f"postgresql://someone:hunter2-pw@127.0.0.1:{_free_port()}/results",
        f"postgresql://someone:hunter2-pw@/results?host={tmp_path}&port=5432",
    ):
        with pytest.raises(OutputError, match="cannot reach the PostgreSQL server") as info:
            ResultStore(url)
        _assert_clear(info.value, "hunter2-pw", "someone:***@")
        assert "running" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("postgresql://someone:hunter2-pw@db.example:notaport/results", "cannot parse"),
        ("postgresql://someone:hunter2-pw@[::1/results", "cannot parse"),
        ("mysql://someone:hunter2-pw@db.example/results", "unsupported"),
        ("postgresql+psycopg2://someone:hunter2-pw@db.example/results", "unsupported"),
    ],
)
def test_bad_url_is_a_clear_error(url: str, needle: str) -> None:
    with pytest.raises(OutputError, match=needle) as info:
        ResultStore(url)
    _assert_clear(info.value, "hunter2-pw")
    assert "postgresql://user:password@host" in (info.value.hint or "")


def test_mask_password() -> None:
    assert mask_password("postgresql://u:p@ss:w@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask_password("postgresql://u@h:5432/db") == "postgresql://u@h:5432/db"
    assert mask_password("postgresql://h:5432/db") == "postgresql://h:5432/db"
    query_form = "postgresql:///db?user=u&password=x&host=/s"
    assert mask_password(query_form) == "postgresql:///db?user=u&password=***&host=/s"


@pytest.mark.parametrize(
    "sql", ["TRUNCATE results", "DELETE FROM results WHERE 1 = 0", "UPDATE results SET task = 'x'"]
)
def test_history_cannot_be_rewritten_even_by_truncate(pg_url: str, sql: str) -> None:
    with ResultStore(pg_url) as s:
        s.add(make_record())
    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn, pytest.raises(DBAPIError, match="append-only"):
            conn.execute(text(sql))
    finally:
        engine.dispose()
    with ResultStore(pg_url) as s:
        assert s.count() == 1


def _execute_as_admin(pg_server, db: str, sql: str) -> None:
    engine = create_engine(pg_server.url(db, scheme="postgresql+psycopg"))
    try:
        with engine.begin() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def test_shared_database_keeps_other_tables_but_refuses_a_foreign_results_table(pg_server) -> None:
    db = pg_server.create_database()
    _execute_as_admin(pg_server, db, "CREATE TABLE invoices (n INTEGER)")
    with ResultStore(pg_server.url(db)) as s:
        s.add(make_record())
        assert s.count() == 1
    other = pg_server.create_database()
    _execute_as_admin(pg_server, other, "CREATE TABLE results (x INTEGER)")
    with pytest.raises(OutputError, match="'results' table that mlgauge did not create") as info:
        ResultStore(pg_server.url(other))
    assert "rename" in (info.value.hint or "")


def test_user_without_create_rights_gets_a_clear_error(pg_server) -> None:
    # Since PostgreSQL 15 only the database owner may create tables in its public schema.
    db = pg_server.create_database(owner="postgres")
    with pytest.raises(OutputError, match="cannot prepare the results database: permission denied") as info:
        ResultStore(pg_server.url(db, user=pg_server.password_user, password=pg_server.password))
    _assert_clear(info.value, pg_server.password)
    assert "may create tables" in (info.value.hint or "")


def test_cli_reads_a_postgresql_database(pg_server, capsys) -> None:
    db = pg_server.create_database(owner=pg_server.password_user)
    url = pg_server.url(db, user=pg_server.password_user, password=pg_server.password)
    records = [make_record(run_id="r1", created_at=f"2025-01-01T10:0{i}:00+00:00") for i in range(3)]
    with open_store(url) as s:
        s.add_many(records)
    assert main(["results", "--db", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [r.to_dict() for r in reversed(records)]
    assert main(["results", "--db", url, "--runs"]) == 0
    out = capsys.readouterr().out
    assert "r1" in out and pg_server.password not in out and f"{pg_server.password_user}:***@" in out
    wrong = pg_server.url(db, user=pg_server.password_user, password="wrong-pw")
    assert main(["results", "--db", wrong]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "wrong-pw" not in captured.err
