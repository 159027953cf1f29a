"""open_store(url): one factory from a URL or a path to a checkpoint store."""

from __future__ import annotations

from pathlib import Path

import pytest

import graphexec as gx
from graphexec.checkpoint import SQLiteStore, open_store


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("runs.db", "runs.db"),
        ("dir/runs.db", "dir/runs.db"),
        ("/abs/runs.db", "/abs/runs.db"),
        ("sqlite:///runs.db", "runs.db"),
        ("sqlite:////abs/runs.db", "/abs/runs.db"),
        ("SQLITE:///runs.db", "runs.db"),
    ],
)
def test_sqlite_paths_and_urls(url: str, path: str) -> None:
    """A plain path and a sqlite:/// URL (SQLAlchemy's spelling) give a SQLiteStore."""
    store = open_store(url)
    assert isinstance(store, SQLiteStore)
    assert path == store.path


def test_path_objects(tmp_path: Path) -> None:
    """An os.PathLike is a SQLite file path."""
    store = open_store(tmp_path / "x.db")
    assert isinstance(store, SQLiteStore)
    assert str(tmp_path / "x.db") == store.path


async def test_the_store_works(tmp_path: Path) -> None:
    """The store it returns is usable: it creates its file on first use."""
    async with open_store(f"sqlite:///{tmp_path}/x.db") as store:
        assert [] == await store.runs()
    assert (tmp_path / "x.db").exists()


@pytest.mark.parametrize(
    ("url", "dsn", "schema"),
    [
        ("postgresql://u@localhost/db", "postgresql://u@localhost/db", "graphexec"),
        ("postgres://h/db?schema=app_runs", "postgresql://h/db", "app_runs"),
        (
            "postgresql+psycopg://u:pw@h:6432/db?sslmode=require&schema=s",
            "postgresql://u:pw@h:6432/db?sslmode=require",
            "s",
        ),
    ],
)
def test_postgres_urls_open_a_postgres_store(url: str, dsn: str, schema: str) -> None:
    """A Postgres URL opens a PostgresStore (nothing connects yet): the scheme as libpq takes
    it, graphexec's own ``schema`` parameter taken out of the URL, the others kept."""
    store = open_store(url)
    assert isinstance(store, gx.PostgresStore)
    assert (dsn, schema) == (store.dsn, store.schema)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("mysql://h/db", "unknown store URL scheme 'mysql'"),
        ("sqlite://runs.db", "bad SQLite URL"),
        ("sqlite:///", "bad SQLite URL"),
        ("", "empty store URL"),
    ],
)
def test_bad_urls(url: str, match: str) -> None:
    """Unknown schemes and malformed URLs are refused with a message naming the problem."""
    with pytest.raises(ValueError, match=match):
        open_store(url)
