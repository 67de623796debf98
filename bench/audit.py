"""What the audit trail costs: recording reads, verifying chains, exporting entries.

    .venv/bin/python bench/audit.py [--docs 300] [--queries 300] [--events 100000]
                                    [--dataset ../shared/data/scifact]
                                    [--rounds 2] [--linger MS ...] [--paced RATE]

Runs against the PostgreSQL and NATS on 127.0.0.1 (a fresh database and
stream of its own), so that this process can append events beside ``kf serve``:

1. **Recording reads.** ``kf serve`` with ``--docs`` SciFact abstracts ingested
   and every projection caught up; then ``--rounds`` rounds, each restarting
   ``kf serve`` with ``audit.record_reads`` off and then on, on the same data,
   and running ``--queries`` hybrid searches over HTTP at 1 and then 8
   concurrent clients (off first in even rounds, on first in odd ones). Reports
   p50/p95/p99 latency and throughput per run, and per setting the median over
   rounds. Aim: p95 grows by under 3 ms and throughput drops by under 10%.
   ``--linger MS [MS ...]``: "on" once per ``audit.batch_linger_ms`` given (the
   default: as configured), each against the same round's "off". Since a
   virtual machine's speed can drift by a third within a run, each round's drop
   is also taken against its own "off" run (``paired_drop_pct``: the median of
   the rounds'). ``--paced RATE``: also a run at a steady RATE searches per
   second, below saturation, and the CPU per read that recording adds, by
   process (PostgreSQL, NATS, the API, its children, the rest): a measure of
   work, which drifts less than a saturated throughput does.
2. **Verifying.** Appends ``--events`` reads straight through the activity
   application (in this process: what is measured is verification, not HTTP),
   waits until the audit projector has chained them all, writes a checkpoint,
   and times ``kf audit verify``: events per second.
3. **Exporting.** Times ``GET /v1/audit/export`` (JSON lines, then CSV) of all
   entries as an auditor: rows per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, cpu_by_group, pct, start_serve

from infra.bus import delete_stream

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def searches(
    url: str, key: str, queries: list[str], clients: int, serve_pid: int
) -> tuple[list[float], float, dict[str, float]]:
    latencies: list[float] = []
    lock = threading.Lock()

    def one(query: str, client: httpx.Client) -> None:
        started = time.perf_counter()
        response = client.get("/v1/search", params={"q": query, "mode": "hybrid", "k": 10})
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, response.text
        with lock:
            latencies.append(elapsed)

    headers = {"Authorization": f"Bearer {key}"}
    http = [httpx.Client(base_url=url, headers=headers, timeout=60) for _ in range(clients)]
    for client in http:  # connections open and the query model warm before timing
        client.get("/v1/search", params={"q": "warm up", "mode": "hybrid"})
    cpu_before = cpu_by_group(serve_pid)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda i: one(queries[i], http[i % clients]), range(len(queries))))
    wall = time.perf_counter() - started
    cpu_after = cpu_by_group(serve_pid)
    for client in http:
        client.close()
    cpu = {
        group: max(0.0, (cpu_after.get(group, 0.0) - cpu_before.get(group, 0.0)) * 1000)
        for group in sorted(set(cpu_before) | set(cpu_after))
    }
    return latencies, len(queries) / wall, cpu


def paced(
    url: str, key: str, queries: list[str], rate: float, serve_pid: int
) -> tuple[list[float], float, dict[str, float]]:
    """``searches`` at a steady ``rate`` per second (each sent at its time, on one of 8
    warm connections), below what the machine can serve: the CPU each process spends
    per search is then the work a search causes, not inflated by queueing, and a
    machine whose speed drifts changes it less than it changes a saturated throughput."""
    latencies: list[float] = []
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {key}"}
    idle: queue.SimpleQueue[httpx.Client] = queue.SimpleQueue()
    for _ in range(8):
        client = httpx.Client(base_url=url, headers=headers, timeout=60)
        client.get("/v1/search", params={"q": "warm up", "mode": "hybrid"})
        idle.put(client)

    def one(i: int) -> None:
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        client = idle.get()
        sent = time.perf_counter()
        response = client.get("/v1/search", params={"q": queries[i], "mode": "hybrid", "k": 10})
        elapsed = (time.perf_counter() - sent) * 1000
        idle.put(client)
        assert response.status_code == 200, response.text
        with lock:
            latencies.append(elapsed)

    cpu_before = cpu_by_group(serve_pid)
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(len(queries))))
    wall = time.perf_counter() - started
    time.sleep(2.5)  # the background's last batch (relay and read models linger) counted too
    cpu_after = cpu_by_group(serve_pid)
    for _ in range(8):
        idle.get().close()
    cpu = {
        group: max(0.0, (cpu_after.get(group, 0.0) - cpu_before.get(group, 0.0)) * 1000)
        for group in sorted(set(cpu_before) | set(cpu_after))
    }
    return latencies, len(queries) / wall, cpu


def row(
    label: str, latencies: list[float], rate: float, cpu: dict[str, float]
) -> dict[str, float | str]:
    return {
        "run": label,
        "p50": round(pct(latencies, 0.5), 1),
        "p95": round(pct(latencies, 0.95), 1),
        "p99": round(pct(latencies, 0.99), 1),
        "q/s": round(rate, 1),
        # CPU milliseconds per query, by who spent them (the machine's other work too).
        **{f"cpu_ms_{group}": round(ms / len(latencies), 2) for group, ms in cpu.items()},
    }


def ingest(url: str, key: str, dataset: Path, docs: int) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    ids = []
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        for line in (dataset / "corpus.jsonl").read_text().splitlines()[:docs]:
            doc = json.loads(line)
            text = f"# {doc.get('title', '')}\n\n{doc['text']}"
            response = client.post(
                "/v1/documents", files={"file": (f"{doc['_id']}.md", text.encode())}
            )
            ids.append(response.json()["id"])
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            counts = {}
            for document_id in ids[-20:]:
                status = client.get(f"/v1/documents/{document_id}").json()["status"]
                counts[status] = counts.get(status, 0) + 1
            if counts.get("embedded", 0) == min(20, len(ids)):
                break
            time.sleep(2)
        settle(client)


def settle(client: httpx.Client, serve_pid: int | None = None) -> None:
    """Wait until every relay and projection has caught up and, given ``kf serve``'s pid,
    until it and its children (workers, relay, projectors) are idle."""
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        components = client.get("/v1/projections").json()["components"]
        if all(c["lag"] == 0 for c in components):
            break
        time.sleep(1)
    time.sleep(2)
    if serve_pid is None:
        return
    family = [psutil.Process(serve_pid), *psutil.Process(serve_pid).children(recursive=True)]
    quiet_since = time.monotonic()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and time.monotonic() - quiet_since < 3:
        before = sum(sum(p.cpu_times()[:2]) for p in family if p.is_running())
        time.sleep(1)
        after = sum(sum(p.cpu_times()[:2]) for p in family if p.is_running())
        if after - before > 0.05:  # more than 5% of a core: still starting or working
            quiet_since = time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dataset", type=Path, default=ROOT.parent / "shared/data/scifact")
    parser.add_argument(
        "--paced", type=float, default=0, help="also search at this steady rate per second"
    )
    parser.add_argument(
        "--linger", type=int, nargs="+", default=None, help="audit.batch_linger_ms values"
    )
    args = parser.parse_args()

    name = f"kf_bench_audit_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    tag = uuid.uuid4().hex[:8]
    scratch = Path(tempfile.mkdtemp(prefix="kf-bench-audit-"))
    data_dir = scratch / "data"
    env = {
        **os.environ,
        "KF_LOG_LEVEL": "warning",
        "KF_DATABASE_URL": database_url,
        "KF_NATS_URL": "nats://127.0.0.1:4222",
        "KF__NATS__STREAM": f"KFBENCH_{tag}",
        "KF__NATS__SUBJECT_PREFIX": f"kfbench{tag}",
        "KF__AUDIT__CHECKPOINT_EVERY_EVENTS": "10000000",
    }
    texts = [
        json.loads(line)["text"]
        for line in (args.dataset / "queries.jsonl").read_text().splitlines()
    ]
    queries = [texts[i % len(texts)] for i in range(args.queries)]  # repeats past the set
    results: list[dict[str, float | str]] = []
    try:
        serve, url, key = start_serve(data_dir, scratch / "serve-ingest.log", env)
        try:
            print(f"ingesting {args.docs} abstracts…", flush=True)
            ingest(url, key, args.dataset, args.docs)
        finally:
            serve.send_signal(signal.SIGINT)
            serve.wait(60)
        lingers = [f"true:{ms}" for ms in args.linger] if args.linger else ["true"]
        settings = ["false", *lingers]
        for round_ in range(args.rounds):
            # The order turns each round: whatever drifts over the run (the tables
            # growing, the caches warming, the machine's speed) weighs on all alike.
            shift = round_ % len(settings)
            for setting in settings[shift:] + settings[:shift]:
                record_reads, _, linger = setting.partition(":")
                run_env = {**env, "KF__AUDIT__RECORD_READS": record_reads}
                if linger:
                    run_env["KF__AUDIT__BATCH_LINGER_MS"] = linger
                log_path = scratch / f"serve-{round_}-{setting.replace(':', '-')}.log"
                serve, url, key = start_serve(data_dir, log_path, run_env)
                try:
                    with httpx.Client(
                        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
                    ) as client:
                        settle(client, serve.pid)
                    for clients in (1, 8):
                        latencies, rate, cpu = searches(url, key, queries, clients, serve.pid)
                        label = f"{clients} clients, reads recorded: {setting}"
                        results.append({"round": round_, **row(label, latencies, rate, cpu)})
                        print(json.dumps(results[-1]), flush=True)
                    if args.paced:
                        latencies, rate, cpu = paced(url, key, queries, args.paced, serve.pid)
                        label = f"paced, reads recorded: {setting}"
                        results.append({"round": round_, **row(label, latencies, rate, cpu)})
                        print(json.dumps(results[-1]), flush=True)
                finally:
                    serve.send_signal(signal.SIGINT)
                    serve.wait(60)
        for clients in (1, 8):
            label = f"{clients} clients, reads recorded: "
            runs_of = {
                setting: [r for r in results if r["run"] == label + setting] for setting in settings
            }
            summary = {
                setting: {
                    k: round(statistics.median(float(r[k]) for r in runs), 2)
                    for k in runs[0]
                    if k not in ("run", "round")
                }
                for setting, runs in runs_of.items()
            }
            off = summary["false"]
            for setting in settings[1:]:
                on = summary[setting]
                paired = [
                    100 * (1 - float(r_on["q/s"]) / float(r_off["q/s"]))
                    for r_on, r_off in zip(runs_of[setting], runs_of["false"], strict=True)
                ]
                print(json.dumps({
                    "clients": clients, "reads recorded": setting,
                    "median_off": off, "median_on": on,
                    "p95_grows_ms": round(on["p95"] - off["p95"], 1),
                    "throughput_drop_pct": round(100 * (1 - on["q/s"] / off["q/s"]), 1),
                    "paired_drop_pct": round(statistics.median(paired), 1),
                    "paired_drops": [round(d, 1) for d in paired],
                }), flush=True)  # fmt: skip
        if args.paced:
            cpu_added(results, settings)
        if args.events:
            verify_and_export(env, data_dir, scratch, args.events)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        # Each stream reserves its max_bytes of the server's JetStream storage.
        asyncio.run(delete_stream(env["KF_NATS_URL"], env["KF__NATS__STREAM"]))


def cpu_added(results: list[dict[str, float | str]], settings: list[str]) -> None:
    """The CPU a recorded read adds, by process group: each setting's paced runs against
    the same round's run with reads not recorded (medians over rounds)."""
    runs = {s: [r for r in results if r["run"] == f"paced, reads recorded: {s}"] for s in settings}
    groups = sorted({k for r in results for k in r if str(k).startswith("cpu_ms_")})
    for setting in settings[1:]:
        pairs = list(zip(runs[setting], runs["false"], strict=True))
        added = {
            group.removeprefix("cpu_ms_"): round(
                statistics.median(float(on.get(group, 0.0)) - float(off.get(group, 0.0))
                                  for on, off in pairs), 2)
            for group in groups
        }  # fmt: skip
        total = statistics.median(
            sum(float(on.get(g, 0.0)) - float(off.get(g, 0.0)) for g in groups) for on, off in pairs
        )
        off_total = statistics.median(
            sum(float(off.get(g, 0.0)) for g in groups) for off in runs["false"]
        )
        print(json.dumps({
            "paced": setting, "cpu_ms_added_per_read": added,
            "total_added_ms": round(total, 2), "search_cpu_ms_off": round(off_total, 2),
        }), flush=True)  # fmt: skip


def verify_and_export(env: dict[str, str], data_dir: Path, scratch: Path, events: int) -> None:
    from config.root import Container, Endpoints
    from config.settings import load_settings
    from domain.access import Role
    from domain.activity import ReadKind

    serve, _, _ = start_serve(data_dir, scratch / "serve-verify.log", env)
    try:
        settings = load_settings(environ=env, data_dir=data_dir)
        container = Container(settings, Endpoints(settings.database.url, settings.nats.url))
        tenant = container.access.tenant_by_name("default")
        _, auditor = container.access.issue_api_key(
            tenant_id=str(tenant.id), actor="bench", name="auditor", role=Role.AUDITOR
        )
        started = time.perf_counter()
        for i in range(events):
            container.activity.record_read(
                tenant_id=str(tenant.id), actor="key:bench", role="viewer",
                kind=ReadKind.SEARCH, route="/v1/search", query=f"query {i % 500}",
                documents=[str(uuid.uuid4())], chunks=[str(uuid.uuid4())],
            )  # fmt: skip
        append_s = time.perf_counter() - started
        print(json.dumps({"appended": events, "seconds": round(append_s, 1)}), flush=True)
        audit = container.views["audit"]
        head = container.event_logs["activity"].head()
        while not audit.wait_for("activity", head, 5):
            pass
        container.checkpointer().write_due(force=True)
        container.close()
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(60)
    total = 0
    with psycopg.connect(env["KF_DATABASE_URL"]) as conn:
        for table in (
            "documents_events",
            "access_events",
            "conversations_events",
            "activity_events",
        ):
            total += conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "config.cli", "audit", "verify", "--data-dir", str(data_dir)],
        env=env, capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    verify_s = time.perf_counter() - started
    summary = json.loads(done.stdout.splitlines()[-1])
    print(json.dumps({
        "verify": {"events": total, "seconds": round(verify_s, 1),
                   "events_per_s": round(total / verify_s), "ok": summary["ok"]},
    }), flush=True)  # fmt: skip
    serve, url, _ = start_serve(data_dir, scratch / "serve-export.log", env)
    try:
        headers = {"Authorization": f"Bearer {auditor}"}
        with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
            for export_format in ("jsonl", "csv"):
                started = time.perf_counter()
                rows = 0
                with client.stream(
                    "GET", "/v1/audit/export", params={"format": export_format}
                ) as response:
                    for line in response.iter_lines():
                        rows += bool(line)
                seconds = time.perf_counter() - started
                print(json.dumps({
                    "export": export_format, "rows": rows, "seconds": round(seconds, 1),
                    "rows_per_s": round(rows / seconds),
                }), flush=True)  # fmt: skip
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(60)


if __name__ == "__main__":
    main()
