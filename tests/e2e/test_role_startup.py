"""Starting role processes: only ``kf migrate`` creates tables, so replicas may start together.

Eight role processes (two each of ``kf relay``, ``kf worker`` (parse and
chunk), ``kf project`` and ``kf write-api``) start at the same moment against a freshly migrated
database, ten rounds, and every one reaches ready. Before this, two processes
starting together could both run the event store's ``CREATE TABLE IF NOT
EXISTS`` and one died with PostgreSQL's ``tuple concurrently updated``.
Against a database with no schema, or an older one, a role exits 2 and says to
run ``kf migrate``; a role that would serve an empty search index refuses too.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from config.schema import migrate
from infra.bus import delete_stream
from infra.db import migration_files
from tests.harness import Services

pytestmark = pytest.mark.timeout(1200)

ROLES = [
    ["relay"],
    ["relay"],
    # Workers of the stages that load no model: an embed worker is ready only once
    # the model is in memory (seconds of CPU), which is not what this test is about.
    ["worker", "--stage", "parse"],
    ["worker", "--stage", "chunk"],
    ["project"],
    ["project"],
    ["write-api", "--port", "0"],
    ["write-api", "--port", "0"],
]
ROUNDS = 10


def _env(database_url: str, nats_url: str, data_dir: Path, tag: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KF")}
    env.update(
        {
            "KF_DATABASE_URL": database_url,
            "KF_NATS_URL": nats_url,
            "KF_DATA_DIR": str(data_dir),
            "KF__NATS__STREAM": f"KFS_{tag}",
            "KF__NATS__SUBJECT_PREFIX": f"kfs{tag}",
            "KF_LOG_LEVEL": "info",
            # Eight processes and this test share one server's 100 connections: pools
            # that may grow by 2, not 10 (a deployment sizes max_connections for its roles).
            "KF__DATABASE__MAX_OVERFLOW": "2",
        }
    )
    return env


def _kf(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "config.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _ready(log: Path) -> bool:
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and json.loads(line).get("event") == "role_ready":
            return True
    return False


@pytest.fixture
def fresh_database(services: Services) -> Iterator[str]:
    with services.database() as url:
        yield url


def _schema(url: str) -> list[tuple[str, str]]:
    """Every relation, type and function of the database, by kind and name."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT 'relation:' || relkind::text, relname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
            " UNION ALL SELECT 'type', typname FROM pg_type t"
            " JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'public'"
            " UNION ALL SELECT 'function', proname FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
            " ORDER BY 1, 2"
        ).fetchall()
    return [(str(kind), str(name)) for kind, name in rows]


def _one_round(services: Services, scratch: Path, number: int) -> None:
    tag = uuid.uuid4().hex[:8]
    with services.database() as url:
        created = migrate(url)
        assert "documents_events" in created and "catalog_tracking" in created
        migrated = _schema(url)
        env = _env(url, services.nats_url, scratch / f"data-{number}", tag)
        logs = [scratch / f"round-{number}-{i}-{args[0]}.log" for i, args in enumerate(ROLES)]
        processes = [_kf(args, env, log) for args, log in zip(ROLES, logs, strict=True)]
        try:
            deadline = time.monotonic() + 180
            waiting = set(range(len(ROLES)))
            while waiting and time.monotonic() < deadline:
                for i in list(waiting):
                    if _ready(logs[i]):
                        waiting.discard(i)
                    elif processes[i].poll() is not None:
                        text = logs[i].read_text(errors="replace")[-3000:]
                        raise AssertionError(f"round {number}: {ROLES[i]} exited:\n{text}")
                time.sleep(0.1)
            assert not waiting, f"round {number}: not ready: {[ROLES[i] for i in waiting]}"
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
            asyncio.run(delete_stream(services.nats_url, f"KFS_{tag}"))
        for i, log in enumerate(logs):
            assert "concurrently" not in log.read_text(errors="replace"), ROLES[i]
        assert _schema(url) == migrated  # the roles ran no DDL


@pytest.mark.slow
def test_eight_roles_started_together_all_reach_ready(services: Services, tmp_path: Path) -> None:
    for number in range(ROUNDS):
        _one_round(services, tmp_path, number)


def _exit_of(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "config.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_role_against_a_database_with_no_schema_exits_2_naming_kf_migrate(
    services: Services, fresh_database: str, tmp_path: Path
) -> None:
    env = _env(fresh_database, services.nats_url, tmp_path, uuid.uuid4().hex[:8])
    for role in (["relay"], ["worker"], ["project"], ["write-api"]):
        done = _exit_of(role, env)
        assert done.returncode == 2, (role, done.stderr[-2000:])
        assert "run `kf migrate` first" in done.stderr and "documents_events" in done.stderr
    with psycopg.connect(fresh_database) as conn:  # and it created nothing
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
    assert tables == (0,)


def test_a_database_older_than_the_code_is_refused_until_migrated(
    services: Services, fresh_database: str, tmp_path: Path
) -> None:
    migrate(fresh_database)
    newest = migration_files()[-1][0]
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE name = %s", (newest,))
    env = _env(fresh_database, services.nats_url, tmp_path, uuid.uuid4().hex[:8])
    done = _exit_of(["relay"], env)
    assert done.returncode == 2 and newest in done.stderr and "kf migrate" in done.stderr
    migrated = _exit_of(["migrate"], env)
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    assert json.loads(migrated.stdout.splitlines()[-1]) == {"applied": [newest]}
    again = _exit_of(["migrate"], env)
    assert json.loads(again.stdout.splitlines()[-1]) == {"applied": []}


def test_a_role_that_would_serve_an_empty_search_index_refuses_to_start(
    services: Services, fresh_database: str, tmp_path: Path
) -> None:
    env = _env(fresh_database, services.nats_url, tmp_path, uuid.uuid4().hex[:8])
    for role in ("read-api", "api"):
        done = _exit_of([role], env)
        assert done.returncode == 2, done.stderr[-2000:]
        assert "KF_QDRANT_URL" in done.stderr and "kf serve" in done.stderr
