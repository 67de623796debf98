"""Back-pressure, said honestly: with no worker running, uploads are still accepted (the
event log is the queue) and each document in progress says how many of the tenant's
documents are ahead of it; when a worker comes, every document is processed once, in
order, and says nothing more of a queue."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from config.settings import Settings
from tests.harness import RunningSystem
from tests.roles import Role, role_env

pytestmark = pytest.mark.timeout(600)

COUNT = 5


@pytest.fixture(scope="module")
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[Role]:
    role = Role("worker", ["worker"], role_env(settings), tmp_path)
    yield role
    role.stop()


def test_uploads_wait_in_the_log_and_say_how_many_are_ahead(
    settings: Settings, worker: Role
) -> None:
    with RunningSystem(settings, None, worker=False) as system, system.client() as client:
        ids: list[str] = []
        for n in range(COUNT):
            accepted = client.post(
                "/v1/documents",
                files={"file": (f"tide-{n}.txt", f"Tide table {n}: high water at {n}.".encode())},
            )
            assert accepted.status_code == 202, accepted.text
            ids.append(accepted.json()["id"])
        last = accepted.json()["position"]

        # Nothing processes them; each knows its place.
        queued = [
            client.get(f"/v1/documents/{i}", params={"min_position": last}).json() for i in ids
        ]
        assert [d["status"] for d in queued] == ["uploaded"] * COUNT, queued
        assert [d["ahead"] for d in queued] == list(range(COUNT)), queued
        # Lists do not count (one query per row would make a page slow).
        listed = client.get("/v1/documents", params={"limit": 200}).json()["items"]
        assert {d["ahead"] for d in listed} == {None}

        worker.start().wait_for_log("worker_ready", timeout=240)
        final = system.wait_final(client, ids, timeout=240)
        assert {d["status"] for d in final.values()} == {"embedded"}, final
        assert all(client.get(f"/v1/documents/{i}").json()["ahead"] is None for i in ids)

        # Each stage ran once per document, in order, whatever waited how long.
        types: dict[str, list[str]] = {i: [] for i in ids}
        for batch in system.container.event_logs["documents"].read_all(0):
            for envelope in batch:
                if envelope.aggregate_id in types:
                    types[envelope.aggregate_id].append(envelope.event_type)
        stages = ["Document.Uploaded", "Document.Parsed", "Document.Chunked", "Document.Embedded"]
        assert all(kinds == stages for kinds in types.values()), types
