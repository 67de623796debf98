"""What recording one read costs by itself, beside the smallest durable write there is.

    .venv/bin/python bench/record_cost.py [--reads 2000] [--documents 8] [--rounds 3]

Against the PostgreSQL on 127.0.0.1 (a fresh database of its own; no NATS, no
``kf serve``): the activity application of a ``Container`` records ``--reads``
reads one after another, each of a search that showed ``--documents`` documents
(so its query text is sealed with a key of its own that quotes them), and the
CPU they take is read off this process (the caller: what a request's thread
spends) and off every PostgreSQL process. The baseline, in the same run and on
the same server: one small row inserted and committed per write, the least a
record that is durable before the response leaves can cost. What comes after
the record (the relay, the audit, who-saw and usage read models) is not here:
``bench/audit.py --paced`` measures all of it together.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_by_group

from config.root import Container, Endpoints
from config.schema import migrate
from config.settings import load_settings
from domain.activity import ReadKind
from infra.telemetry import configure_logging

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_cpu() -> float:
    """CPU seconds spent so far by every PostgreSQL process (backends, WAL writer, ...)."""
    return cpu_by_group(serve_pid=-1).get("postgres", 0.0)  # no `kf serve` here


def per_write(n: int, write: Callable[[int], object]) -> dict[str, float]:
    """Caller CPU, PostgreSQL CPU and wall time per write, in milliseconds."""
    server, caller, wall = postgres_cpu(), time.process_time(), time.perf_counter()
    for i in range(n):
        write(i)
    return {
        "caller_cpu_ms": round(1000 * (time.process_time() - caller) / n, 3),
        "postgres_cpu_ms": round(1000 * (postgres_cpu() - server) / n, 3),
        "wall_ms": round(1000 * (time.perf_counter() - wall) / n, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--documents", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_logging("warning")  # not the migrations' lines

    name = f"kf_bench_record_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    env = {**os.environ, "KF_LOG_LEVEL": "warning", "KF_DATABASE_URL": database_url}
    try:
        migrate(database_url)
        settings = load_settings(environ=env, data_dir=Path(tempfile.mkdtemp(prefix="kf-bench-")))
        container = Container(settings, Endpoints(settings.database.url, settings.nats.url))
        tenant_id = str(uuid.uuid4())
        shown = [str(uuid.uuid4()) for _ in range(300)]
        rng = random.Random(7)

        def record(i: int) -> None:
            documents = rng.sample(shown, args.documents)
            container.activity.record_read(
                tenant_id=tenant_id, actor="key:bench", role="viewer", kind=ReadKind.SEARCH,
                route="/v1/search", query=f"what does treatment {i} do to outcome {i % 97}",
                documents=documents, chunks=[f"{d}:0" for d in documents], mode="hybrid",
            )  # fmt: skip

        baseline = psycopg.connect(database_url, autocommit=True)
        baseline.execute("CREATE TABLE bench_smallest_write (id bigserial PRIMARY KEY, b bytea)")
        payload = os.urandom(1000)  # about a stored read of 8 documents (its event)

        def smallest(_: int) -> None:
            baseline.execute(
                "INSERT INTO bench_smallest_write (b) VALUES (%b)", (payload,), prepare=True
            )

        for i in range(100):  # connections, prepared statements, caches
            record(i)
            smallest(i)
        runs: dict[str, list[dict[str, float]]] = {"read recorded": [], "smallest write": []}
        for round_ in range(args.rounds):
            order = [("read recorded", record), ("smallest write", smallest)]
            for label, write in order if round_ % 2 == 0 else order[::-1]:
                runs[label].append(per_write(args.reads, write))
                print(json.dumps({"round": round_, "run": label, **runs[label][-1]}), flush=True)
        baseline.close()
        container.close()
        print(json.dumps({
            label: {k: round(statistics.median(r[k] for r in results), 3) for k in results[0]}
            for label, results in runs.items()
        }), flush=True)  # fmt: skip
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
