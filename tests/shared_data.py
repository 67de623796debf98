"""Where the shared real-world test data lives (documents, SciFact).

``KF_SHARED_DATA`` names the ``data`` directory explicitly. Otherwise the
``shared/data`` directory beside this checkout is used, then the one in the
workspace this project is developed in. Missing data fails the tests that need
it: the real documents are part of the product's test contract.
"""

from __future__ import annotations

import os
from pathlib import Path

_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "shared" / "data",
    Path("/work/shared/data"),
)


def shared_data() -> Path:
    override = os.environ.get("KF_SHARED_DATA")
    if override:
        return Path(override)
    for candidate in _CANDIDATES:
        if (candidate / "documents" / "MANIFEST.tsv").exists():
            return candidate
    return _CANDIDATES[0]


SHARED_DATA = shared_data()
DOCUMENTS = SHARED_DATA / "documents"
SCIFACT = SHARED_DATA / "scifact"
