"""API keys as an admin lists them: name, role, issuer, expiry, revocation (``GET /v1/keys``)."""

from projections.keys.projection import KeysProjection
from projections.keys.routes import router
from projections.keys.view import KeyEntry, KeyPage, KeysView
from projections.slice import ReadModel

READ_MODEL = ReadModel(
    projection=KeysProjection,
    view=KeysView,
    migrations=("0004_isolation.sql",),
    router=router,
)

__all__ = ["READ_MODEL", "KeyEntry", "KeyPage", "KeysProjection", "KeysView"]
