"""The API's query embedder: the model exported to ONNX gives the workers' vectors, cached once."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest

from config.root import Container
from infra.embedding import OnnxEmbedder, SentenceTransformerEmbedder
from tests.harness import shared_model_cache, shared_query_embedder
from tests.shared_data import SCIFACT


@pytest.fixture(scope="module")
def queries() -> list[str]:
    lines = (SCIFACT / "queries.jsonl").read_text().splitlines()[:60]
    return [json.loads(line)["text"] for line in lines]


def test_onnx_vectors_equal_the_torch_vectors_one_by_one_and_in_padded_batches(
    embedder: SentenceTransformerEmbedder, queries: list[str]
) -> None:
    onnx = shared_query_embedder()
    texts = [*queries, "Ünïcödé — ★ 化学", "x", "long " * 400]  # the last is truncated
    want = embedder.embed(texts)
    one_by_one = np.vstack([onnx.embed([t]) for t in texts])
    batched = onnx.embed(texts)  # padded to the longest text of each batch
    assert one_by_one.shape == batched.shape == want.shape == (len(texts), 384)
    assert float(np.abs(one_by_one - want).max()) < 1e-5
    assert float(np.abs(batched - want).max()) < 1e-5
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert onnx.embed([]).shape == (0, 384)


def test_both_embedders_count_the_tokens_the_model_is_given_with_its_tokenizer(
    embedder: SentenceTransformerEmbedder, queries: list[str]
) -> None:
    onnx = shared_query_embedder()
    # [CLS] hello world [SEP]; word pieces, not words; a long text counts up to the truncation.
    assert embedder.count_tokens(["hello world"]) == onnx.count_tokens(["hello world"]) == 4
    assert embedder.count_tokens(["tokenization"]) == 4  # [CLS] token ##ization [SEP]
    assert embedder.count_tokens(["long " * 400]) == onnx.count_tokens(["long " * 400]) == 256
    texts = [*queries, "Ünïcödé — ★ 化学", "x"]
    assert embedder.count_tokens(texts) == onnx.count_tokens(texts)
    assert embedder.count_tokens(texts) == sum(embedder.count_tokens([t]) for t in texts)
    assert embedder.count_tokens([]) == onnx.count_tokens([]) == 0


def test_the_export_is_made_once_and_reused() -> None:
    """The session's export (made by whoever needed it first) is found, not made again."""
    first = shared_query_embedder()
    cache = shared_model_cache()
    written = first.path.stat().st_mtime_ns
    second = OnnxEmbedder(cache)
    assert second.path == first.path and second.path.stat().st_mtime_ns == written
    assert [p.name for p in cache.iterdir()] == [first.path.name]  # no partial files left
    assert first.path.name.startswith("all-MiniLM-L6-v2-") and first.path.suffix == ".onnx"
    assert np.array_equal(first.embed(["same vector"]), second.embed(["same vector"]))


def test_embedding_queries_does_not_load_torch() -> None:
    cache = shared_query_embedder().path.parent
    script = (
        "import sys; from pathlib import Path; from infra.embedding import OnnxEmbedder; "
        f"OnnxEmbedder(Path({str(cache)!r})).embed(['q']); "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "False"


def test_the_api_uses_the_configured_model_cache(
    make_container: Callable[..., Container],
) -> None:
    """An image can carry the export (KF_MODEL_CACHE_DIR); nothing is exported at start then."""
    cache = shared_query_embedder().path.parent
    container = make_container(search={"model_cache_dir": str(cache)})
    embedder = container.query_embedder()
    assert isinstance(embedder, OnnxEmbedder) and embedder.path.parent == cache
    assert not (container.settings.data_dir.resolve() / "models").exists()
