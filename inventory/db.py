"""The database: engine construction (SQLite by default, PostgreSQL for multi-host) and migrations."""

from __future__ import annotations

import hashlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

DEFAULT_URL = "sqlite:////var/lib/baie/baie.db"
MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 10_000


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                                                  "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation would read a "%" in a password as a format directive
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (``baie db upgrade``)."""
    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


class JobLock:
    """One daemon at a time runs the job ``name`` against a database that daemons on several hosts share.

    PostgreSQL: a session advisory lock on a connection held for the job; a daemon that dies or loses the
    database frees it with its connection. At release the lock is given back and the connection returns to
    the pool; a connection whose unlock fails is closed instead, so a lock never outlives its job. SQLite
    serves the daemon of one host: always granted.
    """

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self.key = int.from_bytes(hashlib.sha256(f"baie-job:{name}".encode()).digest()[:8], "big", signed=True)
        self._connection: Connection | None = None

    def acquire(self) -> bool:
        """Take the lock if no one holds it; never waits (blocking: the database)."""
        if self.engine.dialect.name != "postgresql":
            return True
        connection = self.engine.connect()
        if not self._ask(connection, "pg_try_advisory_lock"):
            connection.close()
            return False
        self._connection = connection
        return True

    def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._ask(connection, "pg_advisory_unlock"):
            connection.close()  # back to the pool
        else:
            self._discard(connection)

    def _ask(self, connection: Connection, function: str) -> bool:
        """``SELECT function(key)``; a connection that fails at it is discarded (the lock must not outlive it)."""
        try:
            answer = connection.execute(text(f"SELECT {function}(:key)"), {"key": self.key}).scalar_one()
            connection.commit()
        except BaseException:
            self._discard(connection)
            raise
        return answer

    @staticmethod
    def _discard(connection: Connection) -> None:
        connection.invalidate()  # closes the database session, and with it any advisory lock it holds
        connection.close()
