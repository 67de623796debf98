"""Key files made by several processes at once: every process reads one whole key.

`kf serve` children and roles started together each make the data directory's
key files if they are missing. A reader must never see a file that another
process has created but not yet written (CI once saw an audit signing key read
empty: "Unable to load PEM file ... MalformedFraming").
"""

from __future__ import annotations

import multiprocessing
import os
import stat
from collections.abc import Callable
from pathlib import Path

from infra.crypto import MasterKey
from infra.secret_files import create_once, replace_atomically
from infra.signing import Signer
from infra.tokens import _development_secret

ROUNDS = 40
RACERS = 6


def _signer(path: str) -> str:
    return Signer.load_or_create(Path(path)).key_id


def _master(path: str) -> str:
    return MasterKey.load_or_create(Path(path)).key_id


def _jwt(directory: str) -> str:
    return _development_secret(Path(directory))


def _race(tmp_path: Path, name: str, make: Callable[[str], str]) -> None:
    context = multiprocessing.get_context("fork")
    with context.Pool(RACERS) as pool:
        for number in range(ROUNDS):
            target = tmp_path / f"{name}-{number}"
            results = pool.map(make, [str(target)] * RACERS)
            assert len(set(results)) == 1, results
            assert all(results)


def test_a_signing_key_made_by_racing_processes_is_one_whole_key(tmp_path: Path) -> None:
    _race(tmp_path, "audit-signing-key", _signer)


def test_a_master_key_made_by_racing_processes_is_one_whole_key(tmp_path: Path) -> None:
    _race(tmp_path, "master-key", _master)


def test_a_development_jwt_secret_made_by_racing_processes_is_one_secret(tmp_path: Path) -> None:
    _race(tmp_path, "jwt", _jwt)


def test_create_once_keeps_what_is_there_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "key"
    assert create_once(path, b"first") == b"first"
    assert create_once(path, b"second") == b"first"
    assert path.read_bytes() == b"first"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["key"]


def test_replace_atomically_swaps_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "key.pub"
    path.write_text("old")
    replace_atomically(path, b"new", mode=0o644)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.pub"]
