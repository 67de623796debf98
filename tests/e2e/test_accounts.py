"""People's accounts: invitation links, passwords, cookie sessions, CSRF, throttling, audit.

The real API on real PostgreSQL and NATS, with an SMTP server that speaks the
protocol (nothing reaches the internet). A browser is an ``httpx.Client`` with a
cookie jar and no Authorization header, so only the session cookie speaks for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from config.settings import Settings
from domain.access import Role, User
from infra.embedding import SentenceTransformerEmbedder
from tests.fakes.receivers import SmtpReceiver
from tests.harness import RunningSystem
from tests.http import assert_error

PASSWORD = "a long walk by the river"


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def system(
    settings_factory: Callable[..., Settings],
    embedder: SentenceTransformerEmbedder,
    smtp: SmtpReceiver,
) -> Iterator[RunningSystem]:
    settings = settings_factory(
        auth={"smtp_host": "127.0.0.1", "smtp_port": smtp.port, "session_idle_s": 600},
        # Every refusal of this module's one client recorded (not only the first few).
        audit={"refusals_per_window": 10_000},
        rate_limits={
            "login_account": {"per_hour": 60, "burst": 5},
            "login_client": {"per_hour": 3600, "burst": 200},
        },
    )
    with RunningSystem(settings, embedder) as running:
        yield running


_OPEN: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_browsers() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def _browser(system: RunningSystem) -> httpx.Client:
    client = httpx.Client(base_url=system.base_url, timeout=60)
    _OPEN.append(client)
    return client


def _csrf(browser: httpx.Client) -> dict[str, str]:
    return {"X-CSRF-Token": browser.cookies["kf_csrf"]}


def _invite(system: RunningSystem, role: str = "editor") -> tuple[str, str, dict[str, Any]]:
    email = f"person-{uuid.uuid4().hex[:8]}@example.org"
    with system.client() as admin:
        invited = admin.post("/v1/users", json={"email": email.upper(), "role": role})
    assert invited.status_code == 201, invited.text
    body = invited.json()
    return email, body["link"].split("#token=", 1)[1], body


def _person(system: RunningSystem, role: str = "editor") -> tuple[str, httpx.Client]:
    """An invited person who set their password: a signed-in browser."""
    email, token, _ = _invite(system, role)
    browser = _browser(system)
    response = browser.post("/v1/auth/password", json={"token": token, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return email, browser


def _set_cookie_headers(response: httpx.Response) -> dict[str, str]:
    return {header.split("=", 1)[0]: header for header in response.headers.get_list("set-cookie")}


def _access_events(system: RunningSystem, event_type: str) -> list[Any]:
    return [
        e
        for batch in system.container.event_logs["access"].read_all(0)
        for e in batch
        if e.event_type == event_type
    ]


def test_an_invitation_link_sets_a_password_once_and_signs_in(
    system: RunningSystem, smtp: SmtpReceiver
) -> None:
    email, token, invited = _invite(system, "viewer")
    assert invited["email"] == email and invited["role"] == "viewer" and invited["emailed"]
    assert urlsplit(invited["link"]).path == "/ui/set-password"
    mailed = [m for m in smtp.messages() if m["To"] == email]
    assert len(mailed) == 1
    payload = mailed[0].get_payload(decode=True)
    assert isinstance(payload, bytes) and invited["link"] in payload.decode()

    browser = _browser(system)
    weak = browser.post("/v1/auth/password", json={"token": token, "password": "short"})
    assert_error(weak, 422, "weak_password")
    named = browser.post(
        "/v1/auth/password", json={"token": token, "password": f"{email.split('@')[0]}!!xyz"}
    )
    assert_error(named, 422, "weak_password")
    # A refused password does not spend the link.
    done = browser.post("/v1/auth/password", json={"token": token, "password": PASSWORD})
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["user"] == {
        "kind": "user",
        "id": str(User.id_for(email)),
        "email": email,
        "role": "viewer",
        "tenant_id": system.tenant_id,
    }
    cookies = _set_cookie_headers(done)
    session = cookies["kf_session"]
    assert "HttpOnly" in session and "SameSite=Lax" in session and "Path=/" in session
    assert "Secure" not in session  # development mode: plain http on localhost
    assert "HttpOnly" not in cookies["kf_csrf"]
    assert browser.cookies["kf_csrf"] == body["csrf_token"]
    me = browser.get("/v1/auth/me")
    assert me.status_code == 200 and me.json()["email"] == email

    again = _browser(system).post(
        "/v1/auth/password", json={"token": token, "password": "another long phrase"}
    )
    assert_error(again, 422, "invalid_link")
    forged = _browser(system).post(
        "/v1/auth/password", json={"token": token[:-4] + "AAAA", "password": PASSWORD}
    )
    assert_error(forged, 422, "invalid_link")
    # The hash is argon2id, in the event; the password itself is nowhere.
    (password_set,) = [
        e
        for e in _access_events(system, "User.PasswordSet")
        if e.aggregate_id == str(User.id_for(email))
    ]
    assert password_set.data["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in str(password_set.data)


def test_sign_in_and_out_with_a_password(system: RunningSystem) -> None:
    email, first = _person(system)
    first.close()
    browser = _browser(system)
    assert_error(browser.get("/v1/auth/me"), 401, "unauthenticated")
    wrong = browser.post("/v1/auth/login", json={"email": email, "password": "not it at all"})
    assert_error(wrong, 401, "invalid_credentials")
    unknown = browser.post(
        "/v1/auth/login", json={"email": "nobody@example.org", "password": PASSWORD}
    )
    assert_error(unknown, 401, "invalid_credentials")
    assert wrong.json()["message"] == unknown.json()["message"]  # says nothing of which
    signed = browser.post(
        "/v1/auth/login", json={"email": f"  {email.upper()} ", "password": PASSWORD}
    )
    assert signed.status_code == 200, signed.text
    assert browser.get("/v1/auth/me").json()["email"] == email
    stolen = dict(browser.cookies)

    out = browser.post("/v1/auth/logout", headers=_csrf(browser))
    assert out.status_code == 204
    assert 'kf_session=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
    # The ended session's token is refused even if someone kept the cookie.
    replay = _browser(system)
    replay.cookies.update(stolen)
    assert_error(replay.get("/v1/auth/me"), 401, "unauthenticated")
    with system.client() as admin:
        listed = admin.get("/v1/users", params={"min_position": 0})
    (row,) = [u for u in listed.json()["users"] if u["email"] == email]
    assert row["status"] == "active" and row["sign_ins"] == 2 and row["last_sign_in_at"]


def test_a_request_that_changes_something_needs_the_csrf_header(system: RunningSystem) -> None:
    _, browser = _person(system, "editor")
    files = {"file": ("csrf.txt", b"cross-site request forgery test", "text/plain")}
    refused = browser.post("/v1/documents", files=files)
    assert_error(refused, 403, "csrf_failed")
    wrong = browser.post("/v1/documents", files=files, headers={"X-CSRF-Token": "guess"})
    assert_error(wrong, 403, "csrf_failed")
    accepted = browser.post("/v1/documents", files=files, headers=_csrf(browser))
    assert accepted.status_code == 202, accepted.text
    # Reads need no header; API keys need none either (no cookie is sent with them).
    assert browser.get("/v1/documents").status_code == 200
    with system.client() as admin:
        assert admin.post("/v1/documents", files=files).status_code in (200, 202)


def test_a_role_change_and_a_disable_take_effect_on_the_next_request(
    system: RunningSystem,
) -> None:
    email, browser = _person(system, "viewer")
    user_id = str(User.id_for(email))
    files = {"file": ("role.txt", b"what a viewer may not upload", "text/plain")}
    assert_error(
        browser.post("/v1/documents", files=files, headers=_csrf(browser)), 403, "forbidden"
    )
    with system.client() as admin:
        changed = admin.patch(f"/v1/users/{user_id}", json={"role": "editor"})
        assert changed.status_code == 200 and changed.json()["changed"], changed.text
    uploaded = browser.post("/v1/documents", files=files, headers=_csrf(browser))
    assert uploaded.status_code == 202, uploaded.text
    assert browser.get("/v1/auth/me").json()["role"] == "editor"

    with system.client() as admin:
        disabled = admin.post(f"/v1/users/{user_id}/disable")
        assert disabled.status_code == 200 and disabled.json()["changed"]
    assert_error(browser.get("/v1/documents"), 401, "unauthenticated")
    again = _browser(system).post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert_error(again, 401, "invalid_credentials")
    with system.client() as admin:
        assert admin.post(f"/v1/users/{user_id}/enable").json()["changed"]
    back = _browser(system)
    assert (
        back.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).status_code == 200
    )


def test_an_admin_cannot_lock_themselves_out(system: RunningSystem) -> None:
    email, browser = _person(system, "admin")
    user_id = str(User.id_for(email))
    demote = browser.patch(f"/v1/users/{user_id}", json={"role": "viewer"}, headers=_csrf(browser))
    assert_error(demote, 409, "own_account")
    assert_error(
        browser.post(f"/v1/users/{user_id}/disable", headers=_csrf(browser)), 409, "own_account"
    )
    # A person who is an admin invites others the same way a key does.
    other = browser.post(
        "/v1/users",
        json={"email": f"x-{uuid.uuid4().hex[:6]}@example.org", "role": "viewer"},
        headers=_csrf(browser),
    )
    assert other.status_code == 201, other.text
    duplicate = browser.post(
        "/v1/users", json={"email": other.json()["email"], "role": "editor"}, headers=_csrf(browser)
    )
    assert_error(duplicate, 409, "user_exists")
    assert_error(
        browser.post(
            "/v1/users", json={"email": "not an address", "role": "viewer"}, headers=_csrf(browser)
        ),
        422,
        "invalid_email",
    )


def test_a_new_link_replaces_the_old_one_and_resets_a_password(system: RunningSystem) -> None:
    email, _ = _person(system)
    user_id = str(User.id_for(email))
    with system.client() as admin:
        first = admin.post(f"/v1/users/{user_id}/link").json()["link"].split("#token=")[1]
        second = admin.post(f"/v1/users/{user_id}/link").json()["link"].split("#token=")[1]
    stale = _browser(system).post(
        "/v1/auth/password", json={"token": first, "password": "a brand new phrase"}
    )
    assert_error(stale, 422, "invalid_link")
    reset = _browser(system).post(
        "/v1/auth/password", json={"token": second, "password": "a brand new phrase"}
    )
    assert reset.status_code == 200, reset.text
    old = _browser(system).post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert_error(old, 401, "invalid_credentials")


def test_a_half_spent_session_token_is_renewed(system: RunningSystem) -> None:
    _email, browser = _person(system)
    claims = system.container.authenticator().tokens.verify_session(browser.cookies["kf_session"])
    short = system.container.authenticator().tokens.issue_session(
        tenant_id=claims.tenant_id,
        user_id=claims.user_id,
        session_id=claims.session_id,
        csrf=claims.csrf,
        ttl_s=60,  # below half of session_idle_s (600)
        not_after=datetime(2100, 1, 1, tzinfo=UTC),
    )
    browser.cookies.set("kf_session", short.token)
    renewed = browser.get("/v1/auth/me")
    assert renewed.status_code == 200
    fresh = _set_cookie_headers(renewed)["kf_session"]
    token = fresh.split(";", 1)[0].split("=", 1)[1]
    assert token != short.token
    assert (
        system.container.authenticator().tokens.verify_session(token).expires_at > short.expires_at
    )
    # A session token is not a bearer credential, and a bearer token is not a session.
    bearer = httpx.get(
        f"{system.base_url}/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert_error(bearer, 401, "unauthenticated")


def test_failed_sign_ins_are_throttled_per_account_and_recorded(system: RunningSystem) -> None:
    email, _ = _person(system)
    browser = _browser(system)
    statuses = [
        browser.post("/v1/auth/login", json={"email": email, "password": f"wrong {i}"}).status_code
        for i in range(5)
    ]
    assert statuses == [401] * 5
    throttled = browser.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    body = assert_error(throttled, 429, "login_throttled")
    assert int(throttled.headers["retry-after"]) >= 1 and "try again" in body["message"]
    # Another account from the same client is not throttled by this one's failures.
    other, _ = _person(system)
    ok = _browser(system).post("/v1/auth/login", json={"email": other, "password": PASSWORD})
    assert ok.status_code == 200
    # Sign-ins and sign-outs are access events (so in the audit trail); failures are
    # recorded refusals in the account's tenant.
    user_id = str(User.id_for(email))
    started = [e for e in _access_events(system, "Session.Started") if e.data["user_id"] == user_id]
    assert started and started[0].actor == f"user:{user_id}"
    refusals = [
        e
        for batch in system.container.event_logs["activity"].read_all(0)
        for e in batch
        if e.event_type == "Refusal.Recorded" and e.actor == f"user:{user_id}"
    ]
    assert refusals and {e.tenant_id for e in refusals} == {system.tenant_id}
    assert {e.data["reason"] for e in refusals} >= {"invalid_credentials"}
    deadline = time.monotonic() + 30
    with system.client():
        _, auditor_key = system.container.access.issue_api_key(
            tenant_id=system.tenant_id, actor="test", name="accounts auditor", role=Role.AUDITOR
        )
    with system.client(auditor_key) as auditor:
        while time.monotonic() < deadline:
            trail = auditor.get(
                "/v1/audit/events", params={"action": "Session.*", "actor": f"user:{user_id}"}
            ).json()
            if trail["items"]:
                break
            time.sleep(0.2)
    entry = trail["items"][-1]
    assert entry["action"] == "Session.Started" and "password" not in str(entry)


def test_kf_users_invite_prints_a_link(system: RunningSystem) -> None:
    settings = system.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("KF")}
    env.update(
        {
            "KF_DATABASE_URL": settings.database.url,
            "KF_DATA_DIR": str(settings.data_dir),
            "KF_PUBLIC_URL": "https://kf.example.org",
        }
    )
    email = f"cli-{uuid.uuid4().hex[:6]}@example.org"
    done = subprocess.run(
        [sys.executable, "-m", "config.cli", "users", "invite",
         "--tenant", "default", "--email", email, "--role", "analyst"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert printed["email"] == email and printed["role"] == "analyst"
    assert printed["link"].startswith("https://kf.example.org/ui/set-password#token=kfl_")
    token = printed["link"].split("#token=")[1]
    signed = _browser(system).post("/v1/auth/password", json={"token": token, "password": PASSWORD})
    assert signed.status_code == 200 and signed.json()["user"]["role"] == "analyst"


def test_an_admin_reads_the_effective_settings_with_every_secret_redacted(
    system: RunningSystem,
) -> None:
    with system.client() as admin:
        shown = admin.get("/v1/admin/settings")
    assert shown.status_code == 200, shown.text
    settings = shown.json()["settings"]
    assert settings["auth"]["smtp_host"] == "127.0.0.1"  # not a secret: shown
    assert settings["auth"]["jwt_secret"] == "(not set)"
    assert settings["crypto"]["master_key"] == "(not set)"
    assert settings["rate_limits"]["login_account"] == {"per_hour": 60, "burst": 5}
    _, viewer = system.container.access.issue_api_key(
        tenant_id=system.tenant_id, actor="test", name="settings viewer", role=Role.VIEWER
    )
    with system.client(viewer) as client:
        assert_error(client.get("/v1/admin/settings"), 403, "forbidden")


def test_redaction_hides_passwords_secrets_and_url_credentials() -> None:
    from config.settings import load_settings
    from read_api.settings import SET, redacted

    secret = "s3cr3t-" + uuid.uuid4().hex
    settings = load_settings(
        environ={},
        database={
            "url": f"postgresql://kf:{secret}@db.example.org:5432/kf",
            "reader_password": secret,
        },
        auth={"jwt_secret": secret + "x" * 32},
        crypto={"master_key": secret},
        redis={"url": f"redis://:{secret}@cache:6379/0"},
        alerts={"webhooks": [{"url": "https://hooks.example.org/x", "secret": secret}]},
    )
    shown = redacted(settings)
    assert secret not in json.dumps(shown)
    assert shown["database"]["url"] == f"postgresql://kf:{SET}@db.example.org:5432/kf"
    assert shown["database"]["reader_password"] == SET
    assert shown["redis"]["url"] == f"redis://{SET}@cache:6379/0"
    assert shown["alerts"]["webhooks"][0] == {
        "url": "https://hooks.example.org/x",
        "secret": SET,
        "secret_env": "",
    }


def test_the_key_list_says_when_each_key_was_last_used(system: RunningSystem) -> None:
    used, used_token = system.container.access.issue_api_key(
        tenant_id=system.tenant_id, actor="test", name="used key", role=Role.VIEWER
    )
    idle, _ = system.container.access.issue_api_key(
        tenant_id=system.tenant_id, actor="test", name="idle key", role=Role.VIEWER
    )
    with system.client(used_token) as client:
        assert client.get("/v1/documents/" + str(uuid.uuid4())).status_code == 404
        assert (
            client.get("/v1/search", params={"q": "anything", "mode": "keyword"}).status_code == 200
        )
    deadline = time.monotonic() + 30
    with system.client() as admin:
        while time.monotonic() < deadline:
            listed = {k["id"]: k for k in admin.get("/v1/keys").json()["items"]}
            if listed[str(used.id)]["last_used_at"]:
                break
            time.sleep(0.2)
        single = admin.get(f"/v1/keys/{used.id}").json()
    assert listed[str(used.id)]["last_used_at"] and single["last_used_at"]
    assert listed[str(idle.id)]["last_used_at"] is None


def test_an_admin_sees_the_workers_listening_and_their_work(system: RunningSystem) -> None:
    with system.client() as admin:
        done = admin.post(
            "/v1/documents",
            files={"file": ("status.txt", b"a document for the worker status", "text/plain")},
        ).json()
        system.wait_final(admin, [done["id"]])
        shown = admin.get("/v1/admin/workers")
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert body["stream"] == system.settings.nats.stream
    by_name = {c["name"]: c for c in body["consumers"]}
    assert set(by_name) == {
        f"worker-{stage}{suffix}"
        for stage in ("parse", "chunk", "embed")
        for suffix in ("", "-restored", "-retried")
    }
    parse = by_name["worker-parse"]
    assert parse["exists"] and parse["waiting_pulls"] >= 1 and parse["last_active"]
    assert parse["pending"] == 0 and parse["ack_pending"] == 0
    assert body["listening"] is True


def test_a_persons_questions_are_their_usage(system: RunningSystem) -> None:
    email, browser = _person(system, "editor")
    actor = f"user:{User.id_for(email)}"
    uploaded = browser.post(
        "/v1/documents",
        files={"file": ("otters.txt", b"Sea otters hold hands while they sleep.", "text/plain")},
        headers=_csrf(browser),
    ).json()
    system.wait_final(browser, [uploaded["id"]])
    conversation = browser.post("/v1/conversations", json={}, headers=_csrf(browser)).json()
    asked = browser.post(
        f"/v1/conversations/{conversation['id']}/questions",
        json={"question": "What do sea otters hold while they sleep?"},
        headers=_csrf(browser),
    )
    assert asked.status_code == 200, asked.text
    assert asked.json()["citations"]
    deadline = time.monotonic() + 30
    groups: dict[str | None, Any] = {}
    with system.client() as admin:
        while time.monotonic() < deadline and not groups.get(actor, {}).get("answers"):
            report = admin.get("/v1/usage", params={"group_by": "user"}).json()
            groups = {g["group"]["user"]: g for g in report["groups"]}
            time.sleep(0.2)
    assert groups[actor]["answers"] == 1 and groups[actor]["questions"] == 1
    own = browser.get("/v1/usage").json()
    assert own["scope"] == "own" and own["total"]["answers"] == 1


# Last in the module: stopping a second system on the module's database closes the
# connection pools the two share (the event store's, per database URL).
def test_sign_ins_from_one_client_are_throttled_too(
    system: RunningSystem,
    settings_factory: Callable[..., Settings],
    embedder: SentenceTransformerEmbedder,
    tmp_path: Path,
) -> None:
    settings = settings_factory(
        rate_limits={"login_client": {"per_hour": 60, "burst": 3}},
        crypto={"master_key_file": str(system.settings.data_dir / "master-key")},
    ).model_copy(update={"data_dir": tmp_path})  # a second system: its own admin key
    with RunningSystem(settings, embedder, worker=False, relays=False, projectors=False) as small:
        browser = _browser(small)
        statuses = [
            browser.post(
                "/v1/auth/login",
                json={"email": f"n{i}@example.org", "password": "whatever it is"},
            ).status_code
            for i in range(4)
        ]
    assert statuses == [401, 401, 401, 429]
