"""open_store(url): one factory from a URL or a path to a checkpoint store."""

from __future__ import annotations

from pathlib import Path

import pytest

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


@pytest.mark.parametrize("url", ["postgresql://u@localhost/db", "postgres://h/db"])
def test_postgres_is_not_available_yet(url: str) -> None:
    """A Postgres URL says the Postgres store is not available, rather than failing obscurely."""
    with pytest.raises(ValueError, match="Postgres store is not available"):
        open_store(url)


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
