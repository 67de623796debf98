"""Poison messages are parked, not looped.

A worker stage that keeps crashing on a document fails it, parks a dead letter (an
event) and goes on; an operator's retry sends the document through the stage again and
resolves the letter. A read model's projector that keeps failing on one event parks it
and stops there (it applies in order: it never skips on its own), says so in readiness,
and goes on when an operator retries (the event applied) or drops (the event passed
over, recorded) it. ``GET /v1/admin/dead-letters`` and ``kf dead-letters`` show and act.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from nats.aio.msg import Msg

from config.root import DEFAULT_TENANT
from config.settings import Settings
from domain.document import Stage
from infra.embedding import SentenceTransformerEmbedder
from infra.envelope import Envelope
from processors.sandbox import ParseSandbox
from processors.specs import StageSpec
from processors.worker import Worker
from projections.rows import Rows
from tests.harness import RunningSystem
from tests.roles import role_env

pytestmark = pytest.mark.timeout(600)

CRASH = b"PARSER-CRASHER"
# Contents whose Document.Uploaded the catalog's projector fails on, and documents whose
# Document.Embedded it fails on, while listed here.
POISONED_DIGESTS: set[str] = set()
POISONED_EMBEDDINGS: set[str] = set()
CRASHING = {"parser": True}
# Contents whose Document.Uploaded the parse worker takes and never answers (as a worker
# process killed with the message in hand would), and how often each was taken.
DROPPED_DIGESTS: set[str] = set()
DROPPED_DELIVERIES: dict[str, int] = {}


@pytest.fixture(scope="module")
def system(
    settings_factory: Callable[..., Settings], embedder: SentenceTransformerEmbedder
) -> Iterator[RunningSystem]:
    real_parse = ParseSandbox.parse

    def parse_or_explode(self: ParseSandbox, content: bytes, media_type: str) -> Any:
        if CRASH in content and CRASHING["parser"]:
            raise RuntimeError("simulated parser crash")
        return real_parse(self, content, media_type)

    real_handle = Worker._handle

    async def handle_or_vanish(
        self: Worker, spec: StageSpec, msgs: list[Msg], *args: Any, **kwargs: Any
    ) -> None:
        kept = []
        for msg in msgs:
            digest = Envelope.from_json(msg.data).data.get("content_sha256")
            if spec.stage is Stage.PARSE and digest in DROPPED_DIGESTS:
                DROPPED_DELIVERIES[digest] = DROPPED_DELIVERIES.get(digest, 0) + 1
            else:
                kept.append(msg)
        if kept:
            await real_handle(self, spec, kept, *args, **kwargs)

    ParseSandbox.parse = parse_or_explode  # type: ignore[method-assign]
    Worker._handle = handle_or_vanish  # type: ignore[method-assign]
    try:
        settings = settings_factory(
            # A delivery that never reaches the worker comes back after ack_wait (and is
            # given up on through JetStream's max-deliveries advisory if it was the last).
            ingest={"max_deliver": 2, "ack_wait_s": 10, "parse_timeout_s": 8},
            projections={"max_attempts": 3},
        )
        with RunningSystem(settings, embedder) as running:
            catalog = running.container.views["catalog"]
            real_apply = catalog.projection.apply

            def apply_or_explode(rows: Rows, envelope: Envelope) -> None:
                if envelope.data.get("content_sha256") in POISONED_DIGESTS or (
                    envelope.event_type == "Document.Embedded"
                    and envelope.aggregate_id in POISONED_EMBEDDINGS
                ):
                    raise RuntimeError("simulated catalog bug")
                real_apply(rows, envelope)

            catalog.projection.apply = apply_or_explode  # type: ignore[method-assign]
            yield running
    finally:
        ParseSandbox.parse = real_parse  # type: ignore[method-assign]
        Worker._handle = real_handle  # type: ignore[method-assign]


def _upload(client: httpx.Client, name: str, content: bytes) -> dict[str, Any]:
    response = client.post("/v1/documents", files={"file": (name, content)})
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


def _letters(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/v1/admin/dead-letters", params={"limit": 200, **params})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _document_position(system: RunningSystem) -> int:
    """The documents context's newest position (what a retry appended, at the latest)."""
    return system.container.documents.head_position()


def _wait_for(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_crashing_stage_parks_the_document_and_a_retry_resolves_it(
    system: RunningSystem,
) -> None:
    CRASHING["parser"] = True
    with system.client() as client:
        poisoned = _upload(client, "crasher.txt", CRASH + f" tide tables {uuid.uuid4()}".encode())
        final = system.wait_final(client, [poisoned["id"]], timeout=120)
        assert final[poisoned["id"]]["status"] == "failed"

        def parked() -> list[dict[str, Any]]:
            return [
                letter
                for letter in _letters(client)
                if letter["subject"] == f"document:{poisoned['id']}"
            ]

        [letter] = _wait_for(parked, "the worker's dead letter")
        assert letter["component"] == "worker:parse"
        assert letter["state"] == "parked" and letter["attempts"] == 2
        assert letter["event_type"] == "Document.Uploaded"
        assert letter["aggregate_id"] == poisoned["id"]
        # Either the worker's last attempt crashed, or (now and then, seen in about one
        # run in five) the last delivery never reached the worker's pull request and
        # JetStream's max-deliveries advisory made a worker give up on it: without that
        # advisory the document stayed "uploaded" for ever.
        assert (
            "simulated parser crash" in letter["error"] or "no acknowledgement" in letter["error"]
        ), letter
        assert letter["updated_by"] == "system:worker:parse"
        # A worker's letter stops no read model.
        assert _projections_ready(system)

        # The cause fixed, the operator retries: the document goes through, the letter
        # is resolved, and asking again changes nothing.
        CRASHING["parser"] = False
        retried = client.post(
            f"/v1/admin/dead-letters/{letter['id']}/retry", json={"reason": "parser fixed"}
        )
        assert retried.status_code == 202, retried.text
        assert retried.json()["changed"] is True
        sent_again = client.get(
            f"/v1/documents/{poisoned['id']}", params={"min_position": _document_position(system)}
        ).json()
        assert sent_again["status"] != "failed", sent_again
        final = system.wait_final(client, [poisoned["id"]], timeout=120)
        assert final[poisoned["id"]]["status"] == "embedded", final
        assert final[poisoned["id"]]["failure"] is None

        def resolved() -> bool:
            [now] = parked()
            return bool(now["state"] == "resolved")

        _wait_for(resolved, "the letter resolved")
        again = client.post(f"/v1/admin/dead-letters/{letter['id']}/retry")
        assert again.status_code == 409 and again.json()["code"] == "dead_letter_state"
        events = [
            type(e).__qualname__
            for e in system.container.documents.events.get(uuid.UUID(poisoned["id"]))
        ]
        assert events == [
            "Document.Uploaded", "Document.Failed", "Document.Retried",
            "Document.Parsed", "Document.Chunked", "Document.Embedded",
        ]  # fmt: skip


def test_a_document_whose_worker_dies_with_it_every_time_is_parked_not_lost(
    system: RunningSystem,
) -> None:
    """Every delivery is taken and never answered: no attempt ever fails in a worker, so
    only JetStream's max-deliveries advisory can say the document will not come again.
    Without the advisory path it stayed "uploaded" for ever."""
    content = f"Lighthouse keepers' logs {uuid.uuid4()}".encode()
    digest = hashlib.sha256(content).hexdigest()
    DROPPED_DIGESTS.add(digest)
    try:
        with system.client() as client:
            vanishing = _upload(client, "vanishing.txt", content)
            # Two deliveries (max_deliver), each given up on after ack_wait (10 s).
            final = system.wait_final(client, [vanishing["id"]], timeout=120)
            failure = final[vanishing["id"]]["failure"]
            assert final[vanishing["id"]]["status"] == "failed", final
            assert failure["code"] == "internal_error", failure
            assert failure["stage"] == "parse", failure
            assert "parse stage failed 2 times (no acknowledgement)" in failure["reason"]

            def parked() -> list[dict[str, Any]]:
                return [
                    letter
                    for letter in _letters(client)
                    if letter["subject"] == f"document:{vanishing['id']}"
                ]

            [letter] = _wait_for(parked, "the dead letter from the advisory")
            assert letter["component"] == "worker:parse" and letter["state"] == "parked"
            assert letter["attempts"] == 2
            assert "the last delivery was never answered" in letter["error"], letter
        # Never more than max_deliver (a delivery may also be lost before the worker's
        # pull request has it: the advisory covers that one too).
        assert DROPPED_DELIVERIES.get(digest, 0) <= 2, DROPPED_DELIVERIES
    finally:
        DROPPED_DIGESTS.discard(digest)


def test_a_failed_document_is_retried_by_its_editor_and_only_a_failed_one(
    system: RunningSystem,
) -> None:
    with system.client() as client:
        blank = _upload(client, "blank.txt", b"  \n\n  ")
        fine = _upload(client, "fine.txt", f"Ferries leave at dawn {uuid.uuid4()}.".encode())
        final = system.wait_final(client, [blank["id"], fine["id"]])
        assert final[blank["id"]]["failure"]["code"] == "no_text"
        refused = client.post(f"/v1/documents/{fine['id']}/retry")
        assert refused.status_code == 409 and refused.json()["code"] == "document_not_failed"
        retried = client.post(f"/v1/documents/{blank['id']}/retry")
        assert retried.status_code == 202, retried.text
        after = client.get(
            f"/v1/documents/{blank['id']}", params={"min_position": retried.json()["position"]}
        ).json()
        assert after["status"] in {"uploaded", "failed"}  # again through parse
        final = system.wait_final(client, [blank["id"]])
        assert final[blank["id"]]["failure"]["code"] == "no_text"  # the same file, the same end


def _projections_ready(system: RunningSystem) -> bool:
    ready = httpx.get(f"{system.base_url}/health/ready", timeout=30).json()
    return bool(ready["checks"]["projections"]["ok"])


def _catalog_has(client: httpx.Client, document_id: str) -> bool:
    return client.get(f"/v1/documents/{document_id}").status_code == 200


def _stopped_letter(
    client: httpx.Client, digest: str, position: int, min_attempts: int = 1
) -> dict[str, Any]:
    def found() -> list[dict[str, Any]]:
        return [
            letter
            for letter in _letters(client)
            if letter["component"] == "projection:catalog"
            and letter["subject"] == f"documents:{position}"
            and letter["state"] == "parked"
            and letter["attempts"] >= min_attempts
        ]

    [letter] = _wait_for(found, f"the catalog's dead letter for {digest[:8]}")
    return letter


def test_a_projector_stops_on_a_poisoned_event_until_an_operator_retries_or_drops_it(
    system: RunningSystem,
) -> None:
    poison = f"A note the catalog chokes on {uuid.uuid4()}".encode()
    digest = hashlib.sha256(poison).hexdigest()
    POISONED_DIGESTS.add(digest)
    with system.client() as client:
        try:
            stuck = _upload(client, "choke.txt", poison)
            behind = _upload(client, "behind.txt", f"Uploaded after {uuid.uuid4()}".encode())
            letter = _stopped_letter(client, digest, stuck["position"])
            assert letter["event_type"] == "Document.Uploaded"
            assert "simulated catalog bug" in letter["error"] and letter["attempts"] >= 3
            # Stopped in order: what came after waits too, and readiness says why.
            time.sleep(1)
            assert not _catalog_has(client, behind["id"])
            ready = httpx.get(f"{system.base_url}/health/ready", timeout=30)
            assert ready.status_code == 503, ready.text
            reason = ready.json()["checks"]["projections"]["reason"]
            assert f"catalog stopped at documents:{stuck['position']}" in reason, reason
            assert letter["id"] in reason

            # A retry while the cause is still there: parked again, still stopped.
            retried = client.post(f"/v1/admin/dead-letters/{letter['id']}/retry")
            assert retried.status_code == 202 and retried.json()["changed"], retried.text
            letter = _stopped_letter(client, digest, stuck["position"], letter["attempts"] + 3)
            assert not _catalog_has(client, behind["id"])
        finally:
            POISONED_DIGESTS.discard(digest)

        # Fixed: a retry applies it and what waited behind it.
        client.post(f"/v1/admin/dead-letters/{letter['id']}/retry", json={"reason": "fixed"})
        _wait_for(lambda: _catalog_has(client, behind["id"]), "the catalog to go on")
        assert _catalog_has(client, stuck["id"])

        def state() -> str:
            got = client.get(f"/v1/admin/dead-letters/{letter['id']}").json()
            return str(got["state"])

        _wait_for(lambda: state() == "resolved", "the letter resolved")
        _wait_for(lambda: _projections_ready(system), "ready again")


def test_dropping_a_projectors_letter_goes_on_past_the_event_and_the_cli_shows_it(
    system: RunningSystem,
) -> None:
    env = {**role_env(system.settings), "KF_LOG_LEVEL": "warning"}

    def kf(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "config.cli", *args],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    with system.client() as client:
        try:
            # The catalog fails on this document's last event (Embedded).
            stuck = _upload(client, "choke-again.txt", f"Another note {uuid.uuid4()}".encode())
            POISONED_EMBEDDINGS.add(stuck["id"])

            def parked() -> list[dict[str, Any]]:
                return [
                    letter
                    for letter in _letters(client, state="parked")
                    if letter["component"] == "projection:catalog"
                    and letter["aggregate_id"] == stuck["id"]
                ]

            [letter] = _wait_for(parked, "the catalog's dead letter", timeout=120)
            assert letter["event_type"] == "Document.Embedded"
            behind = _upload(client, "behind-again.txt", f"After {uuid.uuid4()}".encode())
            listed = kf("dead-letters", "list", "--tenant", DEFAULT_TENANT, "--state", "parked")
            assert listed.returncode == 0, listed.stderr
            rows = [json.loads(line) for line in listed.stdout.splitlines()]
            assert letter["id"] in {row["id"] for row in rows}
            dropped = kf(
                "dead-letters", "drop", "--tenant", DEFAULT_TENANT, letter["id"],
                "--reason", "bad data",
            )  # fmt: skip
            assert dropped.returncode == 0, dropped.stderr
            assert json.loads(dropped.stdout)["changed"] is True
            # Gone past it: the next document is listed; this one stays where the catalog
            # had it, without the dropped event.
            _wait_for(lambda: _catalog_has(client, behind["id"]), "the catalog to go on")
            assert client.get(f"/v1/documents/{stuck['id']}").json()["status"] == "chunked"
        finally:
            POISONED_EMBEDDINGS.discard(stuck["id"])
        got = client.get(f"/v1/admin/dead-letters/{letter['id']}").json()
        assert got["state"] == "dropped" and got["reason"] == "bad data"
        assert got["updated_by"].startswith("cli:")
        retry = client.post(f"/v1/admin/dead-letters/{letter['id']}/retry")
        assert retry.status_code == 409 and retry.json()["code"] == "dead_letter_state"
        _wait_for(lambda: _projections_ready(system), "ready again")
    # Only the catalog passed over it: the event is in the store, other read models have it.
    events = list(system.container.documents.events.get(uuid.UUID(stuck["id"])))
    assert type(events[-1]).__qualname__ == "Document.Embedded"
