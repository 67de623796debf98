"""Access records are kept for the tenant's retention, not for ever, and the log still verifies.

``kf audit prune`` records a ``Retention.Applied``; the audit trail and who-saw
drop the tenant's reads and refusals from before its cutoff (and nothing
else); the events stay in the event store, so every chain is recomputed in
full and ``kf audit verify`` (live and on an exported bundle) still passes,
counting what retention dropped apart from what is missing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from config.root import Container
from domain.access import Role, Tenant
from domain.activity import ReadKind
from domain.contexts import CONTEXTS
from infra.signing import Signer
from projections.audit.verify import Report, verify_database
from tests.integration.test_audit_chain import _kf
from tests.read_models import reset, rows

KEPT_NAME, PRUNED_NAME = "keeps-reads", "prunes-reads"
KEPT, PRUNED = str(Tenant.id_for(KEPT_NAME)), str(Tenant.id_for(PRUNED_NAME))
ACCESS = {"Read.Recorded", "Refusal.Recorded"}


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
    for name, tenant in ((KEPT_NAME, KEPT), (PRUNED_NAME, PRUNED)):
        built.access.create_tenant(name=name, actor="cli")
        key, _ = built.access.issue_api_key(
            tenant_id=tenant, actor="cli", name="k", role=Role.EDITOR
        )
        document = built.documents.upload_document(
            tenant_id=tenant, actor=f"key:{key.id}", filename="a.txt",
            declared_type=None, content=f"text of {tenant}".encode(),
        )  # fmt: skip
        for i in range(3):
            built.activity.record_read(
                tenant_id=tenant, actor=f"key:{key.id}", role="editor", kind=ReadKind.SEARCH,
                route="/v1/search", query=f"query {i}", documents=[str(document.id)],
            )  # fmt: skip
        built.activity.record_refusal(
            tenant_id=tenant, claimed="key:unknown", reason="unknown_key", status=401,
            route="/v1/search", client=f"10.0.0.{len(tenant) % 200}",
        )  # fmt: skip
    _project(built)
    built.checkpointer().write_due(force=True)
    return built


def _project(container: Container) -> None:
    for name in ("audit", "readers"):
        container.views[name].catch_up_from(container.event_logs)


def _verify(container: Container, tenant: str | None = None) -> Report:
    store = container.checkpoint_store()
    checkpoints = {t: store.read(t) for t in store.tenants()}
    public = Signer.load_or_create(container.audit_key_path).public_key
    return verify_database(
        container.settings.database.url, list(CONTEXTS), checkpoints, public, tenant=tenant
    )


def _entries(container: Container, tenant: str) -> list[dict[str, Any]]:
    return [e for e in rows(container.views["audit"])["audit_events"] if e["tenant_id"] == tenant]


def _reads(container: Container, tenant: str) -> list[dict[str, Any]]:
    found = rows(container.views["readers"])["document_reads"]
    return [r for r in found if r["tenant_id"] == tenant]


def test_retention_drops_old_access_records_and_nothing_else(container: Container) -> None:
    before = {t: _entries(container, t) for t in (KEPT, PRUNED)}
    assert {e["action"] for e in before[PRUNED]} >= ACCESS
    assert len(_reads(container, PRUNED)) == 3 and len(_reads(container, KEPT)) == 3
    assert _verify(container).ok

    # Counted from two days ahead with one day kept: every access record so far is older.
    result = container.activity.apply_retention(
        tenant_id=PRUNED, actor="cli:test", retention_days=1, reason="test",
        now=datetime.now(UTC) + timedelta(days=2),
    )  # fmt: skip
    _project(container)

    pruned = _entries(container, PRUNED)
    old = [e for e in before[PRUNED] if e["action"] in ACCESS]
    assert {e["entry_id"] for e in pruned} == {
        e["entry_id"] for e in before[PRUNED] if e["action"] not in ACCESS
    } | {e["entry_id"] for e in pruned if e["action"] == "Retention.Applied"}
    [applied] = [e for e in pruned if e["action"] == "Retention.Applied"]
    assert applied["actor"] == "cli:test" and applied["position"] == result.position
    assert applied["changes"]["values"]["retention_days"] == 1
    assert _reads(container, PRUNED) == []
    # The other tenant keeps everything.
    assert _entries(container, KEPT) == before[KEPT]
    assert len(_reads(container, KEPT)) == 3

    # Every chain still verifies, checkpoints included; the dropped entries are counted.
    report = _verify(container)
    assert report.ok, [str(f) for f in report.findings]
    assert report.retained_away == len(old) > 0
    assert report.summary()["dropped_by_retention"] == len(old)
    assert _verify(container, PRUNED).ok

    # Reads after the run stay (retention acts when it is applied, not on later reads).
    later = container.activity.record_read(
        tenant_id=PRUNED, actor="key:later", role="viewer", kind=ReadKind.DOCUMENT,
        route="/v1/documents/{document_id}", documents=[str(uuid.uuid4())],
    )  # fmt: skip
    _project(container)
    assert any(e["position"] == later.position for e in _entries(container, PRUNED))


def test_retention_does_not_excuse_a_missing_entry_of_any_other_kind(
    container: Container,
) -> None:
    kept_read = next(e for e in _entries(container, KEPT) if e["action"] == "Read.Recorded")
    upload = next(e for e in _entries(container, PRUNED) if e["action"] == "Document.Uploaded")
    url = container.settings.database.url
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for entry in (kept_read, upload):
                conn.execute("DELETE FROM audit_events WHERE entry_id = %s", (entry["entry_id"],))
        report = _verify(container)
        found = {(f.kind, f.tenant_id, f.position) for f in report.findings}
        assert ("missing_from_trail", KEPT, kept_read["position"]) in found
        assert ("missing_from_trail", PRUNED, upload["position"]) in found
    finally:
        reset(container.views["audit"])  # projected again from the log, as after a rebuild
        _project(container)
    assert _verify(container).ok


def test_kf_audit_prune_records_the_run_and_the_bundle_still_verifies(
    container: Container, tmp_path: Path
) -> None:
    pruned = _kf(container, "audit", "prune", "--tenant", PRUNED_NAME, "--days", "400")
    assert pruned.returncode == 0, pruned.stderr[-2000:]
    line = json.loads(pruned.stdout.splitlines()[-1])
    assert line["tenant_id"] == PRUNED and line["retention_days"] == 400
    refused = _kf(container, "audit", "prune", "--tenant", PRUNED_NAME, "--days", "0")
    assert refused.returncode == 1 and "Retention is 1 to 36500 days" in refused.stderr
    everyone = _kf(container, "audit", "prune", "--all")
    assert everyone.returncode == 0, everyone.stderr[-2000:]
    tenants = {json.loads(x)["tenant_id"] for x in everyone.stdout.splitlines()}
    assert {KEPT, PRUNED} <= tenants
    assert all(json.loads(x)["retention_days"] == 400 for x in everyone.stdout.splitlines())

    _project(container)
    container.checkpointer().write_due(force=True)
    out = tmp_path / "bundle"
    exported = _kf(container, "audit", "export", "--tenant", PRUNED_NAME, "--out", str(out))
    assert exported.returncode == 0, exported.stderr[-3000:]
    verified = _kf(container, "audit", "verify", "--bundle", str(out), database=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr[-2000:]
    summary = json.loads(verified.stdout.splitlines()[-1])
    assert summary["ok"] is True and summary["dropped_by_retention"] > 0
    live = _kf(container, "audit", "verify")
    assert live.returncode == 0, live.stdout
