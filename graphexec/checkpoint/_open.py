"""open_store(): one factory from a URL (or a path) to a checkpoint store.

The command line, and later workers and the web server, open their store through this one
function, so a new backend is one entry in ``_OPENERS`` and works everywhere at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from urllib.parse import urlsplit

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
    raise ValueError(
        "the Postgres store is not available in this version of graphexec (it has SQLite and "
        "in-memory stores); pass a SQLite path or a sqlite:/// URL"
    )


_OPENERS: dict[str, Callable[[str], CheckpointStore]] = {
    "sqlite": _sqlite,
    "postgres": _postgres,
    "postgresql": _postgres,
    "postgresql+psycopg": _postgres,
}


def open_store(url: str | os.PathLike[str]) -> CheckpointStore:
    """The checkpoint store a URL or a path names; nothing is opened until first use.

    Args:
        url: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, or a plain file
            path (a SQLite file; created with its schema on first use if missing).

    Raises:
        ValueError: the URL's scheme names no store this graphexec has (``postgresql://``
            included, until the Postgres store lands), or the URL is malformed.
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
