"""Usage and cost: what each key, user, model and provider used, per period.

``GET /v1/usage`` and ``kf usage report``.
"""

from projections.slice import ReadModel
from projections.usage.projection import UsageProjection
from projections.usage.routes import router
from projections.usage.view import Usage, UsageView, Window

READ_MODEL = ReadModel(
    projection=UsageProjection,
    view=UsageView,
    migrations=("0010_usage.sql",),
    router=router,
)

__all__ = ["READ_MODEL", "Usage", "UsageProjection", "UsageView", "Window"]
