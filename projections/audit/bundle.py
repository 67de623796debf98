"""An audit bundle: one tenant's trail with everything needed to verify it offline.

``kf audit export --tenant T --out DIR`` writes::

    manifest.json           the tenant, when, the files and their SHA-256
    events/<context>.jsonl  the tenant's events in position order: the stored bytes
                            (base64) the chain covers, and the event decoded for reading
    trail.jsonl             each entry's context, position, chain index and hashes
    checkpoints/*.json      the tenant's signed checkpoints, as written
    public-key.pem          the key that signed them

``kf audit verify --bundle DIR`` checks it with no database and no network:
the files against the manifest, every chain recomputed from the stored bytes
against the trail and the checkpoints (``verify.verify``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from infra.signing import load_public_key
from projections.audit.checkpoints import BadCheckpointError, CheckpointStore, parse_checkpoint
from projections.audit.verify import (
    Finding,
    Report,
    StoredEvent,
    TrailEntry,
    retention_cutoffs,
    verify,
)

BUNDLE_VERSION = 1
Decode = Callable[[StoredEvent], dict[str, Any]]


@dataclass(frozen=True)
class BundleSummary:
    directory: Path
    tenant_id: str
    events: int
    entries: int
    checkpoints: int


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tenant_events(
    conn: psycopg.Connection[Any], context: str, tenant_id: str
) -> Iterator[StoredEvent]:
    query = SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state"
        " FROM {} ORDER BY notification_id"
    ).format(Identifier(f"{context}_events"))
    with conn.cursor(name=f"bundle_{context}") as cursor:
        cursor.itersize = 2000
        cursor.execute(query)
        for row in cursor:
            event = StoredEvent(context, int(row[0]), str(row[1]), int(row[2]), row[3], row[4])
            if event.tenant_id() == tenant_id:
                yield event


def write_bundle(
    database_url: str,
    contexts: Sequence[str],
    tenant_id: str,
    checkpoints: CheckpointStore,
    public_pem: str,
    out: Path,
    decode: Decode,
) -> BundleSummary:
    """Write ``tenant_id``'s bundle into ``out`` (which must not exist or be empty)."""
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty")
    (out / "events").mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir()
    events = entries = 0
    with psycopg.connect(database_url) as conn:
        for context in contexts:
            with (out / "events" / f"{context}.jsonl").open("w") as handle:
                for event in _tenant_events(conn, context, tenant_id):
                    line = {
                        "position": event.position,
                        "aggregate_id": event.aggregate_id,
                        "aggregate_version": event.aggregate_version,
                        "topic": event.topic,
                        "state": base64.b64encode(event.state).decode(),
                        "event": decode(event),
                    }
                    handle.write(json.dumps(line, sort_keys=True, default=str) + "\n")
                    events += 1
        with (out / "trail.jsonl").open("w") as handle, conn.cursor(name="bundle_trail") as cur:
            cur.itersize = 2000
            cur.execute(
                "SELECT context, position, resource_id, chain_index, previous_hash, entry_hash"
                " FROM audit_events WHERE tenant_id = %s ORDER BY context, position",
                (tenant_id,),
            )
            for row in cur:
                handle.write(
                    json.dumps(
                        {
                            "context": row[0],
                            "position": row[1],
                            "aggregate_id": str(row[2]),
                            "chain_index": row[3],
                            "previous_hash": row[4],
                            "entry_hash": row[5],
                        },
                        sort_keys=True,
                    )
                    + "\n"
                )
                entries += 1
    copied = 0
    for signed in checkpoints.read(tenant_id):
        shutil.copyfile(signed.path, out / "checkpoints" / signed.path.name)
        copied += 1
    (out / "public-key.pem").write_text(public_pem)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    manifest = {
        "bundle_version": BUNDLE_VERSION,
        "tenant_id": tenant_id,
        "created_at": datetime.now(UTC).isoformat(),
        "contexts": list(contexts),
        "events": events,
        "entries": entries,
        "files": {str(p.relative_to(out)): _sha256(p) for p in files},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return BundleSummary(out, tenant_id, events, entries, copied)


def _read_events(path: Path, context: str) -> Iterator[StoredEvent]:
    with path.open() as handle:
        for line in handle:
            body = json.loads(line)
            yield StoredEvent(
                context,
                int(body["position"]),
                str(body["aggregate_id"]),
                int(body["aggregate_version"]),
                str(body["topic"]),
                base64.b64decode(body["state"]),
            )


def _read_trail(path: Path, context: str, tenant_id: str) -> Iterator[TrailEntry]:
    with path.open() as handle:
        for line in handle:
            body = json.loads(line)
            if body["context"] == context:
                yield TrailEntry(
                    context,
                    int(body["position"]),
                    tenant_id,
                    str(body["aggregate_id"]),
                    body["entry_hash"],
                )


def verify_bundle(directory: Path) -> Report:
    """Check a bundle offline: its files, its chains, its checkpoints."""
    manifest = json.loads((directory / "manifest.json").read_text())
    tenant_id = str(manifest["tenant_id"])
    problems = []
    for name, digest in sorted(manifest["files"].items()):
        path = directory / name
        if not path.exists() or _sha256(path) != digest:
            problems.append(
                Finding("bundle_file_changed", tenant_id, None, None, None,
                        f"{name} is missing or differs from the manifest")
            )  # fmt: skip
    public_key = load_public_key((directory / "public-key.pem").read_text())
    checkpoints = []
    for path in sorted((directory / "checkpoints").glob("*.json")):
        try:
            checkpoints.append(parse_checkpoint(path))
        except BadCheckpointError as exc:
            problems.append(Finding("bad_checkpoint", tenant_id, None, None, None, str(exc)))
    trail_path = directory / "trail.jsonl"
    last = {
        context: max((e.position for e in _read_trail(trail_path, context, tenant_id)), default=0)
        for context in manifest["contexts"]
    }
    streams = {
        context: (
            _read_events(directory / "events" / f"{context}.jsonl", context),
            _read_trail(trail_path, context, tenant_id),
            last[context],
        )
        for context in manifest["contexts"]
    }
    activity = directory / "events" / "activity.jsonl"
    retention = (
        retention_cutoffs(_read_events(activity, "activity"))
        if "activity" in manifest["contexts"] and activity.exists()
        else {}
    )
    report = verify(
        streams, {tenant_id: checkpoints}, public_key, tenant=tenant_id, retention=retention
    )
    report.findings[:0] = problems
    return report
