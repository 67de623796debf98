"""What key events do to the key list: a row per key, revocation set once.

The secret's hash is not copied here: authentication reads the event-sourced
key itself, so this read model only serves listings.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from domain.access import ApiKey
from infra.envelope import Envelope
from projections.base import OutOfOrderError, Projection, handles
from projections.rows import Rows

TABLE = "api_keys"


class KeysProjection(Projection):
    name = "keys"
    tables = {TABLE: ("tenant_id", "key_id")}

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
