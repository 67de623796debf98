"""Data keys in PostgreSQL: made with what they seal, destroyed with the erasure, rewrapped
by a new master key, and a program started with the wrong master key stops at once."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from config.root import Container
from domain.activity import ReadKind
from infra.blobs import sha256_hex
from infra.crypto import (
    KeyStore,
    MasterKey,
    SubjectErasedError,
    WrongMasterKeyError,
    destroy_keys,
    document_key,
    read_key,
    turn_key,
)


@pytest.fixture(scope="module")
def container(make_container: Callable[..., Container]) -> Iterator[Container]:
    yield make_container()


def _tenant() -> str:
    return str(uuid.uuid4())


def _upload(container: Container, tenant: str, content: bytes, name: str) -> uuid.UUID:
    result = container.documents.upload_document(
        tenant_id=tenant, actor="key:test", filename=name, declared_type=None, content=content
    )
    return result.id


def _erase(container: Container, tenant: str, document_id: uuid.UUID) -> None:
    container.documents.erase_document(tenant_id=tenant, actor="key:admin", document_id=document_id)


def test_erasing_destroys_the_key_its_blobs_and_every_key_that_quotes_it(
    container: Container,
) -> None:
    tenant = _tenant()
    quoted = _upload(
        container, tenant, b"the quoted document " + uuid.uuid4().hex.encode(), "q.txt"
    )
    other = _upload(container, tenant, b"another document " + uuid.uuid4().hex.encode(), "o.txt")
    keys = container.keys
    conversation = uuid.uuid4()
    quoting = keys.create(tenant, turn_key(conversation, 1), quotes=[document_key(quoted)])
    unrelated = keys.create(tenant, turn_key(conversation, 2), quotes=[document_key(other)])
    container.blobs.put(tenant, b"a prompt that quotes it", quoting)
    assert keys.quoted_by([quoting.key_id]) == {document_key(quoted)}

    _erase(container, tenant, quoted)
    present = keys.get_many([document_key(quoted), quoting.key_id, unrelated.key_id])
    assert set(present) == {unrelated.key_id}
    assert keys.erased([document_key(quoted), quoting.key_id]) == {
        document_key(quoted), quoting.key_id,
    }  # fmt: skip
    with container._blob_pool.connection() as conn:
        left = conn.execute(
            "SELECT count(*) FROM blobs WHERE key_id = ANY(%s)",
            ([document_key(quoted), quoting.key_id],),
        ).fetchone()
    assert left == (0,)
    # Nothing can be sealed again for what is erased, nor quote it.
    with pytest.raises(SubjectErasedError):
        keys.create(tenant, turn_key(conversation, 3), quotes=[document_key(quoted)])
    with pytest.raises(SubjectErasedError):
        keys.create(tenant, quoting.key_id)
    # A worker that still holds the key in memory stores no blob with it any more.
    container.blobs.put(tenant, b"parsed pages, late", quoting)
    with container._blob_pool.connection() as conn:
        late = conn.execute(
            "SELECT count(*) FROM blobs WHERE sha256 = %s", (sha256_hex(b"parsed pages, late"),)
        ).fetchone()
    assert late == (0,)
    document = container.documents.get_document(tenant, quoted)
    assert document.is_erased and document.is_deleted
    again = container.documents.erase_document(
        tenant_id=tenant, actor="key:admin", document_id=quoted
    )
    assert not again.changed


def test_a_key_quoting_a_document_waits_for_an_erasure_in_flight_and_then_is_refused(
    container: Container,
) -> None:
    """``insert_key`` locks what it quotes FOR SHARE: an erasure committing meanwhile wins."""
    tenant = _tenant()
    document = _upload(container, tenant, b"raced " + uuid.uuid4().hex.encode(), "r.txt")
    key, wrapped = container.keys.new_key(turn_key(uuid.uuid4(), 1))
    outcome: list[object] = []
    with container._blob_pool.connection() as eraser, eraser.transaction():
        with eraser.cursor() as curs:
            destroy_keys(curs, tenant, document_key(document))

        def make() -> None:
            try:
                with (
                    container._blob_pool.connection() as conn,
                    conn.transaction(),
                    conn.cursor() as curs,
                ):
                    container.keys.insert_key(
                        curs, tenant, key, wrapped, quotes=[document_key(document)]
                    )
                outcome.append("made")
            except SubjectErasedError as exc:
                outcome.append(exc)

        maker = threading.Thread(target=make)
        maker.start()
        time.sleep(0.5)
        assert not outcome  # blocked on the erasure's row lock
    maker.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], SubjectErasedError)
    assert container.keys.get_many([key.key_id]) == {}


def test_rotating_the_master_key_rewraps_every_data_key_and_the_old_one_is_refused(
    container: Container,
) -> None:
    tenant = _tenant()
    document = _upload(container, tenant, b"rotate me " + uuid.uuid4().hex.encode(), "rot.txt")
    before = container.documents.data_key(document)
    assert before is not None
    old_master = container.keys.master
    new_master = MasterKey(os.urandom(32))
    rewrapped = container.keys.rotate_master(new_master)
    assert rewrapped >= 1
    assert container.documents.data_key(document) == before  # the same data key, rewrapped
    events = list(container.documents.events.get(document))
    assert before.open_text(events[0].filename) == "rot.txt"  # events untouched
    with pytest.raises(WrongMasterKeyError, match="not the one"):
        KeyStore(container._blob_pool, old_master).check_master()
    KeyStore(container._blob_pool, new_master).check_master()
    container.keys.rotate_master(old_master)  # back, for the module's other tests


def _kf(
    container: Container, *args: str, master: str, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KF")}
    env.update({
        "KF_DATABASE_URL": container.settings.database.url,
        "KF_DATA_DIR": str(container.settings.data_dir),
        "KF_MASTER_KEY": master,
        **(extra or {}),
    })  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "config.cli", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _master_text(container: Container) -> str:
    path: Path = container.settings.data_dir.resolve() / "master-key"
    return path.read_text().strip()


def test_the_wrong_master_key_stops_the_program_at_start_with_a_clear_message(
    container: Container,
) -> None:
    wrong = base64.b64encode(os.urandom(32)).decode()
    refused = _kf(container, "tenants", "list", master=wrong)
    assert refused.returncode == 2
    assert "kf: refusing to start: the configured master key" in refused.stderr
    assert "Traceback" not in refused.stderr
    malformed = _kf(container, "tenants", "list", master="c2hvcnQ=")
    assert malformed.returncode == 2 and "must be 32 bytes" in malformed.stderr
    assert _kf(container, "tenants", "list", master=_master_text(container)).returncode == 0


def test_kf_documents_erase_prints_the_erasure_and_its_certificate_verifies_offline(
    container: Container, tmp_path: Path
) -> None:
    tenant = str(container.access.ensure_tenant(name="erasing", actor="test").id)
    document = _upload(
        container, tenant, b"erase from the cli " + uuid.uuid4().hex.encode(), "cli.txt"
    )
    master = _master_text(container)
    erased = _kf(container, "documents", "erase", "--tenant", "erasing", str(document),
                 master=master)  # fmt: skip
    assert erased.returncode == 0, erased.stderr[-2000:]
    assert json.loads(erased.stdout)["changed"] is True
    assert container.documents.get_document(tenant, document).is_erased
    certificate = _kf(container, "documents", "erasure", "--tenant", "erasing", str(document),
                      master=master)  # fmt: skip
    assert certificate.returncode == 0, certificate.stderr[-2000:]
    signed = json.loads(certificate.stdout)
    assert signed["certificate"]["keys_destroyed"] == [document_key(document)]
    # No projector runs in this module: the read models have not confirmed yet.
    assert signed["certificate"]["complete"] is False
    assert "catalog" in signed["certificate"]["pending_read_models"]
    saved = tmp_path / "certificate.json"
    saved.write_text(certificate.stdout)
    checked = _kf(container, "documents", "verify-erasure", str(saved), master="")
    assert checked.returncode == 0 and checked.stdout.startswith("intact:"), checked.stderr
    signed["certificate"]["erased_by"] = "someone else"
    saved.write_text(json.dumps(signed))
    tampered = _kf(container, "documents", "verify-erasure", str(saved), master="")
    assert tampered.returncode == 1 and "was changed" in tampered.stderr


def test_kf_retention_run_empties_the_trash_and_says_what_it_erased(
    container: Container,
) -> None:
    tenant = str(container.access.ensure_tenant(name="trashing", actor="test").id)
    document = _upload(container, tenant, b"in the trash " + uuid.uuid4().hex.encode(), "t.txt")
    container.documents.delete_document(tenant_id=tenant, actor="key:test", document_id=document)
    catalog = container.views["catalog"]
    catalog.catch_up_from(container.event_logs)  # no projector runs in this module
    master = _master_text(container)
    env_days = {"KF__RETENTION__DELETED_DAYS": "0"}
    dry = _kf(container, "retention", "run", "--tenant", "trashing", "--dry-run",
              master=master, extra=env_days)  # fmt: skip
    assert dry.returncode == 0, dry.stderr[-2000:]
    summary = json.loads(dry.stdout)
    assert summary["dry_run"] is True and summary["erased"] == [str(document)]
    assert not container.documents.get_document(tenant, document).is_erased
    done = _kf(container, "retention", "run", "--tenant", "trashing", master=master,
               extra=env_days)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["trash_erased"] == 1
    erased = container.documents.get_document(tenant, document)
    assert erased.is_erased
    # Kept 30 days by default: a document deleted now is not due yet.
    fresh = _upload(container, tenant, b"just deleted " + uuid.uuid4().hex.encode(), "f.txt")
    container.documents.delete_document(tenant_id=tenant, actor="key:test", document_id=fresh)
    catalog.catch_up_from(container.event_logs)
    later = _kf(container, "retention", "run", "--tenant", "trashing", master=master)
    assert json.loads(later.stdout)["trash_erased"] == 0


def test_one_retention_runner_at_a_time_runs_the_job(container: Container) -> None:
    from datetime import UTC, datetime

    from commands.retention import RetentionReport, RetentionRunner
    from infra.db import SessionLock

    runs: list[str] = []

    class Counting:
        def __init__(self, name: str) -> None:
            self.name = name

        def run(self, now: datetime) -> RetentionReport:
            runs.append(self.name)
            return RetentionReport()

    key = f"kf.retention.test.{uuid.uuid4()}"
    runners = [
        RetentionRunner(
            Counting(name),  # type: ignore[arg-type]
            SessionLock(container.settings.database.url, key),
            0.05,
            lambda: datetime.now(UTC),
        )
        for name in ("a", "b")
    ]
    for runner in runners:
        runner.start()
    time.sleep(1)
    # What ran while both were running: stopping the holder releases the lock, and the
    # other, not yet stopped, may then take it and run once (as it should).
    seen = list(runs)
    for runner in runners:
        runner.stop()
    assert len(seen) >= 5 and len(set(seen)) == 1


def test_retention_runs_soon_after_start_not_a_whole_period_later(container: Container) -> None:
    """A process restarted more often than ``every_s`` must still run retention."""
    from datetime import UTC, datetime

    from commands.retention import RetentionReport, RetentionRunner
    from infra.db import SessionLock

    ran = threading.Event()

    class Once:
        def run(self, now: datetime) -> RetentionReport:
            ran.set()
            return RetentionReport()

    runner = RetentionRunner(
        Once(),  # type: ignore[arg-type]
        SessionLock(container.settings.database.url, f"kf.retention.test.{uuid.uuid4()}"),
        3600,
        lambda: datetime.now(UTC),
        first_after_s=0.05,
    )
    runner.start()
    try:
        assert ran.wait(5)
    finally:
        runner.stop()


def _read_sealing(container: Container, tenant: str, read_id: uuid.UUID) -> tuple[bool, int, int]:
    """Whether the read's key exists, how many documents it quotes, how many blobs it seals."""
    key = read_key(read_id)
    with container._blob_pool.connection() as conn:
        made = conn.execute("SELECT count(*) FROM data_keys WHERE key_id = %s", (key,)).fetchone()
        quotes = conn.execute(
            "SELECT count(*) FROM data_key_quotes WHERE key_id = %s", (key,)
        ).fetchone()
        blobs = conn.execute(
            "SELECT count(*) FROM blobs WHERE key_id = %s AND tenant_id = %s", (key, tenant)
        ).fetchone()
    assert made is not None and quotes is not None and blobs is not None
    return made[0] == 1, quotes[0], blobs[0]


def _search(container: Container, tenant: str, query: str, *documents: uuid.UUID) -> uuid.UUID:
    return container.activity.record_read(
        tenant_id=tenant,
        actor="key:test",
        role="viewer",
        kind=ReadKind.SEARCH,
        route="/v1/search",
        query=query,
        documents=[str(d) for d in documents],
    ).id


def test_a_read_seals_its_query_with_a_key_quoting_what_it_showed_unless_one_is_erased(
    container: Container,
) -> None:
    tenant = _tenant()
    kept = _upload(container, tenant, b"kept " + uuid.uuid4().hex.encode(), "k.txt")
    erased = _upload(container, tenant, b"gone " + uuid.uuid4().hex.encode(), "g.txt")
    before = _search(container, tenant, "what the erased one said", kept, erased)
    assert _read_sealing(container, tenant, before) == (True, 2, 1)
    _erase(container, tenant, erased)
    assert _read_sealing(container, tenant, before) == (False, 0, 0)  # erased with it
    # Recorded in one batch: the read of the erased document keeps its record (the
    # event, with the query's digest) but not its text; the other keeps both.
    reads: list[uuid.UUID] = []

    def search(query: str, *shown: uuid.UUID) -> None:
        reads.append(_search(container, tenant, query, *shown))

    threads = [
        threading.Thread(target=search, args=("again", kept, erased)),
        threading.Thread(target=search, args=("only the kept", kept)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    outcomes = sorted(_read_sealing(container, tenant, read) for read in reads)
    assert outcomes == [(False, 0, 0), (True, 1, 1)]


def test_a_read_waits_for_an_erasure_in_flight_of_what_it_showed_and_then_stores_no_text(
    container: Container,
) -> None:
    """The read's statement after its shared lock sees an erasure that committed while it
    waited (a snapshot taken before the lock would not, and the text would outlive it)."""
    tenant = _tenant()
    document = _upload(container, tenant, b"raced read " + uuid.uuid4().hex.encode(), "rr.txt")
    done: list[uuid.UUID] = []
    with container._blob_pool.connection() as eraser, eraser.transaction():
        with eraser.cursor() as curs:
            destroy_keys(curs, tenant, document_key(document))
        reader = threading.Thread(
            target=lambda: done.append(_search(container, tenant, "raced", document))
        )
        reader.start()
        time.sleep(0.5)
        assert not done  # blocked on the erasure's lock
    reader.join(10)
    assert len(done) == 1
    assert _read_sealing(container, tenant, done[0]) == (False, 0, 0)
