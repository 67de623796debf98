"""Parsing untrusted files in a child process with a memory cap and a deadline.

A hostile or broken file must end as ``Document.Failed`` with a reason, never
as a stuck or killed worker. The worker therefore parses in a long-lived child
process (started with ``spawn``: it inherits no threads, no model, no
connections) whose address space is capped with ``RLIMIT_AS``; each parse
has a wall-clock deadline. A child that overruns its deadline is killed, one
that runs out of memory dies or raises; either way the parent turns it into a
``ParseError`` and starts a fresh child for the next document.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import structlog

from processors.parse import ParsedDocument, ParseError, ParseLimits, parse_document

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 60.0
    max_memory_mb: int = 2048  # the child's whole address space, libraries included


ParseFunction = Callable[[bytes, str, ParseLimits], ParsedDocument]


def _child(
    conn: Connection, parse: ParseFunction, parse_limits: ParseLimits, max_memory_bytes: int
) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (max_memory_bytes, max_memory_bytes))
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        content, media_type = request
        try:
            result: ParsedDocument | ParseError = parse(content, media_type, parse_limits)
        except ParseError as error:
            result = error
        except MemoryError:
            result = ParseError(
                "too_large",
                f"Parsing needed more than the {max_memory_bytes // (1024 * 1024)} MB of "
                "memory allowed; the file is too large or built to exhaust parsers.",
            )
        except Exception as error:  # a bug, not the file's fault: the worker retries
            conn.send(_Crash(f"{type(error).__name__}: {error}"))
            continue
        conn.send(result)


@dataclass(frozen=True)
class _Crash:
    detail: str


class ParserCrashedError(RuntimeError):
    """The parser raised something unexpected: handled like any stage crash (redelivery)."""


class ParseSandbox:
    """Parses one document at a time in a resource-limited child process."""

    def __init__(
        self,
        parse_limits: ParseLimits,
        limits: SandboxLimits,
        parse: ParseFunction = parse_document,  # module-level: the child imports it by name
    ) -> None:
        self._parse_limits = parse_limits
        self._parse_function = parse
        self._limits = limits
        self._context = multiprocessing.get_context("spawn")
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def parse(self, content: bytes, media_type: str) -> ParsedDocument:
        with self._lock:
            conn = self._ensure_child()
            try:
                conn.send((content, media_type))
                if not conn.poll(self._limits.timeout_s):
                    self._stop_child()
                    raise ParseError(
                        "too_complex",
                        f"Parsing did not finish within {self._limits.timeout_s:g} s; the file "
                        "is too complex or built to exhaust parsers.",
                    )
                result = conn.recv()
            except (EOFError, OSError):
                # The child died: the kernel killed it, or an allocation failed
                # where it cannot be caught (inside the PDF library).
                self._stop_child()
                raise ParseError(
                    "too_large",
                    "The parser ran out of its "
                    f"{self._limits.max_memory_mb} MB of memory (or crashed) on this file.",
                ) from None
        if isinstance(result, ParseError):
            raise result
        if isinstance(result, _Crash):
            raise ParserCrashedError(result.detail)
        assert isinstance(result, ParsedDocument)
        return result

    def _ensure_child(self) -> Connection:
        if self._process is not None and self._process.is_alive() and self._conn is not None:
            return self._conn
        self._stop_child()
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_child,
            args=(
                child,
                self._parse_function,
                self._parse_limits,
                self._limits.max_memory_mb * 1024 * 1024,
            ),
            name="kf-parse-sandbox",
            daemon=True,
        )
        process.start()
        child.close()
        self._process, self._conn = process, parent
        return parent

    def _stop_child(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(5)
            self._process = None

    def close(self) -> None:
        with self._lock:
            self._stop_child()
