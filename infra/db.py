"""PostgreSQL plumbing shared by the event store, the blob store and read models.

Owns: turning a database URL into the ``eventsourcing`` library's environment,
connection pools for our own tables, the schema lock, and applying
``migrations/*.sql`` in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import threading
from collections.abc import Iterator
from importlib import resources
from typing import Any, ClassVar

import psycopg
import structlog
from eventsourcing.postgres import BasePostgresFactory, PostgresDatastore, PostgresFactory
from eventsourcing.utils import Environment, EnvType
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

log = structlog.get_logger(__name__)

# Arbitrary but fixed: serialises concurrent `kf migrate` runs.
_MIGRATION_LOCK = 7_240_001


def event_store_env(
    database_url: str, pool_size: int, max_overflow: int, *, create_tables: bool = False
) -> dict[str, str]:
    """The ``eventsourcing`` environment for an Application on ``database_url``.

    Applications never create their tables unless asked: ``kf migrate`` does,
    once, under the schema lock.
    """
    info = conninfo_to_dict(database_url)
    return {
        # One pool per process for every context's Application (not one each).
        "PERSISTENCE_MODULE": "infra.db:SharedPostgresFactory",
        "POSTGRES_DBNAME": str(info.get("dbname") or "postgres"),
        "POSTGRES_HOST": str(info.get("host") or "127.0.0.1"),
        "POSTGRES_PORT": str(info.get("port") or "5432"),
        "POSTGRES_USER": str(info.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(info.get("password") or ""),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(max_overflow),
        # Seconds: a writer waits this long for the per-context insert lock.
        "POSTGRES_LOCK_TIMEOUT": "10",
        # Seconds to wait for a connection (the pool's and a new one's): the library tries
        # an operation 10 times, so a vanished server is known within about 20 s.
        "POSTGRES_CONNECT_TIMEOUT": "2",
        "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "30",
        "POSTGRES_PRE_PING": "y",
        "CREATE_TABLE": "y" if create_tables else "n",
    }


def check_idle_connection(conn: psycopg.Connection[Any]) -> None:
    """A pool's check before it lends a connection, with no round trip when it can tell.

    A connection the server has closed (a restart, a terminated backend, an idle
    timeout) has something to read on its socket: the server's last message, or
    end of file. Only then is it pinged, and dropped by the pool if the ping
    fails; a quiet socket is lent as it is. (``ConnectionPool.check_connection``
    pings every time: a round trip before every statement a request makes.)
    """
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError) as exc:
        raise psycopg.OperationalError("the connection's socket is gone") from exc
    if readable:
        ConnectionPool.check_connection(conn)


def use_idle_check(pool: ConnectionPool[Any]) -> None:
    """Make a pool built elsewhere (the event store's) check connections as ours do.

    ``psycopg_pool`` keeps the check in ``_check``; if a release renames it, this
    fails loudly here rather than silently pinging again.
    """
    if not hasattr(pool, "_check"):
        raise RuntimeError("psycopg_pool.ConnectionPool no longer has _check")
    pool._check = check_idle_connection


def open_pool(
    database_url: str, *, min_size: int = 1, max_size: int = 8, name: str
) -> ConnectionPool:
    pool = ConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=False,
        check=check_idle_connection,
        kwargs={"autocommit": True},
    )
    pool.open(wait=True, timeout=30)
    return pool


def migration_files() -> list[tuple[str, str]]:
    """(name, sql) of every migration, in the order they apply."""
    files = [f for f in resources.files("migrations").iterdir() if f.name.endswith(".sql")]
    return [(f.name, f.read_text()) for f in sorted(files, key=lambda f: f.name)]


class SchemaNotReadyError(RuntimeError):
    """The database has no schema, or an older one than this code: run ``kf migrate``."""


@contextlib.contextmanager
def schema_lock(database_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """A connection holding the schema's advisory lock: one migration at a time, cluster-wide.

    Two processes creating the same tables at once make PostgreSQL fail one of
    them (``tuple concurrently updated``); every schema change happens under this.
    """
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            yield conn
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))


def apply_migrations(conn: psycopg.Connection[tuple[Any, ...]]) -> list[str]:
    """Apply ``migrations/*.sql`` not yet applied, on a connection holding ``schema_lock``."""
    applied_now: list[str] = []
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
    for name, sql_text in migration_files():
        if name in done:
            continue
        with conn.transaction():
            conn.execute(sql_text.encode())
            conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
        applied_now.append(name)
        log.info("migration_applied", migration=name)
    return applied_now


def missing_migrations(conn: psycopg.Connection[tuple[Any, ...]]) -> list[str]:
    """The migrations this code has that the database has not applied (all, on an empty one)."""
    names = [name for name, _ in migration_files()]
    if not table_exists(conn, "schema_migrations"):
        return names
    done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
    return [name for name in names if name not in done]


def table_exists(conn: psycopg.Connection[Any], table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def datastore(database_url: str, *, pool_size: int = 2, max_overflow: int = 4) -> PostgresDatastore:
    """A library datastore (a pool plus the library's error translation) for read models."""
    env = event_store_env(database_url, pool_size, max_overflow)
    return PostgresDatastore(
        dbname=env["POSTGRES_DBNAME"],
        host=env["POSTGRES_HOST"],
        port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"],
        pool_size=pool_size,
        max_overflow=max_overflow,
        pre_ping=True,
        idle_in_transaction_session_timeout=30,
    )


READER_ROLE = "kf_reader"


def reader_url(database_url: str, configured: str = "", password: str = "") -> str:
    """Where the query API reads read models: as ``kf_reader``, never as their owner.

    ``configured`` (``database.reader_url``) wins; otherwise the owner's URL with
    the user swapped for ``kf_reader`` and ``password`` (none suits trust or peer
    authentication: embedded PostgreSQL, local development).
    """
    if configured:
        return configured
    info = conninfo_to_dict(database_url)
    info["user"] = READER_ROLE
    info.pop("password", None)
    if password:
        info["password"] = password
    return make_conninfo("", **{k: v for k, v in info.items() if v is not None})


def set_reader_password(conn: psycopg.Connection[Any], password: str) -> None:
    """Give ``kf_reader`` the configured password (``kf migrate``, under the schema lock)."""
    conn.execute(
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(READER_ROLE), sql.Literal(password)
        )
    )


class TenantReads:
    """Read-model queries confined to one tenant by PostgreSQL itself.

    Connects as ``kf_reader`` (migrations/0004_isolation.sql), for which every
    tenant-scoped table has row-level security keyed on ``kf.tenant_id``; each
    ``scoped(tenant)`` block is one transaction with that setting made local
    to it. A query that forgets ``WHERE tenant_id = ...`` still sees only the
    caller's rows; a connection outside ``scoped`` sees none.
    """

    def __init__(self, url: str, *, max_size: int = 8, lazy: bool = False) -> None:
        self._pool: ConnectionPool[psycopg.Connection[DictRow]] = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            name="tenant-reads",
            open=False,
            check=check_idle_connection,
            kwargs={"autocommit": True, "row_factory": dict_row},
        )
        self._opened = False
        self._open_lock = threading.Lock()
        if not lazy:
            self.open()

    def open(self) -> None:
        """Connect (and check the role) now; otherwise it happens on the first query."""
        with self._open_lock:
            if self._opened:
                return
            self._pool.open(wait=True, timeout=30)
            self._check_role()
            self._opened = True

    def _check_role(self) -> None:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
        if row is None or row["rolsuper"] or row["rolbypassrls"]:
            self._pool.close()
            raise RuntimeError(
                "the read-model connection's role can bypass row-level security;"
                " database.reader_url must name a role like kf_reader"
            )

    @contextlib.contextmanager
    def scoped(
        self, tenant_id: str, *, snapshot: bool = False
    ) -> Iterator[psycopg.Connection[DictRow]]:
        """``snapshot``: every statement of the transaction sees the same committed state
        (repeatable read), for a read whose statements must agree with one another."""
        if not tenant_id:
            raise ValueError("a tenant-scoped read needs a tenant")
        if not self._opened:
            self.open()
        with self._pool.connection() as conn, conn.transaction():
            if snapshot:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute("SELECT set_config('kf.tenant_id', %s, true)", (tenant_id,))
            yield conn

    def close(self) -> None:
        self._pool.close()


class AdvisoryLocks:
    """One connection holding every session advisory lock this process takes.

    Relays and projectors each hold a lock to be the one active replica; one
    connection per process holds them all (a relay per context and a runner per
    read model would otherwise keep a connection each, idle). If the connection
    is lost, every lock it held is released at once, and ``check`` raises.
    """

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._opening = asyncio.Lock()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        async with self._opening:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
            return self._conn

    async def hold(self, key: str, stop: asyncio.Event, **log_context: Any) -> bool:
        """Take ``key``, waiting as a standby; False if ``stop`` is set first."""
        return await hold_advisory_locks(await self._connection(), [key], stop, **log_context)

    async def hold_all(self, keys: list[str], stop: asyncio.Event, **log_context: Any) -> bool:
        """Take every one of ``keys`` or none, waiting as a standby; False if ``stop`` is set
        first. A runner that keeps several read models must not sit on some of their locks
        while it waits for another: the ones it holds would be kept by no one."""
        return await hold_advisory_locks(await self._connection(), keys, stop, **log_context)

    async def check(self) -> None:
        """Raise if the connection holding the locks is gone (and the locks with it)."""
        await (await self._connection()).execute("SELECT 1")

    async def release(self, key: str) -> None:
        if self._conn is not None and not self._conn.closed:
            with contextlib.suppress(psycopg.Error):
                await self._conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


async def hold_advisory_locks(
    conn: psycopg.AsyncConnection[Any], keys: list[str], stop: asyncio.Event, **log_context: Any
) -> bool:
    """Take the session advisory locks ``keys`` on ``conn``, all or none, waiting as a
    standby (what it took of them is let go while another holds one).

    Returns True once held (until ``conn`` closes), False if ``stop`` is set
    first. This is how exactly one relay per context and one runner per read
    model are active while their replicas wait.
    """
    announced = False
    while not stop.is_set():
        taken: list[str] = []
        for key in keys:
            cursor = await conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,))
            row = await cursor.fetchone()
            if row is None or not row[0]:
                break
            taken.append(key)
        if len(taken) == len(keys):
            return True
        for key in taken:
            await conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
        if not announced:
            log.info("standby", lock=", ".join(keys), **log_context)
            announced = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    return False


class SessionLock:
    """One PostgreSQL advisory lock held by a connection of its own (threads, not asyncio):
    ``try_acquire`` is True once this process holds it; it is released on ``release`` or
    when the connection (the process) goes away."""

    def __init__(self, database_url: str, key: str) -> None:
        self._url = database_url
        self._key = key
        self._conn: psycopg.Connection[Any] | None = None

    def try_acquire(self) -> bool:
        if self._conn is not None and not self._conn.closed:
            return True
        conn = psycopg.connect(self._url, autocommit=True)
        row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (self._key,)).fetchone()
        if row is None or not row[0]:
            conn.close()
            return False
        self._conn = conn
        return True

    def release(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class SharedPostgresFactory(PostgresFactory):
    """The library's PostgreSQL factory, with one datastore (one connection pool) shared by
    every Application of a process that has the same connection settings: five contexts
    cost a process one pool, not five. Each factory's ``close`` gives its share back; the
    last one closes the pool."""

    _shared: ClassVar[dict[tuple[tuple[str, str], ...], tuple[PostgresDatastore, int]]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, env: Environment | EnvType | None) -> None:
        settings = env if isinstance(env, Environment) else Environment(env=env)
        self._share_key = tuple(
            sorted((str(k), str(v)) for k, v in settings.items() if str(k).startswith("POSTGRES_"))
        )
        with self._shared_lock:
            found = self._shared.get(self._share_key)
            if found is not None:
                datastore, users = found
                self._shared[self._share_key] = (datastore, users + 1)
                super(BasePostgresFactory, self).__init__(env)  # the environment, no new pool
                self.datastore = datastore
                return
            super().__init__(env)
            self._shared[self._share_key] = (self.datastore, 1)

    def close(self) -> None:
        with self._shared_lock:
            found = self._shared.get(self._share_key)
            if found is not None and found[0] is self.datastore:
                datastore, users = found
                if users > 1:
                    self._shared[self._share_key] = (datastore, users - 1)
                    return
                del self._shared[self._share_key]
        super().close()
