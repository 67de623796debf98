"""Provider adapters (the official SDKs) against local servers speaking the real wire formats,
and the router's retries, fallback and circuit breaker, and the extractive answerer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from config.llm import build_llm
from config.settings import SettingsError, load_settings
from infra.llm.anthropic_provider import AnthropicProvider
from infra.llm.base import Completion, CompletionRequest, Message, Passage, ProviderError, Usage
from infra.llm.extractive import LABEL, ExtractiveProvider
from infra.llm.openai_provider import OpenAIProvider
from infra.llm.router import RetryPolicy, Route, Router
from infra.search_index import Bm25Encoder
from tests.fakes.llm_servers import ANSWER_WORDS, FakeServer, start

REQUEST = CompletionRequest(
    model="test-model",
    messages=(
        Message("system", "Answer from the numbered passages only."),
        Message("user", "Where is the answer?"),
    ),
    max_output_tokens=64,
)


@pytest.fixture
def openai_server() -> Iterator[FakeServer]:
    server = start("openai")
    yield server
    server.close()


@pytest.fixture
def anthropic_server() -> Iterator[FakeServer]:
    server = start("anthropic")
    yield server
    server.close()


def _openai(server: FakeServer, name: str = "openai", timeout_s: float = 5) -> OpenAIProvider:
    return OpenAIProvider(name, base_url=f"{server.url}/v1", api_key="sk-test", timeout_s=timeout_s)


def _anthropic(server: FakeServer, timeout_s: float = 5) -> AnthropicProvider:
    return AnthropicProvider(
        "anthropic", base_url=server.url, api_key="ak-test", timeout_s=timeout_s
    )


def _drain(stream: Iterator[str | Completion]) -> tuple[list[str], Completion]:
    items = list(stream)
    final = items[-1]
    assert isinstance(final, Completion)
    assert all(isinstance(i, str) for i in items[:-1])
    return [i for i in items[:-1] if isinstance(i, str)], final


# ------------------------------------------------------------------ adapters


def test_openai_answers_with_usage(openai_server: FakeServer) -> None:
    completion = _openai(openai_server).complete(REQUEST)
    assert completion.text == "".join(ANSWER_WORDS)
    assert completion.usage == Usage(42, 7) and completion.model == "test-model"
    sent = openai_server.script.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["messages"][0] == {"role": "system", "content": REQUEST.messages[0].content}
    assert sent["headers"]["authorization"] == "Bearer sk-test"


def test_openai_streams_deltas_then_usage(openai_server: FakeServer) -> None:
    deltas, final = _drain(_openai(openai_server).stream(REQUEST))
    assert deltas == ANSWER_WORDS and final.text == "".join(ANSWER_WORDS)
    assert final.usage == Usage(42, 7)
    assert openai_server.script.requests[0]["body"]["stream_options"] == {"include_usage": True}


def test_anthropic_answers_and_streams_with_usage(anthropic_server: FakeServer) -> None:
    provider = _anthropic(anthropic_server)
    completion = provider.complete(REQUEST)
    assert completion.text == "".join(ANSWER_WORDS) and completion.usage == Usage(40, 7)
    sent = anthropic_server.script.requests[0]
    assert sent["path"] == "/v1/messages"
    assert sent["body"]["system"] == REQUEST.messages[0].content
    assert [m["role"] for m in sent["body"]["messages"]] == ["user"]
    deltas, final = _drain(provider.stream(REQUEST))
    assert deltas == ANSWER_WORDS and final.usage == Usage(40, 7)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ("429", "rate_limited"),
        ("500", "unavailable"),
        ("slow", "timeout"),
        ("malformed", "bad_response"),
    ],
)
def test_failures_become_typed_provider_errors(kind: str, behaviour: str, expected: str) -> None:
    server = start(kind)
    try:
        server.script.set(behaviour)
        server.script.slow_s = 2.0
        provider = (
            _openai(server, timeout_s=0.5)
            if kind == "openai"
            else _anthropic(server, timeout_s=0.5)
        )
        with pytest.raises(ProviderError) as failed:
            provider.complete(REQUEST)
        assert failed.value.kind == expected
        if behaviour == "429":
            assert failed.value.retry_after_s == 1.0
        # The SDK's own retries are off: the router alone decides about retrying.
        assert len(server.script.requests) == 1
    finally:
        server.close()


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_stream_cut_mid_way_is_an_error_not_a_short_answer(kind: str) -> None:
    server = start(kind)
    try:
        server.script.set("broken_stream")
        provider = _openai(server) if kind == "openai" else _anthropic(server)
        received: list[str | Completion] = []
        with pytest.raises(ProviderError):
            for item in provider.stream(REQUEST):
                received.append(item)
        assert not any(isinstance(item, Completion) for item in received)
    finally:
        server.close()


# -------------------------------------------------------------------- router


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _router(
    *providers: OpenAIProvider | AnthropicProvider, clock: Clock, **kwargs: object
) -> Router:
    routes = [Route("test-*", p.name, priority=(i + 1) * 10) for i, p in enumerate(providers)]
    return Router(
        list(providers),
        routes,
        retry=RetryPolicy(max_attempts=3, base_delay_s=0.1, max_delay_s=1.0),
        sleep=clock.sleep,
        clock=clock,
        **kwargs,  # type: ignore[arg-type]
    )


def test_router_retries_429_honouring_retry_after(openai_server: FakeServer) -> None:
    clock = Clock()
    openai_server.script.set("429", "ok")
    openai_server.script.retry_after = "2"
    completion = _router(_openai(openai_server), clock=clock).complete(REQUEST)
    assert completion.text and completion.attempts == ("openai:rate_limited",)
    assert len(clock.sleeps) == 1 and clock.sleeps[0] >= 2.0


def test_router_falls_back_in_priority_order(
    openai_server: FakeServer, anthropic_server: FakeServer
) -> None:
    clock = Clock()
    openai_server.script.set("500")
    completion = _router(
        _openai(openai_server), _anthropic(anthropic_server), clock=clock
    ).complete(REQUEST)
    assert completion.provider == "anthropic"
    assert completion.attempts == ("openai:unavailable",) * 3
    assert len(openai_server.script.requests) == 3 and len(anthropic_server.script.requests) == 1


def test_a_tenant_never_reaches_a_provider_it_does_not_allow(
    openai_server: FakeServer, anthropic_server: FakeServer
) -> None:
    clock = Clock()
    router = _router(_openai(openai_server), _anthropic(anthropic_server), clock=clock)
    openai_server.script.set("500")
    with pytest.raises(ProviderError) as failed:
        router.complete(REQUEST, allowed={"openai"})
    assert failed.value.kind == "unavailable"
    assert anthropic_server.script.requests == []  # not even as a fallback
    with pytest.raises(ProviderError) as refused:
        router.complete(REQUEST, allowed={"somewhere-else"})
    assert refused.value.kind == "not_allowed"


def test_the_circuit_opens_after_repeated_failures_and_closes_after_recovery(
    openai_server: FakeServer, anthropic_server: FakeServer
) -> None:
    clock = Clock()
    router = _router(
        _openai(openai_server),
        _anthropic(anthropic_server),
        clock=clock,
        failure_threshold=3,
        cooldown_s=60.0,
    )
    openai_server.script.set("500")
    router.complete(REQUEST)  # three failures: the circuit opens
    assert router.breakers["openai"].state == "open"
    before = len(openai_server.script.requests)
    assert router.complete(REQUEST).provider == "anthropic"
    assert len(openai_server.script.requests) == before  # skipped while open
    clock.now += 61
    assert router.breakers["openai"].state == "half_open"
    openai_server.script.set("ok")
    assert router.complete(REQUEST).provider == "openai"  # the trial call succeeds
    assert router.breakers["openai"].state == "closed"


def test_a_failed_half_open_trial_opens_the_circuit_again(openai_server: FakeServer) -> None:
    clock = Clock()
    router = _router(_openai(openai_server), clock=clock, failure_threshold=2, cooldown_s=10.0)
    openai_server.script.set("500")
    with pytest.raises(ProviderError):
        router.complete(REQUEST)
    clock.now += 11
    with pytest.raises(ProviderError):
        router.complete(REQUEST)
    assert router.breakers["openai"].state == "open"


def test_streams_retry_before_the_first_token_only(openai_server: FakeServer) -> None:
    clock = Clock()
    router = _router(_openai(openai_server), clock=clock)
    openai_server.script.set("500", "ok")
    deltas, final = _drain(router.stream(REQUEST))
    assert deltas == ANSWER_WORDS and final.attempts == ("openai:unavailable",)
    openai_server.script.set("broken_stream", "ok")
    with pytest.raises(ProviderError):
        list(router.stream(REQUEST))
    assert len(openai_server.script.requests) == 1  # text had flowed: no second answer


def test_routes_must_name_known_providers(openai_server: FakeServer) -> None:
    with pytest.raises(ValueError, match="unknown providers"):
        Router([_openai(openai_server)], [Route("*", "nowhere")])


# ---------------------------------------------------------------- extractive


def _encoder() -> Bm25Encoder:
    search = load_settings(environ={}).search
    return Bm25Encoder(
        k=search.bm25_k, b=search.bm25_b, avg_len=search.bm25_avg_len, language=search.bm25_language
    )


def _extractive() -> ExtractiveProvider:
    return ExtractiveProvider("extractive", _encoder().terms)


def test_extractive_quotes_the_relevant_sentences_with_their_citations() -> None:
    passages = (
        Passage(1, "The weather was mild all week. Nothing else happened in town.", "a.txt"),
        Passage(
            2,
            "Background checks rose sharply in December 2015. The FBI ran the NICS checks "
            "for every state that asked.",
            "nics.pdf, page 1",
        ),
    )
    request = CompletionRequest(
        model="extractive",
        messages=(),
        passages=passages,
        question="How many background checks did the FBI run in December?",
    )
    completion = _extractive().complete(request)
    assert completion.text.startswith(LABEL)
    assert "Background checks rose sharply in December 2015.” [2]" in completion.text
    assert "[1]" not in completion.text
    deltas, final = _drain(_extractive().stream(request))
    assert "".join(deltas) == final.text == completion.text


def test_extractive_leaves_out_weak_matches_beside_a_strong_one() -> None:
    passages = (
        Passage(
            1, "A report says Johnston is coming with fifty thousand men to raise the siege.", "v"
        ),
        Passage(2, "The lake siege of the old castle is a legend.", "other.pdf"),
    )
    request = CompletionRequest(
        model="extractive",
        messages=(),
        passages=passages,
        question="Was Johnston coming to raise the siege?",
    )
    text = _extractive().complete(request).text
    assert "Johnston is coming" in text and "[1]" in text
    assert "[2]" not in text  # "siege" alone scores under half the best sentence


def test_extractive_quotes_a_long_sentence_around_its_match() -> None:
    table = " ".join(f"State{i} {i * 1000:,}" for i in range(200)) + " Kentucky 264,140 12,155"
    request = CompletionRequest(
        model="extractive",
        messages=(),
        passages=(Passage(1, table, "nics.pdf, page 1"),),
        question="Kentucky?",
    )
    text = _extractive().complete(request).text
    assert "Kentucky 264,140 12,155" in text and "\u201c\u2026" in text


def test_extractive_says_so_when_nothing_matches() -> None:
    request = CompletionRequest(
        model="extractive",
        messages=(),
        passages=(Passage(1, "Completely unrelated words about gardening and soil.", "g.txt"),),
        question="quantum chromodynamics",
    )
    assert "None of the retrieved passages" in _extractive().complete(request).text


# ------------------------------------------------------------ configuration


def test_the_llm_settings_build_routes_keys_allow_lists_and_prices(
    openai_server: FakeServer,
) -> None:
    settings = load_settings(
        environ={},
        llm={
            "default_model": "test-model",
            "providers": [
                {"name": "extractive", "kind": "extractive"},
                {
                    "name": "local",
                    "kind": "openai_compatible",
                    "base_url": f"{openai_server.url}/v1",
                    "api_key_env": "KF_TEST_LLM_KEY",
                },
            ],
            "routes": [
                {"pattern": "test-*", "provider": "local", "priority": 10, "model": "llama3"},
                {"pattern": "*", "provider": "extractive", "priority": 90},
            ],
            "allowed_providers": {"cautious": ["extractive"]},
        },
    )
    llm = build_llm(settings.llm, _encoder().terms, environ={"KF_TEST_LLM_KEY": "sk-from-env"})
    completion = llm.router.complete(REQUEST, allowed=llm.allowed_providers("anyone"))
    assert completion.provider == "local"
    sent = openai_server.script.requests[0]
    assert sent["body"]["model"] == "llama3"  # renamed upstream by the route
    assert sent["headers"]["authorization"] == "Bearer sk-from-env"
    # A tenant allowed only the offline provider never reaches the server.
    cautious = llm.router.complete(
        CompletionRequest(model="test-model", messages=(), question="x"),
        allowed=llm.allowed_providers("cautious"),
    )
    assert cautious.provider == "extractive" and len(openai_server.script.requests) == 1


def test_routes_to_unknown_providers_are_refused_at_start() -> None:
    with pytest.raises(SettingsError, match="unknown provider"):
        load_settings(environ={}, llm={"routes": [{"pattern": "*", "provider": "ghost"}]})
