"""The one way to reach the database: an engine per URL, migrated on open, and a session scope.

SQLite (WAL, foreign keys on) is the embedded default; PostgreSQL goes through psycopg 3.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from labeling.errors import StoreError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_KEY = 0x6769666C656E73  # "giflens": serialises concurrent migrations
WRITE_OPTION = "giflens_write"
PG_CONNECT_TIMEOUT_S = 10  # seconds to reach a PostgreSQL server before giving up


def advisory_xact_lock(session: Session, key: int) -> None:
    """Hold PostgreSQL's advisory lock `key` until this transaction ends (waiting for its holder); nothing
    on SQLite, whose write transaction (BEGIN IMMEDIATE) already excludes every other writer.

    Why: no row exists yet to lock where two transactions would both create the same thing (a class for
    one external id, a catalog import, a new tag); under the lock the second waits for the first to
    commit, and a statement after the wait sees what it created (READ COMMITTED)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _scripts():
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config)


HEAD = _scripts().get_current_head()
# every revision this code can migrate from: a store at another one was migrated by a newer giflens
KNOWN_REVISIONS = frozenset(script.revision for script in _scripts().walk_revisions())


class SchemaTooNewError(StoreError, CommandError):
    """The store was migrated by a newer giflens than this one (a teammate upgraded the shared database).

    A StoreError (an editor's refusal, one line) that is also Alembic's CommandError, the error a store that
    cannot be migrated raises: callers that report "cannot open the store" for those report this one alike."""


def check_known_revision(revision: str | None, url: object) -> None:
    """Refuse a store at a revision this code does not know, before Alembic tries to upgrade from it.

    Why: Alembic only says "Can't locate revision identified by '0014'"; the editor needs to hear that the
    store is newer than their giflens and how to update it. Nothing is written to the store."""
    if revision is not None and revision not in KNOWN_REVISIONS:
        raise SchemaTooNewError(f"the store at {_hidden(url)} is at schema {revision}, newer than this giflens "
                                f"(head {HEAD}): update giflens (git pull && make sync)")


def _hidden(url: object) -> str:
    """A URL as a message shows it: its password hidden, also one given in the query string (?password=), and
    without the driver `normalise_url` added (postgresql://, as the editor writes it)."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.drivername == "postgresql+psycopg":
        parsed = parsed.set(drivername="postgresql")
    hidden = {key: "xxx" for key in parsed.query if "password" in key.casefold()}
    return parsed.update_query_dict(hidden).render_as_string(hide_password=True)


def normalise_url(url: str) -> str:
    """postgresql:// and postgres:// use psycopg 3, the driver giflens ships."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
            # SQLAlchemy emits BEGIN itself (below), so a write scope can take the write lock up front.
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE_OPTION) else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, connect_args=_pg_connect_args(parsed))


def _pg_connect_args(parsed) -> dict[str, int]:
    """libpq waits forever by default for a server that accepts the connection but never answers;
    a bounded wait turns a wrong or dead host into an error. A connect_timeout in the URL wins."""
    return {} if "connect_timeout" in parsed.query else {"connect_timeout": PG_CONNECT_TIMEOUT_S}


def stored_revision(url: str) -> str | None:
    """The migration revision of the store at url, None where giflens never migrated one (an empty or
    someone else's database, a SQLite file that is not there), read without creating or migrating
    anything. Why: a command that only reads must not turn a mistyped URL into a new empty store."""
    from sqlalchemy.pool import NullPool

    parsed = make_url(normalise_url(url))
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite and not (parsed.database and Path(parsed.database).is_file()):
        return None  # sqlite3 would create the file
    engine = create_engine(parsed, poolclass=NullPool, connect_args={} if sqlite else _pg_connect_args(parsed))
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    """Upgrade to head; idempotent, and serialised across processes on PostgreSQL. A store at a revision
    this code does not know (a newer giflens migrated it) is refused (`check_known_revision`)."""
    config = alembic_config(engine)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            try:
                check_known_revision(MigrationContext.configure(conn).get_current_revision(), engine.url)
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
                conn.commit()
            finally:
                conn.rollback()  # the check's read, when it refused: the unlock runs in a clean transaction
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()
        return
    revision = current_revision(engine)
    check_known_revision(revision, engine.url)
    if revision != HEAD:
        # BEGIN IMMEDIATE (WRITE_OPTION), only when there is something to upgrade (a store at head is
        # opened without the write lock, so readers never wait behind a long write): a second process
        # opening the same new store waits for the
        # write lock and then finds the store at head. A deferred BEGIN read the version table first
        # and failed at once (SQLITE_BUSY, no busy wait) upgrading to a writer behind the first.
        with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn:
            # SQLite rebuilds a table to alter it (batch mode) and asks for foreign keys off meanwhile:
            # a pragma that only takes effect outside a transaction, hence the driver connection.
            driver = conn.connection.driver_connection
            driver.execute("PRAGMA foreign_keys=OFF")
            try:
                with conn.begin():
                    config.attributes["connection"] = conn
                    command.upgrade(config, "head")
            finally:
                driver.execute("PRAGMA foreign_keys=ON")


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@lru_cache(maxsize=16)
def _engine_for(url: str) -> Engine:
    engine = make_engine(url)
    migrate(engine)
    return engine


def open_store(url: str | None = None) -> sessionmaker[Session]:
    """A session factory for the store at url (default: the settings' URL), migrated to head."""
    if url is None:
        from models.settings import get_settings

        url = get_settings().resolved_database_url
    return sessionmaker(_engine_for(normalise_url(url)), expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session], *, write: bool = False) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error. `write=True` is `write_scope`."""
    session = factory()
    try:
        if write:
            session.connection(execution_options={WRITE_OPTION: True})
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def write_scope(factory: sessionmaker[Session]) -> AbstractContextManager[Session]:
    """A transaction for an editor's operation: on SQLite it takes the write lock at BEGIN
    (BEGIN IMMEDIATE), so the versions it reads cannot change before it writes; on
    PostgreSQL operations lock the rows they read (SELECT ... FOR UPDATE)."""
    return session_scope(factory, write=True)
