"""Tenant isolation in PostgreSQL itself: row-level security on every read-model table.

The query API reads as ``kf_reader``; these tests write rows for two tenants
as the owner and show that a query with no tenant condition at all, run the
way the API runs queries, sees only the scoped tenant's rows (and none when no
tenant is set), and that the role cannot simply turn the protection off.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from config.schema import migrate
from infra.db import READER_ROLE, TenantReads, reader_url

TENANT_A, TENANT_B = "tenant-a", "tenant-b"


@pytest.fixture(scope="module")
def owner_url(database_url: str) -> str:
    return database_url  # migrated by the fixture


@pytest.fixture(scope="module")
def reads(owner_url: str) -> Iterator[TenantReads]:
    made = TenantReads(reader_url(owner_url))
    yield made
    made.close()


# Tables the query API's role is granted nothing on: the wrapped data keys.
OWNER_ONLY = {"data_keys"}


def _tenant_tables(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    rows = conn.execute(
        "SELECT c.table_name FROM information_schema.columns c"
        " JOIN information_schema.tables t USING (table_schema, table_name)"
        " WHERE c.table_schema = 'public' AND c.column_name = 'tenant_id'"
        " AND t.table_type = 'BASE TABLE' ORDER BY 1"
    ).fetchall()
    return [str(r[0]) for r in rows]


def _fill(conn: psycopg.Connection[tuple[object, ...]], table: str) -> None:
    """One row per tenant, whatever the table's other NOT NULL columns are."""
    columns = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = %s AND is_nullable = 'NO'"
        " AND is_generated = 'NEVER' AND column_default IS NULL",
        (table,),
    ).fetchall()
    samples = {
        "text": "x",
        "uuid": None,
        "bigint": 1,
        "integer": 1,
        "bytea": b"x",
        "jsonb": "[]",
        "timestamp with time zone": "2026-01-01T00:00:00Z",
        "date": "2026-01-01",
        "smallint": 1,
        "numeric": 1,
    }
    for n, tenant in enumerate((TENANT_A, TENANT_B), start=1):
        names, values = [], []
        for name, data_type in columns:
            names.append(sql.Identifier(str(name)))
            if name == "tenant_id":
                values.append(tenant)
            elif data_type == "uuid":
                values.append(str(uuid.uuid4()))
            elif name in {"sha256", "content_sha256", "key_id"}:
                values.append(uuid.uuid4().hex)
            elif data_type in ("bigint", "integer"):
                values.append(n)  # distinct per tenant: some tables have unique positions
            else:
                values.append(samples[str(data_type)])
        conn.execute(
            sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier(table),
                sql.SQL(", ").join(names),
                sql.SQL(", ").join(sql.Placeholder() * len(values)),
            ),
            values,
        )


def test_every_tenant_table_is_protected(owner_url: str) -> None:
    with psycopg.connect(owner_url, autocommit=True) as conn:
        tables = _tenant_tables(conn)
        assert {"catalog_documents", "fulltext_chunks", "api_keys", "blobs"} <= set(tables)
        unprotected = conn.execute(
            "SELECT relname FROM pg_class WHERE relname = ANY(%s) AND NOT relrowsecurity",
            (tables,),
        ).fetchall()
    assert unprotected == []


def test_a_query_without_a_tenant_condition_sees_only_the_callers_rows(
    owner_url: str, reads: TenantReads
) -> None:
    with psycopg.connect(owner_url, autocommit=True) as conn:
        tables = _tenant_tables(conn)
        for table in tables:
            _fill(conn, table)
    for table in OWNER_ONLY:  # the reader may not read these at all, for any tenant
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        with pytest.raises(psycopg.errors.InsufficientPrivilege), reads.scoped(TENANT_A) as conn:
            conn.execute(query)
    for table in set(tables) - OWNER_ONLY:
        query = sql.SQL("SELECT DISTINCT tenant_id FROM {}").format(sql.Identifier(table))
        for tenant in (TENANT_A, TENANT_B):
            with reads.scoped(tenant) as conn:
                seen = {row["tenant_id"] for row in conn.execute(query).fetchall()}
            assert seen == {tenant}, table


def test_no_tenant_set_means_no_rows(owner_url: str) -> None:
    with psycopg.connect(reader_url(owner_url), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM catalog_documents").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone() == (0,)


def test_the_reader_cannot_bypass_or_write(owner_url: str, reads: TenantReads) -> None:
    with psycopg.connect(reader_url(owner_url), autocommit=True) as conn:
        role = conn.execute(
            "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert role == (READER_ROLE, False, False)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("ALTER TABLE catalog_documents DISABLE ROW LEVEL SECURITY")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM catalog_documents")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET ROLE postgres")


def test_a_role_that_bypasses_row_security_is_refused(owner_url: str) -> None:
    with pytest.raises(RuntimeError, match="bypass row-level security"):
        TenantReads(owner_url)


def test_a_configured_reader_password_is_set_and_used(owner_url: str) -> None:
    """``kf migrate`` gives kf_reader the configured password (and creates nothing else)."""
    assert migrate(owner_url, reader_password="reader-pass-for-tests") == []
    try:
        with psycopg.connect(owner_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = %s",
                (READER_ROLE,),
            ).fetchone()
        assert row == (True,)
        url = reader_url(owner_url, password="reader-pass-for-tests")
        assert "reader-pass-for-tests" in url and READER_ROLE in url
        made = TenantReads(url)
        with made.scoped(TENANT_A) as conn:
            assert conn.execute("SELECT current_user AS who").fetchone() == {"who": READER_ROLE}
        made.close()
    finally:
        with psycopg.connect(owner_url, autocommit=True) as conn:
            conn.execute("ALTER ROLE kf_reader PASSWORD NULL")
