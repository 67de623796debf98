"""The running system the question-answering tests share: extractive by default, and a
local OpenAI-protocol server for models named ``test-*``; two documents indexed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from infra.crypto import turn_key
from infra.embedding import SentenceTransformerEmbedder
from tests.fakes.llm_servers import FakeServer, start
from tests.harness import RunningSystem

NICS = "nics-background-checks-2015-11.pdf"


def stored_prompt(system: RunningSystem, conversation_id: str, turn: int, sha256: str) -> Any:
    """The prompt a turn's model was given, from the blob store, opened with the turn's key."""
    key = system.container.keys.get(turn_key(conversation_id, turn))
    return json.loads(system.container.blobs.get(system.tenant_id, sha256, key))


def opened(system: RunningSystem, value: Any) -> Any:
    """An event field as written (sealed values opened with their keys)."""
    return system.container.keys.opener().deep(value)


@pytest.fixture(scope="module")
def llm_server() -> Iterator[FakeServer]:
    server = start("openai")
    yield server
    server.close()


@pytest.fixture(scope="module")
def system(
    settings_factory: Callable[..., Settings],
    embedder: SentenceTransformerEmbedder,
    llm_server: FakeServer,
) -> Iterator[RunningSystem]:
    settings = settings_factory(
        llm={
            "providers": [
                {"name": "extractive", "kind": "extractive"},
                {
                    "name": "local",
                    "kind": "openai_compatible",
                    "base_url": f"{llm_server.url}/v1",
                    "timeout_s": 5,
                },
            ],
            "routes": [
                {"pattern": "extractive", "provider": "extractive"},
                {"pattern": "test-*", "provider": "local"},
            ],
            "retry_max_attempts": 2,
            "retry_base_delay_s": 0.01,
            "prices": {"test-priced": {"input_per_million": 1, "output_per_million": 2}},
        },
        qa={"injection_patterns": ["(?i)ignore (all )?previous instructions"]},
    )
    with RunningSystem(settings, embedder) as running:
        yield running


@pytest.fixture(scope="module")
def corpus(system: RunningSystem, documents_dir: Path) -> dict[str, str]:
    with system.client() as client:
        ids = {
            NICS: system.upload(client, documents_dir / NICS)["id"],
            "garden.txt": client.post(
                "/v1/documents",
                files={
                    "file": (
                        "garden.txt",
                        b"Tomatoes need six hours of sun a day. Water the beds at dawn. "
                        b"Compost improves the soil of the vegetable garden every spring.",
                    )
                },
            ).json()["id"],
        }
        system.wait_final(client, list(ids.values()))
    head = system.container.documents.head_position()
    assert system.container.search_view.wait_for("documents", head, 30)
    return ids
