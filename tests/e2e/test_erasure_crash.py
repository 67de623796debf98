"""Erasure is crash-safe: all or nothing where it must be atomic, completed after a restart.

The irreversible part (the ``Erased`` event, the keys and the blobs) is one
transaction: a failure inside it leaves the document as it was. The rest (each read
model dropping its copies) follows the event, so a system whose projectors die
before they apply it completes the erasure when they come back, and the certificate
says so: incomplete with the pending read models, then complete.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import commands.documents as documents_module
from config.settings import Settings
from infra.crypto import document_key
from infra.embedding import SentenceTransformerEmbedder
from tests.harness import RunningSystem


def _certificate(client: httpx.Client, document_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/documents/{document_id}/erasure")
    assert response.status_code == 200, response.text
    certificate: dict[str, Any] = response.json()["certificate"]
    return certificate


def test_an_erasure_interrupted_before_the_read_models_completes_after_a_restart(
    settings_factory: Callable[..., Settings],
    embedder: SentenceTransformerEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared = settings_factory()

    def settings() -> Settings:
        # One data directory (index, master key) for the three runs; each makes an admin key.
        (shared.data_dir / "admin-key").unlink(missing_ok=True)
        return shared

    canary = f"zqk{uuid.uuid4().hex[:12]}"
    with RunningSystem(settings(), embedder) as system, system.client() as client:
        uploaded = client.post(
            "/v1/documents", files={"file": ("crash.txt", f"Crash test {canary}.".encode())}
        ).json()
        document_id = uploaded["id"]
        system.wait_final(client, [document_id])

        # A failure inside the erasure's transaction leaves everything as it was.
        def failing(curs: Any, tenant_id: str, key_id: str) -> list[str]:
            curs.execute("DELETE FROM data_keys WHERE key_id = %s", (key_id,))
            raise RuntimeError("killed mid-transaction")

        with monkeypatch.context() as patched:
            patched.setattr(documents_module, "destroy_keys", failing)
            with pytest.raises(RuntimeError):
                system.container.documents.erase_document(
                    tenant_id=system.tenant_id, actor="key:test", document_id=uuid.UUID(document_id)
                )
        document = system.container.documents.get_document(system.tenant_id, uuid.UUID(document_id))
        assert not document.is_erased
        assert system.container.documents.data_key(uuid.UUID(document_id)) is not None
        found = client.get("/v1/search", params={"q": canary, "mode": "keyword"}).json()
        assert [r["document_id"] for r in found["results"]] == [document_id]

    # The projectors are down (they died) when the erasure is recorded.
    down = RunningSystem(settings(), embedder, projectors=False, worker=False)
    with down, down.client() as client:
        erased = client.post(f"/v1/documents/{document_id}/erase")
        assert erased.status_code == 202, erased.text
        certificate = _certificate(client, document_id)
        # Its key, and the key of the search above that showed it (its query text quoted it).
        destroyed = certificate["keys_destroyed"]
        assert destroyed[0] == document_key(document_id)
        assert [k for k in destroyed[1:] if k.startswith("read:")] == destroyed[1:] != []
        assert not certificate["key_still_stored"] and certificate["blobs_still_stored"] == 0
        assert certificate["complete"] is False
        assert set(certificate["pending_read_models"]) >= {"catalog", "fulltext", "search"}

    # Back up: the projectors apply the erasure from the stream, and the certificate says so.
    with RunningSystem(settings(), embedder) as system, system.client() as client:
        deadline = time.monotonic() + 60
        while not (certificate := _certificate(client, document_id))["complete"]:
            assert time.monotonic() < deadline, certificate
            time.sleep(0.1)
        assert certificate["pending_read_models"] == []
        assert {m["name"] for m in certificate["read_models"]} >= {"catalog", "fulltext", "search"}
        found = client.get("/v1/search", params={"q": canary, "mode": "keyword"}).json()
        assert found["results"] == []
        assert client.get(f"/v1/documents/{document_id}").json()["status"] == "erased"


def test_a_document_deleted_mid_processing_carries_on_when_restored(
    settings_factory: Callable[..., Settings],
    embedder: SentenceTransformerEmbedder,
) -> None:
    shared = settings_factory()
    (shared.data_dir / "admin-key").unlink(missing_ok=True)
    idle = RunningSystem(shared, embedder, worker=False)
    with idle, idle.client() as client:  # no worker: the upload waits to be parsed
        uploaded = client.post(
            "/v1/documents", files={"file": ("mid.txt", f"Midway {uuid.uuid4()}".encode())}
        ).json()
        deleted = client.delete(f"/v1/documents/{uploaded['id']}")
        assert deleted.status_code == 202
    (shared.data_dir / "admin-key").unlink()
    with RunningSystem(shared, embedder) as system, system.client() as client:
        # The worker takes the upload, finds the document deleted, and leaves it.
        deadline = time.monotonic() + 30
        while _pending(system, "worker-parse") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get(f"/v1/documents/{uploaded['id']}").json()["status"] == "deleted"
        restored = client.post(f"/v1/documents/{uploaded['id']}/restore")
        assert restored.status_code == 202, restored.text
        deadline = time.monotonic() + 120
        while (final := client.get(f"/v1/documents/{uploaded['id']}").json())["status"] not in (
            "embedded",
            "failed",
        ):
            assert time.monotonic() < deadline, final
            time.sleep(0.1)
        assert final["status"] == "embedded" and final["chunk_count"] == 1


def _pending(system: RunningSystem, consumer: str) -> int:
    import asyncio

    import nats

    async def ask() -> int:
        connection = await nats.connect(system.settings.nats.url)
        try:
            info = await connection.jetstream().consumer_info(system.settings.nats.stream, consumer)
            return int(info.num_pending) + int(info.num_ack_pending)
        finally:
            await connection.close()

    return asyncio.run(ask())
