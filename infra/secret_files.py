"""Secret files made once, whole, by whichever process of a data directory comes first.

Several processes of one data directory (``kf serve`` children, or roles started
together) may each find a key file missing and make one. Creating the file with
``O_EXCL`` and then writing it leaves a moment in which another process reads
it empty or half-written; instead the secret is written to a private temporary
file, flushed, and *linked* to its name: ``link`` fails if the name exists and
otherwise makes it appear with its whole content at once. The loser of the race
reads the winner's file, so every process uses the same secret.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def create_once(path: Path, content: bytes) -> bytes:
    """What ``path`` holds: ``content``, written there (mode 0600) if nothing was there yet."""
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return path.read_bytes()  # another process made it first: use theirs
        return content
    finally:
        temporary.unlink(missing_ok=True)


def replace_atomically(path: Path, content: bytes, *, mode: int = 0o600) -> None:
    """``path`` holds ``content`` (``mode``): a reader sees the old file or the new, never a mix."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
