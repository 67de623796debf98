"""Data keys per subject, wrapped by a master key: erasure by forgetting a key.

What a person may want erased (a document's bytes, extracted text, chunks and
vectors, its file name; a conversation's title and questions; a turn's answer,
citations and recorded prompt) is encrypted with AES-256-GCM under a *data key*
of its own subject: ``document:<id>``, ``conversation:<id>`` or
``turn:<conversation id>:<n>``. Data keys live in PostgreSQL (``data_keys``)
wrapped by the *master key*, which never enters the database: a base64 value
from config or a file (0600) in the data directory. Erasing a subject deletes
its key (and every key that quotes it: a turn quotes the documents its passages
came from) in the transaction that appends the erasure event, so the events
themselves never change and still read, with a marker where the text was.

Event fields hold *sealed text*: ``kfsealed:1:<key id>:<base64url(nonce ‖
ciphertext)>``, the key id also bound as associated data, so a sealed value
cannot be moved to another subject. ``Opener`` turns sealed values back into
text for one batch of work, with keys fetched once per batch and never cached
for longer: a key destroyed by an erasure is not used again by any process
once the erasure is committed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import Cursor
from psycopg_pool import ConnectionPool

from infra.secret_files import create_once

ERASED = "[erased]"
"""What a sealed value reads as once its key is destroyed."""

TOKEN_PREFIX = "kfsealed:1:"  # noqa: S105 - a format tag, not a secret
_NONCE = 12
_PROBE = b"knowledge-foundry master key probe"


def document_key(document_id: object) -> str:
    return f"document:{document_id}"


def conversation_key(conversation_id: object) -> str:
    return f"conversation:{conversation_id}"


def turn_key(conversation_id: object, turn: int) -> str:
    return f"turn:{conversation_id}:{turn}"


def read_key(read_id: object) -> str:
    """The key of an access record's query text (it quotes the documents the read showed)."""
    return f"read:{read_id}"


class MasterKeyError(RuntimeError):
    """No usable master key: the configured one is malformed, or not the one in use."""


class WrongMasterKeyError(MasterKeyError):
    """The configured master key is not the one the data keys are wrapped with."""


class SubjectErasedError(RuntimeError):
    """A key was asked for a subject that is erased, or that quotes an erased one."""

    def __init__(self, message: str, erased: Sequence[str]) -> None:
        super().__init__(message)
        self.erased = list(erased)


class KeyErasedError(LookupError):
    """Content sealed with a key that no longer exists (its subject was erased)."""


@dataclass(frozen=True)
class DataKey:
    key_id: str
    secret: bytes = field(repr=False)

    def seal(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + AESGCM(self.secret).encrypt(nonce, plaintext, self.key_id.encode())

    def open(self, sealed: bytes) -> bytes:
        return AESGCM(self.secret).decrypt(sealed[:_NONCE], sealed[_NONCE:], self.key_id.encode())

    def seal_text(self, text: str) -> str:
        body = base64.urlsafe_b64encode(self.seal(text.encode())).decode().rstrip("=")
        return f"{TOKEN_PREFIX}{self.key_id}:{body}"

    def open_text(self, token: str) -> str:
        key_id, body = split_token(token)
        if key_id != self.key_id:
            raise ValueError(f"sealed with {key_id}, not {self.key_id}")
        return self.open(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))).decode()

    @classmethod
    def generate(cls, key_id: str) -> DataKey:
        return cls(key_id, AESGCM.generate_key(bit_length=256))


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX)


def split_token(token: str) -> tuple[str, str]:
    """(key id, body) of a sealed value."""
    key_id, _, body = token[len(TOKEN_PREFIX) :].rpartition(":")
    return key_id, body


def sealed_key_ids(value: Any) -> Iterator[str]:
    """The key ids of every sealed string inside ``value`` (dicts and lists walked)."""
    if isinstance(value, str):
        if value.startswith(TOKEN_PREFIX):
            yield split_token(value)[0]
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from sealed_key_ids(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from sealed_key_ids(item)


class MasterKey:
    """The key that wraps data keys (AES-256-GCM); ``key_id`` names it without revealing it."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise ValueError("the master key must be 32 bytes (base64 of 32 random bytes)")
        self._secret = secret
        self.key_id = hashlib.sha256(b"kf-master:" + secret).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"MasterKey({self.key_id})"

    @classmethod
    def from_text(cls, text: str, *, source: str) -> MasterKey:
        try:
            secret = base64.b64decode(text.strip(), validate=True)
        except ValueError:
            raise MasterKeyError(f"{source}: the master key is not base64") from None
        if len(secret) != 32:
            raise MasterKeyError(
                f"{source}: the master key must be 32 bytes (base64), not {len(secret)}"
            )
        return cls(secret)

    @classmethod
    def load_or_create(cls, path: Path) -> MasterKey:
        """The key in ``path`` (base64), made there with mode 0600 if there is none."""
        text = create_once(path, base64.b64encode(secrets.token_bytes(32)) + b"\n")
        return cls.from_text(text.decode(errors="replace"), source=str(path))

    def wrap(self, key: DataKey) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + AESGCM(self._secret).encrypt(nonce, key.secret, key.key_id.encode())

    def unwrap(self, key_id: str, wrapped: bytes) -> DataKey:
        secret = AESGCM(self._secret).decrypt(wrapped[:_NONCE], wrapped[_NONCE:], key_id.encode())
        return DataKey(key_id, secret)

    def probe(self) -> bytes:
        return self.wrap(DataKey("probe", hashlib.sha256(_PROBE).digest()))

    def opens_probe(self, probe: bytes) -> bool:
        try:
            return self.unwrap("probe", probe).secret == hashlib.sha256(_PROBE).digest()
        except InvalidTag:
            return False


_CREATE = (
    "INSERT INTO data_keys (key_id, tenant_id, wrapped, master_key_id)"
    " VALUES (%s, %s, %s, %s) ON CONFLICT (key_id) DO NOTHING"
)


class KeyStore:
    """Data keys in PostgreSQL, wrapped by ``master``."""

    def __init__(self, pool: ConnectionPool, master: MasterKey) -> None:
        self._pool = pool
        self.master = master

    # ------------------------------------------------------------ master key

    def check_master(self) -> None:
        """Stop here, with a clear message, if the data keys are wrapped by another master key."""
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO crypto_master (master_key_id, probe) VALUES (%s, %s)"
                " ON CONFLICT (singleton) DO NOTHING",
                (self.master.key_id, self.master.probe()),
            )
            row = conn.execute("SELECT master_key_id, probe FROM crypto_master").fetchone()
        assert row is not None
        if not self.master.opens_probe(bytes(row[1])):
            raise WrongMasterKeyError(
                f"the configured master key ({self.master.key_id}) is not the one this "
                f"database's data keys are wrapped with ({row[0]}): set crypto.master_key or "
                "crypto.master_key_file to that key (`kf keys rotate-master` changes it)"
            )

    def rotate_master(self, new: MasterKey) -> int:
        """Rewrap every data key with ``new`` in one transaction; the number rewrapped.

        Events and blobs are untouched: only the wrapping of each data key changes.
        """
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT 1 FROM crypto_master FOR UPDATE")
            rows = conn.execute("SELECT key_id, wrapped FROM data_keys FOR UPDATE").fetchall()
            with conn.cursor() as curs:
                curs.executemany(
                    "UPDATE data_keys SET wrapped = %s, master_key_id = %s WHERE key_id = %s",
                    [
                        (new.wrap(self.master.unwrap(key_id, bytes(wrapped))), new.key_id, key_id)
                        for key_id, wrapped in rows
                    ],
                )
            conn.execute(
                "UPDATE crypto_master SET master_key_id = %s, probe = %s, rotated_at = now()",
                (new.key_id, new.probe()),
            )
        self.master = new
        return len(rows)

    # ------------------------------------------------------------- data keys

    def new_key(self, key_id: str) -> tuple[DataKey, bytes]:
        """A fresh data key and its wrapping (store it with ``insert_key``)."""
        key = DataKey.generate(key_id)
        return key, self.master.wrap(key)

    def insert_key(
        self,
        curs: Cursor[Any],
        tenant_id: str,
        key: DataKey,
        wrapped: bytes,
        *,
        quotes: Iterable[str] = (),
    ) -> None:
        """Store a new key (in the caller's transaction), refusing an erased subject.

        ``quotes``: keys of subjects the key's plaintext quotes. Each must exist:
        it is locked ``FOR SHARE`` here, so an erasure that deletes it concurrently
        either commits first (and this raises ``SubjectErasedError``) or waits for
        this transaction (and then destroys this key with it).
        """
        quoted = sorted(set(quotes))
        if quoted:
            found = {
                _first(row)
                for row in curs.execute(
                    "SELECT key_id FROM data_keys WHERE key_id = ANY(%s) FOR SHARE", (quoted,)
                ).fetchall()
            }
            missing = [k for k in quoted if k not in found]
            if missing:
                raise SubjectErasedError("Content quoted here was erased meanwhile.", missing)
        erased = curs.execute(
            "SELECT 1 FROM erased_keys WHERE key_id = %s", (key.key_id,)
        ).fetchone()
        if erased is not None:
            raise SubjectErasedError(f"{key.key_id} is erased.", [key.key_id])
        curs.execute(_CREATE, (key.key_id, tenant_id, wrapped, self.master.key_id))
        if quoted:
            curs.executemany(
                "INSERT INTO data_key_quotes (key_id, quoted_key) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING",
                [(key.key_id, q) for q in quoted],
            )

    def create(self, tenant_id: str, key_id: str, *, quotes: Iterable[str] = ()) -> DataKey:
        """The subject's key, made now if it has none (in a transaction of its own)."""
        existing = self.get_many([key_id]).get(key_id)
        if existing is not None:
            return existing
        key, wrapped = self.new_key(key_id)
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as curs:
            self.insert_key(curs, tenant_id, key, wrapped, quotes=quotes)
        found = self.get_many([key_id]).get(key_id)
        if found is None:  # pragma: no cover - erased between the insert and this read
            raise SubjectErasedError(f"{key_id} is erased.", [key_id])
        return found

    def quoted_by(self, key_ids: Iterable[str]) -> set[str]:
        """What the keys' plaintexts quote (to pass on to a turn that repeats them)."""
        ids = sorted(set(key_ids))
        if not ids:
            return set()
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT quoted_key FROM data_key_quotes WHERE key_id = ANY(%s)", (ids,)
            ).fetchall()
        return {row[0] for row in rows}

    def get_many(self, key_ids: Iterable[str]) -> dict[str, DataKey]:
        """The keys that exist, unwrapped; an erased (or never made) one is absent."""
        ids = sorted(set(key_ids))
        if not ids:
            return {}
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT key_id, wrapped FROM data_keys WHERE key_id = ANY(%s)", (ids,)
            ).fetchall()
        return {row[0]: self.master.unwrap(row[0], bytes(row[1])) for row in rows}

    def get(self, key_id: str) -> DataKey:
        key = self.get_many([key_id]).get(key_id)
        if key is None:
            raise KeyErasedError(f"{key_id} has no key: its subject was erased")
        return key

    def erased(self, key_ids: Iterable[str]) -> set[str]:
        ids = sorted(set(key_ids))
        if not ids:
            return set()
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT key_id FROM erased_keys WHERE key_id = ANY(%s)", (ids,)
            ).fetchall()
        return {row[0] for row in rows}

    def opener(self) -> Opener:
        return Opener(self)


def destroy_keys(curs: Cursor[Any], tenant_id: str, key_id: str) -> list[str]:
    """Destroy a subject's key, every key that quotes it, and the blobs sealed with them.

    Runs in the caller's transaction (the one that appends the erasure event) and
    is idempotent; returns the key ids destroyed now, the subject's first.
    """
    # Reads that quote the subject wait for this, or this for them: ``kf_record_reads``
    # takes the same lock shared (migrations/0016_record_reads.sql).
    curs.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key_id,))
    subject = [key_id] if key_id.startswith("conversation:") else []
    quoting = curs.execute(
        "SELECT key_id FROM data_key_quotes WHERE quoted_key = %s"
        " UNION SELECT key_id FROM data_keys WHERE key_id LIKE %s",
        (key_id, _turns_of(subject[0]) if subject else "-"),
    ).fetchall()
    ids = [key_id, *sorted({_first(row) for row in quoting} - {key_id})]
    deleted = {
        _first(row)
        for row in curs.execute(
            "DELETE FROM data_keys WHERE key_id = ANY(%s) RETURNING key_id", (ids,)
        ).fetchall()
    }
    curs.executemany(
        "INSERT INTO erased_keys (key_id, tenant_id, cause) VALUES (%s, %s, %s)"
        " ON CONFLICT (key_id) DO NOTHING",
        [(k, tenant_id, key_id) for k in ids],
    )
    curs.execute("DELETE FROM data_key_quotes WHERE key_id = ANY(%s)", (ids,))
    curs.execute("DELETE FROM blobs WHERE key_id = ANY(%s)", (ids,))
    return [k for k in ids if k in deleted]


def _first(row: Any) -> Any:
    """A row's first column, from a tuple row or a dict row (the event store's cursors)."""
    return next(iter(row.values())) if isinstance(row, Mapping) else row[0]


def _turns_of(conversation: str) -> str:
    """The LIKE pattern of a conversation's turn keys."""
    return "turn:" + conversation.removeprefix("conversation:").replace("%", "") + ":%"


class Opener:
    """Sealed values back to text for one batch of work; keys fetched once for the batch.

    A value that is not sealed (events from before sealing, tests) reads as itself;
    one whose key is gone reads as ``ERASED``.
    """

    def __init__(self, keys: KeyStore | None) -> None:
        self._store = keys
        self._keys: dict[str, DataKey | None] = {}

    def prefetch(self, *values: Any) -> Opener:
        """Fetch, in one round trip, the keys of every sealed value inside ``values``."""
        return self.prefetch_keys(k for v in values for k in sealed_key_ids(v))

    def prefetch_keys(self, key_ids: Iterable[str]) -> Opener:
        wanted = set(key_ids) - self._keys.keys()
        if wanted and self._store is not None:
            found = self._store.get_many(wanted)
            for key_id in wanted:
                self._keys[key_id] = found.get(key_id)
        return self

    def key(self, key_id: str) -> DataKey | None:
        if key_id not in self._keys:
            found = self._store.get_many([key_id]) if self._store is not None else {}
            self._keys[key_id] = found.get(key_id)
        return self._keys[key_id]

    def text(self, value: Any) -> Any:
        """The text of a sealed value (``ERASED`` if its key is gone); other values as they are."""
        if not is_sealed(value):
            return value
        key = self.key(split_token(value)[0])
        if key is None:
            return ERASED
        try:
            return key.open_text(value)
        except (InvalidTag, ValueError):
            return ERASED

    def deep(self, value: Any) -> Any:
        """``value`` with every sealed string inside it (dicts and lists) opened."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.deep(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.deep(v) for v in value]
        return value
