"""Reads are recorded, not only writes: who was shown what, durable before the response.

Searches, document, transcript and prompt reads and audit queries each append
a ``Read.Recorded`` to the activity context (ids and digests; the query text
kept apart for auditors); answers are attributed to whoever asked. "Who saw
this document?" is then a query. A read whose record cannot be written is
refused (503) instead of served, and refused requests are recorded, throttled
per client but never uncounted.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from config.settings import Settings
from domain.access import Role
from infra.embedding import SentenceTransformerEmbedder
from tests.harness import RunningSystem
from tests.http import assert_error

NEEDLE = f"kestrel{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def system(
    settings_factory: Callable[..., Settings], embedder: SentenceTransformerEmbedder
) -> Iterator[RunningSystem]:
    settings = settings_factory(audit={"refusals_per_window": 3, "refusal_window_s": 1.5})
    with RunningSystem(settings, embedder) as running:
        yield running


def _key(system: RunningSystem, role: Role, name: str) -> tuple[str, str]:
    result, token = system.container.access.issue_api_key(
        tenant_id=system.tenant_id, actor="test", name=name, role=role
    )
    return f"key:{result.id}", token


def _reads(system: RunningSystem, **match: Any) -> list[dict[str, Any]]:
    """Read.Recorded events of the activity context, as envelopes' data with their actor."""
    found = []
    for batch in system.container.event_logs["activity"].read_all(0):
        for e in batch:
            if e.event_type == "Read.Recorded" and all(
                e.data.get(k) == v if k != "actor" else e.actor == v for k, v in match.items()
            ):
                found.append(
                    {**e.data, "actor": e.actor, "position": e.position, "cause": e.metadata}
                )
    return found


@pytest.fixture(scope="module")
def document(system: RunningSystem) -> str:
    with system.client() as admin:
        uploaded = admin.post(
            "/v1/documents",
            files={
                "file": ("birds.md", f"# Birds\n\nThe {NEEDLE} hovers over the ridge.".encode())
            },
        ).json()
        system.wait_final(admin, [uploaded["id"]])
    head = system.container.documents.head_position()
    assert system.container.views["search"].wait_for("documents", head, 30)
    return str(uploaded["id"])


def _settle(system: RunningSystem) -> None:
    head = system.container.event_logs["activity"].head()
    conversations = system.container.event_logs["conversations"].head()
    view = system.container.views["readers"]
    assert view.wait_for("activity", head, 30) and view.wait_for("conversations", conversations, 30)
    assert system.container.views["audit"].wait_for("activity", head, 30)


def test_a_search_is_recorded_with_what_it_showed_and_its_query_kept_for_auditors(
    system: RunningSystem, document: str
) -> None:
    actor, token = _key(system, Role.VIEWER, "searcher")
    query = f"where does the {NEEDLE} hover"
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    with system.client(token) as viewer:
        found = viewer.get(
            "/v1/search",
            params={"q": query, "mode": "keyword"},
            headers={"X-Request-ID": request_id, "User-Agent": "reads-test/1.0"},
        ).json()
    assert [r["document_id"] for r in found["results"]] == [document]
    (read,) = _reads(system, actor=actor, kind="search")
    assert read["documents"] == [document] and len(read["chunks"]) == 1
    assert read["route"] == "/v1/search" and read["role"] == "viewer"
    # Recorded from a thread of its own while the response was made, with the request's cause.
    assert (read["cause"]["request_id"], read["cause"]["user_agent"]) == (
        request_id,
        "reads-test/1.0",
    )
    assert query not in json.dumps(read) and len(read["query_sha256"]) == 64
    _settle(system)
    auditor_actor, auditor = _key(system, Role.AUDITOR, "reviewer")
    with system.client(auditor) as reviewer:
        text = reviewer.get(f"/v1/audit/queries/{read['query_sha256']}")
        assert text.status_code == 200 and text.json()["text"] == query
        assert_error(reviewer.get(f"/v1/audit/queries/{'0' * 64}"), 404, "query_not_found")
    with system.client(token) as viewer:  # a viewer may not read others' queries
        assert_error(viewer.get(f"/v1/audit/queries/{read['query_sha256']}"), 403, "forbidden")
    (reading,) = _reads(system, actor=auditor_actor, kind="query_text")
    assert reading["query_sha256"] == read["query_sha256"]  # the reading was recorded too


def test_a_read_whose_record_cannot_be_written_is_refused_not_served(
    system: RunningSystem, document: str
) -> None:
    url = system.settings.database.url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE activity_events RENAME TO activity_events_away")
    try:
        with system.client() as admin:
            refused = admin.get("/v1/search", params={"q": NEEDLE, "mode": "keyword"})
            body = assert_error(refused, 503, "read_not_recorded")
            assert NEEDLE not in refused.text and "results" not in body
            assert refused.headers["retry-after"] == "1"
            assert_error(admin.get(f"/v1/documents/{document}"), 503, "read_not_recorded")
            download = admin.get(f"/v1/documents/{document}/content")
            assert_error(download, 503, "read_not_recorded")
            assert NEEDLE not in download.text
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER TABLE activity_events_away RENAME TO activity_events")
    with system.client() as admin:
        served = admin.get("/v1/search", params={"q": NEEDLE, "mode": "keyword"})
        assert served.status_code == 200 and served.json()["results"]


def test_a_download_is_the_file_as_uploaded_and_is_recorded(
    system: RunningSystem, document: str
) -> None:
    actor, token = _key(system, Role.VIEWER, "downloader")
    with system.client(token) as viewer:
        got = viewer.get(f"/v1/documents/{document}/content")
        missing = viewer.get(f"/v1/documents/{uuid.uuid4()}/content")
    assert got.status_code == 200, got.text
    assert got.content == f"# Birds\n\nThe {NEEDLE} hovers over the ridge.".encode()
    assert got.headers["content-type"].startswith("text/markdown")
    assert got.headers["content-disposition"] == (
        "inline; filename=\"birds.md\"; filename*=UTF-8''birds.md"
    )
    assert got.headers["content-security-policy"].startswith("sandbox")
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["etag"].strip('"') == hashlib.sha256(got.content).hexdigest()
    assert_error(missing, 404, "document_not_found")
    (read,) = _reads(system, actor=actor, kind="file")
    assert (
        read["documents"] == [document] and read["route"] == "/v1/documents/{document_id}/content"
    )
    _settle(system)
    _, auditor = _key(system, Role.AUDITOR, "download auditor")
    with system.client(auditor) as reviewer:
        readers = reviewer.get(f"/v1/audit/documents/{document}/readers").json()["readers"]
    assert any(r["actor"] == actor and r["route"] == "file" for r in readers)
    # A deleted document's file is gone from the API.
    with system.client() as admin:
        other = admin.post(
            "/v1/documents", files={"file": ("über «x».txt", b"short lived", "text/plain")}
        ).json()
        system.wait_final(admin, [other["id"]])
        named = admin.get(f"/v1/documents/{other['id']}/content", params={"download": "true"})
        assert named.headers["content-disposition"] == (
            "attachment; filename=\"_ber _x_.txt\"; filename*=UTF-8''%C3%BCber%20%C2%ABx%C2%BB.txt"
        )
        deleted = admin.delete(f"/v1/documents/{other['id']}").json()
        gone = admin.get(
            f"/v1/documents/{other['id']}/content", params={"min_position": deleted["position"]}
        )
    assert_error(gone, 410, "document_deleted")


def test_who_saw_a_document_lists_every_principal_route_and_count(
    system: RunningSystem, document: str
) -> None:
    since = datetime.now(UTC)
    searcher, searcher_key = _key(system, Role.VIEWER, "who-saw searcher")
    asker, asker_key = _key(system, Role.VIEWER, "who-saw asker")
    with system.client(searcher_key) as client:
        for _ in range(2):
            client.get("/v1/search", params={"q": NEEDLE, "mode": "keyword"})
    with system.client(asker_key) as client:
        conversation = client.post("/v1/conversations", json={"title": "birds"}).json()
        answered = client.post(
            f"/v1/conversations/{conversation['id']}/questions",
            json={"question": f"What does the {NEEDLE} do?", "mode": "keyword"},
        )
        assert answered.status_code == 200, answered.text
        assert [c["document_id"] for c in answered.json()["citations"]] == [document]
    admin_actor = f"key:{uuid.UUID(system.admin_key.split('_')[1])}"
    with system.client() as admin:
        conversations_head = system.container.event_logs["conversations"].head()
        assert system.container.views["conversations"].wait_for(
            "conversations", conversations_head, 30
        )
        transcript = admin.get(f"/v1/conversations/{conversation['id']}")
        assert transcript.status_code == 200
    _settle(system)
    _, auditor = _key(system, Role.AUDITOR, "who-saw auditor")
    with system.client(auditor) as reviewer:
        listed = reviewer.get(
            f"/v1/audit/documents/{document}/readers", params={"since": since.isoformat()}
        )
        assert listed.status_code == 200, listed.text
        seen = {(r["actor"], r["route"]): r["times"] for r in listed.json()["readers"]}
        assert seen == {
            (searcher, "search"): 2,
            (asker, "answer"): 1,
            (admin_actor, "transcript"): 1,
        }
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        empty = reviewer.get(f"/v1/audit/documents/{document}/readers", params={"since": later})
        assert empty.json()["readers"] == []
    settings = system.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("KF")}
    env.update({"KF_DATABASE_URL": settings.database.url, "KF_DATA_DIR": str(settings.data_dir)})
    done = subprocess.run(
        [sys.executable, "-m", "config.cli", "audit", "who-saw", "--tenant", "default",
         "--document", document, "--from", since.isoformat()],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert {(r["actor"], r["route"]): r["times"] for r in lines} == seen


def test_refused_requests_are_recorded_throttled_per_client_and_never_uncounted(
    system: RunningSystem,
) -> None:
    before = _refusals(system)
    bad = f"kf_{uuid.uuid4().hex}_{'x' * 40}"
    with httpx.Client(base_url=system.base_url, headers={"Authorization": f"Bearer {bad}"}) as c:
        for _ in range(8):
            assert c.get("/v1/documents").status_code == 401
        time.sleep(1.6)  # the window (1.5 s in this module) passes
        assert c.get("/v1/documents").status_code == 401
    recorded = _refusals(system)[len(before) :]
    assert len(recorded) == 4  # three in the first window, one in the next
    assert sum(1 + r["suppressed"] for r in recorded) == 9  # every refusal counted
    assert {r["reason"] for r in recorded} == {"unknown_key"} or recorded[0]["status"] == 401
    assert all(r["client"] == "127.0.0.1" and bad not in json.dumps(r) for r in recorded)
    actor, token = _key(system, Role.VIEWER, "not an editor")
    with system.client(token) as viewer:
        viewer.post("/v1/documents", files={"file": ("x.txt", b"x")})
    forbidden = _refusals(system)[-1]
    assert (forbidden["status"], forbidden["actor"], forbidden["tenant_id"]) == (
        403,
        actor,
        system.tenant_id,
    )


def _refusals(system: RunningSystem) -> list[dict[str, Any]]:
    return [
        {**e.data, "actor": e.actor, "tenant_id": e.tenant_id}
        for batch in system.container.event_logs["activity"].read_all(0)
        for e in batch
        if e.event_type == "Refusal.Recorded"
    ]
