"""Retrieval quality on a BEIR dataset through the running system, and rebuild throughput.

    .venv/bin/python bench/beir.py ../shared/data/scifact [--clients 8]

1. starts ``kf serve`` on a fresh data directory (embedded servers unless
   KF_DATABASE_URL / KF_NATS_URL are set) with ``search.max_k`` raised to 300,
   so that 100 distinct documents can be scored for Recall@100 (chunks of one
   document collapse to its best-ranked chunk);
2. uploads every corpus document as a text file (``title + " " + text``) and
   waits until all are embedded and the search index has applied the head;
3. runs the test queries in keyword, vector and hybrid mode over HTTP and scores
   nDCG@10 and Recall@100 exactly as the dataset's README defines them (all
   queries averaged; an empty result scores 0);
4. rebuilds the search and full-text read models with ``kf rebuild-index
   --projection all`` (through the server) and reports chunks/s, next to the raw
   upsert rate of the same index engine measured in this process on points of
   the same shape.

Nothing is cached: every document goes through parse → chunk → embed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, start_serve

MODES = ("keyword", "vector", "hybrid")


def load(dataset: Path) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
    corpus = {}
    for line in (dataset / "corpus.jsonl").open():
        doc = json.loads(line)
        corpus[doc["_id"]] = (doc.get("title", "") + " " + doc["text"]).strip()
    queries = {}
    for line in (dataset / "queries.jsonl").open():
        query = json.loads(line)
        queries[query["_id"]] = query["text"]
    qrels: dict[str, set[str]] = defaultdict(set)
    for line in (dataset / "qrels" / "test.tsv").open():
        qid, did, score = line.rstrip("\n").split("\t")
        if qid != "query-id" and int(score) > 0:
            qrels[qid].add(did)
    return corpus, {q: queries[q] for q in qrels}, qrels


def ndcg10(ranked: list[str], relevant: set[str]) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:10]) if d in relevant)
    idcg = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), 10)))
    return dcg / idcg


def recall100(ranked: list[str], relevant: set[str]) -> float:
    return len(relevant & set(ranked[:100])) / len(relevant)


def upload_corpus(url: str, key: str, corpus: dict[str, str], clients: int) -> dict[str, str]:
    local = threading.local()
    document_of: dict[str, str] = {}
    lock = threading.Lock()

    def upload(item: tuple[str, str]) -> None:
        doc_id, text = item
        if not hasattr(local, "client"):
            local.client = httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120
            )
        response = local.client.post(
            "/v1/documents", files={"file": (f"{doc_id}.txt", text.encode())}
        )
        response.raise_for_status()
        with lock:
            document_of[response.json()["id"]] = doc_id

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(upload, corpus.items()))
    return document_of


def wait_ingested(client: httpx.Client, expected: int) -> None:
    """Until nothing is in flight and the search and full-text indexes have the head."""
    started = time.monotonic()
    while True:
        busy = sum(
            len(client.get("/v1/documents", params={"status": s, "limit": 200}).json()["items"])
            for s in ("uploaded", "parsed", "chunked")
        )
        status = {c["name"]: c for c in client.get("/v1/projections").json()["components"]}
        lagging = sum(status[name]["lag"] for name in ("search", "fulltext"))
        if busy == 0 and lagging == 0:
            return
        print(
            f"  ingesting… {busy}+ in flight, index lag {lagging},"
            f" {time.monotonic() - started:.0f}s",
            flush=True,
        )
        time.sleep(10)


def leg_rankings(
    client: httpx.Client, queries: dict[str, str], mode: str, limit: int
) -> dict[str, list[tuple[str, str]]]:
    """(point key, document id) of each query's top ``limit`` chunks in one leg."""
    rankings = {}
    for qid, text in queries.items():
        hits = client.get("/v1/search", params={"q": text, "mode": mode, "k": limit}).json()[
            "results"
        ]
        rankings[qid] = [(f"{h['document_id']}:{h['chunk_index']}", h["document_id"]) for h in hits]
    return rankings


def fusion_grid(
    dense: dict[str, list[tuple[str, str]]],
    sparse: dict[str, list[tuple[str, str]]],
    qrels: dict[str, set[str]],
    document_of: dict[str, str],
) -> list[tuple[float, int, float, float]]:
    """nDCG@10 of the platform's fusion formula over a grid of k and weights, from the legs."""
    results = []
    for k in (5, 10, 20, 40, 60):
        for dense_weight, sparse_weight in (
            (1.0, 1.0),
            (1.5, 1.0),
            (1.0, 1.5),
            (2.0, 1.0),
            (1.0, 2.0),
        ):
            total = 0.0
            for qid, relevant in qrels.items():
                scores: dict[str, float] = {}
                doc_of_point: dict[str, str] = {}
                for weight, ranked in ((dense_weight, dense[qid]), (sparse_weight, sparse[qid])):
                    for rank, (point, doc) in enumerate(ranked, start=1):
                        scores[point] = scores.get(point, 0.0) + weight / (k + rank)
                        doc_of_point[point] = doc
                ranked_docs: list[str] = []
                for point in sorted(scores, key=lambda p: (-scores[p], p)):
                    corpus_doc = document_of.get(doc_of_point[point])
                    if corpus_doc is not None and corpus_doc not in ranked_docs:
                        ranked_docs.append(corpus_doc)
                total += ndcg10(ranked_docs, relevant)
            results.append((total / len(qrels), k, dense_weight, sparse_weight))
    return sorted(results, reverse=True)


def score(
    client: httpx.Client,
    queries: dict[str, str],
    qrels: dict[str, set[str]],
    document_of: dict[str, str],
    mode: str,
) -> tuple[float, float, list[float]]:
    ndcgs, recalls, latencies = [], [], []
    for qid, text in queries.items():
        started = time.perf_counter()
        response = client.get("/v1/search", params={"q": text, "mode": mode, "k": 300})
        latencies.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        ranked: list[str] = []
        for hit in response.json()["results"]:
            doc = document_of.get(hit["document_id"])
            if doc is not None and doc not in ranked:
                ranked.append(doc)
        ndcgs.append(ndcg10(ranked, qrels[qid]))
        recalls.append(recall100(ranked, qrels[qid]))
    return sum(ndcgs) / len(qrels), sum(recalls) / len(qrels), latencies


def raw_upsert_rate(texts: list[str], n_points: int) -> float:
    """Points/s upserting dense+BM25 points in batches of 256 into a fresh edge shard."""
    from config.settings import load_settings
    from infra.search_index import (
        Bm25Encoder,
        ChunkPoint,
        EdgeSearchIndex,
        IndexSpec,
        point_id,
    )

    search = load_settings(environ={}).search
    encoder = Bm25Encoder(
        k=search.bm25_k, b=search.bm25_b, avg_len=search.bm25_avg_len, language=search.bm25_language
    )
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(n_points, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    points = [
        ChunkPoint(
            point_id(f"doc-{i // 2}", i % 2),
            vectors[i].tolist(),
            encoder.document(texts[i % len(texts)]),
            {
                "tenant_id": "bench",
                "document_id": f"doc-{i // 2}",
                "chunk_index": i % 2,
                "text": texts[i % len(texts)],
            },
        )
        for i in range(n_points)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        index = EdgeSearchIndex(Path(tmp) / "raw", IndexSpec("bench", 384, encoder.description))
        started = time.perf_counter()
        for start in range(0, len(points), 256):
            index.upsert(points[start : start + 256])
        index.flush()
        elapsed = time.perf_counter() - started
        index.close()
    return n_points / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    corpus, queries, qrels = load(args.dataset)
    print(f"{len(corpus)} documents, {len(queries)} queries; load average {os.getloadavg()}")
    env = {**os.environ, "KF_LOG_LEVEL": "warning", "KF__SEARCH__MAX_K": "300"}
    with tempfile.TemporaryDirectory(prefix="kf-beir-") as tmp:
        data_dir = Path(tmp) / "data"
        process, url, key = start_serve(data_dir, Path(tmp) / "serve.log", env)
        try:
            started = time.perf_counter()
            document_of = upload_corpus(url, key, corpus, args.clients)
            uploaded = time.perf_counter() - started
            print(f"uploaded {len(document_of)} documents in {uploaded:.0f}s")
            with httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120
            ) as client:
                wait_ingested(client, len(corpus))
                print(f"ingested (upload → searchable) in {time.perf_counter() - started:.0f}s")
                settings = {k: v for k, v in os.environ.items() if k.startswith("KF__SEARCH")}
                print(
                    "search settings: config/default.yaml search section,"
                    f" overrides {settings or 'none'}"
                )
                for mode in MODES:
                    ndcg, recall, latencies = score(client, queries, qrels, document_of, mode)
                    latencies.sort()
                    print(
                        f"{mode:8s} nDCG@10 {ndcg:.4f}  Recall@100 {recall:.4f}"
                        f"  (HTTP latency k=300 p50 {latencies[len(latencies) // 2]:.0f} ms)"
                    )
                # How flat is the fusion optimum (the same legs, 100 chunks each)?
                dense_legs = leg_rankings(client, queries, "vector", 100)
                sparse_legs = leg_rankings(client, queries, "keyword", 100)
                grid = fusion_grid(dense_legs, sparse_legs, qrels, document_of)
                print("fusion grid (nDCG@10, k, dense weight, keyword weight), best first:")
                for row in grid[:8]:
                    print(f"  {row[0]:.4f}  k={row[1]:<3} weights={row[2]}:{row[3]}")
                near = sum(r[0] >= grid[0][0] - 0.005 for r in grid)
                print(
                    f"  … worst {grid[-1][0]:.4f}; {near} of {len(grid)} within 0.005 of the best"
                )
            rebuild = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "config.cli",
                    "rebuild-index",
                    "--projection",
                    "all",
                    "--data-dir",
                    str(data_dir),
                ],
                capture_output=True,
                text=True,
                cwd=ROOT,
                env=env,
                check=True,
            )
            summary: dict[str, Any] = json.loads(rebuild.stdout.strip().splitlines()[-1])
            print(
                f"rebuild-index --projection all: {summary['events']} events,"
                f" {summary['chunks']} chunks in {summary['seconds']}s (both read models)"
                f" -> {summary['chunks'] / summary['seconds']:.0f} chunks/s;"
                f" matches live: {summary['matches_live']}"
            )
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(120)
    texts = list(corpus.values())
    rate = raw_upsert_rate(texts, int(summary["chunks"]))
    print(f"raw edge-shard upsert rate, same point shape, batches of 256: {rate:.0f} points/s")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
