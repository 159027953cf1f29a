"""A PostgreSQL server for the tests, and a PgBouncer in front of it.

The server comes from ``GRAPHEXEC_TEST_PG`` (a libpq URL to a database the tests may create
databases from; default ``postgresql://postgres@127.0.0.1:5432/postgres``). The test session
creates its own database (``graphexec_test_<random>``) and drops it at the end, so sessions
never collide; each store a test opens gets a fresh schema in it. With no server answering,
or no ``pgbouncer`` program, the tests that need them are skipped, saying what is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ("DEFAULT_DSN", "ENV", "database", "pgbouncer", "server_dsn")

ENV = "GRAPHEXEC_TEST_PG"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_dsn() -> str:
    """The server the tests use, from the environment or the default."""
    return os.environ.get(ENV, DEFAULT_DSN)


def _with_dbname(dsn: str, dbname: str) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(dsn, dbname=dbname)


def _skip_without_server(dsn: str) -> None:
    try:
        import psycopg
    except ImportError:
        pytest.skip("Postgres tests need the 'postgres' extra: pip install -e '.[postgres]'")
    try:
        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.skip(
            f"no PostgreSQL server answers at {dsn!r} ({str(exc).strip()}); set {ENV} to a "
            "server URL to run the Postgres tests"
        )


def database() -> Iterator[str]:
    """Create a database for this test session; yields its DSN, drops it at the end."""
    import psycopg

    admin = server_dsn()
    _skip_without_server(admin)
    name = f"graphexec_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.errors.InsufficientPrivilege as exc:
        pytest.skip(
            f"the user of {ENV} ({admin!r}) may not create databases ({str(exc).strip()}): "
            "the Postgres tests need one of their own"
        )
    try:
        yield _with_dbname(admin, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pgbouncer(dsn: str) -> Iterator[str]:
    """Run a PgBouncer in transaction mode in front of ``dsn``'s server; yields the DSN that
    reaches the same database through it, and stops it at the end."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    program = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if program is None:
        pytest.skip(
            "pgbouncer is not installed (Debian: apt-get install pgbouncer; `make test` "
            "installs it when run as root): the PgBouncer transaction-mode tests are skipped"
        )
    info = conninfo_to_dict(dsn)
    user = str(info.get("user") or "postgres")
    port = _free_port()
    folder = Path(tempfile.mkdtemp(prefix="gx-pgbouncer-"))
    folder.chmod(0o777)  # pgbouncer run as root drops to `user` below, and writes its log here
    (folder / "users.txt").write_text(f'"{user}" ""\n')
    config = folder / "pgbouncer.ini"
    config.write_text(
        "\n".join(
            [
                "[databases]",
                f"* = host={info.get('host', '127.0.0.1')} port={info.get('port', 5432)}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {folder / 'users.txt'}",
                "pool_mode = transaction",
                "max_client_conn = 200",
                "default_pool_size = 10",
                f"logfile = {folder / 'pgbouncer.log'}",
                *(["user = postgres"] if os.geteuid() == 0 else []),
                "",
            ]
        )
    )
    for f in folder.iterdir():
        f.chmod(0o644)
    # stderr to a file, not a pipe: pgbouncer logs every login there too, and once a pipe
    # nobody reads is full (64 KiB, a few hundred logins) it blocks and stops serving.
    errors = open(folder / "stderr.txt", "wb")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen([program, str(config)], stdout=subprocess.DEVNULL, stderr=errors)
    bounced = make_conninfo(dsn, host="127.0.0.1", port=str(port))
    try:
        for _ in range(100):  # until it accepts (readiness, not a timing assertion)
            if proc.poll() is not None:
                err = (folder / "stderr.txt").read_text(errors="replace")
                log = (
                    (folder / "pgbouncer.log").read_text()
                    if (folder / "pgbouncer.log").exists()
                    else ""
                )
                pytest.fail(f"pgbouncer exited with {proc.returncode}: {err} {log}")
            try:
                with psycopg.connect(bounced, connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                break
            except psycopg.OperationalError:
                time.sleep(0.05)
        else:
            pytest.fail(f"pgbouncer did not accept connections on port {port}")
        yield bounced
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        errors.close()
        shutil.rmtree(folder, ignore_errors=True)
