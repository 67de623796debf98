"""Who saw which document: every read and answer, per document and principal.

``GET /v1/audit/documents/{id}/readers`` and ``kf audit who-saw``.
"""

from projections.readers.projection import ReadersProjection
from projections.readers.routes import router
from projections.readers.view import Reader, ReadersView
from projections.slice import ReadModel

READ_MODEL = ReadModel(
    projection=ReadersProjection,
    view=ReadersView,
    migrations=("0008_readers.sql",),
    router=router,
)

__all__ = ["READ_MODEL", "Reader", "ReadersProjection", "ReadersView"]
