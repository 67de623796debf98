"""What key and user events do to the key and user lists: a row per key, revocation set
once; a row per person, with their role, status and sign-ins.

Neither a key's secret hash nor a password hash is copied here: authentication reads
the event-sourced key (user, session) itself, so this read model only serves listings.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from domain.access import ApiKey, Session, User
from infra.envelope import Envelope
from projections.base import OutOfOrderError, Projection, handles
from projections.rows import Rows

TABLE = "api_keys"
USERS = "users"


class KeysProjection(Projection):
    name = "keys"
    tables = {TABLE: ("tenant_id", "key_id"), USERS: ("tenant_id", "user_id")}

    @handles(ApiKey.Issued)
    def _issued(self, rows: Rows, envelope: Envelope) -> None:
        data = envelope.data
        expires_at = data.get("expires_at")
        rows.insert(
            TABLE,
            {
                "tenant_id": envelope.tenant_id,
                "key_id": UUID(envelope.aggregate_id),
                "name": data["name"],
                "role": data["role"],
                "issued_by": envelope.actor,
                "issued_at": envelope.occurred_at,
                "expires_at": datetime.fromisoformat(expires_at) if expires_at else None,
                "position": envelope.position,
            },
        )

    @handles(ApiKey.Revoked)
    def _revoked(self, rows: Rows, envelope: Envelope) -> None:
        changed = rows.update(
            TABLE,
            {
                "tenant_id": envelope.tenant_id,
                "key_id": UUID(envelope.aggregate_id),
                "revoked_at": None,
            },
            {
                "revoked_by": envelope.actor,
                "revoked_at": envelope.occurred_at,
                "position": envelope.position,
            },
        )
        if changed != 1:
            raise OutOfOrderError(
                f"keys: revoke of {envelope.aggregate_id} without an issued, unrevoked row"
            )

    @handles(User.Invited)
    def _invited(self, rows: Rows, envelope: Envelope) -> None:
        data = envelope.data
        rows.insert(
            USERS,
            {
                "tenant_id": envelope.tenant_id,
                "user_id": UUID(envelope.aggregate_id),
                "email": data["email"],
                "role": data["role"],
                "status": "invited",
                "invited_by": envelope.actor,
                "invited_at": envelope.occurred_at,
                "link_expires_at": datetime.fromisoformat(data["link_expires_at"]),
                "password_set_at": None,
                "disabled_at": None,
                "last_sign_in_at": None,
                "sign_ins": 0,
                "position": envelope.position,
            },
        )

    @handles(User.LinkIssued)
    def _link_issued(self, rows: Rows, envelope: Envelope) -> None:
        expires = datetime.fromisoformat(envelope.data["link_expires_at"])
        self._user(rows, envelope, {"link_expires_at": expires})

    @handles(User.PasswordSet)
    def _password_set(self, rows: Rows, envelope: Envelope) -> None:
        found = self._row(rows, envelope)
        self._user(
            rows,
            envelope,
            {
                "password_set_at": envelope.occurred_at,
                "link_expires_at": None,
                "status": "disabled" if found["disabled_at"] else "active",
            },
        )

    @handles(User.RoleChanged)
    def _role_changed(self, rows: Rows, envelope: Envelope) -> None:
        self._user(rows, envelope, {"role": envelope.data["role"]})

    @handles(User.Disabled)
    def _disabled(self, rows: Rows, envelope: Envelope) -> None:
        self._user(rows, envelope, {"status": "disabled", "disabled_at": envelope.occurred_at})

    @handles(User.Enabled)
    def _enabled(self, rows: Rows, envelope: Envelope) -> None:
        found = self._row(rows, envelope)
        status = "active" if found["password_set_at"] else "invited"
        self._user(rows, envelope, {"status": status, "disabled_at": None})

    @handles(Session.Started)
    def _signed_in(self, rows: Rows, envelope: Envelope) -> None:
        user_id = UUID(str(envelope.data["user_id"]))
        key = {"tenant_id": envelope.tenant_id, "user_id": user_id}
        found = rows.select(USERS, key)
        if not found:
            raise OutOfOrderError(f"users: a sign-in of {user_id} without an invited row")
        rows.update(
            USERS,
            key,
            {"last_sign_in_at": envelope.occurred_at, "sign_ins": found[0]["sign_ins"] + 1},
        )

    def _row(self, rows: Rows, envelope: Envelope) -> dict[str, object]:
        key = {"tenant_id": envelope.tenant_id, "user_id": UUID(envelope.aggregate_id)}
        found = rows.select(USERS, key)
        if not found:
            raise OutOfOrderError(
                f"users: {envelope.event_type} of {envelope.aggregate_id} without an invited row"
            )
        return found[0]

    def _user(self, rows: Rows, envelope: Envelope, values: dict[str, object]) -> None:
        key = {"tenant_id": envelope.tenant_id, "user_id": UUID(envelope.aggregate_id)}
        if rows.update(USERS, key, {**values, "position": envelope.position}) != 1:
            raise OutOfOrderError(
                f"users: {envelope.event_type} of {envelope.aggregate_id} without an invited row"
            )
