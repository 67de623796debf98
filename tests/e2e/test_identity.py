"""Keys, tokens and roles over HTTP: keys API, JWT exchange and tampering, every route x role."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from config.settings import Settings
from domain.access import Role
from infra.embedding import SentenceTransformerEmbedder
from infra.tokens import SECRET_FILE
from tests.harness import RunningSystem
from tests.http import assert_error

EXTERNAL_ISSUER = "https://idp.example.test"
EXTERNAL_AUDIENCE = "knowledge-foundry"


def _rsa_pair(directory: Path, name: str) -> tuple[bytes, Path]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_path = directory / f"{name}.pub.pem"
    public_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pem, public_path


@pytest.fixture(scope="module")
def idp_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path]:
    return _rsa_pair(tmp_path_factory.mktemp("idp"), "idp")


@pytest.fixture(scope="module")
def system(
    settings_factory: Callable[..., Settings],
    embedder: SentenceTransformerEmbedder,
    idp_key: tuple[bytes, Path],
) -> Iterator[RunningSystem]:
    settings = settings_factory(
        api={"read_wait_timeout_s": 10},
        auth={
            "external_issuers": [
                {
                    "issuer": EXTERNAL_ISSUER,
                    "audience": EXTERNAL_AUDIENCE,
                    "algorithm": "RS256",
                    "public_key_file": str(idp_key[1]),
                }
            ]
        },
    )
    with RunningSystem(settings, embedder, worker=False) as running:
        yield running


@pytest.fixture(scope="module")
def admin(system: RunningSystem) -> Iterator[httpx.Client]:
    with system.client() as c:
        yield c


def _key(system: RunningSystem, role: Role, **kwargs: Any) -> tuple[uuid.UUID, str]:
    result, token = system.container.access.issue_api_key(
        tenant_id=system.tenant_id, actor="test", name=f"{role.value} key", role=role, **kwargs
    )
    return result.id, token


def _secret(system: RunningSystem) -> bytes:
    return (system.settings.data_dir.resolve() / SECRET_FILE).read_text().strip().encode()


def _token(admin: httpx.Client, key: str) -> dict[str, Any]:
    response = admin.post("/v1/auth/token", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _get_as(system: RunningSystem, credential: str, path: str = "/v1/documents") -> httpx.Response:
    with system.client(credential) as c:
        return c.get(path)


# ------------------------------------------------------------------ keys API


def test_admin_issues_lists_and_revokes_keys(system: RunningSystem, admin: httpx.Client) -> None:
    expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    response = admin.post(
        "/v1/keys", json={"name": "ci robot", "role": "editor", "expires_at": expires}
    )
    assert response.status_code == 201, response.text
    issued = response.json()
    assert issued["key"].startswith("kf_") and issued["role"] == "editor"
    assert _get_as(system, issued["key"]).status_code == 200

    listing = admin.get("/v1/keys", params={"min_position": issued["position"]})
    assert listing.status_code == 200, listing.text
    entries = {item["id"]: item for item in listing.json()["items"]}
    entry = entries[issued["id"]]
    assert entry["name"] == "ci robot" and entry["role"] == "editor"
    assert entry["revoked_at"] is None and entry["expires_at"] is not None
    # Neither the secret nor its hash is ever listed.
    secret = issued["key"].split("_", 2)[2]  # kf_<key id>_<secret>; the secret may hold "_"
    assert secret not in listing.text and "sha256" not in listing.text

    revoked = admin.delete(f"/v1/keys/{issued['id']}")
    assert revoked.status_code == 200 and revoked.json()["changed"] is True
    # The very next request with the key is refused, before any projection moves.
    assert_error(_get_as(system, issued["key"]), 401, "unauthenticated")
    again = admin.delete(f"/v1/keys/{issued['id']}")
    assert again.status_code == 200 and again.json()["changed"] is False

    one = admin.get(f"/v1/keys/{issued['id']}", params={"min_position": revoked.json()["position"]})
    assert one.status_code == 200 and one.json()["revoked_at"] is not None
    active = admin.get("/v1/keys", params={"include_revoked": "false"}).json()["items"]
    assert issued["id"] not in {item["id"] for item in active}


def test_key_issue_and_revoke_are_events_with_who_and_from_where(
    system: RunningSystem, admin: httpx.Client
) -> None:
    issued = admin.post("/v1/keys", json={"name": "audited", "role": "viewer"}).json()
    revoked = admin.delete(f"/v1/keys/{issued['id']}").json()
    log = system.container.event_logs["access"]
    events = {e.position: e for e in log.read(issued["position"] - 1, 10)}
    issue_event, revoke_event = events[issued["position"]], events[revoked["position"]]
    assert issue_event.event_type == "ApiKey.Issued"
    assert revoke_event.event_type == "ApiKey.Revoked"
    for event in (issue_event, revoke_event):
        assert event.actor.startswith("key:")  # the admin key that did it
        assert event.data["origin"] == "127.0.0.1"
        assert event.tenant_id == system.tenant_id
    secret = issued["key"].split("_", 2)[2]  # kf_<key id>_<secret>; the secret may hold "_"
    assert secret not in json.dumps(issue_event.data)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "", "role": "viewer"},
        {"name": "x" * 101, "role": "viewer"},
        {"name": "k", "role": "owner"},
        {"name": "k", "role": "viewer", "expires_at": "2001-01-01T00:00:00Z"},
        {"name": "k", "role": "viewer", "expires_at": "2099-01-01T00:00:00"},
        {"name": "k", "role": "viewer", "expires_at": "tomorrow"},
        # Found by the schema fuzzer: a NUL stored in an event would stall the
        # key list's projector, since PostgreSQL text cannot hold it.
        {"name": "a\u0000b", "role": "viewer"},
        {"name": "line\nbreak", "role": "viewer"},
    ],
)
def test_invalid_key_requests_are_422(admin: httpx.Client, body: dict[str, Any]) -> None:
    response = admin.post("/v1/keys", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] in {"invalid_request", "invalid_api_key_request"}


def test_other_tenants_keys_cannot_be_seen_or_revoked(
    system: RunningSystem, admin: httpx.Client
) -> None:
    access = system.container.access
    other = access.ensure_tenant(name="keys-elsewhere", actor="test")
    result, other_key = access.issue_api_key(
        tenant_id=str(other.id), actor="test", name="theirs", role=Role.ADMIN
    )
    assert_error(admin.delete(f"/v1/keys/{result.id}"), 404, "api_key_not_found")
    assert_error(
        admin.get(f"/v1/keys/{result.id}", params={"min_position": result.position}),
        404,
        "api_key_not_found",
    )
    assert _get_as(system, other_key).status_code == 200  # untouched


def test_expired_key_gets_401(system: RunningSystem, admin: httpx.Client) -> None:
    expires = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
    issued = admin.post("/v1/keys", json={"name": "brief", "role": "viewer", "expires_at": expires})
    key = issued.json()["key"]
    assert _get_as(system, key).status_code == 200
    time.sleep(2.0)
    assert_error(_get_as(system, key), 401, "unauthenticated")


# -------------------------------------------------------------------- tokens


def test_a_key_exchanged_for_a_token_works_until_the_key_is_revoked(
    system: RunningSystem, admin: httpx.Client
) -> None:
    key_id, key = _key(system, Role.VIEWER)
    body = _token(admin, key)
    assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 900
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["kf_tenant"] == system.tenant_id and claims["kf_role"] == "viewer"
    assert {"exp", "iat", "nbf", "jti", "iss", "aud", "sub"} <= set(claims)

    assert _get_as(system, body["access_token"]).status_code == 200
    with system.client(body["access_token"]) as as_viewer:
        assert_error(
            as_viewer.post("/v1/keys", json={"name": "n", "role": "admin"}), 403, "forbidden"
        )
        # A token cannot be exchanged for another (that would outlive revocation).
        assert_error(as_viewer.post("/v1/auth/token"), 403, "api_key_required")

    system.container.access.revoke_api_key(tenant_id=system.tenant_id, actor="test", key_id=key_id)
    assert_error(_get_as(system, body["access_token"]), 401, "unauthenticated")


def test_a_token_never_outlives_its_key(system: RunningSystem, admin: httpx.Client) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=120)
    _, key = _key(system, Role.VIEWER, expires_at=expires)
    claims = jwt.decode(_token(admin, key)["access_token"], options={"verify_signature": False})
    assert claims["exp"] <= int(expires.timestamp()) + 1


def _forge(system: RunningSystem, key_id: uuid.UUID, **changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": system.settings.auth.issuer,
        "aud": system.settings.auth.audience,
        "sub": f"key:{key_id}",
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(minutes=5),
        "jti": uuid.uuid4().hex,
        "kf_tenant": system.tenant_id,
        "kf_role": "viewer",
        "kf_key": str(key_id),
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_a_well_formed_token_signed_with_our_secret_is_accepted(system: RunningSystem) -> None:
    # The control for the tampering cases below: only what they change differs.
    key_id, _ = _key(system, Role.VIEWER)
    token = jwt.encode(_forge(system, key_id), _secret(system), algorithm="HS256")
    assert _get_as(system, token).status_code == 200


@pytest.mark.parametrize(
    "tamper",
    [
        "expired",
        "not_yet_valid",
        "wrong_audience",
        "wrong_issuer",
        "wrong_key",
        "alg_none",
        "alg_hs512",
        "changed_claims",
        "missing_jti",
        "missing_exp",
        "other_tenant",
        "garbage",
    ],
)
def test_tampered_tokens_get_401(system: RunningSystem, tamper: str) -> None:
    key_id, _ = _key(system, Role.VIEWER)
    secret = _secret(system)
    now = datetime.now(UTC)
    changes: dict[str, Any] = {
        "expired": {"exp": now - timedelta(minutes=5), "iat": now - timedelta(minutes=20)},
        "not_yet_valid": {"nbf": now + timedelta(minutes=10)},
        "wrong_audience": {"aud": "some-other-api"},
        "wrong_issuer": {"iss": "https://evil.example"},
        "missing_jti": {"jti": None},
        "missing_exp": {"exp": None},
        "other_tenant": {"kf_tenant": str(uuid.uuid4())},
    }.get(tamper, {})
    claims = _forge(system, key_id, **changes)
    token = jwt.encode(claims, secret, algorithm="HS256")
    if tamper == "wrong_key":
        token = jwt.encode(claims, b"x" * 48, algorithm="HS256")
    elif tamper == "alg_hs512":
        token = jwt.encode(claims, secret, algorithm="HS512")
    elif tamper == "alg_none":
        header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        payload = jwt.encode(claims, secret, algorithm="HS256").split(".")[1]
        token = f"{header}.{payload}."
    elif tamper == "changed_claims":
        header, _, signature = token.split(".")
        raised = jwt.decode(token, secret, algorithms=["HS256"], audience=claims["aud"])
        raised["kf_role"] = "admin"
        token = f"{header}.{_b64(json.dumps(raised).encode())}.{signature}"
    elif tamper == "garbage":
        token = "a.b.c"
    assert_error(_get_as(system, token), 401, "unauthenticated")


def _external_token(idp_key: tuple[bytes, Path], **changes: Any) -> str:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": EXTERNAL_ISSUER,
        "aud": EXTERNAL_AUDIENCE,
        "sub": "alice@example.test",
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(minutes=5),
        "jti": uuid.uuid4().hex,
        "kf_tenant": "default",
        "kf_role": "viewer",
    }
    claims.update(changes)
    return jwt.encode(claims, idp_key[0], algorithm="RS256")


def test_external_issuer_tokens_are_accepted_with_their_role(
    system: RunningSystem, idp_key: tuple[bytes, Path], tmp_path: Path
) -> None:
    token = _external_token(idp_key)
    assert _get_as(system, token).status_code == 200
    with system.client(token) as c:
        assert_error(c.get("/v1/keys"), 403, "forbidden")
    impostor, _ = _rsa_pair(tmp_path, "impostor")
    for refused in (
        _external_token(idp_key, kf_tenant="no-such-tenant"),
        _external_token(idp_key, kf_role="root"),
        _external_token(idp_key, aud="other"),
        _external_token((impostor, Path())),
    ):
        assert_error(_get_as(system, refused), 401, "unauthenticated")


def test_auth_failures_are_counted_by_reason(system: RunningSystem) -> None:
    _get_as(system, "kf_" + "0" * 32 + "_" + "x" * 43)
    metrics = httpx.get(f"{system.base_url}/metrics").text
    assert 'kf_auth_failures_total{reason="unknown_key"}' in metrics


# ------------------------------------------------------------- roles x routes

# Every API route with the least role that may call it, and a request that an
# allowed caller makes (it may still fail validation: what matters is that it
# is not refused with 401/403). The test fails when a route is missing here.
ROUTES: dict[tuple[str, str], tuple[Role | tuple[Role, ...] | None, dict[str, Any]]] = {
    ("POST", "/v1/auth/token"): (None, {}),  # any role: a key is exchanged for a token
    # People's sign-in needs no credential; with one, these are still not refused.
    ("POST", "/v1/auth/login"): (None, {"json": {}}),
    ("POST", "/v1/auth/password"): (None, {"json": {}}),
    ("POST", "/v1/auth/logout"): (None, {}),
    ("GET", "/v1/auth/me"): (None, {}),
    ("GET", "/v1/users"): (Role.ADMIN, {}),
    ("GET", "/v1/users/{user_id}"): (Role.ADMIN, {}),
    ("POST", "/v1/users"): (Role.ADMIN, {"json": {"role": "viewer"}}),
    ("PATCH", "/v1/users/{user_id}"): (Role.ADMIN, {"json": {}}),
    ("POST", "/v1/users/{user_id}/disable"): (Role.ADMIN, {}),
    ("POST", "/v1/users/{user_id}/enable"): (Role.ADMIN, {}),
    ("POST", "/v1/users/{user_id}/link"): (Role.ADMIN, {}),
    ("GET", "/v1/documents"): (Role.VIEWER, {}),
    ("GET", "/v1/documents/{document_id}"): (Role.VIEWER, {}),
    ("GET", "/v1/documents/{document_id}/content"): (Role.VIEWER, {}),
    ("POST", "/v1/documents"): (Role.EDITOR, {"files": {"nope": ("a.txt", b"x")}}),
    ("DELETE", "/v1/documents/{document_id}"): (Role.EDITOR, {}),
    ("POST", "/v1/documents/{document_id}/restore"): (Role.EDITOR, {}),
    ("POST", "/v1/documents/{document_id}/retry"): (Role.EDITOR, {}),
    ("POST", "/v1/documents/{document_id}/erase"): (Role.ADMIN, {}),
    ("GET", "/v1/documents/{document_id}/erasure"): (Role.ADMIN, {}),
    ("POST", "/v1/documents/{document_id}/hold"): (Role.ADMIN, {"json": {"reason": "x"}}),
    ("DELETE", "/v1/documents/{document_id}/hold"): (Role.ADMIN, {}),
    ("POST", "/v1/conversations/{conversation_id}/erase"): (Role.VIEWER, {}),
    ("GET", "/v1/search"): (Role.VIEWER, {"params": {"q": "radio", "mode": "keyword"}}),
    ("POST", "/v1/search"): (Role.VIEWER, {"json": {"query": "radio", "mode": "keyword"}}),
    ("GET", "/v1/keys"): (Role.ADMIN, {}),
    ("GET", "/v1/keys/{key_id}"): (Role.ADMIN, {}),
    ("POST", "/v1/keys"): (Role.ADMIN, {"json": {"role": "viewer"}}),
    ("DELETE", "/v1/keys/{key_id}"): (Role.ADMIN, {}),
    ("GET", "/v1/projections"): (Role.ADMIN, {}),
    ("GET", "/v1/admin/settings"): (Role.ADMIN, {}),
    ("GET", "/v1/admin/workers"): (Role.ADMIN, {}),
    ("GET", "/v1/admin/dead-letters"): (Role.ADMIN, {}),
    ("GET", "/v1/admin/dead-letters/{letter_id}"): (Role.ADMIN, {}),
    ("POST", "/v1/admin/dead-letters/{letter_id}/retry"): (Role.ADMIN, {}),
    ("POST", "/v1/admin/dead-letters/{letter_id}/drop"): (Role.ADMIN, {}),
    ("POST", "/v1/conversations"): (Role.VIEWER, {"json": {"title": "x" * 500}}),
    ("POST", "/v1/conversations/{conversation_id}/questions"): (
        Role.VIEWER,
        {"json": {"question": "anything?"}},
    ),
    ("GET", "/v1/conversations"): (Role.VIEWER, {}),
    ("GET", "/v1/conversations/{conversation_id}"): (Role.VIEWER, {}),
    ("GET", "/v1/conversations/{conversation_id}/turns/{turn}/prompt"): (Role.ADMIN, {}),
    ("GET", "/v1/conversations/{conversation_id}/turns/{turn}/provenance"): (Role.VIEWER, {}),
    ("POST", "/v1/chat/completions"): (Role.VIEWER, {"json": {"model": "extractive"}}),
    ("GET", "/v1/models"): (Role.VIEWER, {}),
    ("POST", "/v1/admin/rebuilds"): (Role.ADMIN, {"json": {"projection": "nothing"}}),
    ("GET", "/v1/admin/rebuilds/{rebuild_id}"): (Role.ADMIN, {}),
    ("GET", "/v1/audit/events"): (Role.AUDITOR, {}),
    ("GET", "/v1/audit/verification"): (Role.AUDITOR, {}),
    ("GET", "/v1/audit/export"): (Role.AUDITOR, {"params": {"action": "Nothing.*"}}),
    ("GET", "/v1/documents/{document_id}/history"): (Role.VIEWER, {}),
    ("GET", "/v1/audit/queries/{sha256}"): (Role.AUDITOR, {}),
    ("GET", "/v1/audit/documents/{document_id}/readers"): (Role.AUDITOR, {}),
    # Analysts read the tenant's usage; viewers (and so editors, admins) their own.
    ("GET", "/v1/usage"): ((Role.VIEWER, Role.ANALYST), {}),
    ("GET", "/v1/prices"): (Role.ANALYST, {}),
    ("POST", "/v1/usage/repricings"): (Role.ANALYST, {"json": {"price_book_version": 0}}),
    ("GET", "/v1/usage/repricings/{run_id}"): (Role.ANALYST, {}),
    ("GET", "/v1/budgets"): (Role.ANALYST, {}),
    ("PUT", "/v1/budgets/{scope}/{metric}/{period}"): (Role.ADMIN, {"json": {"amount": "-1"}}),
    ("DELETE", "/v1/budgets/{scope}/{metric}/{period}"): (Role.ADMIN, {}),
    ("PUT", "/v1/prices/{provider}/{model}"): (Role.ADMIN, {"json": {"input_per_million": -1}}),
}


def test_the_role_table_covers_every_route(system: RunningSystem) -> None:
    openapi = httpx.get(f"{system.base_url}/openapi.json").json()
    routes = {(method.upper(), path) for path, item in openapi["paths"].items() for method in item}
    assert routes == set(ROUTES)


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
@pytest.mark.parametrize("route", list(ROUTES), ids=lambda r: f"{r[0]} {r[1]}")
def test_each_role_against_each_route(
    system: RunningSystem, role: Role, route: tuple[str, str]
) -> None:
    method, template = route
    needed, request = ROUTES[route]
    path = template.format(
        document_id=uuid.uuid4(),
        key_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        rebuild_id="r-unknown",
        conversation_id=uuid.uuid4(),
        turn=1,
        sha256="0" * 64,
        provider="*",
        model="m",
        run_id=uuid.uuid4(),
        letter_id=uuid.uuid4(),
        scope="tenant",
        metric="tokens",
        period="day",
    )
    _, key = _key(system, role)
    with system.client(key) as client:
        response = client.request(method, path, **request)
    allowed = (needed,) if isinstance(needed, Role) else needed
    if allowed is None or any(role.allows(r) for r in allowed):
        assert response.status_code not in {401, 403}, response.text
        assert response.status_code < 500, response.text
    else:
        assert_error(response, 403, "forbidden")
