"""The content-addressed blob store behind the claim check.

Events carry SHA-256 digests; the bytes live here. A blob is immutable once
written, so re-putting the same bytes is a no-op and replaying events plus
their blobs reproduces every read model without re-parsing or re-embedding.
The default backend is a PostgreSQL table; the ``BlobStore`` protocol is the
seam for object storage later.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL
from psycopg_pool import ConnectionPool

from infra.crypto import DataKey, KeyErasedError, KeyStore, Opener


class BlobNotFoundError(LookupError):
    """No blob with that digest exists for that tenant."""


# (tenant_id, key_id, sha256): a blob sealed with the data key ``key_id`` ('' for none).
BlobKey = tuple[str, str, str]


class BlobStore(Protocol):
    def put(self, tenant_id: str, content: bytes, key: DataKey | None = None) -> str: ...

    def get(self, tenant_id: str, sha256: str, key: DataKey | None = None) -> bytes: ...

    def get_many(self, keys: Sequence[BlobKey]) -> dict[BlobKey, bytes]: ...


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


_PUT = (
    "INSERT INTO blobs (tenant_id, key_id, sha256, size_bytes, content)"
    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
# A sealed blob is stored only while its key exists, which it locks until commit: an
# erasure either deletes the blob with the key or has deleted the key, and then no
# blob is stored (a worker still holding the key in memory cannot leave one behind).
_PUT_SEALED = (
    "INSERT INTO blobs (tenant_id, key_id, sha256, size_bytes, content)"
    " SELECT %s, %s, %s, %s, %s FROM data_keys WHERE key_id = %s FOR SHARE"
    " ON CONFLICT DO NOTHING"
)


def put_row(curs: Cursor[Any], row: tuple[Any, ...]) -> None:
    """Store a row made by ``sealed_row`` (in the caller's transaction)."""
    if row[1]:
        curs.execute(_PUT_SEALED, (*row, row[1]))
    else:
        curs.execute(_PUT, row)


def sealed_row(tenant_id: str, content: bytes, key: DataKey | None) -> tuple[Any, ...]:
    """The blobs row for ``content``: named by its own digest, sealed with ``key`` if given."""
    digest = sha256_hex(content)
    if key is None:
        return (tenant_id, "", digest, len(content), content)
    return (tenant_id, key.key_id, digest, len(content), key.seal(content))


class PostgresBlobStore:
    """Blobs in PostgreSQL. One sealed with a data key is stored encrypted and read
    back with the same key; it is named by the digest of its plaintext (what events
    carry) and kept per key, so erasing the key's subject deletes exactly its blobs."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def put(self, tenant_id: str, content: bytes, key: DataKey | None = None) -> str:
        row = sealed_row(tenant_id, content, key)
        with self._pool.connection() as conn, conn.cursor() as curs:
            put_row(curs, row)
        return str(row[2])

    def get(self, tenant_id: str, sha256: str, key: DataKey | None = None) -> bytes:
        key_id = key.key_id if key is not None else ""
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT content FROM blobs WHERE tenant_id = %s AND key_id = %s AND sha256 = %s",
                (tenant_id, key_id, sha256),
            ).fetchone()
        if row is None:
            raise BlobNotFoundError(f"blob {sha256} not found for tenant {tenant_id}")
        return key.open(bytes(row[0])) if key is not None else bytes(row[0])

    def get_many(self, keys: Sequence[BlobKey]) -> dict[BlobKey, bytes]:
        """Several blobs as stored (sealed ones still sealed), in one round trip."""
        if not keys:
            return {}
        tenants, key_ids, digests = zip(*set(keys), strict=True)
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT tenant_id, key_id, sha256, content FROM blobs"
                " WHERE (tenant_id, key_id, sha256) IN"
                " (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]))",
                (list(tenants), list(key_ids), list(digests)),
            ).fetchall()
        return {(row[0], row[1], row[2]): bytes(row[3]) for row in rows}


class BatchBlobs:
    """Blobs a batch of events will read, fetched (and their keys) in one round trip each.

    ``get`` raises ``KeyErasedError`` for a blob whose key is gone: its subject was
    erased, and a replay skips what it would have built from it.
    """

    def __init__(self, store: BlobStore, keys: KeyStore | None = None) -> None:
        self._store = store
        self.keys = keys
        self._cache: dict[BlobKey, bytes] = {}
        self._opener = Opener(keys)

    def prefetch(self, keys: Sequence[BlobKey]) -> None:
        self._opener = Opener(self.keys)
        self._opener.prefetch_keys(k[1] for k in keys if k[1])
        self._cache = self._store.get_many(keys)

    def get(self, tenant_id: str, key_id: str, sha256: str) -> bytes:
        key = self._opener.key(key_id) if key_id else None
        if key_id and key is None:
            raise KeyErasedError(f"{key_id} has no key: its subject was erased")
        cached = self._cache.get((tenant_id, key_id, sha256))
        if cached is None:
            return self._store.get(tenant_id, sha256, key)
        return key.open(cached) if key is not None else cached


class EventsWithBlobsRecorder(PostgresApplicationRecorder):
    """An events table whose appends can carry blobs, written in the same transaction.

    ``app.save(aggregate, blobs=[(tenant_id, content), ...])``: the blobs the new
    events name by digest are stored with them, atomically and in one round trip
    (the library pipelines what ``_insert_events`` sends before the events), so a
    recorded event never names a blob that is missing, and no second commit is paid.
    ``also=[step, ...]``: more statements for the same transaction (a step gets the
    cursor): a data key made with the events that name it, or destroyed with the
    erasure event, commits or fails with them.
    Select it with ``APPLICATION_RECORDER_TOPIC`` = ``EVENTS_WITH_BLOBS``.
    """

    def _insert_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        *,
        blobs: Sequence[tuple[str, bytes]] = (),
        also: Sequence[Callable[[Cursor[DictRow]], None]] = (),
        **kwargs: Any,
    ) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        for tenant_id, content in blobs:
            put_row(curs, sealed_row(tenant_id, content, None))
        for step in also:
            step(curs)


@dataclass(frozen=True)
class SealedTexts:
    """Query texts sealed with data keys of their own, for ``ReadsRecorder``: column by
    column, one entry per text (``sealed_row``'s with its key's), and the pairs (key,
    quoted subject's key) of what each key quotes."""

    master_key_id: str = ""  # the key that wraps theirs
    key_ids: list[str] = field(default_factory=list)
    tenants: list[str] = field(default_factory=list)
    wrapped: list[bytes] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    contents: list[bytes] = field(default_factory=list)
    quoting: list[str] = field(default_factory=list)
    quoted: list[str] = field(default_factory=list)


class ReadsRecorder(EventsWithBlobsRecorder):
    """The activity context's recorder: a batch of reads appended in one statement.

    ``insert_events(events, blobs=[(tenant_id, text), ...], sealed=SealedTexts(...))``
    calls ``kf_record_reads`` (``migrations/0016_record_reads.sql``) on an autocommit
    connection: one statement, one transaction, one round trip. It takes the quoted
    subjects' shared locks, stores the texts (a sealed one only with its key and
    quotes, and not at all if a subject it quotes is erased), then locks the table,
    notifies and inserts the events, as the library's append and the blob steps did
    in eight statements; so the same guarantees (events committed in the order of
    their ids, texts with the events that name them). A failed statement fails the
    call: nothing is written, and a uniqueness violation is still the library's
    ``IntegrityError``. For the hottest append there is, one recorded read per read
    served: the fewer statements, the less of the API's interpreter each read takes.
    """

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        if events_table_name != "activity_events":
            raise ValueError(f"kf_record_reads appends to activity_events, not {events_table_name}")
        self._call = SQL(
            "SELECT n FROM kf_record_reads("
            "%b::uuid[], %b::bigint[], %b::text[], %b::bytea[],"
            " %b::text[], %b::text[], %b::bigint[], %b::bytea[],"
            " %b::text[], %b::text[], %b::bytea[], %b::text[], %b::bigint[], %b::bytea[],"
            " %b::text, %b::text[], %b::text[], %b::text[], %b::text) AS n"
        )
        self._lock_timeout = f"{datastore.lock_timeout}s"

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        blobs: Sequence[tuple[str, bytes]] = (),
        sealed: SealedTexts | None = None,
        tracking: object = None,
        **kwargs: Any,
    ) -> Sequence[int]:
        if tracking is not None or kwargs:
            raise TypeError(f"ReadsRecorder takes blobs and sealed texts, not {tracking or kwargs}")
        if not stored_events:
            return []
        plain = [sealed_row(tenant_id, content, None) for tenant_id, content in blobs]
        s = sealed or SealedTexts()
        params = (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
            [row[0] for row in plain],
            [row[2] for row in plain],
            [row[3] for row in plain],
            [row[4] for row in plain],
            s.key_ids,
            s.tenants,
            s.wrapped,
            s.digests,
            s.sizes,
            s.contents,
            s.master_key_id,
            s.quoting,
            s.quoted,
            sorted(set(s.quoted)),  # shared locks in one order everywhere
            self._lock_timeout,
        )
        with self.datastore.get_connection() as conn:
            rows = conn.execute(self._call, params, prepare=True).fetchall()
        # Ids are drawn in insert order while the table is locked: sorted (as the
        # function returns them), they are the events' in the order given.
        return [row["n"] for row in rows]


EVENTS_WITH_BLOBS = f"{__name__}:EventsWithBlobsRecorder"
READS_RECORDER = f"{__name__}:ReadsRecorder"
