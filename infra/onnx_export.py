"""Exporting all-MiniLM-L6-v2 to ONNX, once, for the query path (``python -m infra.onnx_export``).

The graph is the whole sentence-transformers pipeline after tokenisation:
the transformer, mean pooling over the attention mask and L2 normalisation,
so ONNX Runtime returns exactly the vectors the workers store. The export runs
in a child process (torch is needed only here), writes beside its target and
renames into place, so a crash never leaves a half-written model, and it
refuses to install a graph whose vectors differ from torch's on probe texts.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any

# Probe texts: short, long (truncated at the model's 256 pieces) and non-ASCII.
PROBES = (
    "What protects the heart during surgery?",
    "radio emission",
    "Über die Wirkung von Vitamin D auf das Immunsystem — eine Übersicht.",
    " ".join(["The persistent radio source was observed at several frequencies."] * 60),
)
MAX_DIFFERENCE = 1e-4


def export(model_dir: Path, target: Path) -> float:
    """Export to ``target``; returns the largest vector difference seen on the probes."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import numpy as np
    import onnxruntime
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True).eval()
    transformer: Any = model[0].auto_model

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer: Any = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.transformer(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    sample = model.tokenizer(["a sample query"], return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # tracer notes about the model's Python branches
            torch.onnx.export(
                Pipeline().eval(),
                tuple(sample[n] for n in names),
                str(partial),
                input_names=names,
                output_names=["embedding"],
                dynamic_axes={
                    **{n: {0: "batch", 1: "pieces"} for n in names},
                    "embedding": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
        session = onnxruntime.InferenceSession(str(partial), providers=["CPUExecutionProvider"])
        difference = 0.0
        for text in PROBES:
            encoded = model.tokenizer(
                [text], return_tensors="np", truncation=True, max_length=model.max_seq_length
            )
            got = session.run(None, {n: encoded[n].astype(np.int64) for n in names})[0]
            want = model.encode([text], normalize_embeddings=True, convert_to_numpy=True)
            difference = max(difference, float(np.abs(got - want).max()))
        if difference > MAX_DIFFERENCE:
            raise RuntimeError(
                f"the exported graph's vectors differ from torch's by {difference:.2e}"
            )
        partial.replace(target)
        return difference
    finally:
        partial.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    args.target.parent.mkdir(parents=True, exist_ok=True)
    difference = export(args.model_dir, args.target)
    print(f"exported {args.target} (largest difference from torch {difference:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
