"""Building the model providers and the router from the ``llm`` settings, and the prices
each tenant's price book opens with."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from config.settings import LlmSettings
from domain.usage import ANY_PROVIDER, TokenPrice
from infra.llm.base import Provider
from infra.llm.extractive import ExtractiveProvider
from infra.llm.router import RetryPolicy, Route, Router
from infra.llm.service import Llm


def build_llm(
    settings: LlmSettings,
    terms_of: Callable[[str], frozenset[int]],
    environ: Mapping[str, str] | None = None,
) -> Llm:
    env = os.environ if environ is None else environ
    providers: list[Provider] = []
    for spec in settings.providers:
        key = env.get(spec.api_key_env, "") if spec.api_key_env else ""
        if spec.kind == "extractive":
            providers.append(ExtractiveProvider(spec.name, terms_of))
        elif spec.kind == "anthropic":
            # Each vendor's SDK is imported only when configured (about a second each).
            from infra.llm.anthropic_provider import AnthropicProvider

            providers.append(
                AnthropicProvider(
                    spec.name, base_url=spec.base_url or None, api_key=key, timeout_s=spec.timeout_s
                )
            )
        else:  # openai, openai_compatible: one protocol
            from infra.llm.openai_provider import OpenAIProvider

            providers.append(
                OpenAIProvider(
                    spec.name, base_url=spec.base_url or None, api_key=key, timeout_s=spec.timeout_s
                )
            )
    router = Router(
        providers,
        [Route(r.pattern, r.provider, r.priority, r.model) for r in settings.routes],
        retry=RetryPolicy(
            max_attempts=settings.retry_max_attempts,
            base_delay_s=settings.retry_base_delay_s,
            max_delay_s=settings.retry_max_delay_s,
            max_retry_after_s=settings.max_retry_after_s,
        ),
        failure_threshold=settings.breaker_failure_threshold,
        cooldown_s=settings.breaker_cooldown_s,
    )
    return Llm(
        router=router,
        default_model=settings.default_model,
        _allowed=dict(settings.allowed_providers),
        _default_allowed=list(settings.default_allowed_providers),
    )


def configured_prices(settings: LlmSettings) -> list[tuple[str, str, TokenPrice]]:
    """The configured prices as a tenant's price book opens with them: any provider."""
    return [
        (
            ANY_PROVIDER,
            model,
            TokenPrice(
                price.input_per_million,
                price.output_per_million,
                price.cached_input_per_million,
            ),
        )
        for model, price in settings.prices.items()
    ]
