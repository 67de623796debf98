"""Token signing and verification, and the refusal of insecure secrets in production."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from config.settings import AuthSettings
from domain.access import AuthenticationFailed, Role
from infra.tokens import SECRET_FILE, InsecureConfigurationError, TokenService

STRONG = "k3Jq9-vXzP2mL8sT4wYbN6cR1dF7gH0aZ5uE_oIiQy"
ROOT = Path(__file__).resolve().parents[2]


def _service(tmp_path: Path, production: bool, **auth: object) -> TokenService:
    return TokenService.from_settings(
        AuthSettings.model_validate(auth), data_dir=tmp_path, production=production
    )


def _issue(service: TokenService) -> str:
    return service.issue(
        tenant_id=str(uuid.uuid4()), role=Role.EDITOR, key_id=uuid.uuid4(), not_after=None
    ).token


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("", "needs a JWT secret"),
        ("short-secret", "shorter than 32 bytes"),
        ("please-change-this-secret-in-production", "placeholder"),
        ("a" * 64, "low-entropy"),
    ],
)
def test_production_refuses_missing_short_or_placeholder_secrets(
    tmp_path: Path, secret: str, why: str
) -> None:
    with pytest.raises(InsecureConfigurationError, match=why):
        _service(tmp_path, production=True, jwt_secret=secret)


def test_production_accepts_a_strong_secret_from_a_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(STRONG + "\n")
    service = _service(tmp_path, production=True, jwt_secret_file=str(secret_file))
    claims = service.verify(_issue(service))
    assert claims.role is Role.EDITOR and not claims.external


def test_development_keeps_a_random_secret_readable_only_by_its_owner(tmp_path: Path) -> None:
    first = _service(tmp_path, production=False)
    path = tmp_path / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) >= 48
    # Tokens survive a restart: the next process reads the same secret.
    second = _service(tmp_path, production=False)
    assert second.verify(_issue(first)).role is Role.EDITOR


def _rsa_files(tmp_path: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = tmp_path / "jwt.pem"
    public = tmp_path / "jwt.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def test_rs256_tokens_verify_and_algorithm_confusion_is_refused(tmp_path: Path) -> None:
    private, public = _rsa_files(tmp_path)
    service = _service(
        tmp_path,
        production=True,
        jwt_algorithm="RS256",
        jwt_private_key_file=str(private),
        jwt_public_key_file=str(public),
    )
    token = _issue(service)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert service.verify(token).role is Role.EDITOR
    # The classic attack: an HS256 token "signed" with the public key as its
    # secret (crafted by hand: pyjwt itself refuses to HMAC with a PEM key).
    claims = jwt.decode(token, options={"verify_signature": False})

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    signing_input = (
        b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        + "."
        + b64(json.dumps(claims).encode())
    )
    signature = hmac.new(public.read_bytes(), signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(AuthenticationFailed) as refused:
        service.verify(signing_input + "." + b64(signature))
    assert refused.value.reason == "algorithm_not_allowed"


def test_tokens_are_bounded_by_the_key_expiry(tmp_path: Path) -> None:
    service = _service(tmp_path, production=False)
    soon = datetime.now(UTC) + timedelta(seconds=40)
    issued = service.issue(
        tenant_id=str(uuid.uuid4()), role=Role.VIEWER, key_id=uuid.uuid4(), not_after=soon
    )
    assert issued.expires_at == soon


def test_kf_serve_refuses_to_start_in_production_with_a_short_secret(tmp_path: Path) -> None:
    env = {**os.environ, "KF_MODE": "production", "KF_JWT_SECRET": "too-short"}
    done = subprocess.run(
        [sys.executable, "-m", "config.cli", "serve", "--data-dir", str(tmp_path), "--port", "0"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 2
    assert "refusing to start" in done.stderr and "shorter than 32 bytes" in done.stderr
    assert "too-short" not in done.stderr  # the secret itself is never printed
    assert not (tmp_path / "postgres").exists()  # nothing was started


def _session(service: TokenService, ttl_s: int = 600, not_after: datetime | None = None) -> str:
    return service.issue_session(
        tenant_id=str(uuid.uuid4()),
        user_id=uuid.uuid4(),
        session_id=uuid.uuid4(),
        csrf="csrf-secret",
        ttl_s=ttl_s,
        not_after=not_after or datetime.now(UTC) + timedelta(hours=1),
    ).token


def test_a_session_token_is_not_a_bearer_token_and_a_bearer_token_is_not_a_session(
    tmp_path: Path,
) -> None:
    service = _service(tmp_path, production=False)
    session = _session(service)
    assert service.verify_session(session).csrf == "csrf-secret"
    with pytest.raises(AuthenticationFailed) as refused:
        service.verify(session)
    assert refused.value.reason == "wrong_audience"
    with pytest.raises(AuthenticationFailed) as refused:
        service.verify_session(_issue(service))
    assert refused.value.reason == "invalid_session"


def test_a_session_token_never_outlives_its_session_and_expires(tmp_path: Path) -> None:
    service = _service(tmp_path, production=False, leeway_s=0)
    end = datetime.now(UTC) + timedelta(seconds=90)
    claims = service.verify_session(_session(service, ttl_s=3600, not_after=end))
    assert claims.expires_at <= end
    expired = _session(service, not_after=datetime.now(UTC) - timedelta(seconds=5))
    with pytest.raises(AuthenticationFailed) as refused:
        service.verify_session(expired)
    assert refused.value.reason == "session_expired"


def test_a_session_token_with_a_changed_claim_is_refused(tmp_path: Path) -> None:
    service = _service(tmp_path, production=False)
    header, payload, signature = _session(service).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["kf_csrf"] = "chosen-by-an-attacker"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(AuthenticationFailed) as refused:
        service.verify_session(f"{header}.{forged}.{signature}")
    assert refused.value.reason == "invalid_session"


def test_session_cookies_are_http_only_lax_and_secure_in_production() -> None:
    from infra.web import cleared_session_cookies, session_cookies

    session, csrf = session_cookies("tok", "c", max_age_s=60, secure=True)
    assert session == "kf_session=tok; Path=/; Max-Age=60; SameSite=Lax; Secure; HttpOnly"
    assert csrf == "kf_csrf=c; Path=/; Max-Age=60; SameSite=Lax; Secure"
    development, _ = session_cookies("tok", "c", max_age_s=60, secure=False)
    assert "Secure" not in development
    assert all("Max-Age=0" in c for c in cleared_session_cookies(secure=False))
