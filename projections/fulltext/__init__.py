"""The full-text read model: every chunk's text in PostgreSQL, for exact search.

Served through ``GET /v1/search?mode=exact`` (the search slice's router).
"""

from projections.fulltext.projection import FulltextProjection
from projections.fulltext.view import ExactHit, FulltextView
from projections.slice import Parts, ReadModel


def _build(parts: Parts, variant: str) -> FulltextView:
    return FulltextView(parts.datastore, FulltextProjection(parts.blobs, variant=variant))


READ_MODEL = ReadModel(
    projection=FulltextProjection,
    view=FulltextView,
    migrations=("0003_search.sql",),
    build=_build,
)

__all__ = ["READ_MODEL", "ExactHit", "FulltextProjection", "FulltextView"]
