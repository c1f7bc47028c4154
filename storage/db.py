"""Engines for the index database, the schema's Alembic entry points, and the unavailability error."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine

SQLITE_BUSY_TIMEOUT_MS = 30_000

# Any fixed number, the same in every replica: replicas starting together upgrade one at a time.
_UPGRADE_LOCK_KEY = 0x70616373_6777  # "pacsgw"

# Marks engines whose SQLite transactions start with BEGIN IMMEDIATE (see for_writing).
_WRITE_OPTION = "pacsgw_write"


class IndexUnavailable(Exception):
    """The index database is unreachable or failing; the gateway answers 0xA700 (out of resources)."""


def create_engine_for(url: str, *, pool_size: int = 10) -> Engine:
    """One pooled engine per process for the index (and the database blob store when configured)."""
    parsed = sa.make_url(url)
    if parsed.drivername == "postgresql":
        # psycopg 3 is the driver we ship; a bare postgresql:// would pick the absent psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, pool_size)
    return sa.create_engine(
        parsed,
        pool_size=pool_size,
        # A restarted server leaves dead connections in the pool; test each one before use.
        pool_pre_ping=True,
        # Parameters carry patient names and IDs: keep them out of exception text and logs.
        hide_parameters=True,
    )


def _sqlite_engine(url: sa.URL, pool_size: int) -> Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url,
        pool_size=pool_size,
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook below issue BEGIN itself, instead of pysqlite's implicit
        # deferred BEGIN, so that writers can take the write lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            # WAL: readers never block the writer, and several associations store at once.
            cursor.execute("PRAGMA journal_mode = WAL")
            # A C-STORE success is sent only after commit; FULL makes that commit survive power loss.
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that later writes fails at once with SQLITE_BUSY when another
        # connection wrote in between (the busy timeout does not apply to that upgrade); taking
        # the write lock at BEGIN makes concurrent writers wait their turn instead.
        if conn.get_execution_options().get(_WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


def for_writing(engine: Engine) -> Engine:
    """The same engine and pool, for transactions that write (takes SQLite's write lock at BEGIN)."""
    return engine.execution_options(**{_WRITE_OPTION: True})


def describe(error: BaseException) -> str:
    """The driver's own message, without the SQL statement and its parameters (which hold PHI)."""
    orig = getattr(error, "orig", None) or error
    text = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {text[0]}" if text else type(orig).__name__


def is_unavailable(error: BaseException) -> bool:
    """Whether a SQLAlchemy error means the database is unreachable or failing, not a bug or bad data."""
    if isinstance(
        error,
        exc.OperationalError | exc.InterfaceError | exc.InternalError | exc.TimeoutError,
    ):
        return True
    if isinstance(error, exc.DisconnectionError):
        return True
    if isinstance(error, exc.DBAPIError):
        return error.connection_invalidated or type(error) is exc.DBAPIError
    return False


@contextmanager
def unavailable_as(what: str) -> Iterator[None]:
    """Raise database outages inside the block as IndexUnavailable, naming the operation."""
    try:
        yield
    except exc.SQLAlchemyError as error:
        if is_unavailable(error):
            raise IndexUnavailable(f"index database unavailable ({what}): {describe(error)}") from error
        raise


# --- schema (Alembic) ---------------------------------------------------------------------------


def migrations_directory() -> Path:
    """The Alembic script directory: the `migrations` package, a sibling of this one when installed.

    Found from this file rather than by `import migrations`, which any other `migrations` folder
    earlier on sys.path (a test tree's, a project's) would shadow.
    """
    directory = Path(__file__).resolve().parent.parent / "migrations"
    if not (directory / "env.py").is_file():
        raise RuntimeError(f"the Alembic environment is missing at {directory}")
    return directory


def alembic_config(connection: Connection | None = None, *, url: str | None = None) -> Config:
    """An Alembic Config for the migrations package, run on `connection` (preferred) or on `url`."""
    config = Config()
    config.set_main_option("script_location", str(migrations_directory()))
    if url is not None:
        # ConfigParser interpolation would choke on a '%' in a URL-encoded password.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no Alembic revision under {migrations_directory()}")
    return head


def upgrade_to_head(engine: Engine) -> None:
    """Bring the schema to the newest revision, in one transaction where the database allows it."""
    with unavailable_as("schema upgrade"), for_writing(engine).begin() as connection:
        if connection.dialect.name == "postgresql":
            # Without it, a second replica would fail on CREATE TABLE instead of finding the
            # schema already at head once the first one commits.
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_UPGRADE_LOCK_KEY)))
        command.upgrade(alembic_config(connection), "head")


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at, None when it was never migrated."""
    with unavailable_as("schema revision"), engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


# --- observation (latency and errors, for the metrics) -------------------------------------------

StatementObserver = Callable[[str, float], None]  # statement kind, seconds
ErrorObserver = Callable[[str], None]  # "unavailable" | "error"

_STATEMENT_KINDS = frozenset({"select", "insert", "update", "delete", "begin", "commit", "rollback"})
_STARTED = "pacsgw_statement_started"


def statement_kind(statement: str) -> str:
    """The statement's first keyword when it is a common one, else "other" (a bounded label)."""
    words = statement.lstrip(" (\n\t").split(None, 1)
    kind = words[0].lower() if words else ""
    return kind if kind in _STATEMENT_KINDS else "other"


def observe_statements(engine: Engine, on_statement: StatementObserver, on_error: ErrorObserver) -> None:
    """Report each statement's latency and each failure (outage or not) to the two callbacks."""

    # The start time rides on the statement's own execution context, so a statement that fails
    # leaves nothing behind.
    @event.listens_for(engine, "before_cursor_execute")
    def _before(_conn: Connection, _cursor: Any, _statement: str, _params: Any, context: Any,
                _executemany: bool) -> None:
        if context is not None:
            setattr(context, _STARTED, time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def _after(_conn: Connection, _cursor: Any, statement: str, _params: Any, context: Any,
               _executemany: bool) -> None:
        started = getattr(context, _STARTED, None)
        if started is not None:
            on_statement(statement_kind(statement), time.perf_counter() - started)

    @event.listens_for(engine, "handle_error")
    def _error(context: sa.engine.ExceptionContext) -> None:
        if context.is_pre_ping:
            return  # the pool replaces the dead connection; an outage shows in what follows
        error = context.sqlalchemy_exception or context.original_exception
        on_error("unavailable" if error is not None and is_unavailable(error) else "error")
