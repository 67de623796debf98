"""The content-addressed blob store behind the claim check.

Events carry SHA-256 digests; the bytes live here. A blob is immutable once
written, so re-putting the same bytes is a no-op and replaying events plus
their blobs reproduces every read model without re-parsing or re-embedding.
The default backend is a PostgreSQL table; the ``BlobStore`` protocol is the
seam for object storage later.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg_pool import ConnectionPool


class BlobNotFoundError(LookupError):
    """No blob with that digest exists for that tenant."""


class BlobStore(Protocol):
    def put(self, tenant_id: str, content: bytes) -> str: ...

    def get(self, tenant_id: str, sha256: str) -> bytes: ...

    def get_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bytes]: ...


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


_PUT = (
    "INSERT INTO blobs (tenant_id, sha256, size_bytes, content)"
    " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING"
)


class PostgresBlobStore:
    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def put(self, tenant_id: str, content: bytes) -> str:
        digest = sha256_hex(content)
        with self._pool.connection() as conn:
            conn.execute(_PUT, (tenant_id, digest, len(content), content))
        return digest

    def get(self, tenant_id: str, sha256: str) -> bytes:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT content FROM blobs WHERE tenant_id = %s AND sha256 = %s",
                (tenant_id, sha256),
            ).fetchone()
        if row is None:
            raise BlobNotFoundError(f"blob {sha256} not found for tenant {tenant_id}")
        return bytes(row[0])

    def get_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
        """Several blobs in one round trip, by (tenant_id, sha256); missing ones are absent."""
        if not keys:
            return {}
        tenants, digests = zip(*set(keys), strict=True)
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT tenant_id, sha256, content FROM blobs"
                " WHERE (tenant_id, sha256) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
                (list(tenants), list(digests)),
            ).fetchall()
        return {(row[0], row[1]): bytes(row[2]) for row in rows}


class BatchBlobs:
    """Blobs a batch of events will read, fetched in one round trip up front."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        self._cache: dict[tuple[str, str], bytes] = {}

    def prefetch(self, keys: Sequence[tuple[str, str]]) -> None:
        self._cache = self._store.get_many(keys)

    def get(self, tenant_id: str, sha256: str) -> bytes:
        cached = self._cache.get((tenant_id, sha256))
        return cached if cached is not None else self._store.get(tenant_id, sha256)


class EventsWithBlobsRecorder(PostgresApplicationRecorder):
    """An events table whose appends can carry blobs, written in the same transaction.

    ``app.save(aggregate, blobs=[(tenant_id, content), ...])``: the blobs the new
    events name by digest are stored with them, atomically and in one round trip
    (the library pipelines what ``_insert_events`` sends before the events), so a
    recorded event never names a blob that is missing, and no second commit is paid.
    Select it with ``APPLICATION_RECORDER_TOPIC`` = ``EVENTS_WITH_BLOBS``.
    """

    def _insert_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        *,
        blobs: Sequence[tuple[str, bytes]] = (),
        **kwargs: Any,
    ) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        for tenant_id, content in blobs:
            curs.execute(_PUT, (tenant_id, sha256_hex(content), len(content), content))


EVENTS_WITH_BLOBS = f"{__name__}:EventsWithBlobsRecorder"
