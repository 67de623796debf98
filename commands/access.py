"""Command handlers of the access context (events table ``access_events``).

Authentication reads the event-sourced ``ApiKey`` itself, not a projection, so
a revoke takes effect on the very next request. Loaded keys are kept in a
bounded in-process cache, which is only trusted while this process is
listening on the access context's NOTIFY channel: every append to
``access_events`` (an issue or a revoke, from any process) clears it, and a
revoke made here clears it before returning. If the listening connection is
lost, the cache is bypassed until it is back.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from uuid import UUID

import psycopg
import structlog
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import EnvType

from commands.base import CommandResult, ContextApplication
from domain.access import (
    ApiKey,
    ApiKeyNotFoundError,
    AuthenticationFailed,
    KeyToken,
    Principal,
    Role,
    Tenant,
    TenantExistsError,
    TenantNotFoundError,
    new_key_token,
)

log = structlog.get_logger(__name__)


class _KeyCache:
    """Bounded LRU of loaded keys with a time-to-live; off until a listener vouches for it."""

    def __init__(self, max_size: int, ttl_s: float) -> None:
        self._entries: OrderedDict[UUID, tuple[float, ApiKey]] = OrderedDict()
        self._max_size = max_size
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self.trusted = False

    def trust(self, trusted: bool) -> None:
        with self._lock:
            self.trusted = trusted
            self._entries.clear()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def get(self, key_id: UUID) -> ApiKey | None:
        with self._lock:
            if not self.trusted:
                return None
            entry = self._entries.get(key_id)
            if entry is None:
                return None
            loaded_at, key = entry
            if time.monotonic() - loaded_at > self._ttl_s:
                del self._entries[key_id]
                return None
            self._entries.move_to_end(key_id)
            return key

    def put(self, key: ApiKey) -> None:
        with self._lock:
            if not self.trusted:
                return
            self._entries[key.id] = (time.monotonic(), key)
            self._entries.move_to_end(key.id)
            while len(self._entries) > self._max_size:
                self._entries.popitem(last=False)

    def invalidate(self, key_id: UUID) -> None:
        with self._lock:
            self._entries.pop(key_id, None)


class _AccessChangeListener(threading.Thread):
    """LISTENs on the access events' channel; any append clears the key cache."""

    def __init__(self, recorder: PostgresApplicationRecorder, cache: _KeyCache) -> None:
        super().__init__(name="access-listener", daemon=True)
        kwargs = recorder.datastore.pool.kwargs
        self._connect_kwargs = dict((kwargs() if callable(kwargs) else kwargs) or {})
        self._connect_kwargs.pop("row_factory", None)
        self._channel = recorder.channel_name
        self._cache = cache
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                with psycopg.connect(autocommit=True, **self._connect_kwargs) as conn:
                    conn.execute(f'LISTEN "{self._channel}"')
                    self._cache.trust(True)
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self._cache.clear()
            except Exception as exc:  # the database went away: stop trusting the cache
                self._cache.trust(False)
                log.warning("access_listener_reconnecting", error=repr(exc))
                self._stopping.wait(1.0)
        self._cache.trust(False)

    def stop(self) -> None:
        self._stopping.set()


class AccessApp(ContextApplication):
    context = "access"

    def __init__(
        self,
        env: EnvType,
        *,
        key_cache_size: int = 10_000,
        key_cache_ttl_s: float = 60.0,
    ) -> None:
        super().__init__(env)
        self._keys = _KeyCache(key_cache_size, key_cache_ttl_s)
        self._known_tenants: set[UUID] = set()
        self._listener: _AccessChangeListener | None = None

    def enable_key_cache(self) -> None:
        """Cache keys for authentication (for processes that serve requests)."""
        if self._listener is None:
            recorder = self.recorder
            assert isinstance(recorder, PostgresApplicationRecorder)
            self._listener = _AccessChangeListener(recorder, self._keys)
            self._listener.start()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            with contextlib.suppress(RuntimeError):
                self._listener.join(5)
        super().close()

    # ----------------------------------------------------------------- tenants

    def create_tenant(self, *, name: str, actor: str) -> CommandResult:
        tenant = Tenant.create(name=name, actor=actor)
        if self._tenant_exists(tenant.id):
            raise TenantExistsError(f"A tenant named {tenant.name!r} already exists.")
        position = self.record(tenant)
        assert position is not None
        return CommandResult(tenant.id, position, changed=True)

    def ensure_tenant(self, *, name: str, actor: str) -> CommandResult:
        """Create the tenant unless it exists (idempotent, for bootstrap)."""
        tenant_id = Tenant.id_for(name)
        if self._tenant_exists(tenant_id):
            return CommandResult(tenant_id, self.position_of(tenant_id), changed=False)
        return self.create_tenant(name=name, actor=actor)

    def get_tenant(self, tenant_id: UUID) -> Tenant:
        try:
            tenant: Tenant = self.repository.get(tenant_id)
        except AggregateNotFoundError:
            raise TenantNotFoundError(f"No tenant {tenant_id}.") from None
        return tenant

    def tenant_by_name(self, name: str) -> Tenant:
        try:
            return self.get_tenant(Tenant.id_for(name))
        except TenantNotFoundError:
            raise TenantNotFoundError(f"No tenant named {name!r}.") from None

    def _tenant_exists(self, tenant_id: UUID) -> bool:
        try:
            self.repository.get(tenant_id)
        except AggregateNotFoundError:
            return False
        return True

    # ---------------------------------------------------------------- api keys

    def issue_api_key(
        self,
        *,
        tenant_id: str,
        actor: str,
        name: str,
        role: Role,
        expires_at: datetime | None = None,
        origin: str = "",
    ) -> tuple[CommandResult, str]:
        """Issue a key; returns the result and the token, which is never stored."""
        self.get_tenant(UUID(tenant_id))
        token = new_key_token()
        key = ApiKey.issue(
            token=token,
            tenant_id=tenant_id,
            actor=actor,
            name=name,
            role=role,
            expires_at=expires_at,
            now=datetime.now(UTC),
            origin=origin,
        )
        position = self.record(key)
        assert position is not None
        return CommandResult(key.id, position, changed=True), token.render()

    def get_api_key(self, tenant_id: str, key_id: UUID) -> ApiKey:
        try:
            key: ApiKey = self.repository.get(key_id)
        except AggregateNotFoundError:
            raise ApiKeyNotFoundError(f"No API key {key_id}.") from None
        if key.tenant_id != tenant_id:
            raise ApiKeyNotFoundError(f"No API key {key_id}.")
        return key

    def revoke_api_key(
        self, *, tenant_id: str, actor: str, key_id: UUID, origin: str = ""
    ) -> CommandResult:
        key = self.get_api_key(tenant_id, key_id)
        self._keys.invalidate(key_id)
        if not key.revoke(actor=actor, origin=origin):
            return CommandResult(key_id, self.position_of(key_id), changed=False)
        position = self.record(key)
        self._keys.invalidate(key_id)
        assert position is not None
        return CommandResult(key_id, position, changed=True)

    def authenticate(self, token: str) -> Principal:
        """The principal an API-key token stands for; raises ``AuthenticationFailed``."""
        parsed = KeyToken.parse(token)
        if parsed is None:
            raise AuthenticationFailed("malformed_key", "The bearer token is not an API key.")
        key = self._load_key(parsed.key_id)
        key.verify(parsed.secret, datetime.now(UTC))
        return key.principal()

    def authenticate_cached(self, token: str) -> Principal | None:
        """Like ``authenticate`` when the key is in the trusted cache (no I/O); else None."""
        parsed = KeyToken.parse(token)
        if parsed is None:
            return None
        key = self._keys.get(parsed.key_id)
        if key is None:
            return None
        key.verify(parsed.secret, datetime.now(UTC))
        return key.principal()

    def key_principal(self, key_id: UUID, via: str) -> Principal:
        """The principal of a key a token was exchanged for, if the key is still usable."""
        key = self._load_key(key_id)
        key.check_usable(datetime.now(UTC))
        return key.principal(via)

    def _load_key(self, key_id: UUID) -> ApiKey:
        key = self._keys.get(key_id)
        if key is None:
            loaded: object
            try:
                loaded = self.repository.get(key_id)
            except AggregateNotFoundError:
                loaded = None
            if not isinstance(loaded, ApiKey):
                raise AuthenticationFailed("unknown_key", "The key is unknown, expired or revoked.")
            key = loaded
            self._keys.put(key)
        return key

    def tenant_exists(self, tenant_id: UUID) -> bool:
        """Whether a tenant exists (remembered once seen: tenants are never removed)."""
        if tenant_id in self._known_tenants:
            return True
        exists = self._tenant_exists(tenant_id)
        if exists:
            self._known_tenants.add(tenant_id)
        return exists

    def forget_key(self, key_id: UUID) -> None:
        """Drop a cached key (called when another process revoked it)."""
        self._keys.invalidate(key_id)
