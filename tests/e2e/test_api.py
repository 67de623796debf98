"""The HTTP API end to end: status codes, error codes, keys, paging, read-your-writes."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from config.settings import Settings
from domain.access import Role
from infra.embedding import SentenceTransformerEmbedder
from tests.harness import RunningSystem
from tests.http import assert_error

LIMIT = 4096


@pytest.fixture(scope="module")
def system(
    settings_factory: Callable[..., Settings], embedder: SentenceTransformerEmbedder
) -> Iterator[RunningSystem]:
    with RunningSystem(
        settings_factory(api={"max_upload_bytes": LIMIT, "read_wait_timeout_s": 10}), embedder
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(system: RunningSystem) -> Iterator[httpx.Client]:
    with system.client() as c:
        yield c


def _key(system: RunningSystem, role: Role, **kwargs: Any) -> tuple[uuid.UUID, str]:
    result, token = system.container.access.issue_api_key(
        tenant_id=system.tenant_id, actor="test", name=f"{role.value} key", role=role, **kwargs
    )
    return result.id, token


def _post(
    client: httpx.Client, content: bytes, name: str = "note.txt", mime: str = "text/plain"
) -> httpx.Response:
    return client.post("/v1/documents", files={"file": (name, content, mime)})


# ------------------------------------------------------------------ uploads


def test_upload_is_accepted_and_readable_at_its_position(client: httpx.Client) -> None:
    response = _post(client, b"Knowledge Foundry keeps every event. " * 3)
    assert response.status_code == 202
    accepted = response.json()
    document = client.get(
        f"/v1/documents/{accepted['id']}", params={"min_position": accepted["position"]}
    )
    assert document.status_code == 200
    assert document.json()["status"] in {"uploaded", "parsed", "chunked", "embedded"}
    assert document.json()["position"] >= accepted["position"]


def test_document_moves_through_every_status_to_embedded(
    system: RunningSystem, client: httpx.Client
) -> None:
    accepted = _post(
        client, b"The relay publishes committed events in order. " * 20, "order.md", "text/markdown"
    ).json()
    final = system.wait_final(client, [accepted["id"]])[accepted["id"]]
    assert final["status"] == "embedded"
    assert final["media_type"] == "text/markdown"
    assert final["chunk_count"] >= 1 and final["char_count"] > 0 and final["page_count"] is None
    types = [
        type(e).__qualname__
        for e in system.container.documents.events.get(uuid.UUID(accepted["id"]))
    ]
    assert types == [
        "Document.Uploaded",
        "Document.Parsed",
        "Document.Chunked",
        "Document.Embedded",
    ]


def test_identical_bytes_return_the_existing_document(client: httpx.Client) -> None:
    content = f"dedupe me {uuid.uuid4()}".encode()
    first = _post(client, content, "a.txt")
    second = _post(client, content, "b.txt")
    assert first.status_code == 202 and second.status_code == 200
    assert second.json()["id"] == first.json()["id"] and second.json()["duplicate"] is True


def test_empty_file_is_422(client: httpx.Client) -> None:
    assert_error(_post(client, b""), 422, "empty_file")


def test_unsupported_type_is_415_whatever_the_declared_type(client: httpx.Client) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    body = assert_error(
        _post(client, png, "scan.pdf", "application/pdf"), 415, "unsupported_media_type"
    )
    assert "application/pdf" in body["message"]


def test_oversized_upload_is_413_with_and_without_content_length(client: httpx.Client) -> None:
    assert_error(_post(client, b"a" * (LIMIT + 1)), 413, "file_too_large")
    big = b"a" * (2 * 1024 * 1024)  # past the multipart slack too

    def chunks() -> Iterator[bytes]:
        boundary = b"--kfboundary"
        yield (
            boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="x.txt"\r\n\r\n'
        )
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]
        yield b"\r\n" + boundary + b"--\r\n"

    response = client.post(
        "/v1/documents",
        content=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=kfboundary"},
    )
    assert_error(response, 413, "file_too_large")


def test_missing_file_field_is_422(client: httpx.Client) -> None:
    assert_error(client.post("/v1/documents", data={"note": "no file"}), 422, "invalid_request")


def test_tenant_comes_from_the_key_not_the_body(
    system: RunningSystem, client: httpx.Client
) -> None:
    other = str(uuid.uuid4())
    response = client.post(
        "/v1/documents",
        files={"file": ("t.txt", f"tenant {uuid.uuid4()}".encode(), "text/plain")},
        data={"tenant_id": other},
    )
    assert response.status_code == 202
    document = system.container.documents.get_document(
        system.tenant_id, uuid.UUID(response.json()["id"])
    )
    assert document.tenant_id == system.tenant_id


# ------------------------------------------------------------ authentication


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer not-a-key",
        f"Bearer kf_{uuid.uuid4().hex}_{'x' * 43}",
    ],
)
def test_requests_without_a_valid_key_get_401(system: RunningSystem, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = httpx.get(f"{system.base_url}/v1/documents", headers=headers)
    assert_error(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_revoked_key_gets_401_on_the_very_next_request(system: RunningSystem) -> None:
    key_id, token = _key(system, Role.VIEWER)
    with system.client(token) as client:
        assert client.get("/v1/documents").status_code == 200  # now cached
        system.container.access.revoke_api_key(
            tenant_id=system.tenant_id, actor="test", key_id=key_id
        )
        assert_error(client.get("/v1/documents"), 401, "unauthenticated")


def test_an_expired_key_gets_401(system: RunningSystem) -> None:
    _, token = _key(system, Role.VIEWER, expires_at=datetime.now(UTC) + timedelta(seconds=1))
    with system.client(token) as client:
        assert client.get("/v1/documents").status_code == 200
        time.sleep(1.2)
        assert_error(client.get("/v1/documents"), 401, "unauthenticated")


def test_a_viewer_cannot_upload_or_delete(system: RunningSystem) -> None:
    _, token = _key(system, Role.VIEWER)
    with system.client(token) as client:
        assert_error(_post(client, b"viewer upload"), 403, "forbidden")
        assert_error(client.delete(f"/v1/documents/{uuid.uuid4()}"), 403, "forbidden")
        assert_error(client.get("/v1/projections"), 403, "forbidden")
        assert client.get("/v1/documents").status_code == 200


# ------------------------------------------------------------------- reads


def test_listing_is_newest_first_and_pages_with_a_cursor(client: httpx.Client) -> None:
    ids = [_post(client, f"page item {i} {uuid.uuid4()}".encode()).json() for i in range(5)]
    last_position = max(a["position"] for a in ids)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "min_position": last_position}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/documents", params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    newest_first = [a["id"] for a in reversed(ids)]
    assert seen[:5] == newest_first
    assert len(seen) == len(set(seen))


def test_bad_paging_parameters_are_422(client: httpx.Client) -> None:
    assert_error(
        client.get("/v1/documents", params={"cursor": "!!not-ours!!"}), 422, "invalid_cursor"
    )
    assert_error(client.get("/v1/documents", params={"limit": 0}), 422, "invalid_request")
    assert_error(client.get("/v1/documents", params={"limit": 10_000}), 422, "invalid_request")
    assert_error(
        client.get("/v1/documents", params={"status": "imaginary"}), 422, "invalid_request"
    )
    assert_error(
        client.get("/v1/documents", params={"min_position": 10**12}), 422, "invalid_position"
    )
    assert_error(client.get("/v1/documents/not-a-uuid"), 422, "invalid_request")


def test_unknown_and_foreign_documents_are_404(system: RunningSystem, client: httpx.Client) -> None:
    assert_error(client.get(f"/v1/documents/{uuid.uuid4()}"), 404, "document_not_found")
    assert_error(client.delete(f"/v1/documents/{uuid.uuid4()}"), 404, "document_not_found")
    other = system.container.access.create_tenant(
        name=f"other-{uuid.uuid4().hex[:8]}", actor="test"
    )
    _, token = system.container.access.issue_api_key(
        tenant_id=str(other.id), actor="test", name="other", role=Role.EDITOR
    )
    mine = _post(client, f"mine {uuid.uuid4()}".encode()).json()
    with system.client(token) as stranger:
        assert_error(
            stranger.get(f"/v1/documents/{mine['id']}", params={"min_position": mine["position"]}),
            404,
            "document_not_found",
        )
        assert_error(stranger.delete(f"/v1/documents/{mine['id']}"), 404, "document_not_found")
        assert mine["id"] not in [d["id"] for d in stranger.get("/v1/documents").json()["items"]]


def test_unknown_route_and_method_have_error_codes(client: httpx.Client) -> None:
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(client.put("/v1/documents"), 405, "method_not_allowed")


# ------------------------------------------------------------------ delete


def test_delete_marks_the_document_deleted(client: httpx.Client) -> None:
    accepted = _post(client, f"short-lived {uuid.uuid4()}".encode()).json()
    deleted = client.delete(f"/v1/documents/{accepted['id']}")
    assert deleted.status_code == 202
    document = client.get(
        f"/v1/documents/{accepted['id']}", params={"min_position": deleted.json()["position"]}
    ).json()
    assert document["status"] == "deleted" and document["deleted_at"] is not None
    listed = client.get("/v1/documents", params={"limit": 200}).json()["items"]
    assert accepted["id"] not in [d["id"] for d in listed]
    again = client.delete(f"/v1/documents/{accepted['id']}")
    assert again.status_code == 202 and again.json()["position"] == deleted.json()["position"]


def test_two_deletes_racing_one_gets_409(system: RunningSystem, client: httpx.Client) -> None:
    accepted = _post(client, f"raced {uuid.uuid4()}".encode()).json()
    system.wait_final(client, [accepted["id"]])  # the worker no longer reads it
    documents = system.container.documents
    target = uuid.UUID(accepted["id"])
    barrier = threading.Barrier(2, timeout=10)
    original = documents.repository.get

    waited = threading.local()

    def get_then_wait(aggregate_id: Any, *args: Any, **kwargs: Any) -> Any:
        aggregate = original(aggregate_id, *args, **kwargs)
        if aggregate_id == target and not getattr(waited, "done", False):
            waited.done = True
            barrier.wait()  # both requests have read the same version before either writes
        return aggregate

    statuses: list[int] = []
    documents.repository.get = get_then_wait  # type: ignore[method-assign]
    try:

        def delete() -> None:
            with httpx.Client(base_url=system.base_url, headers=client.headers) as c:
                statuses.append(c.delete(f"/v1/documents/{target}").status_code)

        threads = [threading.Thread(target=delete) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        documents.repository.get = original  # type: ignore[method-assign]
    assert sorted(statuses) == [202, 409]
    versions = [e.originator_version for e in documents.events.get(target)]
    assert versions == list(range(1, len(versions) + 1))


# -------------------------------------------------------------- operations


def test_projection_status_shows_positions_and_lag(
    system: RunningSystem, client: httpx.Client
) -> None:
    accepted = _post(client, f"status {uuid.uuid4()}".encode()).json()
    client.get(f"/v1/documents/{accepted['id']}", params={"min_position": accepted["position"]})
    body = client.get("/v1/projections").json()
    by_name = {c["name"]: c for c in body["components"]}
    assert {"relay-documents", "relay-access", "catalog"} <= set(by_name)
    catalog = by_name["catalog"]["contexts"][0]
    assert catalog["context"] == "documents" and catalog["position"] >= accepted["position"]
    assert catalog["lag"] == max(0, catalog["head"] - catalog["position"])


def test_metrics_and_request_ids(system: RunningSystem, client: httpx.Client) -> None:
    response = client.get("/v1/documents", headers={"X-Request-ID": "trace-me-123"})
    assert response.headers["x-request-id"] == "trace-me-123"
    metrics = httpx.get(f"{system.base_url}/metrics").text
    for name in (
        "kf_http_request_duration_seconds",
        "kf_events_appended_total",
        "kf_relay_published_total",
        "kf_stage_duration_seconds",
        "kf_auth_failures_total",
    ):
        assert name in metrics
