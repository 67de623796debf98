"""Fixtures shared by the integration and end-to-end tests (see tests/harness.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from config.root import Container, Endpoints
from config.schema import migrate
from config.settings import Settings
from infra.bus import delete_stream
from infra.embedding import SentenceTransformerEmbedder
from infra.telemetry import configure_logging
from tests.harness import RunningSystem, Services, make_settings, redis_server
from tests.shared_data import DOCUMENTS


@pytest.fixture(scope="session", autouse=True)
def _quiet_logs() -> None:
    # In-process systems log like production (JSON); only warnings are worth reading here.
    configure_logging("warning", json_output=True)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    running = Services.start(tmp_path_factory.mktemp("servers"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis: KF_TEST_REDIS_URL, the local one on 6379, or a redis-server we start."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        if url is None:
            pytest.skip("no Redis: none on 127.0.0.1:6379 and no redis-server binary")
        yield url


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The real model, loaded once per test session."""
    return SentenceTransformerEmbedder(batch_size=32)


@pytest.fixture(scope="session")
def documents_dir() -> Path:
    if not (DOCUMENTS / "MANIFEST.tsv").exists():
        pytest.fail(f"shared documents missing at {DOCUMENTS} (set KF_SHARED_DATA)")
    return DOCUMENTS


@pytest.fixture(scope="module")
def database_url(services: Services) -> Iterator[str]:
    """A fresh database for the module, migrated as `kf migrate` does."""
    with services.database() as url:
        migrate(url)
        yield url


@pytest.fixture(scope="module")
def settings_factory(
    services: Services, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Settings]]:
    """Settings on this module's database and a stream of its own (deleted afterwards)."""
    tag = uuid.uuid4().hex[:10]
    data_dir = tmp_path_factory.mktemp("data")
    made: list[Settings] = []

    def factory(**overrides: Any) -> Settings:
        settings = make_settings(database_url, services.nats_url, data_dir, tag, **overrides)
        made.append(settings)
        return settings

    yield factory
    for stream in {s.nats.stream for s in made}:
        asyncio.run(delete_stream(services.nats_url, stream))


@pytest.fixture(scope="module")
def make_container(
    settings_factory: Callable[..., Settings],
) -> Iterator[Callable[..., Container]]:
    """Containers on this module's database and stream (closed after the module)."""
    made: list[Container] = []

    def factory(**overrides: Any) -> Container:
        settings = settings_factory(**overrides)
        container = Container(settings, Endpoints(settings.database.url, settings.nats.url))
        made.append(container)
        return container

    yield factory
    for container in reversed(made):
        container.close()


@pytest.fixture(scope="module")
def system(
    settings_factory: Callable[..., Settings], embedder: SentenceTransformerEmbedder
) -> Iterator[RunningSystem]:
    with RunningSystem(settings_factory(), embedder) as running:
        yield running
