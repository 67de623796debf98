"""Signed checkpoints of the audit trail's chains, written outside PostgreSQL.

A checkpoint says, for one tenant, where each of its chains stood: how many
entries, the newest entry's hash, position and aggregate. It is signed with
the audit signing key (Ed25519) and written as a file under
``<checkpoint_dir>/<tenant_id>/<sequence>.json``. Someone who can rewrite the
database cannot rewrite these without the key, so ``kf audit verify`` can tell
a log that was changed, cut short or reordered after a checkpoint from an
intact one, even if the audit read model was rewritten to match.

The ``Checkpointer`` runs beside the audit projector (where it holds the
projector's lock, so one process writes): every few seconds it reads the
committed chain heads and checkpoints each tenant whose chains advanced by
``every_events`` entries, or advanced at all ``every_s`` seconds ago.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL, Identifier

from infra.signing import Signer, key_id, verify

log = structlog.get_logger(__name__)

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class Head:
    context: str
    entries: int
    head: str
    position: int
    aggregate_id: str


@dataclass(frozen=True)
class Checkpoint:
    tenant_id: str
    sequence: int
    created_at: str
    key_id: str
    heads: tuple[Head, ...]

    def canonical(self) -> bytes:
        body = {
            "checkpoint_version": CHECKPOINT_VERSION,
            "tenant_id": self.tenant_id,
            "sequence": self.sequence,
            "created_at": self.created_at,
            "key_id": self.key_id,
            "heads": [h.__dict__ for h in sorted(self.heads, key=lambda h: h.context)],
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def head(self, context: str) -> Head | None:
        return next((h for h in self.heads if h.context == context), None)

    @property
    def entries(self) -> int:
        return sum(h.entries for h in self.heads)


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    signature: str
    path: Path

    def valid(self, public_key: Ed25519PublicKey) -> bool:
        return self.checkpoint.key_id == key_id(public_key) and verify(
            public_key, self.checkpoint.canonical(), self.signature
        )


class CheckpointStore:
    """Checkpoint files under one directory (one folder per tenant)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, checkpoint: Checkpoint, signature: str) -> Path:
        folder = self.directory / checkpoint.tenant_id
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{checkpoint.sequence:010d}.json"
        body = {"checkpoint": json.loads(checkpoint.canonical()), "signature": signature}
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
        os.replace(temporary, target)  # a checkpoint appears whole or not at all
        return target

    def tenants(self) -> list[str]:
        if not self.directory.exists():
            return []
        return sorted(p.name for p in self.directory.iterdir() if p.is_dir())

    def read(self, tenant_id: str) -> list[SignedCheckpoint]:
        """A tenant's checkpoints, oldest first (unreadable files are reported as such)."""
        folder = self.directory / tenant_id
        if not folder.exists():
            return []
        return [parse_checkpoint(path) for path in sorted(folder.glob("*.json"))]

    def latest(self, tenant_id: str) -> SignedCheckpoint | None:
        found = self.read(tenant_id)
        return found[-1] if found else None


class BadCheckpointError(ValueError):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


def parse_checkpoint(path: Path) -> SignedCheckpoint:
    try:
        body = json.loads(path.read_text())
        raw = body["checkpoint"]
        if raw.get("checkpoint_version") != CHECKPOINT_VERSION:
            raise BadCheckpointError(path, f"unknown version {raw.get('checkpoint_version')!r}")
        checkpoint = Checkpoint(
            tenant_id=str(raw["tenant_id"]),
            sequence=int(raw["sequence"]),
            created_at=str(raw["created_at"]),
            key_id=str(raw["key_id"]),
            heads=tuple(Head(**h) for h in raw["heads"]),
        )
        return SignedCheckpoint(checkpoint, str(body["signature"]), path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, BadCheckpointError):
            raise
        raise BadCheckpointError(path, f"unreadable ({exc})") from exc


@dataclass
class _Written:
    entries: int = 0
    at: float = field(default_factory=time.monotonic)
    sequence: int = 0


class Checkpointer:
    def __init__(
        self,
        datastore: PostgresDatastore,
        store: CheckpointStore,
        signer: Signer,
        *,
        every_events: int,
        every_s: float,
        heads_table: str = "audit_chain_heads",
    ) -> None:
        self._datastore = datastore
        self._store = store
        self._signer = signer
        self._every_events = every_events
        self._every_s = every_s
        self._table = heads_table
        self._written: dict[str, _Written] = {}
        self._pending_since: dict[str, float] = {}
        for tenant_id in store.tenants():
            with contextlib.suppress(BadCheckpointError):
                latest = store.latest(tenant_id)
                if latest is not None:
                    self._written[tenant_id] = _Written(
                        latest.checkpoint.entries, time.monotonic(), latest.checkpoint.sequence
                    )

    def _heads(self) -> dict[str, list[Head]]:
        query = SQL(
            "SELECT tenant_id, context, entries, head, position, aggregate_id"
            " FROM {} ORDER BY tenant_id, context"
        ).format(Identifier(self._table))
        with self._datastore.get_connection() as conn:
            rows = conn.execute(query).fetchall()
        found: dict[str, list[Head]] = {}
        for row in rows:
            found.setdefault(row["tenant_id"], []).append(
                Head(
                    row["context"],
                    int(row["entries"]),
                    row["head"],
                    int(row["position"]),
                    str(row["aggregate_id"]),
                )
            )
        return found

    def write_due(self, *, force: bool = False) -> list[Path]:
        """Checkpoint every tenant whose chains are due (all that advanced, with ``force``)."""
        written = []
        now = time.monotonic()
        for tenant_id, heads in self._heads().items():
            entries = sum(h.entries for h in heads)
            last = self._written.get(tenant_id, _Written(0, now, 0))
            advanced = entries - last.entries
            if advanced <= 0:
                self._pending_since.pop(tenant_id, None)
                continue
            since = self._pending_since.setdefault(tenant_id, now)
            if not (force or advanced >= self._every_events or now - since >= self._every_s):
                continue
            checkpoint = Checkpoint(
                tenant_id=tenant_id,
                sequence=last.sequence + 1,
                created_at=datetime.now(UTC).isoformat(),
                key_id=self._signer.key_id,
                heads=tuple(heads),
            )
            path = self._store.write(checkpoint, self._signer.sign(checkpoint.canonical()))
            self._written[tenant_id] = _Written(entries, now, checkpoint.sequence)
            self._pending_since.pop(tenant_id, None)
            written.append(path)
            log.info(
                "audit_checkpoint_written",
                tenant_id=tenant_id,
                sequence=checkpoint.sequence,
                entries=entries,
            )
        return written

    async def run(self, stop: asyncio.Event, active: Callable[[], bool]) -> None:
        """Write checkpoints when due while ``active()`` (this process holds the projector)."""
        while not stop.is_set():
            if active():
                try:
                    await asyncio.to_thread(self.write_due)
                except Exception:
                    log.exception("audit_checkpoint_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
