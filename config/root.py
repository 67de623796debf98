"""The composition root: every long-lived object is built here, from settings, at start.

Nothing is constructed at import time anywhere else. ``Endpoints`` decides
where PostgreSQL and NATS are (configured URLs, or embedded servers under the
data directory); ``Container`` builds the applications, stores, read models
and the HTTP app on top of them.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import psycopg
import structlog
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresTrackingRecorder,
)
from fastapi import FastAPI
from fastapi.responses import Response

from commands.access import AccessApp
from commands.activity import ActivityApp
from commands.alerts import TRACKING_TABLE as NOTIFIER_TRACKING_TABLE
from commands.alerts import Notifier
from commands.answering import Answerer, AnswerLimits, Found, FoundPassage
from commands.auth import Authenticator
from commands.budgets import BudgetGuard, Reconciler
from commands.conversations import ConversationsApp
from commands.dead_letters import DeadLetters
from commands.documents import DocumentsApp, UploadLimits
from commands.retention import Policy, Retention, RetentionRunner
from commands.usage import UsageApp
from config.llm import configured_prices
from config.schema import check as check_schema
from config.settings import SearchSettings as SearchSettingsConfig
from config.settings import Settings
from domain.access import Role, Tenant, User, UserNotFoundError
from domain.errors import DomainError
from infra.blobs import PostgresBlobStore
from infra.budget_ledger import BudgetLedger, InProcessBudgetLedger, RedisBudgetLedger
from infra.bus import consumer_states, stream_answers
from infra.crypto import KeyStore, MasterKey
from infra.db import SessionLock, TenantReads, datastore, event_store_env, open_pool, reader_url
from infra.embedded import EmbeddedNats, EmbeddedPostgres
from infra.embedding import (
    MODEL_NAME,
    Embedder,
    Matrix,
    OnnxEmbedder,
    SentenceTransformerEmbedder,
)
from infra.eventlog import EventLog
from infra.index_home import IndexHolder, IndexHome
from infra.notify import Channel, EmailChannel, WebhookChannel
from infra.ratelimit import InProcessRateLimiter, RateLimiter, RedisRateLimiter, RoleRateLimits
from infra.relay import relay_tracking
from infra.search_index import (
    Bm25Encoder,
    Filters,
    Fusion,
    IndexMismatchError,
    IndexSpec,
    SearchIndex,
    point_id,
)
from infra.signing import Signer
from infra.telemetry import render_metrics
from infra.tokens import TokenService
from infra.web import (
    BodySizeLimitMiddleware,
    RequestContextMiddleware,
    Utf8RequestMiddleware,
    install_error_handlers,
)
from processors.specs import STAGE_SPECS
from projections.audit.checkpoints import Checkpointer, CheckpointStore
from projections.base import ProjectionView
from projections.catalog import CatalogView
from projections.dead_letters import DeadLettersView
from projections.fulltext import FulltextView
from projections.read_models import READ_MODELS
from projections.rebuild import Rebuilder, RebuildJobs
from projections.search import SearchService, SearchView
from projections.search import SearchSettings as SearchServiceSettings
from projections.slice import Parts, RebuildContext
from projections.status import ComponentStatus, collect_status
from projections.usage import UsageView

log = structlog.get_logger(__name__)

DEFAULT_TENANT = "default"
ADMIN_KEY_FILE = "admin-key"
# Multipart framing around an upload; the exact file-size check is the command's.
_MULTIPART_SLACK = 1024 * 1024
EMBEDDING_DIMENSION = 384
AUDIT_KEY = "audit-signing-key"
MASTER_KEY = "master-key"
CHECKPOINTS = "audit-checkpoints"


@dataclass
class Endpoints:
    database_url: str
    nats_url: str
    embedded_postgres: EmbeddedPostgres | None = None
    embedded_nats: EmbeddedNats | None = None

    @classmethod
    def resolve(cls, settings: Settings, *, need_nats: bool = True) -> Endpoints:
        data_dir = settings.data_dir
        embedded_postgres = embedded_nats = None
        database_url = settings.database.url
        if not database_url:
            embedded_postgres = EmbeddedPostgres(data_dir)
            database_url = embedded_postgres.start()
        nats_url = settings.nats.url
        if need_nats and not nats_url:
            embedded_nats = EmbeddedNats(data_dir)
            nats_url = embedded_nats.start()
        return cls(database_url, nats_url, embedded_postgres, embedded_nats)

    def close(self) -> None:
        if self.embedded_nats is not None:
            self.embedded_nats.stop()
        if self.embedded_postgres is not None:
            self.embedded_postgres.stop()


@dataclass
class Container:
    settings: Settings
    endpoints: Endpoints
    documents: DocumentsApp = field(init=False)
    access: AccessApp = field(init=False)
    conversations: ConversationsApp = field(init=False)
    blobs: PostgresBlobStore = field(init=False)
    event_logs: dict[str, EventLog] = field(init=False)
    views: dict[str, ProjectionView] = field(init=False)

    def __post_init__(self) -> None:
        url = self.endpoints.database_url
        db = self.settings.database
        check_schema(url)  # roles never create tables: `kf migrate` does, once
        env = event_store_env(url, db.pool_size, db.max_overflow)
        self._blob_pool = open_pool(url, max_size=db.pool_size + db.max_overflow, name="blobs")
        self.blobs = PostgresBlobStore(self._blob_pool)
        self.keys = KeyStore(self._blob_pool, self.master_key())
        self.keys.check_master()  # the wrong master key stops the program here
        self.documents = DocumentsApp(
            env,
            blobs=self.blobs,
            keys=self.keys,
            limits=UploadLimits(self.settings.api.max_upload_bytes),
        )
        self.access = AccessApp(env)
        self.conversations = ConversationsApp(env, keys=self.keys)
        self.activity = ActivityApp(
            env,
            refusals_per_window=self.settings.audit.refusals_per_window,
            refusal_window_s=self.settings.audit.refusal_window_s,
            keys=self.keys,
        )
        self.usage = UsageApp(env, configured=configured_prices(self.settings.llm))
        self.dead_letters = DeadLetters(self.activity, self.documents)
        self.applications = {
            app.context: app
            for app in (self.documents, self.access, self.conversations, self.activity, self.usage)
        }
        self.event_logs = {
            context: EventLog(context, app) for context, app in self.applications.items()
        }
        self._relay_tracking = relay_tracking(self.documents)
        self._views_store = datastore(url, pool_size=db.pool_size, max_overflow=db.max_overflow)
        search = self.settings.search
        self.bm25 = Bm25Encoder(
            k=search.bm25_k,
            b=search.bm25_b,
            avg_len=search.bm25_avg_len,
            language=search.bm25_language,
        )
        self.index_spec = IndexSpec(MODEL_NAME, EMBEDDING_DIMENSION, self.bm25.description)
        self.index_home = IndexHome(
            self.index_spec,
            self.settings.data_dir.resolve() / "index",
            self._qdrant_client(),
            search.collection,
            search_threads=search.search_threads,
            hnsw_ef=search.hnsw_ef,
        )
        self.index = IndexHolder(self.open_live_index)
        self.parts = Parts(
            datastore=self._views_store,
            blobs=self.blobs,
            keys=self.keys,
            index=self.index,
            bm25=self.bm25,
            index_spec=self.index_spec,
            index_home=self.index_home,
        )
        self.views = {model.name: model.make_view(self.parts) for model in READ_MODELS}
        # Opened on first use: only processes that serve queries need it.
        self.tenant_reads = TenantReads(
            reader_url(url, db.reader_url, db.reader_password),
            max_size=db.pool_size + db.max_overflow,
            lazy=True,
        )
        for view in self.views.values():
            view.reads = self.tenant_reads
        self._query_embedder: Embedder | None = None
        self.rebuilds = RebuildJobs(self.rebuilder)

    @property
    def search_view(self) -> SearchView:
        view = self.views["search"]
        assert isinstance(view, SearchView)
        return view

    @property
    def fulltext(self) -> FulltextView:
        view = self.views["fulltext"]
        assert isinstance(view, FulltextView)
        return view

    @property
    def dead_letters_view(self) -> DeadLettersView:
        view = self.views["dead_letters"]
        assert isinstance(view, DeadLettersView)
        return view

    # ------------------------------------------------------------ search index

    def _qdrant_client(self) -> Any:
        if not self.settings.qdrant.url:
            return None
        from qdrant_client import QdrantClient

        return QdrantClient(url=self.settings.qdrant.url, timeout=60)

    def check_index_spec(self) -> None:
        """Record the model the index holds; refuse to start with another one configured."""
        spec = self.index_spec
        with self._views_store.transaction(commit=True) as curs:
            curs.execute(
                "INSERT INTO search_index_meta (index_name, model, dimension, sparse)"
                " VALUES ('search', %s, %s, %s) ON CONFLICT (index_name) DO NOTHING",
                (spec.model, spec.dimension, spec.sparse),
            )
            row = curs.execute(
                "SELECT model, dimension FROM search_index_meta WHERE index_name = 'search'"
            ).fetchone()
        assert row is not None
        if (row["model"], row["dimension"]) != (spec.model, spec.dimension):
            raise IndexMismatchError(
                f"the search index holds {row['model']} ({row['dimension']} dims) vectors but "
                f"{spec.model} ({spec.dimension} dims) is configured; documents must be "
                "re-embedded before the index can be rebuilt with another model"
            )

    def open_live_index(self) -> SearchIndex:
        self.check_index_spec()
        return self.index_home.open_live()

    def rebuilder(self) -> Rebuilder:
        context = RebuildContext(
            datastore=self._views_store,
            event_logs=self.event_logs,
            parts=self.parts,
            views=self.views,
        )
        return Rebuilder(context, READ_MODELS)

    def master_key(self) -> MasterKey:
        crypto = self.settings.crypto
        if crypto.master_key:
            return MasterKey.from_text(crypto.master_key, source="crypto.master_key")
        if crypto.master_key_file:
            return MasterKey.from_text(
                Path(crypto.master_key_file).read_text(), source=crypto.master_key_file
            )
        return MasterKey.load_or_create(self.settings.data_dir.resolve() / MASTER_KEY)

    # ------------------------------------------------------------- audit trail

    @property
    def audit_key_path(self) -> Path:
        configured = self.settings.audit.signing_key_file
        return Path(configured) if configured else self.settings.data_dir.resolve() / AUDIT_KEY

    def checkpoint_store(self) -> CheckpointStore:
        configured = self.settings.audit.checkpoint_dir
        directory = (
            Path(configured) if configured else self.settings.data_dir.resolve() / CHECKPOINTS
        )
        return CheckpointStore(directory)

    def checkpointer(self) -> Checkpointer:
        audit = self.settings.audit
        return Checkpointer(
            self._views_store,
            self.checkpoint_store(),
            Signer.load_or_create(self.audit_key_path),
            every_events=audit.checkpoint_every_events,
            every_s=audit.checkpoint_every_s,
        )

    def query_embedder(self) -> Embedder:
        """The model for embedding queries in this process (loaded on first use)."""
        if self._query_embedder is None:
            search = self.settings.search
            if search.query_backend == "onnx":
                self._query_embedder = OnnxEmbedder(
                    self.model_cache_dir, threads=search.query_threads
                )
            else:
                self._query_embedder = SentenceTransformerEmbedder(
                    batch_size=1, torch_threads=search.query_threads
                )
        return self._query_embedder

    @property
    def model_cache_dir(self) -> Path:
        configured = self.settings.search.model_cache_dir
        return Path(configured) if configured else self.settings.data_dir.resolve() / "models"

    def warm_search(self) -> None:
        """Open the index and load the query model now, not on the first search."""
        _ = self.index.current
        self.query_embedder().embed(["warm up"])

    def search_service(self) -> SearchService:
        search = self.settings.search
        return SearchService(
            self.index,
            LazyEmbedder(self.query_embedder),
            self.bm25,
            SearchServiceSettings(
                fusion=Fusion(
                    k=search.rrf_k,
                    dense_weight=search.dense_weight,
                    sparse_weight=search.keyword_weight,
                    prefetch=search.prefetch,
                ),
                max_k=search.max_k,
            ),
        )

    def authenticator(self) -> Authenticator:
        """API keys and signed tokens (refuses insecure token settings in production)."""
        tokens = TokenService.from_settings(
            self.settings.auth,
            data_dir=self.settings.data_dir,
            production=self.settings.mode == "production",
        )
        return Authenticator(
            self.access,
            tokens,
            session_idle_s=self.settings.auth.session_idle_s,
            session_max_s=self.settings.auth.session_max_s,
        )

    def answerer(self) -> Answerer:
        # The providers' SDKs take seconds to import: only API processes need them.
        from config.llm import build_llm

        qa = self.settings.qa
        names: dict[str, str] = {}

        def tenant_name(tenant_id: str) -> str:
            if tenant_id not in names:
                names[tenant_id] = self.access.get_tenant(UUID(tenant_id)).name
            return names[tenant_id]

        return Answerer(
            self.conversations,
            SearchPassages(self.search_service(), self.search_view, self.settings.search),
            build_llm(self.settings.llm, self.bm25.terms),
            AnswerLimits(
                default_k=qa.default_k,
                max_k=qa.max_k,
                max_question_chars=qa.max_question_chars,
                max_turns=qa.max_turns,
                max_context_chars=qa.max_context_chars,
                max_output_tokens=qa.max_output_tokens,
                injection_policy=qa.injection_policy,
                injection_patterns=tuple(qa.injection_patterns),
            ),
            tenant_name,
            self.usage,
            self.budget_guard,
        )

    @functools.cached_property
    def budget_guard(self) -> BudgetGuard:
        """Budgets on the question path: counters in Redis when configured (shared by every
        API process), else in this process."""
        ledger: BudgetLedger = (
            RedisBudgetLedger(self.settings.redis.url)
            if self.settings.redis.url
            else InProcessBudgetLedger()
        )
        usage, catalog = self.views["usage"], self.views["catalog"]
        assert isinstance(usage, UsageView) and isinstance(catalog, CatalogView)
        figures = ReadModelFigures(usage, catalog)
        return BudgetGuard(self.usage, ledger, figures, hold_ttl_s=self.settings.budgets.hold_ttl_s)

    def notifier(self) -> Notifier:
        """Budget alerts to the configured webhooks and email (started by API processes)."""
        alerts = self.settings.alerts
        channels: list[Channel] = [
            WebhookChannel(hook.url, hook.secret or os.environ.get(hook.secret_env, ""))
            for hook in alerts.webhooks
        ]
        if alerts.email.smtp_host and alerts.email.recipients:
            email = alerts.email
            channels.append(
                EmailChannel(email.smtp_host, email.smtp_port, email.sender, email.recipients)
            )
        store = self.usage.recorder
        assert isinstance(store, PostgresApplicationRecorder)
        tracking = PostgresTrackingRecorder(
            store.datastore, tracking_table_name=NOTIFIER_TRACKING_TABLE
        )
        return Notifier(
            self.usage, channels, tracking,
            SessionLock(self.endpoints.database_url, "kf.notifier"),
            max_attempts=alerts.max_attempts, backoff_s=alerts.backoff_s, poll_s=alerts.poll_s,
        )  # fmt: skip

    def retention(self) -> Retention:
        """The retention job (``kf retention run``, and periodically in API processes)."""
        settings = self.settings.retention
        names: dict[str, str] = {}

        def policy_for(tenant_id: str) -> Policy:
            if tenant_id not in names:
                try:
                    names[tenant_id] = self.access.get_tenant(UUID(tenant_id)).name
                except (ValueError, DomainError):
                    names[tenant_id] = ""
            own = settings.tenants.get(names[tenant_id])
            deleted = own.deleted_days if own and own.deleted_days is not None else None
            return Policy(
                deleted_days=settings.deleted_days if deleted is None else deleted,
                documents_days=own.documents_days
                if own and own.documents_days is not None
                else settings.documents_days,
                conversations_days=own.conversations_days
                if own and own.conversations_days is not None
                else settings.conversations_days,
            )

        return Retention(
            self.documents, self.conversations, ReadModelCandidates(self._views_store), policy_for
        )

    def readiness_checks(
        self, role: Literal["all", "read", "write"]
    ) -> dict[str, Callable[[], Awaitable[str | None]]]:
        """What ``/health/ready`` requires of this process (each answers None or why not)."""
        health = self.settings.health
        database_url = self.endpoints.database_url
        timeout = health.timeout_s

        def select_one() -> None:
            with psycopg.connect(database_url, connect_timeout=max(1, int(timeout))) as conn:
                conn.execute("SELECT 1")

        async def postgres() -> str | None:
            await asyncio.to_thread(select_one)
            return None

        async def nats_stream() -> str | None:
            await stream_answers(self.endpoints.nats_url, self.settings.nats.stream, timeout)
            return None

        async def index() -> str | None:
            await asyncio.to_thread(self.index.current.count, "-")
            return None

        async def projections() -> str | None:
            statuses = await asyncio.to_thread(self.projection_status)
            behind = [
                f"{s.name} {s.lag} events behind"
                for s in statuses
                if s.kind == "projection" and s.lag > health.max_projection_lag
            ]
            stopped = [
                f"{letter.component.removeprefix('projection:')} stopped at {letter.subject}"
                f" ({letter.event_type}: {letter.error[:200]}; dead letter {letter.letter_id},"
                f" {letter.state})"
                for letter in await asyncio.to_thread(self.dead_letters_view.stopped_projections)
            ]
            return "; ".join([*stopped, *behind]) or None

        async def workers() -> str | None:
            names = [s.consumer for s in STAGE_SPECS if not s.suffix]
            states = await consumer_states(
                self.endpoints.nats_url, self.settings.nats.stream, names, timeout
            )
            idle = [s.name for s in states if s.waiting_pulls == 0]
            return f"no worker listening on {', '.join(idle)}" if idle else None

        checks: dict[str, Callable[[], Awaitable[str | None]]] = {
            "postgres": postgres,
            "nats": nats_stream,
        }
        if role in ("all", "read"):
            checks["index"] = index
            checks["projections"] = projections
        if health.require_workers:
            checks["workers"] = workers
        return checks

    def rate_limiter(self) -> RateLimiter | None:
        if not self.settings.rate_limits.enabled:
            return None
        if self.settings.redis.url:
            return RedisRateLimiter(self.settings.redis.url)
        return InProcessRateLimiter()

    def login_limiter(self) -> RateLimiter:
        """Sign-in attempts are throttled whether or not request rate limits are on."""
        if self.settings.redis.url:
            return RedisRateLimiter(self.settings.redis.url)
        return InProcessRateLimiter()

    def rate_limit_policy(self) -> RoleRateLimits:
        limits = self.settings.rate_limits
        per_role = {
            Role.VIEWER: (limits.viewer.burst, limits.viewer.per_hour),
            Role.EDITOR: (limits.editor.burst, limits.editor.per_hour),
            Role.ADMIN: (limits.admin.burst, limits.admin.per_hour),
            Role.AUDITOR: (limits.auditor.burst, limits.auditor.per_hour),
            Role.ANALYST: (limits.analyst.burst, limits.analyst.per_hour),
        }
        return RoleRateLimits(
            per_role,
            (limits.tenant.burst, limits.tenant.per_hour),
            (limits.session.burst, limits.session.per_hour),
        )

    def projection_status(self) -> list[ComponentStatus]:
        return collect_status(list(self.views.values()), self.event_logs, self._relay_tracking)

    def close(self) -> None:
        reconciler = getattr(self, "_reconciler", None)
        if reconciler is not None:
            reconciler.stop()
        notifier = getattr(self, "_notifier", None)
        if notifier is not None:
            notifier.stop()
        retention = getattr(self, "_retention", None)
        if retention is not None:
            retention.stop()
        self.index.close()
        self.documents.close()
        self.access.close()
        self.conversations.close()
        self.activity.close()
        self.usage.close()
        if "budget_guard" in self.__dict__:
            self.budget_guard.close()
        self.tenant_reads.close()
        self._views_store.close()
        self._blob_pool.close()

    # ---------------------------------------------------------------- http app

    def create_app(self, role: Literal["all", "read", "write"] = "all") -> FastAPI:
        from read_api import health as read_health
        from read_api import projections as read_projections
        from read_api import rebuilds as read_rebuilds
        from read_api import settings as read_settings
        from read_api import ui as read_ui
        from read_api import workers as read_workers
        from write_api import auth as write_auth
        from write_api import budgets as write_budgets
        from write_api import chat as write_chat
        from write_api import conversations as write_conversations
        from write_api import dead_letters as write_dead_letters
        from write_api import documents as write_documents
        from write_api import keys as write_keys
        from write_api import prices as write_prices
        from write_api import users as write_users

        app = FastAPI(
            title="Knowledge Foundry",
            version="0.1.0",
            description="Upload documents, follow their processing, search and ask.",
        )
        self._set_state(app)
        app.state.readiness = self.readiness_checks(role)
        install_error_handlers(app)
        app.include_router(read_health.router)
        if role in ("all", "write"):
            app.include_router(write_auth.router)
            app.include_router(write_documents.router)
            app.include_router(write_keys.router)
            app.include_router(write_users.router)
            app.include_router(write_prices.router)
            app.include_router(write_prices.repricings)
            app.include_router(write_budgets.router)
            app.include_router(write_conversations.router)
            app.include_router(write_chat.router)
            app.include_router(write_dead_letters.router)
        if role in ("all", "read"):
            for model in READ_MODELS:
                if model.router is not None:
                    app.include_router(model.router)
            app.include_router(read_projections.router)
            app.include_router(read_rebuilds.router)
            app.include_router(read_settings.router)
            app.include_router(read_workers.router)
        # The web app: static files that talk to the routes above like any client.
        app.include_router(read_ui.router)
        app.include_router(read_ui.root_redirect)

        @app.get("/health", include_in_schema=False)
        def health() -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/metrics", include_in_schema=False)
        def metrics() -> Response:
            body, content_type = render_metrics()
            return Response(body, media_type=content_type)

        app.add_middleware(BodySizeLimitMiddleware, max_bytes=app.state.max_body_bytes)
        app.add_middleware(Utf8RequestMiddleware)
        app.add_middleware(RequestContextMiddleware)
        return app

    def _set_state(self, app: FastAPI) -> None:
        """What the routers' dependencies take from ``app.state``."""
        self.access.enable_key_cache()
        self.tenant_reads.open()  # an API refuses to start if its reader role could bypass RLS
        app.state.settings = self.settings
        app.state.authenticator = self.authenticator()
        app.state.rate_limiter = self.rate_limiter()
        app.state.rate_limits = self.rate_limit_policy()
        app.state.login_limiter = self.login_limiter()
        app.state.conversations = self.conversations
        app.state.answerer = self.answerer()
        app.state.documents = self.documents
        app.state.access = self.access
        app.state.database_reachable = self.access.database_reachable
        app.state.read_recorder = (
            self.activity.record_read if self.settings.audit.record_reads else _reads_not_recorded
        )
        app.state.refusal_recorder = self.activity.record_refusal
        app.state.search = self.search_service()
        app.state.usage_app = self.usage
        app.state.dead_letters = self.dead_letters
        app.state.budget_guard = self.budget_guard
        self._reconciler = Reconciler(self.budget_guard, self.settings.budgets.reconcile_every_s)
        self._reconciler.start()
        self._notifier = self.notifier()
        self._notifier.start()
        self._retention = RetentionRunner(
            self.retention(),
            SessionLock(self.endpoints.database_url, "kf.retention"),
            self.settings.retention.every_s,
            lambda: datetime.now(UTC),
        )
        self._retention.start()
        app.state.rebuilds = self.rebuilds
        app.state.operator_tenant = str(Tenant.id_for(DEFAULT_TENANT))
        app.state.views = self.views
        app.state.signer = Signer.load_or_create(self.audit_key_path)  # erasure certificates
        app.state.event_logs = self.event_logs
        app.state.projection_status = self.projection_status
        app.state.max_body_bytes = self.settings.api.max_upload_bytes + _MULTIPART_SLACK
        app.state.nats_url = self.endpoints.nats_url
        app.state.database_url = self.endpoints.database_url  # audit verification reads events
        app.state.checkpoint_store = self.checkpoint_store()
        app.state.worker_consumers = [spec.consumer for spec in STAGE_SPECS]

    # --------------------------------------------------------------- bootstrap

    def bootstrap(self) -> tuple[str, str | None]:
        """Create the default tenant and, if none is on disk, an admin key.

        Returns (tenant id, new admin key or None when one was already written).
        """
        tenant = self.access.ensure_tenant(name=DEFAULT_TENANT, actor="system:bootstrap")
        key_file = admin_key_path(self.settings.data_dir)
        if key_file.exists():
            return str(tenant.id), None
        _, token = self.access.issue_api_key(
            tenant_id=str(tenant.id),
            actor="system:bootstrap",
            name="bootstrap admin",
            role=Role.ADMIN,
        )
        write_secret_file(key_file, token)
        log.info("admin_key_issued", tenant_id=str(tenant.id), path=str(key_file))
        return str(tenant.id), token

    def first_admin_link(self, tenant_id: str) -> str | None:
        """A set-password link for the first admin while they have no password (each call
        makes a new one; earlier ones stop working), else None."""
        email = self.settings.auth.first_admin_email
        link_ttl = timedelta(seconds=self.settings.auth.link_ttl_s)
        invited = self.access.ensure_user(
            tenant_id=tenant_id,
            actor="system:bootstrap",
            email=email,
            role=Role.ADMIN,
            link_ttl=link_ttl,
        )
        if invited is not None:
            return invited[1]
        try:
            user = self.access.get_user(tenant_id, User.id_for(email))
        except UserNotFoundError:  # the address is an account of another tenant
            return None
        if user.password_hash is not None or user.disabled:
            return None
        _, token, _ = self.access.issue_user_link(
            tenant_id=tenant_id, actor="system:bootstrap", user_id=user.id, link_ttl=link_ttl
        )
        return token


def _reads_not_recorded(**read: Any) -> None:
    """``audit.record_reads: false``: reads are served without a record."""


def admin_key_path(data_dir: Path) -> Path:
    return data_dir.resolve() / ADMIN_KEY_FILE


def write_secret_file(path: Path, secret: str) -> None:
    """Write a secret readable only by its owner (created 0600, never widened)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    path.chmod(0o600)


class SearchPassages:
    """The answering side's port onto search: passages, and what was searched."""

    def __init__(
        self, service: SearchService, view: SearchView, settings: SearchSettingsConfig
    ) -> None:
        self._service = service
        self._view = view
        self._settings = settings

    def find(self, tenant_id: str, query: str, mode: str, k: int) -> Found:
        results = self._service.search(tenant_id, query, mode, k, Filters())  # type: ignore[arg-type]
        passages = [
            FoundPassage(
                chunk_id=point_id(r.document_id, r.chunk_index),
                document_id=r.document_id,
                filename=r.filename,
                page=r.page_start,
                chunk_index=r.chunk_index,
                text=r.text,
                score=r.score,
            )
            for r in results.results
        ]
        s = self._settings
        return Found(
            passages,
            {"documents": self._view.max_tracking_id("documents") or 0},
            {
                "rrf_k": s.rrf_k,
                "dense_weight": s.dense_weight,
                "keyword_weight": s.keyword_weight,
                "prefetch": s.prefetch,
                "bm25": self._service_bm25(),
            },
        )

    def _service_bm25(self) -> str:
        s = self._settings
        return f"k1={s.bm25_k} b={s.bm25_b} avg_len={s.bm25_avg_len} {s.bm25_language}"


class ReadModelFigures:
    """What budgets and quotas read of the read models: usage for answers, the catalog
    for what is stored."""

    def __init__(self, usage: UsageView, catalog: CatalogView) -> None:
        self._usage = usage
        self._catalog = catalog

    def budget_use(
        self, tenant_id: str, scope: str, metric: str, start: datetime, end: datetime
    ) -> tuple[Decimal, int]:
        return self._usage.budget_use(tenant_id, scope, metric, start, end)

    def quota_use(self, tenant_id: str, metric: str) -> tuple[Decimal, int]:
        return self._catalog.quota_use(tenant_id, metric)


class LazyEmbedder:
    """An Embedder that loads the model on first use (API processes start fast)."""

    def __init__(self, load: Callable[[], Embedder]) -> None:
        self._load = load

    @property
    def model_name(self) -> str:
        return self._load().model_name

    @property
    def dimension(self) -> int:
        return self._load().dimension

    def embed(self, texts: Sequence[str]) -> Matrix:
        return self._load().embed(texts)

    def count_tokens(self, texts: Sequence[str]) -> int:
        return self._load().count_tokens(texts)


class ReadModelCandidates:
    """What retention is due for, from the catalog and conversations read models (as owner)."""

    def __init__(self, datastore: PostgresDatastore) -> None:
        self._datastore = datastore

    def _ids(self, query: str, params: tuple[object, ...]) -> list[UUID]:
        with self._datastore.get_connection() as conn:
            return [next(iter(row.values())) for row in conn.execute(query, params).fetchall()]

    def tenants(self) -> list[str]:
        with self._datastore.get_connection() as conn:
            rows = conn.execute(
                "SELECT tenant_id FROM catalog_documents UNION SELECT tenant_id FROM conversations"
            ).fetchall()
        return sorted(str(row["tenant_id"]) for row in rows)

    def deleted_before(self, tenant_id: str, cutoff: datetime) -> list[UUID]:
        return self._ids(
            "SELECT document_id FROM catalog_documents WHERE tenant_id = %s"
            " AND status = 'deleted' AND deleted_at < %s ORDER BY deleted_at",
            (tenant_id, cutoff),
        )

    def uploaded_before(self, tenant_id: str, cutoff: datetime) -> list[UUID]:
        return self._ids(
            "SELECT document_id FROM catalog_documents WHERE tenant_id = %s"
            " AND status <> 'erased' AND uploaded_at < %s ORDER BY uploaded_at",
            (tenant_id, cutoff),
        )

    def conversations_idle_since(self, tenant_id: str, cutoff: datetime) -> list[UUID]:
        return self._ids(
            "SELECT conversation_id FROM conversations WHERE tenant_id = %s"
            " AND erased_at IS NULL AND updated_at < %s ORDER BY updated_at",
            (tenant_id, cutoff),
        )
