"""The access context's decisions as pure functions: names, tokens, keys, roles, expiry.

Expiry and revocation are decided against a ``now`` passed in, so they are
tested at exact instants instead of by sleeping.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.access import (
    KEY_NAME_MAX,
    ApiKey,
    AuthenticationFailed,
    InvalidKeyError,
    InvalidTenantNameError,
    KeyToken,
    Principal,
    Role,
    Tenant,
    hash_secret,
    new_key_token,
    normalise_tenant_name,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _key(
    token: KeyToken | None = None, *, expires_at: datetime | None = None, role: Role = Role.EDITOR
) -> ApiKey:
    return ApiKey.issue(
        token=token or new_key_token(),
        tenant_id="tenant",
        actor="key:admin",
        name="robot",
        role=role,
        expires_at=expires_at,
        now=NOW,
    )


def test_roles_are_ordered_viewer_editor_admin_and_auditor_and_analyst_stand_apart() -> None:
    allowed = {(have, need) for have in Role for need in Role if have.allows(need)}
    assert allowed == {
        (Role.VIEWER, Role.VIEWER),
        (Role.EDITOR, Role.VIEWER),
        (Role.EDITOR, Role.EDITOR),
        (Role.ADMIN, Role.VIEWER),
        (Role.ADMIN, Role.EDITOR),
        (Role.ADMIN, Role.ADMIN),
        (Role.ADMIN, Role.AUDITOR),  # admins read the audit trail too
        (Role.AUDITOR, Role.AUDITOR),  # auditors read it and nothing else
        (Role.ADMIN, Role.ANALYST),  # admins read usage and cost too
        (Role.ANALYST, Role.ANALYST),  # analysts read them and nothing else
    }


@given(st.text(alphabet=string.ascii_lowercase + string.digits + "._-", min_size=1, max_size=62))
def test_a_tenant_is_named_case_insensitively_and_its_id_follows_the_name(name: str) -> None:
    name = "a" + name  # starts with a letter or digit
    assert normalise_tenant_name(f"  {name.upper()} ") == name
    assert Tenant.id_for(name.upper()) == Tenant.id_for(name)
    assert Tenant.id_for(name) != Tenant.id_for(name + "x")


@pytest.mark.parametrize("name", ["", " ", "-leading", "has space", "x" * 64, "naïve", "a/b"])
def test_bad_tenant_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidTenantNameError):
        normalise_tenant_name(name)


def test_a_key_token_renders_and_parses_back_and_junk_parses_to_nothing() -> None:
    token = new_key_token()
    assert KeyToken.parse(token.render()) == token
    for junk in ("", "kf_", token.render()[:-40], "kf_nothex_" + "a" * 40, "Bearer " + "x"):
        assert KeyToken.parse(junk) is None


def test_a_key_keeps_only_the_digest_of_its_secret() -> None:
    token = new_key_token()
    key = _key(token)
    assert key.secret_sha256 == hash_secret(token.secret) != token.secret
    (issued,) = key.collect_events()
    assert token.secret not in repr(vars(issued))


def test_the_right_secret_is_accepted_and_a_wrong_one_refused() -> None:
    token = new_key_token()
    key = _key(token)
    key.verify(token.secret, NOW)
    with pytest.raises(AuthenticationFailed) as refused:
        key.verify(token.secret + "x", NOW)
    assert refused.value.reason == "wrong_secret"


def test_a_key_expires_exactly_at_its_expiry() -> None:
    expires = NOW + timedelta(hours=1)
    key = _key(expires_at=expires)
    key.check_usable(expires - timedelta(microseconds=1))
    for at in (expires, expires + timedelta(days=400)):
        with pytest.raises(AuthenticationFailed) as refused:
            key.check_usable(at)
        assert refused.value.reason == "key_expired"
    _key(expires_at=None).check_usable(NOW + timedelta(days=36500))  # no expiry: never


def test_a_revoked_key_is_refused_and_a_second_revoke_changes_nothing() -> None:
    key = _key()
    key.collect_events()
    assert key.revoke(actor="key:admin", origin="10.0.0.1") is True
    (revoked,) = key.collect_events()
    assert revoked.origin == "10.0.0.1"
    assert key.revoke(actor="key:admin") is False
    assert key.collect_events() == []
    with pytest.raises(AuthenticationFailed) as refused:
        key.check_usable(NOW)
    assert refused.value.reason == "key_revoked"


@pytest.mark.parametrize(
    ("name", "expires_at"),
    [
        ("", None),
        ("   ", None),
        ("x" * (KEY_NAME_MAX + 1), None),
        ("tab\there", None),
        ("bell\x07", None),
        ("robot", datetime(2027, 1, 1)),  # no time zone
        ("robot", NOW),  # not in the future
        ("robot", NOW - timedelta(seconds=1)),
    ],
)
def test_bad_key_requests_are_refused(name: str, expires_at: datetime | None) -> None:
    with pytest.raises(InvalidKeyError):
        ApiKey.issue(
            token=new_key_token(),
            tenant_id="tenant",
            actor="key:admin",
            name=name,
            role=Role.VIEWER,
            expires_at=expires_at,
            now=NOW,
        )


def test_a_key_acts_as_its_principal() -> None:
    key = _key(role=Role.ADMIN)
    principal = key.principal(via="token")
    assert principal == Principal(tenant_id="tenant", role=Role.ADMIN, key_id=key.id, via="token")
    assert principal.actor == f"key:{key.id}"
    external = Principal(tenant_id="t", role=Role.VIEWER, subject="idp#alice", via="external")
    assert external.actor == "jwt:idp#alice"
    assert Principal(tenant_id="t", role=Role.VIEWER, key_id=uuid4()).actor.startswith("key:")


# ------------------------------------------------------------------ people


def test_addresses_are_normalised_and_implausible_ones_refused() -> None:
    from domain.access import InvalidEmailError, User, normalise_email

    assert normalise_email("  Ada.Lovelace@Example.ORG ") == "ada.lovelace@example.org"
    assert User.id_for("ADA@example.org") == User.id_for("ada@example.org")
    for bad in ("", "ada", "ada@", "@example.org", "a b@example.org", "ada@@x.org", "a@\x00x"):
        with pytest.raises(InvalidEmailError):
            normalise_email(bad)


def test_weak_passwords_are_refused_with_a_reason() -> None:
    from domain.access import password_weakness

    email = "ada.lovelace@example.org"
    assert password_weakness("a long walk by the river", email) is None
    assert "at least" in (password_weakness("short", email) or "")
    assert "guess" in (password_weakness("password123", email) or "")
    assert "guess" in (password_weakness("aaaaaaaaaaaaaaa", email) or "")
    assert "e-mail" in (password_weakness("my ada.lovelace pass", email) or "")


def test_a_link_works_once_until_it_expires_and_a_new_one_replaces_it() -> None:
    from datetime import UTC, datetime, timedelta

    from domain.access import InvalidLinkError, LinkToken, Role, User

    now = datetime.now(UTC)
    email = "grace@example.org"
    first = LinkToken.new(User.id_for(email))
    user = User.invite(
        email=email,
        tenant_id="t",
        actor="test",
        role=Role.VIEWER,
        link=first,
        link_expires_at=now + timedelta(days=1),
    )
    assert LinkToken.parse(first.render()) == first
    user.check_link(first, now)
    with pytest.raises(InvalidLinkError, match="expired"):
        user.check_link(first, now + timedelta(days=2))
    second = LinkToken.new(user.id)
    user.issue_link(link=second, expires_at=now + timedelta(days=1), actor="admin")
    with pytest.raises(InvalidLinkError):
        user.check_link(first, now)
    user.check_link(second, now)
    user.set_password(password_hash="$argon2id$...", actor=f"user:{user.id}")
    with pytest.raises(InvalidLinkError):  # spent
        user.check_link(second, now)
    assert user.status.value == "active"
    assert user.disable(actor="admin") and not user.disable(actor="admin")
    assert user.status.value == "disabled"
