"""Where the shared real-world test data lives (documents, SciFact).

``KF_SHARED_DATA`` names the ``data`` directory explicitly. Otherwise the
``shared/data`` directory beside this checkout is used, then the one in the
workspace this project is developed in. Missing data fails the tests that need
it: the real documents are part of the product's test contract.
"""

from __future__ import annotations

import csv
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


def manifest() -> list[dict[str, str]]:
    """The documents' MANIFEST.tsv rows.

    Tests read it at collection on purpose: without the fixtures the run must
    fail, not pass with nothing tested.
    """
    path = DOCUMENTS / "MANIFEST.tsv"
    if not path.is_file():
        raise FileNotFoundError(
            f"shared test documents missing: {path} does not exist; "
            "set KF_SHARED_DATA to the shared data directory"
        )
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))
