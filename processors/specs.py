"""The processing stages' JetStream consumers: which event each takes, in what batches.

Kept apart from the worker so that what only needs the consumers' names (the API's
worker status) does not load the parsers.
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.document import Stage


@dataclass(frozen=True)
class StageSpec:
    stage: Stage
    event_type: str
    batch: int
    suffix: str = ""  # of the consumer's name, when a stage has more than one

    @property
    def consumer(self) -> str:
        return f"worker-{self.stage.value}{self.suffix}"


# A document restored from the trash while it was being processed carries on where
# it stopped, and a failed one retried goes through its failed stage again: every
# stage also takes ``Document.Restored`` and ``Document.Retried`` (and does nothing
# unless the document waits for it), through consumers of their own.
STAGE_SPECS = (
    StageSpec(Stage.PARSE, "Document.Uploaded", 1),
    StageSpec(Stage.CHUNK, "Document.Parsed", 4),
    StageSpec(Stage.EMBED, "Document.Chunked", 16),
    StageSpec(Stage.PARSE, "Document.Restored", 1, "-restored"),
    StageSpec(Stage.CHUNK, "Document.Restored", 1, "-restored"),
    StageSpec(Stage.EMBED, "Document.Restored", 1, "-restored"),
    StageSpec(Stage.PARSE, "Document.Retried", 1, "-retried"),
    StageSpec(Stage.CHUNK, "Document.Retried", 1, "-retried"),
    StageSpec(Stage.EMBED, "Document.Retried", 1, "-retried"),
)
