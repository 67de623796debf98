"""Rate limits over HTTP: per key by role, per tenant, with the standard headers."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from config.settings import Settings
from domain.access import Role
from infra.embedding import SentenceTransformerEmbedder
from tests.harness import RunningSystem

VIEWER_BURST = 3
ADMIN_BURST = 6
TENANT_BURST = 5


@pytest.fixture(scope="module")
def system(
    settings_factory: Callable[..., Settings], embedder: SentenceTransformerEmbedder
) -> Iterator[RunningSystem]:
    settings = settings_factory(
        rate_limits={
            "viewer": {"per_hour": 1, "burst": VIEWER_BURST},
            "editor": {"per_hour": 1, "burst": 4},
            "admin": {"per_hour": 1, "burst": ADMIN_BURST},
            "tenant": {"per_hour": 1, "burst": TENANT_BURST},
        }
    )
    with RunningSystem(settings, embedder, worker=False) as running:
        yield running


def _tenant_keys(system: RunningSystem, *roles: Role) -> list[str]:
    access = system.container.access
    tenant = access.ensure_tenant(name=f"rl-{uuid.uuid4().hex[:10]}", actor="test")
    keys = []
    for role in roles:
        _, key = access.issue_api_key(
            tenant_id=str(tenant.id), actor="test", name=role.value, role=role
        )
        keys.append(key)
    return keys


def _get(system: RunningSystem, key: str) -> httpx.Response:
    with system.client(key) as client:
        return client.get("/v1/documents")


def test_the_request_after_the_burst_gets_429_with_headers(system: RunningSystem) -> None:
    (key,) = _tenant_keys(system, Role.VIEWER)
    responses = [_get(system, key) for _ in range(VIEWER_BURST + 1)]
    assert [r.status_code for r in responses] == [200] * VIEWER_BURST + [429]
    assert [r.headers["RateLimit-Remaining"] for r in responses[:-1]] == ["2", "1", "0"]
    assert all(r.headers["RateLimit-Limit"] == str(VIEWER_BURST) for r in responses)
    refused = responses[-1]
    body = refused.json()
    assert body["code"] == "rate_limited" and body["message"]
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    assert int(refused.headers["RateLimit-Reset"]) > 0
    # Another key of the same role in another tenant is not affected.
    (other,) = _tenant_keys(system, Role.VIEWER)
    assert _get(system, other).status_code == 200


def test_limits_are_per_key_and_per_tenant(system: RunningSystem) -> None:
    first, second, admin = _tenant_keys(system, Role.VIEWER, Role.VIEWER, Role.ADMIN)
    assert [_get(system, first).status_code for _ in range(VIEWER_BURST)] == [200] * 3
    assert _get(system, first).status_code == 429  # its own bucket is empty
    # The second key has its own bucket, but the tenant's holds 5 in all.
    codes = [_get(system, second).status_code for _ in range(VIEWER_BURST)]
    assert codes == [200, 200, 429]
    refused = _get(system, admin)  # the admin's bucket is full; the tenant's is not
    assert refused.status_code == 429
    assert refused.headers["RateLimit-Limit"] == str(TENANT_BURST)


def test_health_and_metrics_are_not_limited(system: RunningSystem) -> None:
    for _ in range(ADMIN_BURST + 2):
        assert httpx.get(f"{system.base_url}/health").status_code == 200
