"""Command handlers of the activity context (events table ``activity_events``).

``record_read`` appends one ``Read.Recorded`` (a new aggregate each time, so
concurrent readers never conflict) and returns its position; the query's text
is stored as a blob under its SHA-256, in the transaction that appends the
event, and the event carries only the digest. The text of a read that showed
documents is sealed with a key of its own that *quotes* them (``infra.crypto``):
erasing any of them erases the text, which may well repeat what they said.
``record_refusal`` appends a ``Refusal.Recorded`` unless the same client was
recorded within the throttle window, in which case it is counted and the count
rides on the client's next recorded refusal. ``apply_retention`` appends a
``Retention.Applied``: the tenant's access records older than the retention leave
its read models.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventsourcing.utils import EnvType

from commands.base import CommandResult, ContextApplication
from domain.activity import Read, ReadKind, Refusal, Retention
from infra.blobs import READS_RECORDER, SealedTexts, sealed_row, sha256_hex
from infra.crypto import KeyStore, document_key, read_key


@dataclass
class _Pending:
    read: Read
    blob: tuple[str, bytes] | None
    shown: Sequence[str] = ()  # the documents the read showed (their keys are quoted)
    position: int | None = None
    error: BaseException | None = None
    done: bool = False


class GroupCommit:
    """Reads of concurrent requests appended together: one transaction, one commit.

    A caller queues its read and waits; whichever waiting caller finds no append
    under way takes the oldest queued reads (up to ``max_batch``) and appends
    them in one transaction, then wakes the others. Each caller returns once its
    own read is durable (or raises what the append raised), so "recorded before
    the response leaves" holds per read; alone, a caller appends its own read at
    once. Fewer commits, and the relay and projectors receive reads in batches.
    """

    def __init__(self, append: Callable[[list[_Pending]], list[int]], max_batch: int = 64) -> None:
        self._append = append
        self._max_batch = max_batch
        self._queue: list[_Pending] = []
        self._writing = False
        self._changed = threading.Condition()

    def append(self, pending: _Pending) -> int:
        with self._changed:
            self._queue.append(pending)
        while True:
            with self._changed:
                while not pending.done and self._writing:
                    self._changed.wait()
                if pending.done:
                    break
                self._writing = True
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
            self._write(batch)
        if pending.error is not None:
            raise pending.error
        assert pending.position is not None
        return pending.position

    def _write(self, batch: list[_Pending]) -> None:
        try:
            positions = self._append(batch)
            for item, position in zip(batch, positions, strict=True):
                item.position = position
        except BaseException as exc:
            for item in batch:
                item.error = exc
        finally:
            with self._changed:
                for item in batch:
                    item.done = True
                self._writing = False
                self._changed.notify_all()


class ActivityApp(ContextApplication):
    context = "activity"

    def __init__(
        self,
        env: EnvType,
        *,
        refusals_per_window: int = 5,
        refusal_window_s: float = 60.0,
        keys: KeyStore | None = None,
    ) -> None:
        # Query texts are stored with the event that names them, and a batch of reads
        # is appended in one statement (the hottest append there is).
        super().__init__({**(env or {}), "APPLICATION_RECORDER_TOPIC": READS_RECORDER})
        self._per_window = refusals_per_window
        self._window_s = refusal_window_s
        self._refusals: dict[str, tuple[float, int, int]] = {}  # client -> (window start, n, held)
        self._refusals_lock = threading.Lock()
        self._group = GroupCommit(self._append_batch)
        self._keys = keys

    def record_read(
        self,
        *,
        tenant_id: str,
        actor: str,
        role: str,
        kind: ReadKind,
        route: str,
        query: str | None = None,
        documents: Sequence[str] = (),
        chunks: Sequence[str] = (),
        mode: str | None = None,
        query_sha256: str | None = None,
    ) -> CommandResult:
        """``query_sha256`` instead of ``query``: a read of a query already recorded (its
        text is not stored again)."""
        text = query.encode() if query else None
        digest = sha256_hex(text) if text else query_sha256
        read = Read.record(
            tenant_id=tenant_id,
            actor=actor,
            role=role,
            kind=kind,
            route=route,
            query_sha256=digest,
            documents=list(documents),
            chunks=list(chunks),
            mode=mode,
        )
        self.stamp(read)  # the cause of this request, before another thread appends it
        blob = (tenant_id, text) if text else None
        position = self._group.append(_Pending(read, blob, list(documents)))
        return CommandResult(read.id, position, changed=True)

    def _append_batch(self, batch: list[_Pending]) -> list[int]:
        sealed = [p for p in batch if p.blob is not None and p.shown and self._keys is not None]
        blobs = list(dict.fromkeys(p.blob for p in batch if p.blob is not None and p not in sealed))
        texts = self._sealed_texts(sealed) if sealed else None
        positions = self.append_stamped(*(p.read for p in batch), blobs=blobs, sealed=texts)
        return [positions[p.read.id] for p in batch]

    def _sealed_texts(self, sealed: list[_Pending]) -> SealedTexts:
        """Each text sealed with a new key of its read that quotes the documents shown.

        The recorder stores them with the reads, after taking the subjects' shared locks,
        and leaves out the text of a read that showed a document erased meanwhile (its
        record stays): an erasure either committed before and is seen, or waits for the
        append and then destroys the keys it made (``migrations/0016_record_reads.sql``).
        """
        keys = self._keys
        assert keys is not None
        texts = SealedTexts(master_key_id=keys.master.key_id)
        for pending in sealed:
            assert pending.blob is not None
            key, wrapped = keys.new_key(read_key(pending.read.id))
            tenant_id, text = pending.blob
            _, _, digest, size, content = sealed_row(tenant_id, text, key)
            texts.key_ids.append(key.key_id)
            texts.tenants.append(tenant_id)
            texts.wrapped.append(wrapped)
            texts.digests.append(digest)
            texts.sizes.append(size)
            texts.contents.append(content)
            for quoted in sorted({document_key(d) for d in pending.shown}):
                texts.quoting.append(key.key_id)
                texts.quoted.append(quoted)
        return texts

    def record_refusal(self, **refusal: Any) -> CommandResult | None:
        """Record a refused request, or count it if its client was recorded just now."""
        client = str(refusal["client"])
        now = time.monotonic()
        with self._refusals_lock:
            start, recorded, held = self._refusals.get(client, (now, 0, 0))
            if now - start >= self._window_s:
                start, recorded = now, 0
            if recorded >= self._per_window:
                self._refusals[client] = (start, recorded, held + 1)
                return None
            self._refusals[client] = (start, recorded + 1, 0)
        refused = Refusal.record(suppressed=held, **refusal)
        position = self.record(refused)
        assert position is not None
        return CommandResult(refused.id, position, changed=True)

    def apply_retention(
        self,
        *,
        tenant_id: str,
        actor: str,
        retention_days: int,
        reason: str = "",
        now: datetime | None = None,
    ) -> CommandResult:
        """Drop the tenant's access records older than ``retention_days`` from its read
        models (the events stay in the event store); the run is itself an event."""
        retention = Retention.record(
            tenant_id=tenant_id,
            actor=actor,
            now=now or datetime.now(UTC),
            retention_days=retention_days,
            reason=reason,
        )
        position = self.record(retention)
        assert position is not None
        return CommandResult(retention.id, position, changed=True)
