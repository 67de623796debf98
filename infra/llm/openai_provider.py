"""OpenAI Chat Completions through the official SDK: OpenAI, and any compatible server.

Ollama, vLLM and llama.cpp speak the same protocol; only the base URL and the
key differ. The SDK's own retries are off: the router decides about retries,
fallback and the circuit breaker, the same way for every provider.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai

from infra.llm.base import (
    Completion,
    CompletionRequest,
    ProviderError,
    Usage,
    retry_after_seconds,
)


def translate_sdk_error(provider: str, error: Exception) -> ProviderError:
    """An OpenAI or Anthropic SDK error as a ``ProviderError`` (both SDKs share the shape)."""
    name = type(error).__name__
    status = getattr(error, "status_code", None)
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or {}
    if "Timeout" in name:
        return ProviderError("timeout", f"{provider}: no answer in time", provider=provider)
    if status == 429:
        return ProviderError(
            "rate_limited",
            f"{provider}: rate limited",
            provider=provider,
            retry_after_s=retry_after_seconds(headers.get("retry-after")),
        )
    if isinstance(status, int) and status >= 500:
        return ProviderError(
            "unavailable",
            f"{provider}: server error {status}",
            provider=provider,
            retry_after_s=retry_after_seconds(headers.get("retry-after")),
        )
    if isinstance(status, int):
        return ProviderError("rejected", f"{provider}: refused with {status}", provider=provider)
    if "Connection" in name:
        return ProviderError("unavailable", f"{provider}: cannot connect", provider=provider)
    return ProviderError(
        "bad_response", f"{provider}: unusable response ({name}: {error})", provider=provider
    )


class OpenAIProvider:
    def __init__(self, name: str, *, base_url: str | None, api_key: str, timeout_s: float) -> None:
        self.name = name
        self._client = openai.OpenAI(
            api_key=api_key or "not-needed",
            base_url=base_url or None,
            max_retries=0,
            timeout=timeout_s,
        )

    def _arguments(self, request: CompletionRequest) -> dict[str, Any]:
        return {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_output_tokens,
            "temperature": request.temperature,
        }

    def complete(self, request: CompletionRequest) -> Completion:
        try:
            response = self._client.chat.completions.create(**self._arguments(request))
        except openai.OpenAIError as error:
            raise translate_sdk_error(self.name, error) from error
        except ValueError as error:  # a body that is not JSON
            raise translate_sdk_error(self.name, error) from error
        try:
            choice = response.choices[0]
            text = choice.message.content or ""
            usage = _usage(response.usage)
        except (AttributeError, IndexError, TypeError, ValueError) as error:
            raise ProviderError(
                "bad_response",
                f"{self.name}: the answer lacks choices or usage",
                provider=self.name,
            ) from error
        return Completion(
            text=text,
            usage=usage,
            provider=self.name,
            model=str(response.model or request.model),
            finish_reason=str(choice.finish_reason or "stop"),
        )

    def stream(self, request: CompletionRequest) -> Iterator[str | Completion]:
        parts: list[str] = []
        usage: Usage | None = None
        finish = "stop"
        model = request.model
        try:
            chunks = self._client.chat.completions.create(
                **self._arguments(request), stream=True, stream_options={"include_usage": True}
            )
            for chunk in chunks:
                model = str(getattr(chunk, "model", None) or model)
                if chunk.usage is not None:
                    usage = _usage(chunk.usage)
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                if choice.finish_reason:
                    finish = str(choice.finish_reason)
                delta = choice.delta.content if choice.delta is not None else None
                if delta:
                    parts.append(delta)
                    yield delta
        except openai.OpenAIError as error:
            raise translate_sdk_error(self.name, error) from error
        except (ValueError, AttributeError, TypeError) as error:
            raise translate_sdk_error(self.name, error) from error
        if usage is None:
            raise ProviderError(
                "bad_response", f"{self.name}: the stream reported no usage", provider=self.name
            )
        yield Completion(
            text="".join(parts), usage=usage, provider=self.name, model=model, finish_reason=finish
        )


def _usage(reported: Any) -> Usage:
    """The usage an OpenAI-protocol server reported: prompt tokens include the cached ones
    (``prompt_tokens_details.cached_tokens``, absent from servers without a cache)."""
    details = getattr(reported, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    return Usage(int(reported.prompt_tokens), int(reported.completion_tokens), int(cached))
