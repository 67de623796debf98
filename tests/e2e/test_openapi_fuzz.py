"""Schemathesis against the live OpenAPI document: every route, hundreds of generated requests.

Each operation gets ``EXAMPLES`` generated requests (valid and invalid ones),
sent with an admin key so every route is reachable. No response may be a 5xx,
and every response must match the document: a declared status code, the
declared content type and headers, and a body that validates against its
schema; invalid input must be refused with a 4xx. (Schemathesis's "valid data
must be accepted" check is left out: a schema cannot say which opaque cursors,
ids or positions exist, and those are rightly 404s and 422s.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import BaseSchema, Case
from schemathesis.checks import positive_data_acceptance

from config.settings import Settings
from infra.embedding import SentenceTransformerEmbedder
from tests.e2e.test_identity import ROUTES
from tests.harness import RunningSystem

EXAMPLES = 300


@pytest.fixture(scope="module")
def system(
    settings_factory: Callable[..., Settings], embedder: SentenceTransformerEmbedder
) -> Iterator[RunningSystem]:
    settings = settings_factory(api={"max_upload_bytes": 64 * 1024, "read_wait_timeout_s": 0.5})
    with RunningSystem(settings, embedder, worker=False) as running:
        yield running


@pytest.fixture(scope="module")
def api_schema(system: RunningSystem) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{system.base_url}/openapi.json")


def test_every_route_is_fuzzed(api_schema: BaseSchema) -> None:
    assert {(m.upper(), p) for p, item in api_schema.raw_schema["paths"].items() for m in item} == (
        set(ROUTES)
    )


# Driven through Hypothesis directly (one test per operation) rather than
# schemathesis's pytest plugin, which does not load under pytest 9.
@pytest.mark.parametrize("route", sorted(ROUTES), ids=lambda r: f"{r[0]} {r[1]}")
def test_no_5xx_and_every_response_matches_the_schema(
    api_schema: BaseSchema, system: RunningSystem, route: tuple[str, str]
) -> None:
    method, path = route
    operation = api_schema[path][method]
    headers = {"Authorization": f"Bearer {system.admin_key}"}

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: Case) -> None:
        calls.append(case.method)
        case.call_and_validate(
            headers=headers, timeout=30, excluded_checks=[positive_data_acceptance]
        )

    calls: list[str] = []
    check()
    # Hypothesis stops early only when an operation has few distinct inputs;
    # one with no parameters or body has exactly one.
    spec = api_schema.raw_schema["paths"][path][method.lower()]
    takes_input = bool(spec.get("parameters") or spec.get("requestBody"))
    assert len(calls) >= (EXAMPLES // 2 if takes_input else 1), len(calls)
