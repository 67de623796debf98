"""What the platform adds to a question's latency, with a model server that answers instantly.

    .venv/bin/python bench/qa.py [--docs 500] [--questions 200]
                                 [--dataset ../shared/data/scifact]

1. starts a local server speaking the OpenAI protocol that answers at once
   (the test suite's fake: a fixed answer, streamed word by word, no delay) and
   measures its own round trip from this process;
2. starts ``kf serve`` on a fresh data directory (embedded servers) with the
   model ``instant`` routed to that server, uploads ``--docs`` SciFact
   abstracts and waits until they are searchable;
3. asks ``--questions`` SciFact queries, each in a new conversation, one
   client at a time, over HTTP:
   - ``POST /v1/conversations/{id}/questions`` as JSON: total latency;
   - the same with ``Accept: text/event-stream``: time to the first ``delta``
     event (time to first token) and to the final ``answer`` event;
   - ``POST /v1/chat/completions`` (OpenAI protocol, non-streaming);
   Each includes authentication, loading the conversation, retrieval (query
   embedding and hybrid search), prompt building, the prompt blob, appending
   ``QuestionAsked``, the provider round trip and appending ``AnswerGenerated``.
   The overhead is that total less the provider's round trip.

Prints p50/p95/p99 per measure. Aim: overhead p95 under 150 ms.

4. the cost of budgets on the question path: ``--budget-rounds`` rounds, each
   asking the questions as JSON without budgets and then with a tenant cost
   budget and a key token budget (large enough never to refuse), in the same
   run; p50/p95 of each setting (median over rounds) and the difference.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, pct, start_serve

from tests.fakes.llm_servers import start as start_fake_server

MODEL = "instant"


def config(path: Path, provider_url: str) -> Path:
    settings = {
        "llm": {
            "default_model": MODEL,
            "providers": [
                {"name": "extractive", "kind": "extractive"},
                {"name": "instant", "kind": "openai_compatible", "base_url": provider_url},
            ],
            "routes": [
                {"pattern": "extractive", "provider": "extractive"},
                {"pattern": MODEL, "provider": "instant"},
            ],
            "prices": {MODEL: {"input_per_million": 1, "output_per_million": 2}},
        }
    }
    path.write_text(json.dumps(settings))  # JSON is YAML
    return path


def provider_round_trip(url: str, count: int) -> list[float]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 4000}]}
    times = []
    with httpx.Client(base_url=url) as client:
        for _ in range(count):
            started = time.perf_counter()
            client.post("/chat/completions", json=body).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    return times


def upload_corpus(client: httpx.Client, dataset: Path, count: int) -> int:
    lines = (dataset / "corpus.jsonl").read_text().splitlines()[:count]
    ids, last = [], 0
    for line in lines:
        doc = json.loads(line)
        text = (doc.get("title", "") + " " + doc["text"]).strip().encode()
        response = client.post("/v1/documents", files={"file": (f"{doc['_id']}.txt", text)})
        response.raise_for_status()
        ids.append(response.json()["id"])
        last = max(last, response.json()["position"])
    pending = set(ids)
    while pending:
        time.sleep(1)
        page = client.get("/v1/documents", params={"limit": 200, "status": "embedded"})
        done = {d["id"] for d in page.json()["items"]}
        cursor = page.json()["next_cursor"]
        while cursor:
            page = client.get(
                "/v1/documents", params={"limit": 200, "status": "embedded", "cursor": cursor}
            )
            done |= {d["id"] for d in page.json()["items"]}
            cursor = page.json()["next_cursor"]
        pending -= done
        print(f"  {len(ids) - len(pending)}/{len(ids)} embedded", flush=True)
    return last


def ask_json(client: httpx.Client, question: str) -> float:
    conversation = client.post("/v1/conversations", json={}).json()["id"]
    started = time.perf_counter()
    response = client.post(
        f"/v1/conversations/{conversation}/questions", json={"question": question, "model": MODEL}
    )
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed


def ask_stream(client: httpx.Client, question: str) -> tuple[float, float]:
    conversation = client.post("/v1/conversations", json={}).json()["id"]
    first = None
    started = time.perf_counter()
    with client.stream(
        "POST",
        f"/v1/conversations/{conversation}/questions",
        json={"question": question, "model": MODEL},
        headers={"Accept": "text/event-stream"},
    ) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if first is None and line == "event: delta":
                first = (time.perf_counter() - started) * 1000
            if line == "event: answer":
                break
        total = (time.perf_counter() - started) * 1000
    assert first is not None
    return first, total


def ask_chat(client: httpx.Client, question: str) -> float:
    started = time.perf_counter()
    response = client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": question}]},
    )
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed


BUDGETS = ("/v1/budgets/tenant/cost_usd/month", "/v1/budgets/{key}/tokens/day")


def budget_rounds(client: httpx.Client, key_actor: str, queries: list[str], rounds: int) -> None:
    """Questions without budgets, then with two (never refusing), alternating, same run."""
    paths = [p.format(key=key_actor) for p in BUDGETS]
    figures: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
    for _ in range(rounds):
        for setting in ("without", "with"):
            for path in paths:
                if setting == "with":
                    client.put(path, json={"amount": "1000000000"}).raise_for_status()
                else:
                    client.delete(path).raise_for_status()
            times = [ask_json(client, q) for q in queries]
            figures[setting].append((pct(times, 0.5), pct(times, 0.95)))
    median = {
        s: (statistics.median(f[0] for f in v), statistics.median(f[1] for f in v))
        for s, v in figures.items()
    }
    for setting, (p50, p95) in median.items():
        print(f"budgets {setting:8s} JSON answer p50 {p50:6.1f}  p95 {p95:6.1f} ms", flush=True)
    print(
        f"budget checks add p50 {median['with'][0] - median['without'][0]:+.1f} ms,"
        f" p95 {median['with'][1] - median['without'][1]:+.1f} ms"
        f" (rounds: {json.dumps(figures)})",
        flush=True,
    )


def report(name: str, values: list[float], provider_p50: float) -> None:
    p95 = pct(values, 0.95)
    print(
        f"{name:34s} p50 {pct(values, 0.5):6.1f}  p95 {p95:6.1f}  p99 {pct(values, 0.99):6.1f} ms"
        f"   overhead p95 {p95 - provider_p50:6.1f} ms",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--budget-rounds", type=int, default=2)
    parser.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    args = parser.parse_args()
    queries = [json.loads(line)["text"] for line in (args.dataset / "queries.jsonl").open()]
    queries = queries[: args.questions]
    fake = start_fake_server("openai")
    try:
        provider = provider_round_trip(f"{fake.url}/v1", 200)
        print(f"provider round trip (from this process): p50 {pct(provider, 0.5):.1f} ms"
              f"  p95 {pct(provider, 0.95):.1f} ms")  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="kf-qa-bench-") as tmp:
            data_dir = Path(tmp) / "data"
            env = {
                **os.environ,
                "KF_LOG_LEVEL": "warning",
                "KF_CONFIG": str(config(Path(tmp) / "qa.yaml", f"{fake.url}/v1")),
            }
            process, url, key = start_serve(data_dir, Path(tmp) / "serve.log", env)
            try:
                with httpx.Client(
                    base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
                ) as client:
                    print(f"uploading {args.docs} SciFact abstracts…", flush=True)
                    upload_corpus(client, args.dataset, args.docs)
                    for question in queries[:20]:  # warm-up: connections, pages, caches
                        ask_json(client, question)
                    print(f"{len(queries)} questions, one client; load {os.getloadavg()}")
                    provider_p50 = pct(provider, 0.5)
                    report("JSON answer, total", [ask_json(client, q) for q in queries],
                           provider_p50)  # fmt: skip
                    streamed = [ask_stream(client, q) for q in queries]
                    report("SSE time to first token", [s[0] for s in streamed], provider_p50)
                    report("SSE answer, total", [s[1] for s in streamed], provider_p50)
                    report("chat/completions, total", [ask_chat(client, q) for q in queries],
                           provider_p50)  # fmt: skip
                    key_id = client.get("/v1/keys").json()["items"][0]["id"]
                    budget_rounds(client, f"key:{key_id}", queries, args.budget_rounds)
                    print(f"load average after: {os.getloadavg()}")
            finally:
                process.send_signal(signal.SIGINT)
                process.wait(120)
    finally:
        fake.close()


if __name__ == "__main__":
    main()
