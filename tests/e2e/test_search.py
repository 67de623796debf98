"""Search end to end: modes, filters, deletes, bad input, tenant isolation, rebuilds."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.settings import Settings
from domain.access import Role
from infra.embedding import SentenceTransformerEmbedder
from projections.read_models import names
from tests.harness import RunningSystem
from tests.http import assert_error

pytestmark = pytest.mark.timeout(900)

MODES = ("hybrid", "vector", "keyword", "exact")
VOCABULARY = [
    "glacier",
    "volcano",
    "harbour",
    "lantern",
    "orchard",
    "meadow",
    "canyon",
    "tundra",
    "quarry",
    "lagoon",
    "prairie",
    "summit",
    "falcon",
    "otter",
    "heron",
    "badger",
    "walrus",
    "lynx",
    "bison",
    "gecko",
    "ledger",
    "invoice",
    "audit",
    "pension",
    "tariff",
    "mortgage",
    "dividend",
    "budget",
]


def _note(words: list[str]) -> bytes:
    return (" ".join(words) + ". " + " ".join(reversed(words)) + ".").encode()


@pytest.fixture(scope="module")
def system(
    settings_factory: Callable[..., Settings], embedder: SentenceTransformerEmbedder
) -> Iterator[RunningSystem]:
    with RunningSystem(settings_factory(search={"max_query_chars": 500}), embedder) as running:
        yield running


@pytest.fixture(scope="module")
def tenants(system: RunningSystem, documents_dir: Path) -> dict[str, Any]:
    """Tenant A: real documents and notes; tenant B: other notes sharing A's vocabulary."""
    access = system.container.access
    b = access.create_tenant(name=f"tenant-b-{uuid.uuid4().hex[:6]}", actor="test")
    _, key_b = access.issue_api_key(tenant_id=str(b.id), actor="test", name="b", role=Role.EDITOR)
    ids: dict[str, list[str]] = {"a": [], "b": []}
    with system.client() as a_client, system.client(key_b) as b_client:
        for name in ("2201.00069.pdf", "nics-background-checks-2015-11.pdf", "word_tables.docx"):
            ids["a"].append(system.upload(a_client, documents_dir / name)["id"])
        for i in range(6):
            words = [VOCABULARY[(i * 3 + j) % len(VOCABULARY)] for j in range(8)]
            r = a_client.post(
                "/v1/documents", files={"file": (f"a{i}.txt", _note(words) + b" alpha")}
            )
            ids["a"].append(r.json()["id"])
            r = b_client.post(
                "/v1/documents", files={"file": (f"b{i}.txt", _note(words) + b" bravo")}
            )
            ids["b"].append(r.json()["id"])
        system.wait_final(a_client, ids["a"])
        system.wait_final(b_client, ids["b"])
    head = system.container.documents.head_position()
    assert system.container.search_view.wait_for("documents", head, 30)
    assert system.container.fulltext.wait_for("documents", head, 30)
    return {"key_b": key_b, "tenant_b": str(b.id), "ids": ids}


def _search(client: httpx.Client, **params: Any) -> httpx.Response:
    return client.get("/v1/search", params=params)


# ----------------------------------------------------------------- modes


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_finds_the_passage(
    system: RunningSystem, tenants: dict[str, Any], mode: str
) -> None:
    with system.client() as client:
        body = _search(client, q="MeerKAT radio emission", mode=mode, k=5).json()
    assert body["mode"] == mode and body["results"], body
    top = body["results"][0]
    assert top["filename"] == "2201.00069.pdf"
    assert top["page"] == 1 and top["chunk_index"] >= 0
    assert "MeerKAT" in top["text"]
    assert "<mark>" in top["snippet"]
    if mode == "hybrid":
        assert top["ranks"]["vector"] is not None or top["ranks"]["keyword"] is not None
    elif mode == "vector":
        assert top["ranks"] == {"vector": 1, "keyword": None}
    elif mode == "keyword":
        assert top["ranks"] == {"vector": None, "keyword": 1}


def test_hybrid_reports_each_legs_rank_and_respects_k(
    system: RunningSystem, tenants: dict[str, Any]
) -> None:
    with system.client() as client:
        body = _search(client, q="handgun permits by state", mode="hybrid", k=3).json()
    assert len(body["results"]) == 3
    assert body["results"][0]["filename"] == "nics-background-checks-2015-11.pdf"
    assert all(set(r["ranks"]) == {"vector", "keyword"} for r in body["results"])
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_exact_mode_speaks_web_search_syntax(
    system: RunningSystem, tenants: dict[str, Any]
) -> None:
    with system.client() as client:
        phrase = _search(client, q='"persistent radio source"', mode="exact", k=50).json()[
            "results"
        ]
        either = _search(client, q="glacier or walrus", mode="exact", k=50).json()["results"]
        without = _search(client, q="glacier -walrus", mode="exact", k=50).json()["results"]
    assert phrase and all("persistent radio source" in r["text"].lower() for r in phrase)
    assert all("<mark>" in r["snippet"] for r in phrase)
    assert {r["filename"] for r in either} >= {r["filename"] for r in without}
    assert all("glacier" in r["text"] and "walrus" not in r["text"] for r in without)
    assert any("walrus" in r["text"] for r in either)


def test_exact_mode_pages_through_every_match(
    system: RunningSystem, tenants: dict[str, Any]
) -> None:
    with system.client() as client:
        everything = _search(client, q="alpha", mode="exact", k=100).json()["results"]
        pages = [
            _search(client, q="alpha", mode="exact", k=2, offset=offset).json()["results"]
            for offset in range(0, len(everything), 2)
        ]
    assert len(everything) == 6
    assert [r["document_id"] for page in pages for r in page] == [
        r["document_id"] for r in everything
    ]


def test_filters_narrow_results(system: RunningSystem, tenants: dict[str, Any]) -> None:
    pdf = tenants["ids"]["a"][0]
    with system.client() as client:
        only_pdf = client.post(
            "/v1/search",
            json={"query": "radio", "mode": "hybrid", "filters": {"document_ids": [pdf]}},
        ).json()["results"]
        only_docx = client.post(
            "/v1/search",
            json={
                "query": "table",
                "mode": "keyword",
                "filters": {
                    "media_types": [
                        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
                    ]
                },
            },
        ).json()["results"]
        future = _search(
            client, q="radio", mode="vector", uploaded_after="2999-01-01T00:00:00Z"
        ).json()
        past = _search(
            client, q="radio", mode="exact", uploaded_before="2000-01-01T00:00:00Z"
        ).json()
    assert only_pdf and {r["document_id"] for r in only_pdf} == {pdf}
    assert only_docx and {r["filename"] for r in only_docx} == {"word_tables.docx"}
    assert future["results"] == [] and past["results"] == []


# ------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"q": "x", "k": 101}, "k_too_large"),
        ({"q": "x", "k": 0}, "invalid_request"),
        ({"q": "x", "mode": "telepathy"}, "invalid_request"),
        ({"q": "   "}, "empty_query"),
        ({"q": "x" * 501}, "query_too_long"),
        ({"q": "x", "document_id": "not-a-uuid"}, "invalid_request"),
        ({"q": "x", "media_type": "image/png"}, "invalid_filter"),
        ({"q": "x", "uploaded_after": "yesterday"}, "invalid_request"),
        (
            {
                "q": "x",
                "uploaded_after": "2026-01-02T00:00:00Z",
                "uploaded_before": "2026-01-01T00:00:00Z",
            },
            "invalid_filter",
        ),
        ({"q": "x", "mode": "vector", "offset": 5}, "invalid_request"),
        ({"q": "x\x00y"}, "invalid_query"),
        ({}, "invalid_request"),
    ],
)
def test_bad_queries_get_4xx_with_codes(
    system: RunningSystem, params: dict[str, Any], code: str
) -> None:
    with system.client() as client:
        assert_error(_search(client, **params), 422, code)


def test_invalid_utf8_and_malformed_bodies_are_4xx(system: RunningSystem) -> None:
    with system.client() as client:
        assert_error(client.get("/v1/search?q=%FF%FE%FD&mode=keyword"), 400, "invalid_utf8")
        malformed = client.post(
            "/v1/search",
            content=b'{"query": "x", "k":',
            headers={"Content-Type": "application/json"},
        )
        assert_error(malformed, 422, "invalid_request")
        bad_bytes = client.post(
            "/v1/search",
            content=b'{"query": "\xff\xfe"}',
            headers={"Content-Type": "application/json"},
        )
        assert 400 <= bad_bytes.status_code < 500
        wrong_shape = client.post(
            "/v1/search", json={"query": "x", "filters": {"document_ids": "abc"}}
        )
        assert_error(wrong_shape, 422, "invalid_request")


# ------------------------------------------------------------ delete


def test_deleted_documents_vanish_from_every_mode_and_can_return(system: RunningSystem) -> None:
    content = f"The zeppelin quartermaster filed report {uuid.uuid4().hex}.".encode()
    with system.client() as client:
        first = client.post("/v1/documents", files={"file": ("z.txt", content)}).json()
        system.wait_final(client, [first["id"]])
        head = system.container.documents.head_position()
        for mode in MODES:
            hits = _search(client, q="zeppelin quartermaster", mode=mode, min_position=head).json()
            assert first["id"] in {r["document_id"] for r in hits["results"]}, mode
        deleted = client.delete(f"/v1/documents/{first['id']}").json()
        for mode in MODES:
            hits = _search(
                client, q="zeppelin quartermaster", mode=mode, min_position=deleted["position"]
            ).json()
            assert first["id"] not in {r["document_id"] for r in hits["results"]}, mode
        again = client.post("/v1/documents", files={"file": ("z.txt", content)}).json()
        assert again["id"] != first["id"] and not again["duplicate"]
        system.wait_final(client, [again["id"]])
        head = system.container.documents.head_position()
        for mode in MODES:
            hits = _search(client, q="zeppelin quartermaster", mode=mode, min_position=head).json()
            found = {r["document_id"] for r in hits["results"]}
            assert again["id"] in found and first["id"] not in found, mode


# ---------------------------------------------------- tenant isolation


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    words=st.lists(
        st.sampled_from([*VOCABULARY, "alpha", "bravo", "radio", "table"]), min_size=1, max_size=4
    ),
    noise=st.text(min_size=0, max_size=12),
    mode=st.sampled_from(MODES),
    as_b=st.booleans(),
)
def test_no_query_in_any_mode_crosses_tenants(
    system: RunningSystem,
    tenants: dict[str, Any],
    words: list[str],
    noise: str,
    mode: str,
    as_b: bool,
) -> None:
    query = " ".join(words) + " " + noise.replace("\x00", "")
    own, other = (
        (tenants["ids"]["b"], tenants["ids"]["a"])
        if as_b
        else (tenants["ids"]["a"], tenants["ids"]["b"])
    )
    with system.client(tenants["key_b"] if as_b else None) as client:
        response = _search(client, q=query, mode=mode, k=100)
        if response.status_code == 422:
            return  # e.g. an empty query after stripping: refused, and nothing returned
        assert response.status_code == 200, response.text
        found = {r["document_id"] for r in response.json()["results"]}
    assert not found & set(other)
    assert found <= set(own) | _later_documents(system, as_b, tenants)


@pytest.fixture(scope="module")
def admin_keys(system: RunningSystem, tenants: dict[str, Any]) -> dict[str, Any]:
    """An admin key per tenant, and key ids each tenant owns."""
    access = system.container.access
    owned: dict[str, list[str]] = {"a": [], "b": []}
    keys = {}
    for side, tenant in (("a", system.tenant_id), ("b", tenants["tenant_b"])):
        for role in (Role.ADMIN, Role.VIEWER):
            result, token = access.issue_api_key(
                tenant_id=tenant, actor="test", name=f"{side} {role.value}", role=role
            )
            owned[side].append(str(result.id))
            if role is Role.ADMIN:
                keys[side] = token
    head = access.head_position()
    assert system.container.views["keys"].wait_for("access", head, 30)
    return {"keys": keys, "owned": owned}


ACTIONS = (
    "list_documents",
    "get_document",
    "delete_document",
    "list_keys",
    "get_key",
    "revoke_key",
    "search_by_document_ids",
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(action=st.sampled_from(ACTIONS), as_b=st.booleans(), pick=st.integers(0, 1000))
def test_no_document_key_or_catalog_request_crosses_tenants(
    system: RunningSystem,
    tenants: dict[str, Any],
    admin_keys: dict[str, Any],
    action: str,
    as_b: bool,
    pick: int,
) -> None:
    me, them = ("b", "a") if as_b else ("a", "b")
    other_document = tenants["ids"][them][pick % len(tenants["ids"][them])]
    other_key = admin_keys["owned"][them][pick % len(admin_keys["owned"][them])]
    with system.client(admin_keys["keys"][me]) as client:
        if action == "list_documents":
            response = client.get("/v1/documents", params={"limit": 200, "include_deleted": True})
            listed = {item["id"] for item in response.json()["items"]}
            assert listed and not listed & set(tenants["ids"][them])
        elif action == "get_document":
            assert_error(client.get(f"/v1/documents/{other_document}"), 404, "document_not_found")
        elif action == "delete_document":
            assert_error(
                client.delete(f"/v1/documents/{other_document}"), 404, "document_not_found"
            )
        elif action == "list_keys":
            listed = {item["id"] for item in client.get("/v1/keys").json()["items"]}
            assert set(admin_keys["owned"][me]) <= listed
            assert not listed & set(admin_keys["owned"][them])
        elif action == "get_key":
            assert_error(client.get(f"/v1/keys/{other_key}"), 404, "api_key_not_found")
        elif action == "revoke_key":
            assert_error(client.delete(f"/v1/keys/{other_key}"), 404, "api_key_not_found")
        else:
            response = client.post(
                "/v1/search",
                json={
                    "query": "table alpha bravo",
                    "mode": "hybrid",
                    "filters": {"document_ids": [other_document]},
                },
            )
            assert response.status_code == 200, response.text
            assert response.json()["results"] == []
    # Whatever was attempted, the other tenant's key still works.
    with system.client(admin_keys["keys"][them]) as theirs:
        assert theirs.get(f"/v1/documents/{other_document}").status_code == 200


def _later_documents(system: RunningSystem, as_b: bool, tenants: dict[str, Any]) -> set[str]:
    """Documents this tenant uploaded in other tests of this module."""
    tenant = tenants["tenant_b"] if as_b else system.tenant_id
    page = system.container.views["catalog"].page(tenant, limit=200, include_deleted=True)
    return {str(e.document_id) for e in page.entries}


# ------------------------------------------------------------ rebuild


def _rebuild(client: httpx.Client, **body: Any) -> dict[str, Any]:
    started = client.post("/v1/admin/rebuilds", json=body)
    assert started.status_code == 202, started.text
    rebuild_id = started.json()["id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status: dict[str, Any] = client.get(f"/v1/admin/rebuilds/{rebuild_id}").json()
        if status["state"] in ("done", "failed"):
            return status
        time.sleep(0.2)
    raise AssertionError("rebuild did not finish")


def test_rebuild_equals_live_and_searches_answer_throughout(
    system: RunningSystem, tenants: dict[str, Any]
) -> None:
    with system.client() as client:
        before = {
            m: _search(client, q="radio emission table", mode=m, k=20).json()["results"]
            for m in MODES
        }
        failures: list[str] = []
        answered = 0
        stop = threading.Event()

        def keep_searching() -> None:
            nonlocal answered
            with system.client() as searcher:
                while not stop.is_set():
                    for mode in MODES:
                        response = _search(searcher, q="radio", mode=mode)
                        if response.status_code != 200 or not response.json()["results"]:
                            failures.append(f"{mode}: {response.status_code} {response.text[:200]}")
                        answered += 1

        thread = threading.Thread(target=keep_searching)
        thread.start()
        try:
            status = _rebuild(client, projection="all", compare=True)
        finally:
            stop.set()
            thread.join(30)
        assert status["state"] == "done", status
        assert status["matches_live"] is True, {
            name: r for name, r in status["results"].items() if not r["matches_live"]
        }
        assert status["projections"] == names()  # every read model, search among them
        assert {name: r["matches_live"] for name, r in status["results"].items()} == dict.fromkeys(
            names(), True
        )
        assert not failures, failures[:5]
        assert answered > 0
        after = {
            m: _search(client, q="radio emission table", mode=m, k=20).json()["results"]
            for m in MODES
        }
        for mode in MODES:
            assert [(r["document_id"], r["chunk_index"]) for r in after[mode]] == [
                (r["document_id"], r["chunk_index"]) for r in before[mode]
            ], mode
        # The live projectors carry on after the switch.
        new = client.post(
            "/v1/documents",
            files={"file": ("post.txt", f"Postrebuild kestrel {uuid.uuid4()}".encode())},
        )
        system.wait_final(client, [new.json()["id"]])
        head = system.container.documents.head_position()
        for mode in MODES:
            found = _search(client, q="postrebuild kestrel", mode=mode, min_position=head).json()[
                "results"
            ]
            assert new.json()["id"] in {r["document_id"] for r in found}, mode


def test_a_tenant_rebuild_touches_only_that_tenant(
    system: RunningSystem, tenants: dict[str, Any]
) -> None:
    with system.client(tenants["key_b"]) as b_admin_attempt:
        assert_error(
            b_admin_attempt.post("/v1/admin/rebuilds", json={"projection": "all"}), 403, "forbidden"
        )
    with system.client() as client:
        a_before = _search(client, q="glacier", mode="hybrid", k=50).json()["results"]
        status = _rebuild(client, projection="all", tenant_id=tenants["tenant_b"], compare=True)
        assert status["state"] == "done" and status["matches_live"] is True, status
        assert set(status["results"]) == set(names())
        a_after = _search(client, q="glacier", mode="hybrid", k=50).json()["results"]
    assert [r["document_id"] for r in a_after] == [r["document_id"] for r in a_before]
    with system.client(tenants["key_b"]) as b_client:
        b_hits = _search(b_client, q="glacier bravo", mode="keyword", k=50).json()["results"]
    assert b_hits and {r["document_id"] for r in b_hits} <= set(tenants["ids"]["b"])
