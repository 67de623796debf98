"""The search read model: chunks in a Qdrant index, queried by vector, BM25 or both.

``GET``/``POST /v1/search``: hybrid, vector and keyword from this read model,
exact from the full-text one.
"""

from projections.search.projection import SearchProjection
from projections.search.rebuild import rebuild_search
from projections.search.routes import router
from projections.search.view import (
    ResultChunk,
    SearchResults,
    SearchService,
    SearchSettings,
    SearchView,
)
from projections.slice import Parts, ReadModel


def _build(parts: Parts, variant: str) -> SearchView:
    projection = SearchProjection(
        parts.index, parts.blobs, parts.bm25, parts.index_spec, variant=variant,
        home=parts.index_home,
    )  # fmt: skip
    return SearchView(parts.datastore, projection)


READ_MODEL = ReadModel(
    projection=SearchProjection,
    view=SearchView,
    migrations=("0003_search.sql",),
    router=router,
    build=_build,
    rebuild=rebuild_search,
)

__all__ = [
    "READ_MODEL",
    "ResultChunk",
    "SearchProjection",
    "SearchResults",
    "SearchService",
    "SearchSettings",
    "SearchView",
]
