"""The database schema: created once by ``kf migrate``, checked by every other process.

``migrate`` holds the schema's advisory lock while it creates, in order: each
context's event table (the ``eventsourcing`` library's own DDL), the tables of
``migrations/*.sql`` (blob store, read models, row-level security), the
relays' tracking table and each read model's tracking table with a row per
context it follows, and gives ``kf_reader`` its password when one is
configured. It reports what it created; run again, it creates nothing.

Role processes (workers, relays, projectors, the APIs) never run DDL: replicas
that start at the same moment would race on it (PostgreSQL fails one with
``tuple concurrently updated``). They call ``check`` instead, which names what
is missing and tells the operator to run ``kf migrate``.
"""

from __future__ import annotations

import psycopg
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.conninfo import conninfo_to_dict

from commands.alerts import TRACKING_TABLE as NOTIFIER_TRACKING
from config.settings import Settings
from domain.contexts import CONTEXTS
from infra.db import (
    SchemaNotReadyError,
    apply_migrations,
    datastore,
    missing_migrations,
    schema_lock,
    set_reader_password,
    table_exists,
)
from infra.relay import TRACKING_TABLE as RELAY_TRACKING
from projections.base import create_tracking
from projections.read_models import READ_MODELS


def events_table(context: str) -> str:
    return f"{context}_events"


def tracking_tables() -> dict[str, tuple[str, ...]]:
    """Every tracking table and the contexts it has a row for."""
    tables: dict[str, tuple[str, ...]] = {RELAY_TRACKING: (), NOTIFIER_TRACKING: ("usage",)}
    tables.update({f"{m.name}_tracking": m.contexts for m in READ_MODELS})
    return tables


def reader_password(settings: Settings) -> str:
    """The password to give ``kf_reader`` (none when a separate reader URL is configured)."""
    database = settings.database
    return database.reader_password if not database.reader_url else ""


def migrate(database_url: str, *, reader_password: str = "") -> list[str]:
    """Create whatever of the schema is missing; returns what was created now."""
    created: list[str] = []
    with schema_lock(database_url) as conn:
        store = datastore(database_url, pool_size=1, max_overflow=1)
        try:
            for context in CONTEXTS:
                table = events_table(context)
                if not table_exists(conn, table):
                    PostgresApplicationRecorder(store, events_table_name=table).create_table()
                    created.append(table)
            created.extend(apply_migrations(conn))
            for table, contexts in tracking_tables().items():
                created.extend(create_tracking(store, table, contexts))
        finally:
            store.close()
        if reader_password:
            set_reader_password(conn, reader_password)
    return created


def check(database_url: str) -> None:
    """Raise ``SchemaNotReadyError`` unless the whole schema of this code is there."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        missing = [
            table
            for table in [events_table(c) for c in CONTEXTS] + list(tracking_tables())
            if not table_exists(conn, table)
        ]
        missing += missing_migrations(conn)
    if missing:
        info = conninfo_to_dict(database_url)
        where = f"{info.get('dbname', '?')} on {info.get('host', '?')}:{info.get('port', '5432')}"
        raise SchemaNotReadyError(
            f"the database {where} has no schema or an older one than this kf"
            f" (missing: {', '.join(missing)}); run `kf migrate` first"
        )
