"""Files a test looks through for what must not be there (erasure canaries)."""

from __future__ import annotations

import os
from pathlib import Path


def files_with(directory: Path, needle: bytes) -> list[str]:
    """The files under ``directory`` that contain ``needle`` (an old index may be removed
    while this walks it: what vanishes is skipped)."""
    found = []
    for root, _, names in os.walk(directory):
        for name in names:
            path = Path(root, name)
            try:
                if needle in path.read_bytes():
                    found.append(str(path))
            except FileNotFoundError:
                continue
    return found
