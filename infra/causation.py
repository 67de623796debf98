"""What caused a command: the HTTP request (its id, client address and user agent), or
the process (a worker, the CLI) when no request did.

The API's request middleware opens a ``caused_by`` scope around each request;
role processes name themselves once with ``set_process``. Commands attach
``current()`` to every event they record, as its metadata (see
``commands/base.py``), and the envelope carries it to every consumer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

Cause = dict[str, str]

_REQUEST: ContextVar[Cause | None] = ContextVar("kf_request_cause", default=None)
_process: Cause = {}
_MAX_CHARS = 300


def _clean(value: str | None) -> str | None:
    """A header value fit to record: printable, bounded, never empty."""
    if not value:
        return None
    printable = "".join(c for c in value if c.isprintable())[:_MAX_CHARS].strip()
    return printable or None


def set_process(name: str) -> None:
    """Name this process (``worker:<host>:<pid>``, ``cli:<host>``) for commands no
    request caused."""
    _process.clear()
    if name:
        _process["process"] = name


@contextlib.contextmanager
def caused_by(
    *, request_id: str | None, client_address: str | None, user_agent: str | None
) -> Iterator[None]:
    cause = {
        key: cleaned
        for key, value in (
            ("request_id", request_id),
            ("client_address", client_address),
            ("user_agent", user_agent),
        )
        if (cleaned := _clean(value)) is not None
    }
    token = _REQUEST.set(cause)
    try:
        yield
    finally:
        _REQUEST.reset(token)


def current() -> Cause:
    """The request's cause inside one, else the process's (possibly empty)."""
    request = _REQUEST.get()
    return dict(request) if request is not None else dict(_process)
