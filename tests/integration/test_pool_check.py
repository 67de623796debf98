"""Pools lend a connection without a ping when its socket is quiet, and replace one the
server has closed before anyone gets it."""

from __future__ import annotations

import socket
import time
from typing import Any

import psycopg
import pytest

from infra.blobs import READS_RECORDER
from infra.db import check_idle_connection, open_pool


class _Conn:
    """Just enough of a psycopg connection for the check: a socket and execute()."""

    def __init__(self, sock: socket.socket) -> None:
        self.closed = False
        self.autocommit = True
        self.sock = sock
        self.executed: list[Any] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def execute(self, query: Any) -> None:
        self.executed.append(query)


def test_a_quiet_socket_is_lent_without_a_round_trip_and_a_readable_one_is_pinged() -> None:
    ours, servers = socket.socketpair()
    try:
        conn = _Conn(ours)
        check_idle_connection(conn)  # type: ignore[arg-type]
        assert conn.executed == []
        servers.sendall(b"E")  # the server said something (its goodbye, say)
        check_idle_connection(conn)  # type: ignore[arg-type]
        assert conn.executed == [""]
        conn.closed = True
        with pytest.raises(psycopg.OperationalError):
            check_idle_connection(conn)  # type: ignore[arg-type]
    finally:
        ours.close()
        servers.close()


def test_a_connection_the_server_closed_is_replaced_before_it_is_lent(database_url: str) -> None:
    pool = open_pool(database_url, min_size=1, max_size=1, name="check-test")
    try:
        with pool.connection() as conn:
            first = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        time.sleep(0.5)  # the server's goodbye reaches the idle socket
        with pool.connection() as conn:
            second = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        assert second != first
    finally:
        pool.close()


def test_query_blobs_are_stored_with_the_read_that_names_them(make_container: Any) -> None:
    from domain.activity import ReadKind

    container = make_container()
    assert container.activity.env["APPLICATION_RECORDER_TOPIC"] == READS_RECORDER
    query = f"what does the heron eat {time.time_ns()}"
    result = container.activity.record_read(
        tenant_id="t", actor="key:x", role="viewer", kind=ReadKind.SEARCH,
        route="/v1/search", query=query,
    )  # fmt: skip
    [read] = [e for b in container.event_logs["activity"].read_all(0) for e in b
              if e.position == result.position]  # fmt: skip
    assert container.blobs.get("t", read.data["query_sha256"]) == query.encode()
