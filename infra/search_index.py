"""The search index's storage: one collection shape, two engines.

Points are chunks: a dense vector ``dense`` (all-MiniLM-L6-v2, cosine), a
sparse vector ``bm25`` (BM25 term weights; the engine applies IDF at query time
through the IDF modifier) and a payload (tenant, document, chunk, pages, text,
filename, type, upload time). Payload indexes: ``tenant_id`` (keyword, marked
as the tenant key), ``document_id``, ``media_type`` (keywords), ``uploaded_at``
(datetime). Point ids are ``uuid5(document_id:chunk_index)``, so replays
overwrite.

- ``EdgeSearchIndex``: the Qdrant engine in-process (``qdrant-edge-py``), a
  shard directory under the data directory. The default.
- ``ServerSearchIndex``: a Qdrant server through ``qdrant-client`` (set
  ``KF_QDRANT_URL``); the live collection is reached through an alias so a
  rebuilt collection can be switched in in one step.

Every query carries the tenant filter; there is no method that searches
without one.
"""

from __future__ import annotations

import functools
import json
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, cast

import qdrant_edge as qe

POINT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://knowledge-foundry/chunks")
DENSE = "dense"
SPARSE = "bm25"


def point_id(document_id: str, chunk_index: int) -> str:
    return str(uuid.uuid5(POINT_NAMESPACE, f"{document_id}:{chunk_index}"))


@dataclass(frozen=True)
class Sparse:
    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class ChunkPoint:
    id: str
    dense: list[float]
    sparse: Sparse
    payload: dict[str, Any]


@dataclass(frozen=True)
class Filters:
    document_ids: tuple[str, ...] = ()
    media_types: tuple[str, ...] = ()
    uploaded_after: datetime | None = None
    uploaded_before: datetime | None = None


@dataclass(frozen=True)
class Fusion:
    k: int
    dense_weight: float
    sparse_weight: float
    prefetch: int


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]


@dataclass
class Legs:
    """The ranked hits of each leg that ran."""

    dense: list[Hit] = field(default_factory=list)
    sparse: list[Hit] = field(default_factory=list)


def fuse(legs: Legs, fusion: Fusion, limit: int) -> list[Hit]:
    """Weighted reciprocal rank fusion: score(d) = Σ w_leg / (k + rank_leg(d)), ranks from 1.

    Only ranks matter, so cosine similarities and BM25 scores need no common
    scale. Ties are broken by point id, so equal content ranks equally.
    """
    scores: dict[str, float] = {}
    hits: dict[str, Hit] = {}
    for weight, ranked in ((fusion.dense_weight, legs.dense), (fusion.sparse_weight, legs.sparse)):
        for rank, hit in enumerate(ranked, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + weight / (fusion.k + rank)
            hits.setdefault(hit.id, hit)
    ordered = sorted(scores, key=lambda point: (-round(scores[point], 12), point))
    return [Hit(point, scores[point], hits[point].payload) for point in ordered[:limit]]


class IndexMismatchError(RuntimeError):
    """The index was built with another model or shape than the one configured."""


@dataclass(frozen=True)
class IndexSpec:
    model: str
    dimension: int
    sparse: str  # a description of the BM25 configuration, stored with the index

    def as_json(self) -> str:
        return json.dumps({"model": self.model, "dimension": self.dimension, "sparse": self.sparse})


class SearchIndex(Protocol):
    name: str

    def upsert(self, points: Sequence[ChunkPoint]) -> None: ...

    def delete_document(self, tenant_id: str, document_id: str) -> None: ...

    def delete_tenant(self, tenant_id: str) -> None: ...

    def query(
        self,
        tenant_id: str,
        *,
        dense: list[float] | None,
        sparse: Sparse | None,
        filters: Filters,
        limit: int,
    ) -> Legs: ...

    def payloads(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def count(self, tenant_id: str | None = None) -> int: ...

    def points(self, tenant_id: str | None = None) -> Iterator[ChunkPoint]: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


# ----------------------------------------------------------------- BM25 text


class Bm25Encoder:
    """Text → BM25 sparse vectors (term frequencies with length normalisation).

    IDF is not in these vectors: the engine applies it from its own statistics
    at query time (the IDF modifier), so adding documents never requires
    re-encoding the others. Thread-safe (the engine's encoder is stateless).
    """

    def __init__(self, *, k: float, b: float, avg_len: float, language: str) -> None:
        self.k, self.b, self.avg_len, self.language = k, b, avg_len, language
        self._bm25 = qe.Bm25(qe.Bm25Config(k=k, b=b, avg_len=avg_len, language=language))

    @property
    def description(self) -> str:
        return f"bm25 k={self.k} b={self.b} avg_len={self.avg_len} language={self.language}"

    def document(self, text: str) -> Sparse:
        vector = self._bm25.embed_document(text)
        return Sparse(list(vector.indices), list(vector.values))

    def query(self, text: str) -> Sparse:
        vector = self._bm25.embed_query(text)
        return Sparse(list(vector.indices), list(vector.values))

    def terms(self, text: str) -> frozenset[int]:
        """The hashed, stemmed, stop-word-free terms of ``text`` (for highlighting).

        Cached per word: snippets ask about the same words over and over.
        """
        return self._terms(text)

    @functools.lru_cache(maxsize=200_000)  # noqa: B019 - one long-lived encoder per process
    def _terms(self, text: str) -> frozenset[int]:
        return frozenset(self._bm25.embed_query(text).indices)


# --------------------------------------------------------------- edge engine


def _edge_filter(tenant_id: str, filters: Filters) -> qe.Filter:
    must: list[Any] = [qe.FieldCondition(key="tenant_id", match=qe.MatchValue(value=tenant_id))]
    if filters.document_ids:
        must.append(
            qe.FieldCondition(key="document_id", match=qe.MatchAny(any=list(filters.document_ids)))
        )
    if filters.media_types:
        must.append(
            qe.FieldCondition(key="media_type", match=qe.MatchAny(any=list(filters.media_types)))
        )
    if filters.uploaded_after or filters.uploaded_before:
        must.append(
            qe.FieldCondition(
                key="uploaded_at",
                range=qe.RangeDateTime(
                    gte=filters.uploaded_after.isoformat() if filters.uploaded_after else None,
                    lt=filters.uploaded_before.isoformat() if filters.uploaded_before else None,
                ),
            )
        )
    return qe.Filter(must=must)


# Extra results fetched so that ties at the cut are resolved by us, not by the
# engine's internal point order (which differs between two copies of an index).
TIE_MARGIN = 10


def _chunk_point(record: Any) -> ChunkPoint:
    """A stored record (edge shard or server, same shape) back as the point it was."""
    vectors = cast(dict[str, Any], record.vector or {})
    sparse = vectors.get(SPARSE)
    return ChunkPoint(
        id=str(record.id),
        dense=list(vectors.get(DENSE, [])),
        sparse=Sparse(list(sparse.indices), list(sparse.values)) if sparse else Sparse([], []),
        payload=dict(record.payload or {}),
    )


def _hits(points: Sequence[Any]) -> list[Hit]:
    """Hits best first, ties broken by point id: the same index content ranks the same."""
    hits = [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in points]
    # Scores are rounded before comparing so float noise cannot split a true tie.
    return sorted(hits, key=lambda h: (-round(h.score, 6), h.id))


class EdgeSearchIndex:
    """A Qdrant edge shard in a directory; the directory also holds ``kf-index.json``."""

    META = "kf-index.json"

    def __init__(self, path: Path, spec: IndexSpec, *, search_threads: int = 1, hnsw_ef: int = 128):
        self.name = f"edge:{path}"
        self.path = path
        self.spec = spec
        self.search_threads = search_threads
        self.hnsw_ef = hnsw_ef
        self._hnsw_ef = hnsw_ef
        self._lock = threading.RLock()
        self._closed = False
        meta = path / self.META
        if meta.exists():
            stored = json.loads(meta.read_text())
            if (stored["model"], stored["dimension"]) != (spec.model, spec.dimension):
                raise IndexMismatchError(
                    f"the search index at {path} was built with {stored['model']} "
                    f"({stored['dimension']} dims) but {spec.model} ({spec.dimension} dims) is "
                    "configured; run `kf rebuild-index --projection search` after re-embedding"
                )
            self._shard = qe.EdgeShard.load(str(path))
        else:
            path.mkdir(parents=True, exist_ok=True)
            config = qe.EdgeConfig(
                vectors={
                    DENSE: qe.EdgeVectorParams(size=spec.dimension, distance=qe.Distance.Cosine)
                },
                sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
                max_search_threads=search_threads,
            )
            self._shard = qe.EdgeShard.create(str(path), config)
            for field_name, schema in (
                ("tenant_id", qe.KeywordIndexParams(is_tenant=True)),
                ("document_id", qe.PayloadSchemaType.Keyword),
                ("media_type", qe.PayloadSchemaType.Keyword),
                ("uploaded_at", qe.PayloadSchemaType.Datetime),
            ):
                self._shard.update(qe.UpdateOperation.create_field_index(field_name, schema))
            meta.write_text(spec.as_json())

    def upsert(self, points: Sequence[ChunkPoint]) -> None:
        if not points:
            return
        records = [
            qe.Point(
                id=p.id,
                vector={DENSE: p.dense, SPARSE: qe.SparseVector(p.sparse.indices, p.sparse.values)},
                payload=p.payload,
            )
            for p in points
        ]
        with self._lock:
            self._shard.update(qe.UpdateOperation.upsert_points(records))

    def delete_document(self, tenant_id: str, document_id: str) -> None:
        condition = qe.Filter(
            must=[
                qe.FieldCondition(key="tenant_id", match=qe.MatchValue(value=tenant_id)),
                qe.FieldCondition(key="document_id", match=qe.MatchValue(value=document_id)),
            ]
        )
        with self._lock:
            self._shard.update(qe.UpdateOperation.delete_points_by_filter(condition))

    def delete_tenant(self, tenant_id: str) -> None:
        condition = qe.Filter(
            must=[qe.FieldCondition(key="tenant_id", match=qe.MatchValue(value=tenant_id))]
        )
        with self._lock:
            self._shard.update(qe.UpdateOperation.delete_points_by_filter(condition))

    def query(
        self,
        tenant_id: str,
        *,
        dense: list[float] | None,
        sparse: Sparse | None,
        filters: Filters,
        limit: int,
    ) -> Legs:
        """Run the requested legs in one batch; fusion is the caller's (see ``fuse``)."""
        flt = _edge_filter(tenant_id, filters)
        requests: list[qe.QueryRequest] = []
        if dense is not None:
            requests.append(
                qe.QueryRequest(
                    limit=limit + TIE_MARGIN,
                    query=qe.Query.Nearest(dense, using=DENSE),
                    filter=flt,
                    with_payload=False,
                    params=qe.SearchParams(hnsw_ef=max(self._hnsw_ef, limit)),
                )
            )
        if sparse is not None and sparse.indices:
            # IDF from this tenant's documents only: another tenant's corpus must
            # not shift these scores (nor reveal how common a term is over there).
            corpus = qe.IdfParams(corpus=_edge_filter(tenant_id, Filters()))
            requests.append(
                qe.QueryRequest(
                    limit=limit + TIE_MARGIN,
                    query=qe.Query.Nearest(
                        qe.SparseVector(sparse.indices, sparse.values), using=SPARSE
                    ),
                    filter=flt,
                    with_payload=False,
                    params=qe.SearchParams(idf=corpus),
                )
            )
        if not requests:
            return Legs()
        results = iter(self._shard.query_batch(qe.QueryBatchRequest(requests)))
        legs = Legs()
        if dense is not None:
            legs.dense = _hits(next(results))[:limit]
        if sparse is not None and sparse.indices:
            legs.sparse = _hits(next(results))[:limit]
        return legs

    def payloads(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The payloads of ``ids`` (fetched for the final hits only, not for every candidate)."""
        if not ids:
            return {}
        records = self._shard.retrieve(list(ids), True, False)
        return {str(r.id): dict(r.payload or {}) for r in records}

    def count(self, tenant_id: str | None = None) -> int:
        flt = (
            qe.Filter(
                must=[qe.FieldCondition(key="tenant_id", match=qe.MatchValue(value=tenant_id))]
            )
            if tenant_id
            else None
        )
        return int(self._shard.count(qe.CountRequest(filter=flt, exact=True)))

    def indexed_vectors(self) -> int:
        with self._lock:
            return int(self._shard.info().indexed_vectors_count)

    def points(self, tenant_id: str | None = None) -> Iterator[ChunkPoint]:
        flt = (
            qe.Filter(
                must=[qe.FieldCondition(key="tenant_id", match=qe.MatchValue(value=tenant_id))]
            )
            if tenant_id
            else None
        )
        offset: Any = None
        while True:
            records, offset = self._shard.scroll(
                qe.ScrollRequest(
                    limit=512, offset=offset, filter=flt, with_payload=True, with_vector=True
                )
            )
            yield from (_chunk_point(record) for record in records)
            if offset is None:
                return

    def flush(self) -> None:
        with self._lock:
            self._shard.flush()

    def close(self) -> None:
        """Flush and close the shard; closing it again does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._shard.flush()
            self._shard.close()


# ------------------------------------------------------------ Qdrant server


class ServerSearchIndex:
    """One collection on a Qdrant server (qdrant-client), reached through an alias."""

    def __init__(self, client: Any, collection: str, *, hnsw_ef: int = 128) -> None:
        from qdrant_client import models

        self._client = client
        self._m = models
        self.collection = collection
        self.name = f"qdrant:{collection}"
        self._hnsw_ef = hnsw_ef

    @staticmethod
    def create_collection(client: Any, collection: str, spec: IndexSpec) -> None:
        from qdrant_client import models

        client.create_collection(
            collection,
            vectors_config={
                DENSE: models.VectorParams(size=spec.dimension, distance=models.Distance.COSINE)
            },
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
        )
        indexes: list[tuple[str, Any]] = [
            (
                "tenant_id",
                models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
            ),
            ("document_id", models.PayloadSchemaType.KEYWORD),
            ("media_type", models.PayloadSchemaType.KEYWORD),
            ("uploaded_at", models.PayloadSchemaType.DATETIME),
        ]
        for field_name, schema in indexes:
            client.create_payload_index(collection, field_name, field_schema=schema)

    def _filter(self, tenant_id: str, filters: Filters) -> Any:
        m = self._m
        must: list[Any] = [m.FieldCondition(key="tenant_id", match=m.MatchValue(value=tenant_id))]
        if filters.document_ids:
            must.append(
                m.FieldCondition(
                    key="document_id", match=m.MatchAny(any=list(filters.document_ids))
                )
            )
        if filters.media_types:
            must.append(
                m.FieldCondition(key="media_type", match=m.MatchAny(any=list(filters.media_types)))
            )
        if filters.uploaded_after or filters.uploaded_before:
            must.append(
                m.FieldCondition(
                    key="uploaded_at",
                    range=m.DatetimeRange(gte=filters.uploaded_after, lt=filters.uploaded_before),
                )
            )
        return m.Filter(must=must)

    def upsert(self, points: Sequence[ChunkPoint]) -> None:
        if not points:
            return
        m = self._m
        self._client.upsert(
            self.collection,
            points=[
                m.PointStruct(
                    id=p.id,
                    vector={
                        DENSE: p.dense,
                        SPARSE: m.SparseVector(indices=p.sparse.indices, values=p.sparse.values),
                    },
                    payload=p.payload,
                )
                for p in points
            ],
            wait=True,
        )

    def delete_document(self, tenant_id: str, document_id: str) -> None:
        m = self._m
        self._client.delete(
            self.collection,
            points_selector=m.FilterSelector(
                filter=m.Filter(
                    must=[
                        m.FieldCondition(key="tenant_id", match=m.MatchValue(value=tenant_id)),
                        m.FieldCondition(key="document_id", match=m.MatchValue(value=document_id)),
                    ]
                )
            ),
            wait=True,
        )

    def delete_tenant(self, tenant_id: str) -> None:
        m = self._m
        self._client.delete(
            self.collection,
            points_selector=m.FilterSelector(
                filter=m.Filter(
                    must=[m.FieldCondition(key="tenant_id", match=m.MatchValue(value=tenant_id))]
                )
            ),
            wait=True,
        )

    def query(
        self,
        tenant_id: str,
        *,
        dense: list[float] | None,
        sparse: Sparse | None,
        filters: Filters,
        limit: int,
    ) -> Legs:
        """Run the requested legs in one batch; fusion is the caller's (see ``fuse``)."""
        m = self._m
        flt = self._filter(tenant_id, filters)
        requests: list[Any] = []
        if dense is not None:
            requests.append(
                m.QueryRequest(
                    query=dense,
                    using=DENSE,
                    filter=flt,
                    limit=limit + TIE_MARGIN,
                    with_payload=False,
                    params=m.SearchParams(hnsw_ef=max(self._hnsw_ef, limit)),
                )
            )
        with_sparse = sparse is not None and bool(sparse.indices)
        if sparse is not None and with_sparse:
            corpus = m.IdfCorpusParams(corpus=self._filter(tenant_id, Filters()))
            requests.append(
                m.QueryRequest(
                    query=m.SparseVector(indices=sparse.indices, values=sparse.values),
                    using=SPARSE,
                    filter=flt,
                    limit=limit + TIE_MARGIN,
                    with_payload=False,
                    params=m.SearchParams(idf=corpus),
                )
            )
        if not requests:
            return Legs()
        responses = iter(self._client.query_batch_points(self.collection, requests=requests))
        legs = Legs()
        if dense is not None:
            legs.dense = _hits(next(responses).points)[:limit]
        if with_sparse:
            legs.sparse = _hits(next(responses).points)[:limit]
        return legs

    def payloads(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        records = self._client.retrieve(
            self.collection, ids=list(ids), with_payload=True, with_vectors=False
        )
        return {str(r.id): dict(r.payload or {}) for r in records}

    def count(self, tenant_id: str | None = None) -> int:
        m = self._m
        flt = (
            m.Filter(must=[m.FieldCondition(key="tenant_id", match=m.MatchValue(value=tenant_id))])
            if tenant_id
            else None
        )
        return int(self._client.count(self.collection, count_filter=flt, exact=True).count)

    def points(self, tenant_id: str | None = None) -> Iterator[ChunkPoint]:
        m = self._m
        flt = (
            m.Filter(must=[m.FieldCondition(key="tenant_id", match=m.MatchValue(value=tenant_id))])
            if tenant_id
            else None
        )
        offset: Any = None
        while True:
            records, offset = self._client.scroll(
                self.collection,
                scroll_filter=flt,
                limit=512,
                offset=offset,
                with_payload=True,
                with_vectors=True,
            )
            yield from (_chunk_point(record) for record in records)
            if offset is None:
                return

    def flush(self) -> None:
        """Writes are acknowledged with wait=True; nothing is buffered client-side."""

    def close(self) -> None:
        self._client.close()
