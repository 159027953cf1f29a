"""open_store(): one factory from a URL (or a path) to a checkpoint store.

The command line, and later workers and the web server, open their store through this one
function, so a new backend is one entry in ``_OPENERS`` and works everywhere at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._base import CheckpointStore

__all__ = ("open_store",)


def _sqlite(url: str) -> CheckpointStore:
    # SQLAlchemy's spelling, which users know: sqlite:///relative.db, sqlite:////abs/path.db.
    path = url[len("sqlite://") :]
    if not path.startswith("/") or path == "/":
        raise ValueError(
            f"bad SQLite URL {url!r}: expected sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    from ._sqlite import SQLiteStore

    return SQLiteStore(path[1:])


def _postgres(url: str) -> CheckpointStore:
    # libpq takes postgresql:// and postgres://; SQLAlchemy's postgresql+psycopg:// is the same.
    # A `schema` query parameter is graphexec's (the Postgres schema of the store's tables),
    # not libpq's, so it is taken out before the URL reaches psycopg.
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = [v for k, v in query if k == "schema"]
    dsn = urlunsplit(
        parts._replace(
            scheme="postgresql", query=urlencode([(k, v) for k, v in query if k != "schema"])
        )
    )
    try:
        from ._postgres import PostgresStore
    except ImportError as exc:
        raise ValueError(
            f"{url.split('://', 1)[0]}:// URLs need the Postgres store's extra: "
            f"pip install 'graphexec[postgres]' ({exc})"
        ) from exc
    return PostgresStore(dsn, schema=schema[-1]) if schema else PostgresStore(dsn)


_OPENERS: dict[str, Callable[[str], CheckpointStore]] = {
    "sqlite": _sqlite,
    "postgres": _postgres,
    "postgresql": _postgres,
    "postgresql+psycopg": _postgres,
}


def open_store(url: str | os.PathLike[str]) -> CheckpointStore:
    """The checkpoint store a URL or a path names; nothing is opened until first use.

    Args:
        url: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, a plain file
            path (a SQLite file; created with its schema on first use if missing), or a
            Postgres URL (``postgresql://user@host:5432/db``, also ``postgres://`` and
            ``postgresql+psycopg://``; ``?schema=name`` picks the Postgres schema of the
            tables, default ``graphexec``; needs the ``postgres`` extra).

    Raises:
        ValueError: the URL's scheme names no store this graphexec has, a Postgres URL without
            the ``postgres`` extra installed, or a malformed URL.
    """
    text = os.fspath(url)
    if not text:
        raise ValueError("empty store URL: pass a SQLite path or a sqlite:/// URL")
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    if not scheme:
        from ._sqlite import SQLiteStore

        return SQLiteStore(text)
    opener = _OPENERS.get(scheme)
    if opener is None:
        raise ValueError(
            f"unknown store URL scheme {scheme!r} in {text!r}: expected a SQLite path, "
            f"or one of {', '.join(s + '://' for s in sorted(_OPENERS))}"
        )
    return opener(text)
