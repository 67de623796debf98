"""API keys and people as an admin lists them (``GET /v1/keys``, ``GET /v1/users``): a key's
name, role, issuer, expiry and revocation; a person's address, role, status and last sign-in."""

from projections.keys.projection import KeysProjection
from projections.keys.routes import router
from projections.keys.view import KeyEntry, KeyPage, KeysView, UserEntry
from projections.slice import ReadModel

READ_MODEL = ReadModel(
    projection=KeysProjection,
    view=KeysView,
    migrations=("0004_isolation.sql", "0012_users.sql"),
    router=router,
)

__all__ = ["READ_MODEL", "KeyEntry", "KeyPage", "KeysProjection", "KeysView", "UserEntry"]
