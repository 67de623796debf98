"""The audit trail end to end: every event of the tenant as an entry, filtered and paged.

The first read model of the audit issue, and the proof that a read model is a
slice: projections/audit, migrations/0006_audit.sql and one line of
projections/read_models.py; the composition root, the CLI, the rebuild API and
the harness learned of it from the list.
"""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psutil
import pytest

from domain.access import Role
from tests.harness import RunningSystem
from tests.http import assert_error

SECRET_NAME = f"confidential-{uuid.uuid4().hex}.md"
QUESTION = f"What does the {uuid.uuid4().hex} clause say?"
REQUEST_ID = f"req-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def trail(system: RunningSystem) -> dict[str, Any]:
    """A document uploaded and deleted, a key issued and revoked, a question asked."""
    with system.client() as admin:
        uploaded = admin.post(
            "/v1/documents",
            files={"file": (SECRET_NAME, b"# Terms\n\nThe clause says nothing.", "text/markdown")},
            headers={"X-Request-ID": REQUEST_ID, "User-Agent": "audit-test/1.0"},
        ).json()
        system.wait_final(admin, [uploaded["id"]])
        deleted = admin.delete(f"/v1/documents/{uploaded['id']}")
        assert deleted.status_code == 202, deleted.text
        issued = admin.post("/v1/keys", json={"name": "auditor robot", "role": "viewer"}).json()
        admin.delete(f"/v1/keys/{issued['id']}")
        conversation = admin.post("/v1/conversations", json={"title": "terms"}).json()
        asked = admin.post(
            f"/v1/conversations/{conversation['id']}/questions", json={"question": QUESTION}
        )
        assert asked.status_code == 200, asked.text
    heads = {c: log.head() for c, log in system.container.event_logs.items()}
    view = system.container.views["audit"]
    for context, head in heads.items():
        assert view.wait_for(context, head, 30), context
    return {"document": uploaded["id"], "key": issued["id"], "conversation": conversation["id"]}


def _all(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        paging = {"limit": 7} if cursor is None else {"limit": 7, "cursor": cursor}
        page = client.get("/v1/audit/events", params={**params, **paging})
        assert page.status_code == 200, page.text
        body = page.json()
        items.extend(body["items"])
        if body["next_cursor"] is None:
            return items
        cursor = body["next_cursor"]


def test_every_event_of_the_tenant_is_an_entry_newest_first(
    system: RunningSystem, trail: dict[str, Any]
) -> None:
    tenant = system.tenant_id
    heads = {context: log.head() for context, log in system.container.event_logs.items()}
    for context, head in heads.items():
        assert system.container.views["audit"].wait_for(context, head, 30), context
    with system.client() as admin:
        listed = _all(admin)
    # Reading the trail is itself recorded: entries of those reads may follow the snapshot.
    entries = [e for e in listed if e["position"] <= heads[e["context"]]]
    expected = sum(
        1
        for context, log in system.container.event_logs.items()
        for batch in log.read_all(0)
        for e in batch
        if e.tenant_id == tenant and e.position <= heads[context]
    )
    assert len(entries) == expected
    assert len({e["id"] for e in entries}) == expected
    times = [e["occurred_at"] for e in entries]
    assert times == sorted(times, reverse=True)
    document = [e for e in entries if e["resource"]["id"] == trail["document"]]
    assert [e["action"] for e in reversed(document)] == [
        "Document.Uploaded", "Document.Parsed", "Document.Chunked", "Document.Embedded",
        "Document.Deleted",
    ]  # fmt: skip
    uploaded = document[-1]
    admin_key = system.admin_key.split("_")[1]
    assert uploaded["actor"] == f"key:{uuid.UUID(admin_key)}" and uploaded["actor_role"] == "admin"
    assert uploaded["resource"] == {"type": "Document", "id": trail["document"], "version": 1}
    assert uploaded["context"] == "documents" and uploaded["tenant_id"] == tenant
    assert "filename" in uploaded["changes"]["fields"]
    assert uploaded["changes"]["values"]["media_type"] == "text/markdown"
    assert (uploaded["request_id"], uploaded["user_agent"]) == (REQUEST_ID, "audit-test/1.0")
    assert uploaded["client_address"] == "127.0.0.1"
    worker_step = next(e for e in document if e["action"] == "Document.Parsed")
    assert worker_step["actor"].startswith("worker:") and worker_step["actor_role"] is None
    assert worker_step["request_id"] is None  # caused by a worker, not by a request
    issued = next(
        e for e in entries if e["action"] == "ApiKey.Issued" and e["resource"]["id"] == trail["key"]
    )
    assert issued["changes"]["values"]["role"] == "viewer" and issued["client_address"]


def test_content_and_secrets_are_named_but_never_shown(
    system: RunningSystem, trail: dict[str, Any]
) -> None:
    with system.client() as admin:
        raw = admin.get("/v1/audit/events", params={"limit": 500}).text
    assert SECRET_NAME not in raw and QUESTION not in raw
    assert "secret_sha256" in raw  # the field is named...
    digests = [
        e.data["secret_sha256"]
        for batch in system.container.event_logs["access"].read_all(0)
        for e in batch
        if e.event_type == "ApiKey.Issued"
    ]
    assert digests and not any(d in raw for d in digests)  # ...its value never shown


def test_filters_by_action_wildcard_resource_actor_and_time(
    system: RunningSystem, trail: dict[str, Any]
) -> None:
    with system.client() as admin:
        caused = _all(admin, request_id=REQUEST_ID)
        assert [(e["action"], e["resource"]["id"]) for e in caused] == [
            ("Document.Uploaded", trail["document"])
        ]
        documents = _all(admin, action="Document.*")
        assert documents and {e["action"].split(".")[0] for e in documents} == {"Document"}
        keys = _all(admin, action="ApiKey.Revoked", resource_id=trail["key"])
        assert [e["action"] for e in keys] == ["ApiKey.Revoked"]
        conversation = _all(admin, resource_type="Conversation")
        assert {e["resource"]["id"] for e in conversation} >= {trail["conversation"]}
        workers = [e for e in documents if e["actor"].startswith("worker:")]
        by_actor = _all(admin, actor=workers[0]["actor"])
        assert by_actor and {e["actor"] for e in by_actor} == {workers[0]["actor"]}
        newest = documents[0]["occurred_at"]
        since = _all(admin, action="Document.*", since=newest)
        assert [e["id"] for e in since] == [
            e["id"] for e in documents if e["occurred_at"] >= newest
        ]
        future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        assert _all(admin, since=future) == []
        assert _all(admin, action="Document_Uploaded") == []  # "_" is not a wildcard
        assert_error(
            admin.get("/v1/audit/events", params={"since": future, "until": newest}),
            422,
            "invalid_filter",
        )
        assert_error(
            admin.get("/v1/audit/events", params={"cursor": "nope"}), 422, "invalid_cursor"
        )


def test_auditors_read_the_trail_and_nothing_else_and_only_their_tenants(
    system: RunningSystem, trail: dict[str, Any]
) -> None:
    for role in (Role.VIEWER, Role.EDITOR):
        _, token = system.container.access.issue_api_key(
            tenant_id=system.tenant_id, actor="test", name=f"{role.value}", role=role
        )
        with system.client(token) as client:
            assert_error(client.get("/v1/audit/events"), 403, "forbidden")
    auditor_id, token = system.container.access.issue_api_key(
        tenant_id=system.tenant_id, actor="test", name="compliance", role=Role.AUDITOR
    )
    with system.client(token) as auditor:
        read = auditor.get("/v1/audit/events", params={"action": "Document.*"})
        assert read.status_code == 200 and read.json()["items"], read.text
        for denied in ("/v1/documents", "/v1/search?q=terms", "/v1/keys", "/v1/conversations"):
            assert_error(auditor.get(denied), 403, "forbidden")
        assert_error(
            auditor.post("/v1/documents", files={"file": ("a.txt", b"x")}), 403, "forbidden"
        )
    with system.client() as admin:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            mine = _all(admin, resource_id=str(auditor_id.id))
            if mine:
                break
            time.sleep(0.1)
    assert [e["changes"]["values"]["role"] for e in mine] == ["auditor"]
    other = system.container.access.create_tenant(
        name=f"audit-{uuid.uuid4().hex[:8]}", actor="test"
    )
    _, token = system.container.access.issue_api_key(
        tenant_id=str(other.id), actor="test", name="other admin", role=Role.ADMIN
    )
    deadline = time.monotonic() + 30
    with system.client(token) as client:
        while True:
            items = client.get("/v1/audit/events").json()["items"]
            if items or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert items and {e["tenant_id"] for e in items} == {str(other.id)}
    assert trail["document"] not in {e["resource"]["id"] for e in items}


def test_the_export_streams_every_matching_entry_oldest_first(
    system: RunningSystem, trail: dict[str, Any]
) -> None:
    with system.client() as admin:
        listed = _all(admin)
        exported = admin.get("/v1/audit/export", params={"format": "jsonl"})
        assert exported.status_code == 200, exported.text
        assert exported.headers["content-type"].startswith("application/x-ndjson")
        assert "attachment" in exported.headers["content-disposition"]
        lines = [json.loads(line) for line in exported.text.splitlines()]

        def written(entries: list[dict[str, Any]]) -> list[str]:  # reads are recorded as we go
            return [e["id"] for e in entries if e["context"] != "activity"]

        assert written(lines) == written(list(reversed(listed)))
        assert all(e["chain"]["entry_hash"] for e in lines)
        documents = admin.get("/v1/audit/export", params={"format": "csv", "action": "Document.*"})
        table = list(csv.reader(io.StringIO(documents.text)))
        assert table[0][:3] == ["id", "occurred_at", "tenant_id"]
        assert {row[5].split(".")[0] for row in table[1:]} == {"Document"}
        assert len(table) - 1 == len(_all(admin, action="Document.*"))
        assert SECRET_NAME not in exported.text + documents.text


def test_an_export_of_100000_entries_streams_in_constant_memory(system: RunningSystem) -> None:
    """The entries are written straight into the read model (making 100,000 events through
    the commands would take minutes); the export reads them as it would any others."""
    tenant = system.tenant_id
    _, token = system.container.access.issue_api_key(
        tenant_id=system.tenant_id, actor="test", name="exporter", role=Role.AUDITOR
    )
    count = 100_000
    started = datetime(2026, 1, 1, tzinfo=UTC)
    with (
        system.container.parts.datastore.transaction(commit=True) as curs,
        curs.copy(
            "COPY audit_events (tenant_id, entry_id, context, position, occurred_at, actor,"
            " action, resource_type, resource_id, resource_version, changes) FROM STDIN"
        ) as copy,
    ):
        for i in range(count):
            copy.write_row((
                tenant, uuid.uuid4(), "bulk", 10_000_000 + i, started + timedelta(seconds=i),
                "key:bulk", "Document.Uploaded", "Document", uuid.uuid4(), 1,
                json.dumps({"fields": ["filename", "size_bytes"], "values": {"size_bytes": i}}),
            ))  # fmt: skip
    process = psutil.Process()
    before = process.memory_info().rss
    peak = before
    received = 0
    # The reader key belongs to the system's tenant: export as that tenant's auditor, but the
    # bulk rows are another tenant's, so scope them in: re-key the rows to the system tenant.
    with system.container.parts.datastore.transaction(commit=True) as curs:
        curs.execute(
            "UPDATE audit_events SET tenant_id = %s WHERE tenant_id = %s",
            (system.tenant_id, tenant),
        )
    try:
        with (
            system.client(token) as auditor,
            auditor.stream(
                "GET", "/v1/audit/export", params={"format": "jsonl", "actor": "key:bulk"}
            ) as response,
        ):
            assert response.status_code == 200
            for line in response.iter_lines():
                if line:
                    received += 1
                    if received % 5000 == 0:
                        peak = max(peak, process.memory_info().rss)
        growth_mb = (peak - before) / 2**20
        assert received == count
        print(f"export of {count} entries: peak RSS growth {growth_mb:.1f} MB")
        assert growth_mb < 60, growth_mb
    finally:
        with system.container.parts.datastore.transaction(commit=True) as curs:
            curs.execute("DELETE FROM audit_events WHERE context = 'bulk'")


def test_a_documents_history_is_its_events_in_order_with_their_actors(
    system: RunningSystem, trail: dict[str, Any]
) -> None:
    _, token = system.container.access.issue_api_key(
        tenant_id=system.tenant_id, actor="test", name="reader", role=Role.VIEWER
    )
    with system.client(token) as viewer:
        history = viewer.get(f"/v1/documents/{trail['document']}/history")
        assert history.status_code == 200, history.text
        steps = history.json()["steps"]
        assert [(s["action"], s["version"]) for s in steps] == [
            ("Document.Uploaded", 1), ("Document.Parsed", 2), ("Document.Chunked", 3),
            ("Document.Embedded", 4), ("Document.Deleted", 5),
        ]  # fmt: skip
        assert steps[0]["actor_role"] == "admin" and steps[0]["request_id"] == REQUEST_ID
        assert steps[1]["actor"].startswith("worker:")
        assert "filename" in steps[0]["changes"]["fields"]
        assert SECRET_NAME not in history.text
        assert_error(viewer.get(f"/v1/documents/{uuid.uuid4()}/history"), 404, "document_not_found")


def test_the_catalog_as_it_stood_at_a_time(system: RunningSystem) -> None:
    def upload(client: httpx.Client, name: str) -> str:
        response = client.post(
            "/v1/documents", files={"file": (name, f"# {name}\n\nText.".encode(), "text/markdown")}
        )
        assert response.status_code == 202, response.text
        document_id: str = response.json()["id"]
        system.wait_final(client, [document_id])
        return document_id

    def listed(client: httpx.Client, **params: Any) -> dict[str, dict[str, Any]]:
        items: dict[str, dict[str, Any]] = {}
        cursor = None
        while True:
            paging = {"limit": 1} if cursor is None else {"limit": 1, "cursor": cursor}
            page = client.get("/v1/documents", params={**params, **paging})
            assert page.status_code == 200, page.text
            items.update({item["id"]: item for item in page.json()["items"]})
            cursor = page.json()["next_cursor"]
            if cursor is None:
                return items

    with system.client() as admin:
        before = datetime.now(UTC)
        time.sleep(0.01)
        older = upload(admin, "older.md")
        time.sleep(0.01)
        between = datetime.now(UTC)
        time.sleep(0.01)
        deleted = admin.delete(f"/v1/documents/{older}")
        assert deleted.status_code == 202
        newer = upload(admin, "newer.md")
        position = {"min_position": deleted.json()["position"]}
        now = listed(admin, **position)
        then = listed(admin, as_of=between.isoformat(), **position)
        earlier = listed(admin, as_of=before.isoformat(), **position)
        naive = listed(admin, as_of=between.replace(tzinfo=None).isoformat(), **position)
        with_deleted = listed(admin, include_deleted="true", as_of=datetime.now(UTC).isoformat())
        one_then = admin.get(f"/v1/documents/{older}", params={"as_of": between.isoformat()})
        not_yet = admin.get(f"/v1/documents/{newer}", params={"as_of": between.isoformat()})
        bad = admin.get("/v1/documents", params={"as_of": "yesterday"})
    assert newer in now and older not in now
    # Deleted after that time: listed, as it stood (processed, not deleted).
    assert older in then and then[older]["status"] == "embedded" and newer not in then
    assert then[older]["deleted_at"] is None and then[older]["chunk_count"] >= 1
    assert older not in earlier and newer not in earlier
    assert naive.keys() == then.keys()
    assert with_deleted[older]["status"] == "deleted" and newer in with_deleted
    assert one_then.status_code == 200 and one_then.json()["status"] == "embedded"
    assert_error(not_yet, 404, "document_not_found")
    assert_error(bad, 422, "invalid_request")


def test_an_auditor_verifies_the_tenants_chains_over_http(
    system: RunningSystem, trail: dict[str, Any]
) -> None:
    _, key = system.container.access.issue_api_key(
        tenant_id=system.tenant_id, actor="test", name="verifier", role=Role.AUDITOR
    )
    with system.client(key) as auditor:
        checked = auditor.get("/v1/audit/verification")
    assert checked.status_code == 200, checked.text
    report = checked.json()
    assert report["ok"] is True and report["findings"] == [] and report["entries"] > 5
    assert report["tenant_id"] == system.tenant_id and report["unreadable_checkpoints"] == []
    _, viewer = system.container.access.issue_api_key(
        tenant_id=system.tenant_id, actor="test", name="not an auditor", role=Role.VIEWER
    )
    with system.client(viewer) as client:
        assert client.get("/v1/audit/verification").status_code == 403
    assert trail["document"]
