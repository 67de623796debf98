"""Typed settings: YAML defaults, an optional YAML override file, then environment.

Loading order (later wins): the packaged ``default.yaml``; the file named by
``--config`` or ``KF_CONFIG``; environment variables ``KF__SECTION__KEY``.
``${VAR:default}`` in YAML reads environment variable ``VAR``. Invalid settings
fail at start with a message naming the key (``SettingsError``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")
ENV_PREFIX = "KF__"
# Secrets are taken from these variables verbatim (never parsed as YAML, which
# would turn "0x1f" into a number or "yes" into a boolean).
_SECRET_VARIABLES = {
    ("auth", "jwt_secret"): "KF_JWT_SECRET",
    ("database", "reader_password"): "KF_DATABASE_READER_PASSWORD",
}


class SettingsError(Exception):
    """The configuration is invalid; the message names the offending key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_upload_bytes: int = Field(50 * 1024 * 1024, gt=0)
    read_wait_timeout_s: float = Field(5.0, ge=0, le=60)
    page_size_max: int = Field(200, ge=1, le=1000)
    # The address people reach the web app at, for the links in invitations
    # (e.g. https://kf.example.org); empty: the address `kf serve` listens on.
    public_url: str = Field("", pattern=r"^(https?://[^\s/]+(/[^\s]*)?)?$")


class DatabaseSettings(_Section):
    url: str = ""
    # The query API reads read models as this (row-level-security-bound) role;
    # empty: the url above with user kf_reader and reader_password (if any).
    reader_url: str = ""
    # Set on the kf_reader role at start (KF_DATABASE_READER_PASSWORD), for
    # servers that require passwords; empty: trust/peer authentication.
    reader_password: str = Field("", repr=False)
    pool_size: int = Field(1, ge=1, le=100)
    max_overflow: int = Field(20, ge=0, le=100)


class NatsSettings(_Section):
    url: str = ""
    stream: str = Field("KF_EVENTS", pattern=r"^[A-Za-z0-9_-]+$")
    subject_prefix: str = Field("kf", pattern=r"^[A-Za-z0-9_-]+$")
    duplicate_window_s: float = Field(120, gt=0)
    max_age_days: float = Field(90, gt=0)
    max_bytes: int = Field(8 * 1024**3, gt=0)


class QdrantSettings(_Section):
    url: str = ""


class RedisSettings(_Section):
    url: str = ""


class IngestSettings(_Section):
    workers: int = Field(1, ge=0, le=64)
    chunk_tokens: int = Field(200, ge=16, le=254)
    overlap_tokens: int = Field(40, ge=0)
    embed_batch_size: int = Field(32, ge=1, le=1024)
    torch_threads: int = Field(0, ge=0, le=256)
    max_pages: int = Field(2000, ge=1)
    max_chars: int = Field(20_000_000, ge=1)
    max_docx_expanded_mb: int = Field(256, ge=1)
    parse_timeout_s: float = Field(60, gt=0)
    parse_max_memory_mb: int = Field(2048, ge=256)
    ack_wait_s: float = Field(120, gt=0)
    max_deliver: int = Field(5, ge=1, le=100)

    @model_validator(mode="after")
    def _overlap_below_half(self) -> IngestSettings:
        if self.overlap_tokens >= self.chunk_tokens // 2:
            raise ValueError("ingest.overlap_tokens must be below half of ingest.chunk_tokens")
        return self

    @model_validator(mode="after")
    def _parse_ends_before_redelivery(self) -> IngestSettings:
        if self.parse_timeout_s >= self.ack_wait_s:
            raise ValueError("ingest.parse_timeout_s must be below ingest.ack_wait_s")
        return self


class ProjectionSettings(_Section):
    batch_size: int = Field(256, ge=1, le=10_000)
    # An event that fails this many times in a row is parked as a dead letter, and the
    # read model's projector waits on it until an operator retries or drops it.
    max_attempts: int = Field(5, ge=1, le=100)
    # `kf serve` runs the activity relay and the projectors every read feeds (audit,
    # readers, usage) in child processes at this nice value: on a busy machine
    # requests are served first, and those catch up later in bigger batches. 0: same
    # priority as the API.
    background_nice: int = Field(10, ge=0, le=19)


class HealthSettings(_Section):
    """What ``/health/ready`` requires (``/health/live`` only says the process runs)."""

    # Ready only while every read model is at most this many events behind.
    max_projection_lag: int = Field(1000, ge=0)
    # Ready only while every processing stage has a worker listening (off for API
    # processes deployed apart from the workers, whose readiness is their own).
    require_workers: bool = True
    timeout_s: float = Field(2.0, gt=0, le=30)


class SearchSettings(_Section):
    max_k: int = Field(100, ge=1, le=1000)
    max_query_chars: int = Field(1000, ge=1, le=100_000)
    rrf_k: int = Field(20, ge=1, le=10_000)
    dense_weight: float = Field(1.0, gt=0)
    keyword_weight: float = Field(1.0, gt=0)
    prefetch: int = Field(100, ge=1, le=10_000)
    bm25_k: float = Field(1.2, ge=0)
    bm25_b: float = Field(0.75, ge=0, le=1)
    bm25_avg_len: float = Field(70, gt=0)
    bm25_language: str = "english"
    hnsw_ef: int = Field(128, ge=1)
    search_threads: int = Field(1, ge=1, le=256)
    # How the API process embeds queries: the model exported to ONNX and run by
    # ONNX Runtime (about half torch's latency here), or torch itself.
    query_backend: Literal["onnx", "torch"] = "onnx"
    query_threads: int = Field(1, ge=1, le=256)
    # Where the ONNX export is kept; empty: <data_dir>/models.
    model_cache_dir: str = ""
    collection: str = Field("kf_chunks", pattern=r"^[A-Za-z0-9_-]+$")


class ExternalIssuerSettings(_Section):
    """Another identity provider whose JWTs are accepted (verified with its public key)."""

    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    algorithm: Literal["RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"] = "RS256"
    public_key_file: Path
    tenant_claim: str = "kf_tenant"  # the tenant's name
    role_claim: str = "kf_role"  # viewer | editor | admin


class AuthSettings(_Section):
    """Signed tokens exchanged for API keys at POST /v1/auth/token.

    HS256 signs with ``jwt_secret`` (or the contents of ``jwt_secret_file``);
    RS256 with ``jwt_private_key_file`` and verifies with ``jwt_public_key_file``.
    In development mode with neither, a random secret is generated once and kept
    in ``<data_dir>/jwt-secret``; production mode refuses to start without one.
    """

    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    jwt_secret: str = Field("", repr=False)
    jwt_secret_file: str = ""
    jwt_private_key_file: str = ""
    jwt_public_key_file: str = ""
    issuer: str = Field("knowledge-foundry", min_length=1)
    audience: str = Field("knowledge-foundry-api", min_length=1)
    token_ttl_s: int = Field(900, ge=30, le=86_400)
    leeway_s: int = Field(30, ge=0, le=300)
    external_issuers: list[ExternalIssuerSettings] = []
    # People signed in to the web app: a session's cookie carries a token that
    # lives session_idle_s and is renewed while in use, up to session_max_s after
    # signing in. A one-time set-password link works for link_ttl_s.
    session_idle_s: int = Field(1800, ge=60, le=86_400)
    session_max_s: int = Field(43_200, ge=300, le=30 * 86_400)
    link_ttl_s: int = Field(7 * 86_400, ge=300, le=30 * 86_400)
    # The first admin `kf serve` invites (with a link printed beside the admin key).
    first_admin_email: str = "admin@localhost"
    # Invitation e-mails (empty host: links are only shown, never mailed).
    smtp_host: str = ""
    smtp_port: int = Field(25, ge=1, le=65535)
    mail_sender: str = "knowledge-foundry@localhost"


class RateLimit(_Section):
    """A token bucket: ``burst`` requests at once, refilled at ``per_hour``."""

    per_hour: int = Field(ge=1)
    burst: int = Field(ge=1)


class RateLimitSettings(_Section):
    enabled: bool = True
    viewer: RateLimit = RateLimit(per_hour=100, burst=20)
    editor: RateLimit = RateLimit(per_hour=500, burst=50)
    admin: RateLimit = RateLimit(per_hour=2000, burst=100)
    auditor: RateLimit = RateLimit(per_hour=2000, burst=100)
    analyst: RateLimit = RateLimit(per_hour=2000, burst=100)
    # Shared by all of a tenant's keys and tokens, whatever their role.
    tenant: RateLimit = RateLimit(per_hour=10_000, burst=500)
    # A person signed in to the web app (whatever their role: a page polls).
    session: RateLimit = RateLimit(per_hour=7200, burst=200)
    # Sign-in attempts, per account and per client address (always on).
    login_account: RateLimit = RateLimit(per_hour=30, burst=10)
    login_client: RateLimit = RateLimit(per_hour=300, burst=30)


class LlmProviderSettings(_Section):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,40}$")
    kind: Literal["openai", "anthropic", "openai_compatible", "extractive"]
    base_url: str = ""  # empty: the vendor's own endpoint (openai, anthropic)
    # The name of the environment variable that holds the key: keys are never
    # written in configuration files.
    api_key_env: str = ""
    timeout_s: float = Field(60.0, gt=0, le=600)


class LlmRouteSettings(_Section):
    pattern: str = Field(min_length=1)  # a glob over model names
    provider: str
    priority: int = 100  # lower is tried first
    model: str | None = None  # the name sent upstream (default: as requested)


class LlmPriceSettings(_Section):
    input_per_million: Decimal = Field(ge=0)
    output_per_million: Decimal = Field(ge=0)
    cached_input_per_million: Decimal | None = Field(None, ge=0)  # None: as input


class LlmSettings(_Section):
    default_model: str = "extractive"
    providers: list[LlmProviderSettings] = [
        LlmProviderSettings(name="extractive", kind="extractive")
    ]
    routes: list[LlmRouteSettings] = [LlmRouteSettings(pattern="extractive", provider="extractive")]
    # Tenant name -> providers its passages may be sent to; tenants not listed
    # get default_allowed_providers (empty list: every configured provider).
    allowed_providers: dict[str, list[str]] = {}
    default_allowed_providers: list[str] = []
    retry_max_attempts: int = Field(3, ge=1, le=10)
    retry_base_delay_s: float = Field(0.5, ge=0)
    retry_max_delay_s: float = Field(8.0, ge=0)
    max_retry_after_s: float = Field(30.0, ge=0)
    breaker_failure_threshold: int = Field(5, ge=1)
    breaker_cooldown_s: float = Field(30.0, ge=0)
    prices: dict[str, LlmPriceSettings] = {}

    @model_validator(mode="after")
    def _routes_name_providers(self) -> LlmSettings:
        names = {p.name for p in self.providers}
        if len(names) != len(self.providers):
            raise ValueError("llm.providers: names must be unique")
        named = (
            {r.provider for r in self.routes}
            | {p for ps in self.allowed_providers.values() for p in ps}
            | set(self.default_allowed_providers)
        )
        unknown = sorted(named - names)
        if unknown:
            raise ValueError(f"llm: unknown provider(s) {', '.join(unknown)}")
        return self


class AuditSettings(_Section):
    # Ed25519 key that signs checkpoints; empty: <data_dir>/audit-signing-key (0600).
    signing_key_file: str = ""
    # Where signed checkpoints are written, outside PostgreSQL; empty: <data_dir>/audit-checkpoints.
    checkpoint_dir: str = ""
    checkpoint_every_events: int = Field(1000, ge=1, le=10_000_000)
    checkpoint_every_s: float = Field(300, gt=0)
    # Record every read of content (who saw what). Off, "who saw this" has no answer
    # for reads made meanwhile: for deployments that need no such record.
    record_reads: bool = True
    # Refused requests are recorded at most this many times per client and window;
    # the others are counted on the client's next record.
    refusals_per_window: int = Field(5, ge=1, le=10_000)
    refusal_window_s: float = Field(60, gt=0)
    # Access records (reads, refusals) older than this leave the read models when
    # `kf audit prune` applies it (recorded as an event); the events stay.
    access_retention_days: int = Field(400, ge=1, le=36_500)
    # The activity context's relay and the audit trail's read models (audit, readers,
    # usage) wait up to this long after an event for more, so that reads recorded one at
    # a time reach them in batches (the trail lags by up to about twice this: the relay's
    # wait, then the read models'). A batch costs the background about what ten reads
    # do, whatever its size (docs/audit.md). 0: at once.
    batch_linger_ms: int = Field(1000, ge=0, le=5_000)


class TenantRetentionSettings(_Section):
    deleted_days: int | None = Field(None, ge=0, le=36_500)
    documents_days: int | None = Field(None, ge=1, le=36_500)
    conversations_days: int | None = Field(None, ge=1, le=36_500)


class RetentionSettings(_Section):
    # Deleted documents stay in the trash (restorable) this long, then are erased.
    deleted_days: int = Field(30, ge=0, le=36_500)
    # Documents uploaded / conversations idle longer than this are erased (None: off).
    documents_days: int | None = Field(None, ge=1, le=36_500)
    conversations_days: int | None = Field(None, ge=1, le=36_500)
    # Per tenant (by name), overriding the values above.
    tenants: dict[str, TenantRetentionSettings] = {}
    # How often `kf serve` runs it (`kf retention run` runs it once).
    every_s: float = Field(3600, gt=0)


class CryptoSettings(_Section):
    # The master key that wraps every data key (base64 of 32 random bytes). Empty:
    # read from master_key_file; both empty: <data_dir>/master-key, made on first
    # start (0600). Keep it outside the database and its backups: without it no
    # sealed content (files, file names, questions, answers) can be read.
    master_key: str = Field("", repr=False)
    master_key_file: str = ""


class BudgetSettings(_Section):
    # Budgets are set per tenant (PUT /v1/budgets/..., kf budgets set); this is how they
    # are kept. A question's hold on its budgets lapses after hold_ttl_s if the process
    # that took it never settles it (it died mid-question).
    hold_ttl_s: float = Field(600, gt=0)
    # How often counters are set to the usage read model's figure (the record).
    reconcile_every_s: float = Field(30, gt=0)


class WebhookSettings(_Section):
    url: str
    # The HMAC key receivers check X-KF-Signature with; empty: from the environment
    # variable named by secret_env.
    secret: str = Field("", repr=False)
    secret_env: str = ""


class EmailSettings(_Section):
    smtp_host: str = ""  # empty: no email
    smtp_port: int = Field(25, ge=1, le=65535)
    sender: str = "knowledge-foundry@localhost"
    recipients: list[str] = []


class AlertSettings(_Section):
    # Budget alerts (80% and 100% of a budget, once per period) go to these.
    webhooks: list[WebhookSettings] = []
    email: EmailSettings = EmailSettings()
    max_attempts: int = Field(5, ge=1, le=50)
    backoff_s: float = Field(1.0, ge=0)  # doubles after each failed attempt
    poll_s: float = Field(1.0, gt=0)


class QaSettings(_Section):
    default_k: int = Field(5, ge=1, le=100)
    max_k: int = Field(20, ge=1, le=100)
    max_question_chars: int = Field(2000, ge=1, le=100_000)
    max_turns: int = Field(50, ge=1, le=10_000)
    max_context_chars: int = Field(12_000, ge=100, le=1_000_000)
    max_output_tokens: int = Field(512, ge=1, le=100_000)
    injection_policy: Literal["flag", "reject"] = "flag"
    injection_patterns: list[str] = []

    @model_validator(mode="after")
    def _patterns_compile(self) -> QaSettings:
        for pattern in self.injection_patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"qa.injection_patterns: {pattern!r} is not a regex: {exc}"
                ) from None
        return self


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    json_output: bool = Field(True, alias="json")


class Settings(_Section):
    mode: Literal["development", "production"] = "development"
    data_dir: Path = Path("./kf-data")
    api: ApiSettings = ApiSettings()
    database: DatabaseSettings = DatabaseSettings()
    nats: NatsSettings = NatsSettings()
    qdrant: QdrantSettings = QdrantSettings()
    redis: RedisSettings = RedisSettings()
    ingest: IngestSettings = IngestSettings()
    projections: ProjectionSettings = ProjectionSettings()
    health: HealthSettings = HealthSettings()
    search: SearchSettings = SearchSettings()
    auth: AuthSettings = AuthSettings()
    rate_limits: RateLimitSettings = RateLimitSettings()
    llm: LlmSettings = LlmSettings()
    qa: QaSettings = QaSettings()
    audit: AuditSettings = AuditSettings()
    crypto: CryptoSettings = CryptoSettings()
    retention: RetentionSettings = RetentionSettings()
    budgets: BudgetSettings = BudgetSettings()
    alerts: AlertSettings = AlertSettings()
    logging: LoggingSettings = LoggingSettings()

    @property
    def embedded_database(self) -> bool:
        return not self.database.url

    @property
    def embedded_nats(self) -> bool:
        return not self.nats.url


def _interpolate(value: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        whole = _INTERPOLATION.fullmatch(value)
        if whole:
            # A value that is only a reference keeps YAML typing of the default.
            name, default = whole.group(1), whole.group(2) or ""
            raw = environ.get(name, default)
            return yaml.safe_load(raw) if raw != "" else ""
        return _INTERPOLATION.sub(lambda m: environ.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: _interpolate(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, environ) for v in value]
    return value


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = yaml.safe_load(raw) if raw else ""
    return overrides


def _read_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{origin}: not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise SettingsError(f"{origin}: the top level must be a mapping")
    return loaded


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    env = os.environ if environ is None else environ
    default_text = resources.files("config").joinpath("default.yaml").read_text()
    data = _read_yaml(default_text, "default.yaml")
    config_file = config_file or (Path(env["KF_CONFIG"]) if env.get("KF_CONFIG") else None)
    if config_file is not None:
        try:
            text = config_file.read_text()
        except OSError as exc:
            raise SettingsError(f"cannot read config file {config_file}: {exc}") from exc
        data = _merge(data, _read_yaml(text, str(config_file)))
    data = _interpolate(data, env)
    data = _merge(data, _env_overrides(env))
    for (section, key), variable in _SECRET_VARIABLES.items():
        if env.get(variable):
            data = _merge(data, {section: {key: env[variable]}})
    data = _merge(data, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise SettingsError(f"invalid configuration: {problems}") from None
