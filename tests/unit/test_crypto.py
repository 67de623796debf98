"""Sealed values and keys: what opens, what does not, and what reads as erased."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from hypothesis import given
from hypothesis import strategies as st

from infra.crypto import (
    ERASED,
    DataKey,
    MasterKey,
    MasterKeyError,
    Opener,
    is_sealed,
    sealed_key_ids,
    split_token,
)


@given(st.text())
def test_sealed_text_opens_to_itself_and_shows_nothing_of_it(text: str) -> None:
    key = DataKey.generate("document:1")
    token = key.seal_text(text)
    assert is_sealed(token) and split_token(token)[0] == "document:1"
    assert key.open_text(token) == text
    # The body is ciphertext: the text's own characters never show through. (The
    # prefix and key id are public, so a text like "kfse" may match them; a short
    # text may match random base64 by chance, hence the length.)
    if len(text) >= 8:
        assert text not in split_token(token)[1]


def test_a_sealed_value_is_bound_to_its_key_id() -> None:
    """The key id is associated data: a value cannot be moved to another subject."""
    one, two = DataKey.generate("document:1"), DataKey.generate("document:2")
    sealed = one.seal(b"secret bytes")
    assert one.open(sealed) == b"secret bytes"
    with pytest.raises(InvalidTag):
        DataKey("document:2", one.secret).open(sealed)  # same secret, other subject
    with pytest.raises(InvalidTag):
        two.open(sealed)


def test_an_opener_reads_erased_where_the_key_is_gone_and_plain_values_as_they_are() -> None:
    key = DataKey.generate("turn:c:1")
    opener = Opener(None)
    opener._keys = {"turn:c:1": key, "document:gone": None}
    gone = DataKey.generate("document:gone").seal_text("the file name")
    value = {"answer": key.seal_text("quoted"), "cited": [{"filename": gone}], "n": 1}
    assert set(sealed_key_ids(value)) == {"turn:c:1", "document:gone"}
    assert opener.deep(value) == {"answer": "quoted", "cited": [{"filename": ERASED}], "n": 1}
    assert opener.text("not sealed") == "not sealed"
    tampered = key.seal_text("quoted")[:-4] + "AAAA"
    assert opener.text(tampered) == ERASED


def test_the_master_key_wraps_data_keys_and_knows_its_probe() -> None:
    master = MasterKey(os.urandom(32))
    key = DataKey.generate("conversation:x")
    assert master.unwrap("conversation:x", master.wrap(key)) == key
    other = MasterKey(os.urandom(32))
    assert master.opens_probe(master.probe()) and not other.opens_probe(master.probe())
    with pytest.raises(InvalidTag):
        other.unwrap("conversation:x", master.wrap(key))
    assert master.key_id != other.key_id and "secret" not in repr(master)


def test_a_master_key_file_is_made_once_and_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "master-key"
    first = MasterKey.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert MasterKey.load_or_create(path).key_id == first.key_id


@pytest.mark.parametrize(
    ("text", "message"),
    [("not base64!", "not base64"), (base64.b64encode(b"short").decode(), "must be 32 bytes")],
)
def test_a_malformed_master_key_is_refused_with_its_source(text: str, message: str) -> None:
    with pytest.raises(MasterKeyError, match=message) as raised:
        MasterKey.from_text(text, source="crypto.master_key")
    assert "crypto.master_key" in str(raised.value)
