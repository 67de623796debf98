"""The Anthropic Messages API through the official SDK (its retries off: the router decides)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic

from infra.llm.base import Completion, CompletionRequest, ProviderError, Usage
from infra.llm.openai_provider import translate_sdk_error


class AnthropicProvider:
    def __init__(self, name: str, *, base_url: str | None, api_key: str, timeout_s: float) -> None:
        self.name = name
        self._client = anthropic.Anthropic(
            api_key=api_key or "not-needed",
            base_url=base_url or None,
            max_retries=0,
            timeout=timeout_s,
        )

    def _arguments(self, request: CompletionRequest) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        arguments: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_output_tokens,
            # This SDK version takes no temperature: the model's default applies.
            "messages": [
                {"role": m.role, "content": m.content}
                for m in request.messages
                if m.role != "system"
            ],
        }
        if system:
            arguments["system"] = system
        return arguments

    def complete(self, request: CompletionRequest) -> Completion:
        try:
            response = self._client.messages.create(**self._arguments(request))
        except anthropic.AnthropicError as error:
            raise translate_sdk_error(self.name, error) from error
        except ValueError as error:
            raise translate_sdk_error(self.name, error) from error
        try:
            text = "".join(
                block.text for block in response.content if getattr(block, "type", "") == "text"
            )
            cache_read, cache_written = _cache_tokens(response.usage)
            usage = Usage(
                int(response.usage.input_tokens) + cache_read + cache_written,
                int(response.usage.output_tokens),
                cache_read,
            )
        except (AttributeError, TypeError, ValueError) as error:
            raise ProviderError(
                "bad_response",
                f"{self.name}: the answer lacks content or usage",
                provider=self.name,
            ) from error
        return Completion(
            text=text,
            usage=usage,
            provider=self.name,
            model=str(response.model or request.model),
            finish_reason=str(response.stop_reason or "end_turn"),
        )

    def stream(self, request: CompletionRequest) -> Iterator[str | Completion]:
        parts: list[str] = []
        input_tokens: int | None = None
        output_tokens: int | None = None
        cache_read = 0
        finish = "end_turn"
        model = request.model
        stopped = False
        try:
            events = self._client.messages.create(**self._arguments(request), stream=True)
            for event in events:
                kind = getattr(event, "type", "")
                if kind == "message_start":
                    model = str(event.message.model or model)
                    cache_read, cache_written = _cache_tokens(event.message.usage)
                    input_tokens = (
                        int(event.message.usage.input_tokens) + cache_read + cache_written
                    )
                    output_tokens = int(getattr(event.message.usage, "output_tokens", 0) or 0)
                elif kind == "content_block_delta" and getattr(event.delta, "type", "") == (
                    "text_delta"
                ):
                    parts.append(event.delta.text)
                    yield event.delta.text
                elif kind == "message_stop":
                    stopped = True
                elif kind == "message_delta":
                    output_tokens = int(event.usage.output_tokens)
                    finish = str(getattr(event.delta, "stop_reason", None) or finish)
                elif kind == "error":
                    raise ProviderError(
                        "unavailable",
                        f"{self.name}: the stream reported an error",
                        provider=self.name,
                    )
        except anthropic.AnthropicError as error:
            raise translate_sdk_error(self.name, error) from error
        except (ValueError, AttributeError, TypeError) as error:
            raise translate_sdk_error(self.name, error) from error
        if not stopped:
            raise ProviderError(
                "unavailable",
                f"{self.name}: the stream ended before message_stop",
                provider=self.name,
            )
        if input_tokens is None or output_tokens is None:
            raise ProviderError(
                "bad_response", f"{self.name}: the stream reported no usage", provider=self.name
            )
        yield Completion(
            text="".join(parts),
            usage=Usage(input_tokens, output_tokens, cache_read),
            provider=self.name,
            model=model,
            finish_reason=finish,
        )


def _cache_tokens(reported: Any) -> tuple[int, int]:
    """Input tokens read from and written to the prompt cache. Anthropic counts them apart
    from ``input_tokens``; ``Usage.input_tokens`` includes them, like OpenAI's."""
    read = getattr(reported, "cache_read_input_tokens", None) or 0
    written = getattr(reported, "cache_creation_input_tokens", None) or 0
    return int(read), int(written)
