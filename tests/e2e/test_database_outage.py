"""Issue 15, point 2 (server mode): PostgreSQL goes away and comes back.

The module's database stops accepting connections and every connection to it is
terminated (what clients see when the server restarts), then it comes back. During the
outage commands get 503 ``database_unavailable`` with ``Retry-After`` (never a 500, never
half a write); afterwards everything works again and catches up.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.harness import RunningSystem, Services
from tests.http import assert_error


def _outage(services: Services, database_url: str, down: bool) -> None:
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(services.admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if down else "true"}')
        if down:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )


@pytest.fixture
def outage(services: Services, system: RunningSystem) -> Iterator[None]:
    _outage(services, system.settings.database.url, down=True)
    try:
        yield
    finally:
        _outage(services, system.settings.database.url, down=False)


def test_commands_during_an_outage_get_503_and_the_system_recovers(
    services: Services, system: RunningSystem
) -> None:
    with system.client() as admin:
        before = admin.post(
            "/v1/documents", files={"file": ("before.txt", b"written before the outage")}
        )
        assert before.status_code == 202, before.text
        system.wait_final(admin, [before.json()["id"]])
        _outage(services, system.settings.database.url, down=True)
        try:
            refused = [
                admin.post("/v1/documents", files={"file": ("during.txt", b"not written")}),
                admin.post("/v1/conversations", json={"title": "during"}),
                admin.post("/v1/keys", json={"name": "during", "role": "viewer"}),
                admin.get("/v1/documents"),
            ]
        finally:
            _outage(services, system.settings.database.url, down=False)
        for response in refused:
            assert_error(response, 503, "database_unavailable")
            assert response.headers["retry-after"] == "5"
        # Back: the same requests work, and the pipeline carries on.
        deadline = time.monotonic() + 60
        after = admin.post("/v1/documents", files={"file": ("after.txt", b"written after")})
        while after.status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.5)
            after = admin.post("/v1/documents", files={"file": ("after.txt", b"written after")})
        assert after.status_code == 202, after.text
        final = system.wait_final(admin, [after.json()["id"]], timeout=120)
        assert final[after.json()["id"]]["status"] == "embedded"
        listed = admin.get("/v1/documents").json()["items"]
        assert sorted(d["filename"] for d in listed) == ["after.txt", "before.txt"]
    ready = httpx.get(f"{system.base_url}/health/ready", timeout=30)
    assert ready.status_code == 200, ready.text
