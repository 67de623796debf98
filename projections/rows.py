"""Where a projection's handlers write: rows of named tables, in PostgreSQL or in memory.

Handlers that only insert, update, delete and select rows by column values
(``Rows``) run unchanged against PostgreSQL (``PostgresRows``, inside the
transaction that records the read model's position) and against plain
dictionaries (``MemoryRows``, for unit tests of the projection's logic and for
replays held in memory). Tables are named logically; ``PostgresRows`` maps
them to the physical tables of the live read model or of a copy being rebuilt.

Values: ``dict`` and ``list`` are stored as ``jsonb``; in a match, ``None``
means ``IS NULL``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composable, Composed, Identifier, Placeholder
from psycopg.types.json import Jsonb

Row = dict[str, Any]


class Rows(Protocol):
    def insert(self, table: str, row: Mapping[str, Any]) -> None:
        """Add a row; a row with the same primary key already there is an error."""

    def insert_many(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Add rows with the same columns at once (one round trip in PostgreSQL)."""

    def insert_batched(self, table: str, row: Mapping[str, Any]) -> None:
        """Add a row with the rest of the batch's: in PostgreSQL sent with the batch's other
        queued statements when it ends, or as soon as anything else touches ``table``, so
        what a handler reads or changes afterwards is the same as after ``insert``."""

    def update(self, table: str, match: Mapping[str, Any], values: Mapping[str, Any]) -> int:
        """Set ``values`` on the rows whose columns equal ``match``; how many changed."""

    def delete(self, table: str, match: Mapping[str, Any]) -> int:
        """Remove the rows whose columns equal ``match``; how many went."""

    def select(self, table: str, match: Mapping[str, Any]) -> list[Row]:
        """The rows whose columns equal ``match``."""

    def delete_before(self, table: str, match: Mapping[str, Any], column: str, bound: Any) -> int:
        """Remove the rows whose columns equal ``match`` and whose ``column`` is below
        ``bound``; how many went."""


class DuplicateRowError(RuntimeError):
    """An insert met a row with the same primary key (PostgreSQL's unique violation)."""


class CopyRows(Composed):
    """A ``COPY … FROM STDIN`` queued in ``BatchWrites``: what is queued under it is rows."""


class BatchWrites:
    """Statements a batch's handlers queue, sent in order after them.

    One round trip per run of identical statements instead of one per event:
    replays and rebuilds apply thousands of events per second this way. A run of
    statements is sent with ``executemany``; a run of rows (``copy``) is copied in.
    """

    def __init__(self) -> None:
        self._queue: list[tuple[Composed, tuple[Any, ...]]] = []
        self.tables: set[str] = set()  # tables with rows queued by ``insert_batched``
        self._copies: dict[tuple[str, tuple[str, ...]], CopyRows] = {}

    def add(self, statement: Composed, params: tuple[Any, ...]) -> None:
        self._queue.append((statement, params))

    def copy(self, key: tuple[str, tuple[str, ...]], make: Callable[[], Composed]) -> CopyRows:
        """The one ``COPY … FROM STDIN`` statement for ``key``: what is queued under it is
        rows, sent with ``COPY`` (the server takes them as one statement, and psycopg
        formats them in C, where ``executemany`` runs the pipeline's Python per row)."""
        found = self._copies.get(key)
        if found is None:
            found = self._copies[key] = CopyRows([make()])
        return found

    def clear(self) -> None:
        """Forget what is queued (a batch that failed leaves nothing for the next one)."""
        self._queue = []
        self.tables = set()

    def flush(self, curs: Cursor[DictRow]) -> None:
        queue, self._queue = self._queue, []
        self.tables = set()
        start = 0
        while start < len(queue):
            end = start
            while end < len(queue) and queue[end][0] is queue[start][0]:
                end += 1
            statement = queue[start][0]
            if isinstance(statement, CopyRows):
                with curs.copy(statement) as copy:
                    for _, params in queue[start:end]:
                        copy.write_row(params)
            else:
                curs.executemany(statement, [params for _, params in queue[start:end]])
            start = end


def _value(value: Any) -> Any:
    return Jsonb(value) if isinstance(value, dict | list) else value


def _conditions(match: Mapping[str, Any]) -> tuple[Composable, list[Any]]:
    parts: list[Composable] = []
    params: list[Any] = []
    for column, value in match.items():
        if value is None:
            parts.append(SQL("{} IS NULL").format(Identifier(column)))
        else:
            parts.append(SQL("{} = %s").format(Identifier(column)))
            params.append(_value(value))
    return SQL(" AND ").join(parts) if parts else SQL("TRUE"), params


class PostgresRows:
    """``Rows`` on a cursor inside the batch's transaction, plus what SQL-level handlers need."""

    def __init__(
        self, curs: Cursor[DictRow], physical: Callable[[str], str], writes: BatchWrites
    ) -> None:
        self.cursor = curs
        self.physical = physical
        self.writes = writes

    def _table(self, table: str) -> Identifier:
        return Identifier(self.physical(table))

    def _insert_statement(self, table: str, columns: Sequence[str]) -> Composed:
        return SQL("INSERT INTO {} ({}) VALUES ({})").format(
            self._table(table),
            SQL(", ").join(Identifier(c) for c in columns),
            SQL(", ").join(Placeholder() for _ in columns),
        )

    def _settle(self, table: str) -> None:
        """Send what is queued before a statement on a table with rows queued."""
        if table in self.writes.tables:
            self.writes.flush(self.cursor)

    def insert(self, table: str, row: Mapping[str, Any]) -> None:
        self._settle(table)
        columns = list(row)
        statement = self._insert_statement(table, columns)
        self.cursor.execute(statement, [_value(row[c]) for c in columns])

    def insert_batched(self, table: str, row: Mapping[str, Any]) -> None:
        """Queued: the batch's rows of ``table`` go in one ``COPY`` (a run of them, between
        other queued statements), rather than a statement per handler call."""
        columns = tuple(row)
        statement = self.writes.copy(
            (table, columns),
            lambda: SQL("COPY {} ({}) FROM STDIN").format(
                self._table(table), SQL(", ").join(Identifier(c) for c in columns)
            ),
        )
        self.writes.add(statement, tuple(_value(row[c]) for c in columns))
        self.writes.tables.add(table)

    def insert_many(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """One ``INSERT … VALUES (…), (…)`` statement (``executemany`` costs a Python
        round of the pipeline per row)."""
        if not rows:
            return
        self._settle(table)
        columns = list(rows[0])
        one = SQL("({})").format(SQL(", ").join(Placeholder() for _ in columns))
        statement = SQL("INSERT INTO {} ({}) VALUES {}").format(
            self._table(table),
            SQL(", ").join(Identifier(c) for c in columns),
            SQL(", ").join(one for _ in rows),
        )
        self.cursor.execute(statement, [_value(r[c]) for r in rows for c in columns])

    def update(self, table: str, match: Mapping[str, Any], values: Mapping[str, Any]) -> int:
        self._settle(table)
        where, where_params = _conditions(match)
        statement = SQL("UPDATE {} SET {} WHERE {}").format(
            self._table(table),
            SQL(", ").join(SQL("{} = %s").format(Identifier(c)) for c in values),
            where,
        )
        self.cursor.execute(statement, [*(_value(v) for v in values.values()), *where_params])
        return self.cursor.rowcount

    def delete(self, table: str, match: Mapping[str, Any]) -> int:
        self._settle(table)
        where, params = _conditions(match)
        statement = SQL("DELETE FROM {} WHERE {}").format(self._table(table), where)
        self.cursor.execute(statement, params)
        return self.cursor.rowcount

    def select(self, table: str, match: Mapping[str, Any]) -> list[Row]:
        self._settle(table)
        where, params = _conditions(match)
        statement = SQL("SELECT * FROM {} WHERE {}").format(self._table(table), where)
        return [dict(row) for row in self.cursor.execute(statement, params).fetchall()]

    def delete_before(self, table: str, match: Mapping[str, Any], column: str, bound: Any) -> int:
        self._settle(table)
        where, params = _conditions(match)
        statement = SQL("DELETE FROM {} WHERE {} AND {} < %s").format(
            self._table(table), where, Identifier(column)
        )
        self.cursor.execute(statement, [*params, _value(bound)])
        return self.cursor.rowcount


def postgres(rows: Rows) -> PostgresRows:
    """The PostgreSQL side of ``rows``, for handlers that need more than rows (COPY, batches)."""
    if not isinstance(rows, PostgresRows):
        raise TypeError("this projection writes with SQL; it runs in PostgreSQL only")
    return rows


class MemoryRows:
    """``Rows`` in dictionaries, keyed by each table's primary key."""

    def __init__(self, tables: Mapping[str, tuple[str, ...]]) -> None:
        self.keys = dict(tables)
        self.tables: dict[str, dict[tuple[Any, ...], Row]] = {name: {} for name in tables}

    def _rows(self, table: str) -> dict[tuple[Any, ...], Row]:
        if table not in self.tables:
            raise KeyError(f"no table {table!r}; the projection declares {sorted(self.tables)}")
        return self.tables[table]

    @staticmethod
    def _matches(row: Row, match: Mapping[str, Any]) -> bool:
        return all(row.get(column) == value for column, value in match.items())

    def insert(self, table: str, row: Mapping[str, Any]) -> None:
        rows = self._rows(table)
        key = tuple(row[column] for column in self.keys[table])
        if key in rows:
            raise DuplicateRowError(f"{table}: a row with key {key} exists")
        rows[key] = copy.deepcopy(dict(row))

    def insert_many(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        for row in rows:
            self.insert(table, row)

    def insert_batched(self, table: str, row: Mapping[str, Any]) -> None:
        self.insert(table, row)

    def update(self, table: str, match: Mapping[str, Any], values: Mapping[str, Any]) -> int:
        changed = [row for row in self._rows(table).values() if self._matches(row, match)]
        for row in changed:
            row.update(copy.deepcopy(dict(values)))
        return len(changed)

    def delete(self, table: str, match: Mapping[str, Any]) -> int:
        rows = self._rows(table)
        gone = [key for key, row in rows.items() if self._matches(row, match)]
        for key in gone:
            del rows[key]
        return len(gone)

    def select(self, table: str, match: Mapping[str, Any]) -> list[Row]:
        return [
            copy.deepcopy(row) for row in self._rows(table).values() if self._matches(row, match)
        ]

    def delete_before(self, table: str, match: Mapping[str, Any], column: str, bound: Any) -> int:
        rows = self._rows(table)
        gone = [
            key
            for key, row in rows.items()
            if self._matches(row, match) and row[column] is not None and row[column] < bound
        ]
        for key in gone:
            del rows[key]
        return len(gone)

    def snapshot(self) -> dict[str, dict[tuple[Any, ...], Row]]:
        return copy.deepcopy(self.tables)

    def restore(self, snapshot: dict[str, dict[tuple[Any, ...], Row]]) -> None:
        self.tables = snapshot
