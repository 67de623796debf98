"""The document catalog: status, counts and sizes per document (``GET /v1/documents``)."""

from projections.catalog.projection import CatalogProjection
from projections.catalog.routes import router
from projections.catalog.view import CatalogEntry, CatalogPage, CatalogView
from projections.slice import ReadModel

READ_MODEL = ReadModel(
    projection=CatalogProjection,
    view=CatalogView,
    migrations=("0002_catalog.sql", "0009_catalog_versions.sql", "0013_catalog_in_progress.sql"),
    router=router,
)

__all__ = ["READ_MODEL", "CatalogEntry", "CatalogPage", "CatalogProjection", "CatalogView"]
