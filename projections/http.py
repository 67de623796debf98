"""What read models' routers share: their view from the app, read-your-writes waits, status.

The composition root puts every read model's view in ``app.state.views`` (by
name) and the event logs' heads in ``app.state.event_logs``; routers take them
through these dependencies, never by building anything.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Annotated, Any, Protocol, TypedDict, TypeVar, Unpack

import structlog
from fastapi import Depends, Query, Request

from domain.access import Principal
from domain.activity import ReadKind
from infra.web import ApiError
from projections.base import ProjectionView
from projections.status import ComponentStatus

log = structlog.get_logger(__name__)

V = TypeVar("V", bound=ProjectionView)


def view_of(name: str, kind: type[V]) -> Callable[[Request], V]:
    """A dependency giving the live view of the read model ``name``."""

    def dependency(request: Request) -> V:
        view = request.app.state.views[name]
        if not isinstance(view, kind):
            raise TypeError(f"the {name} read model's view is a {type(view).__name__}")
        return view

    return dependency


class ReadModels:
    """What the read side may ask of the rest: heads, status, waiting."""

    def __init__(self, request: Request) -> None:
        self._state = request.app.state

    def head(self, context: str) -> int:
        head: int = self._state.event_logs[context].head()
        return head

    def status(self) -> list[ComponentStatus]:
        statuses: list[ComponentStatus] = self._state.projection_status()
        return statuses

    def wait(self, view_name: str, context: str, min_position: int | None) -> None:
        """Read-your-writes: wait (bounded) until ``view_name`` has applied ``min_position``."""
        if min_position is None:
            return
        if min_position > self.head(context):
            raise ApiError(
                422, "invalid_position", f"min_position {min_position} is beyond the newest event."
            )
        view = self._state.views[view_name]
        timeout = self._state.settings.api.read_wait_timeout_s
        if not view.wait_for(context, min_position, timeout):
            raise ApiError(
                503,
                "read_model_behind",
                f"The {view_name} read model has not reached position {min_position} "
                f"within {timeout}s; retry shortly.",
                {"Retry-After": "1"},
            )


class ReadRecorder(Protocol):
    """The port through which reads are recorded (the activity context's ``record_read``)."""

    def __call__(
        self,
        *,
        tenant_id: str,
        actor: str,
        role: str,
        kind: ReadKind,
        route: str,
        query: str | None = None,
        documents: Sequence[str] = (),
        chunks: Sequence[str] = (),
        mode: str | None = None,
        query_sha256: str | None = None,
    ) -> Any: ...


# Reads being recorded while their responses are made (``Reads.start``): a thread each,
# as many as requests a server runs at once; concurrent ones commit together anyway.
_RECORDING = ThreadPoolExecutor(max_workers=32, thread_name_prefix="read-record")


class ReadShown(TypedDict, total=False):
    """What a read showed, as ``Reads`` records it (see ``ReadRecorder``)."""

    query: str | None
    documents: Sequence[str]
    chunks: Sequence[str]
    mode: str | None
    query_sha256: str | None


class PendingRead:
    """A read whose record is being written: ``wait`` before its response leaves."""

    def __init__(self, future: Future[None]) -> None:
        self._future = future

    def wait(self) -> None:
        """Return once the record is durable; raise the 503 if it could not be written."""
        self._future.result()


class Reads:
    """What a read showed, recorded before its response leaves: if the record cannot be
    written, the read is refused with 503 (fail closed) and nothing is shown."""

    def __init__(self, request: Request) -> None:
        self._request = request

    def record(self, principal: Principal, kind: ReadKind, **read: Unpack[ReadShown]) -> None:
        self._recording(principal, kind, read)()

    def start(self, principal: Principal, kind: ReadKind, **read: Unpack[ReadShown]) -> PendingRead:
        """``record``, in a thread of its own, so that the caller goes on making the
        response meanwhile; it must ``wait`` before the response leaves. Start it once
        what the response shows is known: should making the response fail after that,
        the read stays recorded though it was not shown."""
        recording = self._recording(principal, kind, read)
        started = threading.Event()

        def record() -> None:
            started.set()
            recording()

        # The request's context (its cause: request id, client, user agent) goes along.
        pending = PendingRead(_RECORDING.submit(contextvars.copy_context().run, record))
        # Give the recording thread the interpreter until its append waits for the server:
        # otherwise it waits for it until this thread's next pause (after the response is
        # made, up to the interpreter's 5 ms switch interval), and nothing overlaps.
        started.wait()
        return pending

    def _recording(
        self, principal: Principal, kind: ReadKind, read: ReadShown
    ) -> Callable[[], None]:
        recorder: ReadRecorder = self._request.app.state.read_recorder
        route = getattr(self._request.scope.get("route"), "path", self._request.url.path)

        def attempt() -> None:
            recorder(
                tenant_id=principal.tenant_id,
                actor=principal.actor,
                role=principal.role.value,
                kind=kind,
                route=route,
                query=read.get("query"),
                documents=[str(d) for d in read.get("documents", ())],
                chunks=[str(c) for c in read.get("chunks", ())],
                mode=read.get("mode"),
                query_sha256=read.get("query_sha256"),
            )

        def recording() -> None:
            try:
                try:
                    attempt()
                except Exception:
                    # Once more: a connection can fail the first statement after the
                    # database recovered (psycopg's prepared statements); a read recorded
                    # twice says no more than it happened, one not recorded is lost.
                    log.warning("read_record_retry", kind=kind.value, route=route, exc_info=True)
                    attempt()
            except Exception as exc:
                log.exception("read_not_recorded", kind=kind.value, route=route)
                raise ApiError(
                    503,
                    "read_not_recorded",
                    "The read could not be recorded, so it is not served; retry shortly.",
                    {"Retry-After": "1"},
                ) from exc

        return recording


MinPosition = Annotated[
    int | None,
    Query(ge=0, description="Wait (bounded) until the read model has applied this position."),
]
Models = Annotated[ReadModels, Depends(ReadModels)]
ReadLog = Annotated[Reads, Depends(Reads)]
