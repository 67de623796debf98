"""Tamper evidence on real PostgreSQL: the audit trail's chains, checkpoints and verify.

Each test tampers with the event store the way someone with database access
could (a changed byte, a deleted event, two events swapped, the newest events
deleted after a checkpoint covered them, a forged checkpoint), checks that
verification names what broke, and puts the database back.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from config.root import Container
from domain.access import Role, Tenant
from domain.contexts import CONTEXTS
from infra.signing import Signer
from projections.audit.checkpoints import Checkpointer, CheckpointStore
from projections.audit.verify import Report, verify_database
from tests.read_models import envelopes, rows

TENANT_NAME = "chained"
TENANT = str(Tenant.id_for(TENANT_NAME))
OTHER = str(Tenant.id_for("bystander"))


@pytest.fixture(scope="module")
def container(
    make_container: Callable[..., Container], tmp_path_factory: pytest.TempPathFactory
) -> Container:
    audit_dir = tmp_path_factory.mktemp("audit")
    built = make_container(
        audit={
            "signing_key_file": str(audit_dir / "key"),
            "checkpoint_dir": str(audit_dir / "checkpoints"),
            "checkpoint_every_events": 1_000_000,
        }
    )
    for name in (TENANT_NAME, "bystander"):
        built.access.create_tenant(name=name, actor="cli")
    for tenant in (TENANT, OTHER):
        key, _ = built.access.issue_api_key(
            tenant_id=tenant, actor="cli", name="k", role=Role.EDITOR
        )
        for i in range(4):
            built.documents.upload_document(
                tenant_id=tenant, actor=f"key:{key.id}", filename=f"{i}.txt",
                declared_type=None, content=f"document {i} of {tenant}".encode(),
            )  # fmt: skip
    _project(built)
    built.checkpointer().write_due(force=True)
    return built


def _project(container: Container) -> None:
    container.views["audit"].catch_up_from(container.event_logs)


def _verify(container: Container, tenant: str | None = None) -> Report:
    store = container.checkpoint_store()
    checkpoints = {t: store.read(t) for t in store.tenants()}
    public = Signer.load_or_create(container.audit_key_path).public_key
    return verify_database(
        container.settings.database.url, list(CONTEXTS), checkpoints, public, tenant=tenant
    )


def _events(container: Container) -> list[dict[str, Any]]:
    with psycopg.connect(container.settings.database.url) as conn:
        found = conn.execute(
            "SELECT notification_id, originator_id, originator_version, topic, state"
            " FROM documents_events ORDER BY notification_id"
        ).fetchall()
    return [
        {"position": r[0], "id": r[1], "version": r[2], "topic": r[3], "state": bytes(r[4])}
        for r in found
    ]


def _sql(container: Container, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Run statements as the tables' owner, in one transaction (a tamperer's view)."""
    url = container.settings.database.url
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        for statement, params in statements:
            conn.execute(statement, params)  # type: ignore[arg-type]


def _mine(container: Container) -> list[dict[str, Any]]:
    return [e for e in _events(container) if json.loads(e["state"])["tenant_id"] == TENANT]


@pytest.fixture
def restore(container: Container) -> Iterator[None]:
    """Put the documents events back exactly as they were after the test tampered."""
    before = _events(container)
    trail = rows(container.views["audit"])["audit_events"]
    yield
    with (
        psycopg.connect(container.settings.database.url, autocommit=True) as conn,
        conn.transaction(),
    ):
        conn.execute("DELETE FROM documents_events")
        for e in before:
            conn.execute(
                "INSERT INTO documents_events (originator_id, originator_version, topic, state,"
                " notification_id) VALUES (%s, %s, %s, %s, %s)",
                (e["id"], e["version"], e["topic"], e["state"], e["position"]),
            )
        conn.execute("DELETE FROM audit_events")
        for entry in trail:
            columns = list(entry)
            conn.execute(
                f"INSERT INTO audit_events ({', '.join(columns)})"
                f" VALUES ({', '.join(['%s'] * len(columns))})",
                [psycopg.types.json.Jsonb(v) if isinstance(v, dict) else v for v in entry.values()],
            )
    assert _verify(container).ok


def test_an_intact_log_verifies_and_its_chains_are_covered(container: Container) -> None:
    report = _verify(container)
    assert report.ok, [str(f) for f in report.findings]
    assert report.checkpoints == 2
    total = sum(len(envelopes(container, c)) for c in CONTEXTS)
    assert report.entries == total
    assert set(report.uncovered.values()) == {0}
    trail = rows(container.views["audit"])
    heads = {(h["tenant_id"], h["context"]): h for h in trail["audit_chain_heads"]}
    mine = [
        e for e in trail["audit_events"] if e["tenant_id"] == TENANT and e["context"] == "documents"
    ]
    mine.sort(key=lambda e: e["chain_index"])
    assert [e["chain_index"] for e in mine] == list(range(1, len(mine) + 1))
    assert all(a["entry_hash"] == b["previous_hash"] for a, b in itertools.pairwise(mine))
    assert heads[(TENANT, "documents")]["head"] == mine[-1]["entry_hash"]


def test_events_after_the_newest_checkpoint_are_reported_as_not_yet_covered(
    container: Container,
) -> None:
    for i in range(3):
        container.documents.upload_document(
            tenant_id=TENANT, actor="key:t", filename=f"late-{i}.txt", declared_type=None,
            content=f"late {i} {uuid.uuid4()}".encode(),
        )  # fmt: skip
    _project(container)
    report = _verify(container)
    assert report.ok and report.uncovered[(TENANT, "documents")] == 3
    container.checkpointer().write_due(force=True)
    assert _verify(container).uncovered[(TENANT, "documents")] == 0


def test_a_changed_byte_in_one_stored_event_is_named(container: Container, restore: None) -> None:
    target = _mine(container)[2]
    state = bytearray(target["state"])
    state[state.index(b"document") + 1] ^= 0x01  # one byte of the filename's neighbour text
    with psycopg.connect(container.settings.database.url, autocommit=True) as conn:
        conn.execute(
            "UPDATE documents_events SET state = %s WHERE notification_id = %s",
            (bytes(state), target["position"]),
        )
    report = _verify(container)
    assert not report.ok
    first = report.findings[0]
    assert (first.kind, first.context, first.position) == (
        "changed",
        "documents",
        target["position"],
    )
    assert first.aggregate_id == str(target["id"]) and first.tenant_id == TENANT
    assert _verify(container, tenant=OTHER).ok  # another tenant's chains are intact


def test_a_deleted_event_is_named(container: Container, restore: None) -> None:
    target = _mine(container)[1]
    with psycopg.connect(container.settings.database.url, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM documents_events WHERE notification_id = %s", (target["position"],)
        )
    (first, *_) = _verify(container).findings
    assert (first.kind, first.position, first.aggregate_id) == (
        "missing",
        target["position"],
        str(target["id"]),
    )


def test_two_swapped_events_are_named(container: Container, restore: None) -> None:
    a, b = _mine(container)[1], _mine(container)[3]
    with (
        psycopg.connect(container.settings.database.url, autocommit=True) as conn,
        conn.transaction(),
    ):
        conn.execute(
            "UPDATE documents_events SET notification_id = -1 WHERE notification_id = %s",
            (a["position"],),
        )
        conn.execute(
            "UPDATE documents_events SET notification_id = %s WHERE notification_id = %s",
            (a["position"], b["position"]),
        )
        conn.execute(
            "UPDATE documents_events SET notification_id = %s WHERE notification_id = -1",
            (b["position"],),
        )
    (first, *_) = _verify(container).findings
    assert (first.kind, first.position) == ("changed", a["position"])


def test_the_newest_events_deleted_after_a_checkpoint_are_caught(
    container: Container, restore: None
) -> None:
    """The trail is cleaned too (as a careful intruder would): only the checkpoint knows."""
    container.checkpointer().write_due(force=True)
    newest = _mine(container)[-2:]
    positions = [e["position"] for e in newest]
    with psycopg.connect(container.settings.database.url, autocommit=True) as conn:
        conn.execute("DELETE FROM documents_events WHERE notification_id = ANY(%s)", (positions,))
        conn.execute(
            "DELETE FROM audit_events WHERE context = 'documents' AND position = ANY(%s)",
            (positions,),
        )
    report = _verify(container)
    (first,) = [f for f in report.findings if f.tenant_id == TENANT]
    assert first.kind == "truncated" and first.context == "documents"
    assert first.position == positions[-1] and first.aggregate_id == str(newest[-1]["id"])
    assert "are gone" in first.detail


def test_a_checkpoint_that_was_not_signed_by_the_key_is_refused(container: Container) -> None:
    store = container.checkpoint_store()
    signed = store.latest(TENANT)
    assert signed is not None
    original = signed.path.read_text()
    body = json.loads(original)
    body["checkpoint"]["heads"][0]["entries"] += 1
    signed.path.write_text(json.dumps(body))
    try:
        kinds = [f.kind for f in _verify(container).findings]
        assert "bad_signature" in kinds
    finally:
        signed.path.write_text(original)
    assert _verify(container).ok


def test_kf_audit_verify_exits_0_when_intact_and_1_naming_the_break(
    container: Container, restore: None
) -> None:
    settings = container.settings

    def kf_verify() -> subprocess.CompletedProcess[str]:
        return _kf(container, "audit", "verify")

    intact = kf_verify()
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert json.loads(intact.stdout.splitlines()[-1])["ok"] is True
    target = _mine(container)[0]
    with psycopg.connect(settings.database.url, autocommit=True) as conn:
        conn.execute(
            "UPDATE documents_events SET state = overlay(state placing '\\x20'::bytea from 3 for 1)"
            " WHERE notification_id = %s",
            (target["position"],),
        )
    broken = kf_verify()
    assert broken.returncode == 1
    assert f"context documents, position {target['position']}" in broken.stdout
    assert str(target["id"]) in broken.stdout


def test_checkpoint_files_are_outside_the_database_and_the_key_is_private(
    container: Container,
) -> None:
    key = Path(container.settings.audit.signing_key_file)
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    public = key.with_name(key.name + ".pub").read_text()
    assert "BEGIN PUBLIC KEY" in public
    store = CheckpointStore(Path(container.settings.audit.checkpoint_dir))
    assert set(store.tenants()) == {TENANT, OTHER}
    assert isinstance(container.checkpointer(), Checkpointer)


def test_the_checkpointer_writes_when_due_and_only_while_its_projector_is_active(
    container: Container,
) -> None:
    store = container.checkpoint_store()
    checkpointer = Checkpointer(
        container.parts.datastore,
        store,
        Signer.load_or_create(container.audit_key_path),
        every_events=1,
        every_s=3600,
    )
    before = store.latest(TENANT)
    assert before is not None
    container.documents.upload_document(
        tenant_id=TENANT, actor="key:t", filename="due.txt", declared_type=None,
        content=f"due {uuid.uuid4()}".encode(),
    )  # fmt: skip
    _project(container)
    active = False

    async def scenario() -> None:
        nonlocal active
        stop = asyncio.Event()
        task = asyncio.ensure_future(checkpointer.run(stop, lambda: active))
        await asyncio.sleep(0.5)
        assert store.latest(TENANT) == before  # standing by: another process writes
        active = True
        for _ in range(100):
            latest = store.latest(TENANT)
            if latest is not None and latest.checkpoint.sequence > before.checkpoint.sequence:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await task

    asyncio.run(scenario())
    latest = store.latest(TENANT)
    assert latest is not None and latest.checkpoint.sequence == before.checkpoint.sequence + 1
    assert _verify(container).uncovered[(TENANT, "documents")] == 0


def _kf(
    container: Container, *args: str, database: bool = True
) -> subprocess.CompletedProcess[str]:
    settings = container.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("KF")}
    if database:
        env.update({
            "KF_DATABASE_URL": settings.database.url,
            "KF_DATA_DIR": str(settings.data_dir),
            "KF__AUDIT__SIGNING_KEY_FILE": settings.audit.signing_key_file,
            "KF__AUDIT__CHECKPOINT_DIR": settings.audit.checkpoint_dir,
        })  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "config.cli", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_an_exported_bundle_verifies_offline_and_names_a_changed_byte(
    container: Container, tmp_path: Path
) -> None:
    container.checkpointer().write_due(force=True)
    out = tmp_path / "bundle"
    exported = _kf(container, "audit", "export", "--tenant", TENANT_NAME, "--out", str(out))
    assert exported.returncode == 0, exported.stderr[-3000:]
    summary = json.loads(exported.stdout.splitlines()[-1])
    assert summary["tenant_id"] == TENANT and summary["events"] == summary["entries"] > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"public-key.pem", "trail.jsonl", "events/documents.jsonl"} <= set(manifest["files"])
    first = json.loads((out / "events" / "documents.jsonl").read_text().splitlines()[0])
    assert first["event"]["tenant_id"] == TENANT and first["event"]["event_type"]
    # Offline: no database, no data directory, nothing but the bundle.
    intact = _kf(container, "audit", "verify", "--bundle", str(out), database=False)
    assert intact.returncode == 0, intact.stdout + intact.stderr[-2000:]
    assert json.loads(intact.stdout.splitlines()[-1])["ok"] is True

    # Change one byte of one event, and (as a careful forger would) the manifest too.
    events_file = out / "events" / "documents.jsonl"
    lines = events_file.read_text().splitlines()
    forged = json.loads(lines[1])
    state = bytearray(base64.b64decode(forged["state"]))
    state[-3] ^= 0x01
    forged["state"] = base64.b64encode(bytes(state)).decode()
    lines[1] = json.dumps(forged, sort_keys=True)
    events_file.write_text("\n".join(lines) + "\n")
    file_changed = _kf(container, "audit", "verify", "--bundle", str(out), database=False)
    assert file_changed.returncode == 1 and "bundle_file_changed" in file_changed.stdout
    manifest["files"]["events/documents.jsonl"] = hashlib.sha256(
        events_file.read_bytes()
    ).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    broken = _kf(container, "audit", "verify", "--bundle", str(out), database=False)
    assert broken.returncode == 1
    assert (
        f"changed: tenant {TENANT}, context documents, position {forged['position']}"
        in broken.stdout
    )


def test_a_rebuilt_trail_exports_byte_for_byte_the_same(container: Container) -> None:
    from projections.audit import AuditFilter, AuditView
    from projections.audit.routes import _lines
    from projections.slice import RebuildStatus

    view = container.views["audit"]
    assert isinstance(view, AuditView)
    view.reads = container.tenant_reads

    def export() -> str:
        digest = hashlib.sha256()
        for chunk in _lines(view.stream(TENANT, AuditFilter()), "jsonl"):
            digest.update(chunk)
        return digest.hexdigest()

    before = export()
    status = container.rebuilder().run(
        RebuildStatus(id="audit", projections=["audit"], tenant=None), compare=True
    )
    assert status.state == "done" and status.matches_live is True, status.error
    assert export() == before
