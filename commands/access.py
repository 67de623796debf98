"""Command handlers of the access context (events table ``access_events``).

Authentication reads the event-sourced ``ApiKey`` (or ``User`` and ``Session``)
itself, not a projection, so a revoke (a disable, a sign-out) takes effect on
the very next request. Loaded keys, users and sessions are kept in a
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
from datetime import UTC, datetime, timedelta
from uuid import UUID

import psycopg
import structlog
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import EnvType

from commands.base import CommandResult, ContextApplication
from domain.access import (
    ApiKey,
    ApiKeyNotFoundError,
    AuthenticationFailed,
    InvalidEmailError,
    InvalidLinkError,
    KeyToken,
    LinkToken,
    OwnAccountError,
    Principal,
    Role,
    Session,
    Tenant,
    TenantExistsError,
    TenantNotFoundError,
    User,
    UserExistsError,
    UserNotFoundError,
    WeakPasswordError,
    new_key_token,
    password_weakness,
)
from infra.passwords import Passwords

log = structlog.get_logger(__name__)


class _KeyCache:
    """Bounded LRU of loaded keys, users and sessions with a time-to-live; off until a
    listener vouches for it."""

    def __init__(self, max_size: int, ttl_s: float) -> None:
        self._entries: OrderedDict[UUID, tuple[float, Aggregate]] = OrderedDict()
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

    def get(self, key_id: UUID) -> Aggregate | None:
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

    def put(self, key: Aggregate) -> None:
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

    def __init__(
        self, recorder: PostgresApplicationRecorder, cache: _KeyCache, reachable: threading.Event
    ) -> None:
        super().__init__(name="access-listener", daemon=True)
        kwargs = recorder.datastore.pool.kwargs
        self._connect_kwargs = dict((kwargs() if callable(kwargs) else kwargs) or {})
        self._connect_kwargs.pop("row_factory", None)
        self._connect_kwargs["connect_timeout"] = 2
        self._channel = recorder.channel_name
        self._cache = cache
        self._reachable = reachable
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                with psycopg.connect(autocommit=True, **self._connect_kwargs) as conn:
                    conn.execute(f'LISTEN "{self._channel}"')
                    self._cache.trust(True)
                    self._reachable.set()
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self._cache.clear()
            except Exception as exc:  # the database went away: stop trusting the cache
                self._cache.trust(False)
                self._reachable.clear()
                log.warning("access_listener_reconnecting", error=repr(exc))
                self._stopping.wait(0.5)
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
        passwords: Passwords | None = None,
    ) -> None:
        super().__init__(env)
        self._keys = _KeyCache(key_cache_size, key_cache_ttl_s)
        self._passwords = passwords
        self._known_tenants: set[UUID] = set()
        self._listener: _AccessChangeListener | None = None
        # Set while the listener holds a connection: when PostgreSQL drops it and cannot
        # be reached again, requests are refused at once (503) instead of each waiting
        # out the event store's retries.
        self._reachable = threading.Event()
        self._reachable.set()  # until the listener finds otherwise

    def enable_key_cache(self) -> None:
        """Cache keys for authentication (for processes that serve requests)."""
        if self._listener is None:
            recorder = self.recorder
            assert isinstance(recorder, PostgresApplicationRecorder)
            self._listener = _AccessChangeListener(recorder, self._keys, self._reachable)
            self._listener.start()

    def database_reachable(self) -> bool:
        """False while this process's listener has lost PostgreSQL (True without one)."""
        return self._listener is None or self._reachable.is_set()

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
        if not isinstance(key, ApiKey):
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
        if not isinstance(key, ApiKey):
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

    # ------------------------------------------------------------------- users

    @property
    def passwords(self) -> Passwords:
        if self._passwords is None:
            self._passwords = Passwords()
        return self._passwords

    def invite_user(
        self,
        *,
        tenant_id: str,
        actor: str,
        email: str,
        role: Role,
        link_ttl: timedelta,
        origin: str = "",
    ) -> tuple[CommandResult, str, datetime]:
        """Invite a person; returns the result, their one-time set-password link's token
        (never stored) and when it expires."""
        self.get_tenant(UUID(tenant_id))
        user_id = User.id_for(email)
        if self._load(user_id) is not None:
            raise UserExistsError("An account with this e-mail address exists already.")
        link = LinkToken.new(user_id)
        expires_at = datetime.now(UTC) + link_ttl
        user = User.invite(
            email=email,
            tenant_id=tenant_id,
            actor=actor,
            role=role,
            link=link,
            link_expires_at=expires_at,
            origin=origin,
        )
        position = self.record(user)
        assert position is not None
        return CommandResult(user.id, position, changed=True), link.render(), expires_at

    def ensure_user(
        self, *, tenant_id: str, actor: str, email: str, role: Role, link_ttl: timedelta
    ) -> tuple[CommandResult, str, datetime] | None:
        """Invite unless the address has an account (then None): for bootstrap."""
        if self._load(User.id_for(email)) is not None:
            return None
        return self.invite_user(
            tenant_id=tenant_id, actor=actor, email=email, role=role, link_ttl=link_ttl
        )

    def get_user(self, tenant_id: str, user_id: UUID) -> User:
        user = self._load(user_id)
        if not isinstance(user, User) or user.tenant_id != tenant_id:
            raise UserNotFoundError(f"No user {user_id}.")
        return user

    def issue_user_link(
        self, *, tenant_id: str, actor: str, user_id: UUID, link_ttl: timedelta, origin: str = ""
    ) -> tuple[CommandResult, str, datetime]:
        """A new one-time set-password link (invitation again, or a reset); older ones die."""
        user = self.get_user(tenant_id, user_id)
        link = LinkToken.new(user.id)
        expires_at = datetime.now(UTC) + link_ttl
        user.issue_link(link=link, expires_at=expires_at, actor=actor, origin=origin)
        return self._save_user(user), link.render(), expires_at

    def set_password_with_link(self, *, token: str, password: str, origin: str = "") -> User:
        """Spend a set-password link on a new password; raises ``InvalidLinkError`` and
        ``WeakPasswordError`` (a weak password does not spend the link)."""
        link = LinkToken.parse(token)
        loaded = self._load(link.user_id) if link is not None else None
        if link is None or not isinstance(loaded, User):
            raise InvalidLinkError("This link is not valid. Ask an administrator for a new one.")
        loaded.check_link(link, datetime.now(UTC))
        weakness = password_weakness(password, loaded.email)
        if weakness:
            raise WeakPasswordError(weakness)
        loaded.set_password(
            password_hash=self.passwords.hash(password), actor=f"user:{loaded.id}", origin=origin
        )
        self._save_user(loaded)
        return loaded

    def change_user_role(
        self, *, tenant_id: str, actor: str, user_id: UUID, role: Role, origin: str = ""
    ) -> CommandResult:
        user = self.get_user(tenant_id, user_id)
        if actor == f"user:{user_id}":
            raise OwnAccountError("You cannot change your own role; ask another admin.")
        if not user.change_role(role=role, actor=actor, origin=origin):
            return CommandResult(user_id, self.position_of(user_id), changed=False)
        return self._save_user(user)

    def disable_user(
        self, *, tenant_id: str, actor: str, user_id: UUID, origin: str = ""
    ) -> CommandResult:
        """Disable a person: their very next request is refused, their sessions end."""
        user = self.get_user(tenant_id, user_id)
        if actor == f"user:{user_id}":
            raise OwnAccountError("You cannot disable your own account; ask another admin.")
        if not user.disable(actor=actor, origin=origin):
            return CommandResult(user_id, self.position_of(user_id), changed=False)
        return self._save_user(user)

    def enable_user(
        self, *, tenant_id: str, actor: str, user_id: UUID, origin: str = ""
    ) -> CommandResult:
        user = self.get_user(tenant_id, user_id)
        if not user.enable(actor=actor, origin=origin):
            return CommandResult(user_id, self.position_of(user_id), changed=False)
        return self._save_user(user)

    def _save_user(self, user: User) -> CommandResult:
        self._keys.invalidate(user.id)
        position = self.record(user)
        self._keys.invalidate(user.id)
        assert position is not None
        return CommandResult(user.id, position, changed=True)

    # ---------------------------------------------------------------- sessions

    def sign_in(
        self, *, email: str, password: str, lifetime: timedelta, client: str, user_agent: str
    ) -> tuple[User, Session]:
        """Check an address and password and start a session; raises ``AuthenticationFailed``
        (``invalid_credentials``, the same for every cause, in about the same time)."""
        try:
            loaded = self._load(User.id_for(email))
        except InvalidEmailError:
            loaded = None
        user = loaded if isinstance(loaded, User) else None
        matches = self.passwords.verify(user.password_hash if user else None, password)
        if user is None or not matches or user.disabled:
            raise AuthenticationFailed(
                "invalid_credentials", "The e-mail address or the password is not right."
            )
        return user, self.start_session(
            user, lifetime=lifetime, client=client, user_agent=user_agent
        )

    def account_of(self, email: str) -> tuple[str, str | None]:
        """The user id an address would have, and its tenant if it has an account (for
        recording a failed sign-in where the account's tenant can see it)."""
        try:
            user_id = User.id_for(email)
        except InvalidEmailError:
            return "invalid-address", None
        user = self._load(user_id)
        return str(user_id), user.tenant_id if isinstance(user, User) else None

    def start_session(
        self, user: User, *, lifetime: timedelta, client: str, user_agent: str
    ) -> Session:
        session = Session.start(
            user=user,
            expires_at=datetime.now(UTC) + lifetime,
            client=client,
            user_agent=user_agent,
        )
        self.record(session)
        self._keys.put(session)
        return session

    def sign_out(self, *, session_id: UUID, actor: str) -> bool:
        loaded = self._load(session_id)
        if not isinstance(loaded, Session) or not loaded.end(actor=actor):
            return False
        self._keys.invalidate(session_id)
        self.record(loaded)
        self._keys.invalidate(session_id)
        return True

    def session_principal(self, *, tenant_id: str, user_id: UUID, session_id: UUID) -> Principal:
        """The principal of a live session of an enabled user, with the user's role now."""
        now = datetime.now(UTC)
        session = self._cached(session_id)
        if not isinstance(session, Session) or session.user_id != user_id:
            raise AuthenticationFailed("unknown_session", "The session is unknown; sign in again.")
        session.check_live(now)
        user = self._cached(user_id)
        if not isinstance(user, User) or user.tenant_id != tenant_id:
            raise AuthenticationFailed("unknown_user", "The account is unknown; sign in again.")
        if user.disabled:
            raise AuthenticationFailed("user_disabled", "This account has been disabled.")
        return Principal(
            tenant_id=user.tenant_id,
            role=user.role,
            via="session",
            user_id=user.id,
            session_id=session.id,
        )

    def session_cached(self, session_id: UUID) -> Session | None:
        session = self._keys.get(session_id)
        return session if isinstance(session, Session) else None

    def _cached(self, aggregate_id: UUID) -> Aggregate | None:
        found = self._keys.get(aggregate_id)
        if found is None:
            found = self._load(aggregate_id)
            if found is not None:
                self._keys.put(found)
        return found

    def _load(self, aggregate_id: UUID) -> Aggregate | None:
        try:
            loaded: Aggregate = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return loaded
