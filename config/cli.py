"""``kf``: the one program, with a subcommand per role and per operator task.

Heavy modules are imported inside the commands, after settings are loaded, so
``kf serve`` can point Prometheus at a multi-process directory before anything
creates a metric, and ``kf --help`` answers instantly.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from config.root import Container
    from config.settings import Settings
    from projections.keys import KeyEntry


def _retention_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    retention = _Subcommands(
        sub.add_parser(
            "retention", help="erase what the trash and retention let go"
        ).add_subparsers(dest="action", required=True),
        common,
    )
    run = retention.add_parser(
        "run", help="erase documents deleted longer ago than retention.deleted_days, and what"
        " the tenants' retention.documents_days / conversations_days let go (held ones kept)"
    )  # fmt: skip
    run.add_argument("--tenant", help="tenant name (default: every tenant)")
    run.add_argument("--dry-run", action="store_true", help="list what would be erased")


def _users_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    users = _Subcommands(
        sub.add_parser("users", help="people who sign in to the web app").add_subparsers(
            dest="action", required=True
        ),
        common,
    )
    roles = ["viewer", "editor", "admin", "auditor", "analyst"]
    invite = users.add_parser(
        "invite", help="invite a person (prints their one-time set-password link)"
    )
    invite.add_argument("--tenant", required=True, help="tenant name")
    invite.add_argument("--email", required=True)
    invite.add_argument("--role", choices=roles, default="viewer")
    link = users.add_parser(
        "link", help="a new one-time set-password link (a reset); earlier links stop working"
    )
    link.add_argument("--tenant", required=True, help="tenant name")
    link.add_argument("--email", required=True)
    listing = users.add_parser("list", help="list a tenant's people")
    listing.add_argument("--tenant", required=True, help="tenant name")
    role = users.add_parser("role", help="change a person's role")
    role.add_argument("--tenant", required=True, help="tenant name")
    role.add_argument("--email", required=True)
    role.add_argument("--role", choices=roles, required=True)
    for action in ("disable", "enable"):
        change = users.add_parser(action, help=f"{action} a person's account")
        change.add_argument("--tenant", required=True, help="tenant name")
        change.add_argument("--email", required=True)


def _documents_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    documents = _Subcommands(
        sub.add_parser("documents", help="erase documents, and their certificates").add_subparsers(
            dest="action", required=True
        ),
        common,
    )
    erase = documents.add_parser(
        "erase", help="erase a document irreversibly (its data key is destroyed)"
    )
    erase.add_argument("--tenant", required=True, help="tenant name")
    erase.add_argument("document_id")
    erasure = documents.add_parser("erasure", help="print a document's signed erasure certificate")
    erasure.add_argument("--tenant", required=True, help="tenant name")
    erasure.add_argument("document_id")
    check = documents.add_parser(
        "verify-erasure", help="check an erasure certificate offline (exit 0: intact and signed)"
    )
    check.add_argument("file", type=Path)
    check.add_argument("--public-key", type=Path, help="the trusted public key (PEM)")


def _names(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    if len(names) < 2 or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError("a group is two or more distinct read models")
    return names


def _niceness(text: str) -> int:
    """A ``--nice`` value: how much lower than normal a process's CPU priority is."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 19:
        raise argparse.ArgumentTypeError(f"{text!r} is not a niceness from 0 to 19")
    return value


def _parser() -> argparse.ArgumentParser:
    # Common options are accepted before or after the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="YAML settings file (also KF_CONFIG)")
    common.add_argument("--data-dir", type=Path, help="where embedded servers keep their data")
    parser = argparse.ArgumentParser(prog="kf", description="Knowledge Foundry", parents=[common])
    sub = _Subcommands(parser.add_subparsers(dest="command", required=True), common)

    serve = sub.add_parser("serve", help="run everything: API, relays, projectors, workers")
    serve.add_argument("--port", type=int, help="API port (0 picks a free one)")
    serve.add_argument("--host", help="API bind address")
    serve.add_argument("--workers", type=int, help="worker processes")

    sub.add_parser(
        "migrate", help="create the event store, read-model and blob-store tables (once)"
    )
    relay = sub.add_parser("relay", help="publish committed events to JetStream")
    relay.add_argument(
        "--context",
        action="append",
        choices=["documents", "access", "conversations", "activity"],
        help="relay only this context (repeat; default: every context)",
    )
    relay.add_argument("--nice", type=_niceness, default=0, help="lower CPU priority (0-19)")
    worker = sub.add_parser("worker", help="parse, chunk and embed documents")
    worker.add_argument("--stage", action="append", choices=["parse", "chunk", "embed"])
    project = sub.add_parser("project", help="keep read models up to date")
    project.add_argument(
        "names", nargs="*", help="read models to keep (default: all; see kf projections status)"
    )
    project.add_argument("--nice", type=_niceness, default=0, help="lower CPU priority (0-19)")
    project.add_argument(
        "--group",
        type=_names,
        default=[],
        metavar="A,B,...",
        help="also keep these read models, together: one consumer and one transaction"
        " per batch for them all",
    )
    for role in ("api", "write-api", "read-api"):
        api = sub.add_parser(role, help=f"serve the {role.replace('-', ' ')} over HTTP")
        api.add_argument("--port", type=int)
        api.add_argument("--host")

    tenants = _Subcommands(
        sub.add_parser("tenants", help="manage tenants").add_subparsers(
            dest="action", required=True
        ),
        common,
    )
    create = tenants.add_parser("create", help="create a tenant")
    create.add_argument("name")
    tenants.add_parser("list", help="list tenants")

    keys = _Subcommands(
        sub.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True),
        common,
    )
    issue = keys.add_parser("issue", help="issue a key (the secret is printed once)")
    issue.add_argument("--tenant", required=True, help="tenant name")
    issue.add_argument(
        "--role", choices=["viewer", "editor", "admin", "auditor", "analyst"], default="editor"
    )
    issue.add_argument("--name", default="cli")
    issue.add_argument("--expires-in-days", type=float)
    listing = keys.add_parser("list", help="list a tenant's keys (never their secrets)")
    listing.add_argument("--tenant", required=True, help="tenant name")
    listing.add_argument("--active", action="store_true", help="leave out revoked keys")
    revoke = keys.add_parser("revoke", help="revoke a key")
    revoke.add_argument("--tenant", required=True, help="tenant name")
    revoke.add_argument("key_id")
    rotate = keys.add_parser(
        "rotate-master",
        help="rewrap every data key with a new master key (events and blobs are untouched)",
    )
    rotate.add_argument(
        "--new-key-file",
        type=Path,
        required=True,
        help="the new master key (base64 of 32 bytes); made here (0600) if it does not exist",
    )

    _documents_parser(sub, common)
    _users_parser(sub, common)
    _retention_parser(sub, common)

    rebuild = sub.add_parser(
        "rebuild-index", help="rebuild read models from the event store beside the live ones"
    )
    rebuild.add_argument(
        "--projection",
        default="all",
        help="a read model's name (see kf projections status), or all (the default)",
    )
    rebuild.add_argument("--tenant", help="tenant name: rebuild only this tenant")
    rebuild.add_argument(
        "--no-compare",
        action="store_true",
        help="skip comparing the rebuilt copy with the live one",
    )

    for add in (
        _audit_parser, _usage_parser, _prices_parser, _budgets_parser, _dead_letters_parser
    ):  # fmt: skip
        add(sub, common)

    projections = _Subcommands(
        sub.add_parser("projections", help="read-model status").add_subparsers(
            dest="action", required=True
        ),
        common,
    )
    projections.add_parser("status", help="position and lag of every relay and projection")
    return parser


def _dead_letters_parser(sub: _Subcommands, common: argparse.ArgumentParser) -> None:
    letters = _Subcommands(
        sub.add_parser(
            "dead-letters", help="what workers and projectors gave up on, and acting on it"
        ).add_subparsers(dest="action", required=True),
        common,
    )
    listing = letters.add_parser("list", help="a tenant's dead letters, newest first")
    listing.add_argument("--tenant", required=True, help="tenant name")
    listing.add_argument("--state", choices=["parked", "retrying", "resolved", "dropped"])
    for action, text in (
        ("retry", "another go: the projector applies the event again; the document goes"
         " through its stage again"),
        ("drop", "give it up: the projector goes on past the event; the document stays failed"),
    ):  # fmt: skip
        parser = letters.add_parser(action, help=text)
        parser.add_argument("--tenant", required=True, help="tenant name")
        parser.add_argument("letter_id")
        parser.add_argument("--reason", default="", help="why, for the record")


def _budgets_parser(sub: _Subcommands, common: argparse.ArgumentParser) -> None:
    budgets = _Subcommands(
        sub.add_parser("budgets", help="a tenant's budgets on answers").add_subparsers(
            dest="action", required=True
        ),
        common,
    )
    listing = budgets.add_parser("list", help="every budget with this period's use")
    listing.add_argument("--tenant", required=True, help="tenant name")
    for action, text in (("set", "set a budget"), ("remove", "remove a budget")):
        parser = budgets.add_parser(action, help=text)
        parser.add_argument("--tenant", required=True, help="tenant name")
        parser.add_argument("--scope", default="tenant", help='"tenant" or "key:<key id>"')
        parser.add_argument("--metric", required=True, choices=["tokens", "cost_usd"])
        parser.add_argument("--period", required=True, choices=["day", "month"])
        parser.add_argument("--reason", default="", help="why, for the record")
        if action == "set":
            parser.add_argument("--amount", required=True, help="tokens, or USD")
            parser.add_argument("--soft", action="store_true", help="warn, never refuse")


def _prices_parser(sub: _Subcommands, common: argparse.ArgumentParser) -> None:
    prices = _Subcommands(
        sub.add_parser("prices", help="a tenant's price book").add_subparsers(
            dest="action", required=True
        ),
        common,
    )
    listing = prices.add_parser("list", help="every price of the book, with its version")
    listing.add_argument("--tenant", required=True, help="tenant name")
    listing.add_argument("--version", type=int, help="the book as it was at this version")
    setting = prices.add_parser("set", help="set a price, in force from --effective-from")
    setting.add_argument("--tenant", required=True, help="tenant name")
    setting.add_argument("--provider", default="*", help="provider name (default *: any)")
    setting.add_argument("--model", required=True, help="model name or glob pattern")
    setting.add_argument("--input", required=True, help="USD per million input tokens")
    setting.add_argument("--output", required=True, help="USD per million output tokens")
    setting.add_argument("--cached-input", help="USD per million cached input tokens")
    setting.add_argument("--effective-from", help="ISO 8601 time (default: now)")
    setting.add_argument("--reason", default="", help="why, for the record")


def _usage_parser(sub: _Subcommands, common: argparse.ArgumentParser) -> None:
    usage = _Subcommands(
        sub.add_parser("usage", help="usage and cost").add_subparsers(dest="action", required=True),
        common,
    )
    report = usage.add_parser(
        "report", help="a tenant's usage and cost per group of a window, as a table"
    )
    report.add_argument("--tenant", required=True, help="tenant name")
    report.add_argument("--from", dest="start", help="ISO 8601 time (default: to - 30 days)")
    report.add_argument("--to", dest="end", help="ISO 8601 time, exclusive (default: now)")
    report.add_argument(
        "--group-by",
        default="",
        help="comma-separated: at most one of day, week, month; any of key, user, model,"
        " provider, document",
    )
    report.add_argument("--format", choices=["table", "csv"], default="table")
    report.add_argument(
        "--price-book", type=int, help="beside the charges: the newest re-pricing run at this"
        " price book version",
    )  # fmt: skip
    reprice = usage.add_parser(
        "reprice",
        help="price every answer so far at another price book version, beside what each was"
        " charged (unchanged); the run is an event",
    )
    reprice.add_argument("--tenant", required=True, help="tenant name")
    reprice.add_argument("--price-book", type=int, required=True, help="price book version")
    reprice.add_argument("--reason", default="", help="why, for the record")


def _audit_parser(sub: _Subcommands, common: argparse.ArgumentParser) -> None:
    audit = _Subcommands(
        sub.add_parser("audit", help="the audit trail").add_subparsers(
            dest="action", required=True
        ),
        common,
    )
    verify = audit.add_parser(
        "verify", help="recompute the audit trail's chains; exit 1 naming the first broken entry"
    )
    verify.add_argument("--tenant", help="tenant name: verify only this tenant's chains")
    verify.add_argument("--bundle", type=Path, help="verify an exported bundle, offline")
    who_saw = audit.add_parser(
        "who-saw", help="every principal shown any chunk of a document: route, when, how often"
    )
    who_saw.add_argument("--tenant", required=True, help="tenant name")
    who_saw.add_argument("--document", required=True, help="document id")
    who_saw.add_argument("--from", dest="since", help="ISO 8601 time: shown from then on")
    who_saw.add_argument("--to", dest="until", help="ISO 8601 time: shown before then")
    export = audit.add_parser(
        "export", help="write a tenant's trail, chains, checkpoints and key to verify offline"
    )
    export.add_argument("--tenant", required=True, help="tenant name")
    export.add_argument("--out", type=Path, required=True, help="a new or empty directory")
    prune = audit.add_parser(
        "prune",
        help="drop access records (reads, refusals) older than the retention from the read"
        " models; recorded as an event; the event store keeps them and chains still verify",
    )
    which = prune.add_mutually_exclusive_group(required=True)
    which.add_argument("--tenant", help="tenant name")
    which.add_argument(
        "--all", action="store_true", help="every tenant, and refusals that named none"
    )
    prune.add_argument(
        "--days", type=int, help="keep this many days (default: audit.access_retention_days)"
    )
    prune.add_argument("--reason", default="", help="why, for the record")


class _Subcommands:
    """Adds the common options to every subcommand parser."""

    def __init__(self, action: Any, common: argparse.ArgumentParser) -> None:
        self._action = action
        self._common = common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self._action.add_parser(
            name, parents=[self._common], **kwargs
        )
        return parser


_SEARCH_NEEDS_A_SERVER = (
    "this role serves search, and without KF_QDRANT_URL the search index is an edge shard"
    " kept inside the one process that projects it (kf serve); here it would be empty."
    " Set KF_QDRANT_URL to a Qdrant server that `kf project` writes (deploy/ does),"
    " or run kf serve"
)


def _settings(args: argparse.Namespace) -> Settings:
    from config.settings import SettingsError, load_settings

    overrides: dict[str, Any] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    api: dict[str, Any] = {}
    if getattr(args, "port", None) is not None:
        api["port"] = args.port
    if getattr(args, "host", None) is not None:
        api["host"] = args.host
    if api:
        overrides["api"] = api
    if getattr(args, "workers", None) is not None:
        overrides["ingest"] = {"workers": args.workers}
    if args.config is not None:
        # What kf serve starts (workers, the activity relay and projectors) reads the
        # same file: children inherit the environment, not the command line.
        os.environ["KF_CONFIG"] = str(args.config.resolve())
    try:
        return load_settings(args.config, **overrides)
    except SettingsError as exc:
        print(f"kf: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _preflight(settings: Settings) -> str | None:
    """Why the API must not start with these settings (production secrets), if it must not."""
    from infra.tokens import InsecureConfigurationError, TokenService

    try:
        TokenService.from_settings(
            settings.auth,
            data_dir=settings.data_dir,
            production=settings.mode == "production",
        )
    except InsecureConfigurationError as exc:
        return str(exc)
    return None


def _prepare_metrics_dir(settings: Settings) -> None:
    """Multi-process metrics for `kf serve`: set before prometheus_client is imported."""
    metrics_dir = settings.data_dir.resolve() / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)


def _with_store(settings: Settings) -> tuple[Container, Any]:
    from config.root import Container, Endpoints

    endpoints = Endpoints.resolve(settings, need_nats=False)
    return Container(settings, endpoints), endpoints


def _cli_origin() -> str:
    import socket

    return f"cli:{socket.gethostname()}"


def _key_json(entry: KeyEntry) -> dict[str, object]:
    def stamp(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "key_id": str(entry.key_id),
        "name": entry.name,
        "role": entry.role,
        "issued_by": entry.issued_by,
        "issued_at": stamp(entry.issued_at),
        "expires_at": stamp(entry.expires_at),
        "revoked_at": stamp(entry.revoked_at),
    }


def _admin(args: argparse.Namespace, settings: Settings) -> int:
    from domain.access import Role
    from domain.errors import DomainError
    from infra.causation import set_process
    from projections.keys import KeysView

    set_process(_cli_origin())
    container, endpoints = _with_store(settings)
    actor = f"cli:{os.environ.get('USER', 'unknown')}"
    try:
        if args.command == "tenants" and args.action == "create":
            result = container.access.create_tenant(name=args.name, actor=actor)
            print(json.dumps({"tenant_id": str(result.id), "name": args.name.strip().lower()}))
        elif args.command == "tenants" and args.action == "list":
            for envelope in _tenant_events(container):
                print(
                    json.dumps({"tenant_id": envelope.aggregate_id, "name": envelope.data["name"]})
                )
        elif args.command == "keys" and args.action == "issue":
            tenant = container.access.tenant_by_name(args.tenant)
            expires = (
                datetime.now(UTC) + timedelta(days=args.expires_in_days)
                if args.expires_in_days
                else None
            )
            result, token = container.access.issue_api_key(
                tenant_id=str(tenant.id),
                actor=actor,
                name=args.name,
                role=Role(args.role),
                expires_at=expires,
                origin=_cli_origin(),
            )
            print(json.dumps({"key_id": str(result.id), "role": args.role, "key": token}))
        elif args.command == "keys" and args.action == "list":
            tenant = container.access.tenant_by_name(args.tenant)
            # Bring the key list up to the event store's head first (safe beside
            # a running projector), so the listing is never stale.
            keys = container.views["keys"]
            assert isinstance(keys, KeysView)
            keys.catch_up_from(container.event_logs)
            cursor = None
            while True:
                page = keys.page(
                    str(tenant.id), limit=200, cursor=cursor, include_revoked=not args.active
                )
                for entry in page.entries:
                    print(json.dumps(_key_json(entry)))
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
        elif args.command == "keys" and args.action == "revoke":
            from uuid import UUID

            tenant = container.access.tenant_by_name(args.tenant)
            result = container.access.revoke_api_key(
                tenant_id=str(tenant.id),
                actor=actor,
                key_id=UUID(args.key_id),
                origin=_cli_origin(),
            )
            print(
                json.dumps({"key_id": str(result.id), "revoked": True, "changed": result.changed})
            )
        elif args.command in ("users", "prices", "budgets", "dead-letters"):
            _admin_groups()[args.command](args, container, actor)
        elif (
            args.command in ("documents", "retention")
            or getattr(args, "action", "") == "rotate-master"
        ):
            return _erasure_admin(args, container, actor)
        elif args.command == "projections":
            for status in container.projection_status():
                for c in status.contexts:
                    print(
                        f"{status.name:<22} {status.kind:<10} {c.context:<10} "
                        f"position={c.position:<8} head={c.head:<8} lag={c.lag}"
                    )
    except (DomainError, ValueError) as exc:
        print(f"kf: {exc}", file=sys.stderr)
        return 1
    finally:
        container.close()
        endpoints.close()
    return 0


def _admin_groups() -> dict[str, Callable[[argparse.Namespace, Container, str], None]]:
    return {
        "users": _users, "prices": _prices, "budgets": _budgets, "dead-letters": _dead_letters
    }  # fmt: skip


def _public_url(container: Container) -> str:
    """Where people reach the web app: configured, or the running `kf serve`, or its address."""
    from config.runtime import serving_file

    if container.settings.api.public_url:
        return container.settings.api.public_url
    serving = serving_file(container.settings.data_dir)
    if serving.exists():
        return str(json.loads(serving.read_text())["url"])
    api = container.settings.api
    return f"http://{api.host}:{api.port}"


def _dead_letters(args: argparse.Namespace, container: Container, actor: str) -> None:
    from uuid import UUID

    tenant_id = str(container.access.tenant_by_name(args.tenant).id)
    if args.action == "list":
        from projections.dead_letters.routes import DeadLetterOut

        view = container.dead_letters_view
        view.catch_up_from(container.event_logs)
        cursor = None
        while True:
            page = view.page(tenant_id, limit=200, cursor=cursor, state=args.state)
            for entry in page.entries:
                print(DeadLetterOut.of(entry).model_dump_json())
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        return
    act = container.dead_letters.retry if args.action == "retry" else container.dead_letters.drop
    result = act(
        tenant_id=tenant_id, letter_id=UUID(args.letter_id), actor=actor, reason=args.reason
    )
    print(
        json.dumps(
            {"id": str(result.id), "action": args.action, "changed": result.changed,
             "position": result.position}
        )
    )  # fmt: skip


def _users(args: argparse.Namespace, container: Container, actor: str) -> None:
    from domain.access import Role, User
    from infra.notify import send_invitation
    from projections.keys import KeysView
    from write_api.users import set_password_link

    tenant_id = str(container.access.tenant_by_name(args.tenant).id)
    auth = container.settings.auth
    link_ttl = timedelta(seconds=auth.link_ttl_s)
    if args.action == "list":
        keys = container.views["keys"]
        assert isinstance(keys, KeysView)
        keys.catch_up_from(container.event_logs)
        cursor = None
        while True:
            page = keys.users(tenant_id, limit=200, cursor=cursor)
            for entry in page.entries:
                print(
                    json.dumps(
                        {
                            "user_id": str(entry.user_id),
                            "email": entry.email,
                            "role": entry.role,
                            "status": entry.status,
                            "last_sign_in_at": entry.last_sign_in_at.isoformat()
                            if entry.last_sign_in_at
                            else None,
                        }
                    )
                )
            if page.next_cursor is None:
                return
            cursor = page.next_cursor
    user_id = User.id_for(args.email)
    if args.action in ("invite", "link"):
        if args.action == "invite":
            result, token, expires_at = container.access.invite_user(
                tenant_id=tenant_id,
                actor=actor,
                email=args.email,
                role=Role(args.role),
                link_ttl=link_ttl,
                origin=_cli_origin(),
            )
        else:
            result, token, expires_at = container.access.issue_user_link(
                tenant_id=tenant_id,
                actor=actor,
                user_id=user_id,
                link_ttl=link_ttl,
                origin=_cli_origin(),
            )
        user = container.access.get_user(tenant_id, user_id)
        link = set_password_link(_public_url(container), token)
        emailed = False
        if auth.smtp_host:
            send_invitation(
                host=auth.smtp_host,
                port=auth.smtp_port,
                sender=auth.mail_sender,
                to=user.email,
                link=link,
                expires_at=expires_at.isoformat(timespec="minutes"),
                reset=args.action == "link" and user.password_hash is not None,
            )
            emailed = True
        print(
            json.dumps(
                {
                    "user_id": str(result.id),
                    "email": user.email,
                    "role": user.role.value,
                    "link": link,
                    "link_expires_at": expires_at.isoformat(),
                    "emailed": emailed,
                }
            )
        )
        return
    if args.action == "role":
        changed = container.access.change_user_role(
            tenant_id=tenant_id,
            actor=actor,
            user_id=user_id,
            role=Role(args.role),
            origin=_cli_origin(),
        )
    elif args.action == "disable":
        changed = container.access.disable_user(
            tenant_id=tenant_id, actor=actor, user_id=user_id, origin=_cli_origin()
        )
    else:
        changed = container.access.enable_user(
            tenant_id=tenant_id, actor=actor, user_id=user_id, origin=_cli_origin()
        )
    user = container.access.get_user(tenant_id, user_id)
    print(
        json.dumps(
            {
                "user_id": str(user.id),
                "email": user.email,
                "role": user.role.value,
                "status": user.status.value,
                "changed": changed.changed,
            }
        )
    )


def _erasure_admin(args: argparse.Namespace, container: Container, actor: str) -> int:
    if args.command == "documents":
        return _documents(args, container, actor)
    if args.command == "retention":
        _retention_run(args, container)
    else:
        _rotate_master(args, container)
    return 0


def _retention_run(args: argparse.Namespace, container: Container) -> None:
    tenant = str(container.access.tenant_by_name(args.tenant).id) if args.tenant else None
    report = container.retention().run(datetime.now(UTC), tenant_id=tenant, dry_run=args.dry_run)
    erased = report.trash_erased + report.documents_erased + report.conversations_erased
    print(json.dumps({**report.summary(), "erased": erased, "held": report.held_skipped}))


def _rotate_master(args: argparse.Namespace, container: Container) -> None:
    from infra.crypto import MasterKey
    from infra.secret_files import replace_atomically

    new = MasterKey.load_or_create(args.new_key_file.resolve())
    if new.key_id == container.keys.master.key_id:
        raise ValueError(f"{args.new_key_file} holds the master key already in use")
    rewrapped = container.keys.rotate_master(new)
    crypto = container.settings.crypto
    default = container.settings.data_dir.resolve() / "master-key"
    if not crypto.master_key and not crypto.master_key_file:
        # The default key file follows, so that the next start finds the new key there.
        replace_atomically(default, args.new_key_file.read_bytes())
        where = f"{default} now holds it"
    else:
        where = "set crypto.master_key_file (or KF_MASTER_KEY) to it before the next start"
    print(
        json.dumps({"master_key_id": new.key_id, "data_keys_rewrapped": rewrapped, "next": where})
    )


def _documents(args: argparse.Namespace, container: Container, actor: str) -> int:
    from uuid import UUID

    from infra.signing import Signer
    from projections.catalog.erasure import erasure_certificate
    from projections.catalog.view import CatalogView

    tenant = str(container.access.tenant_by_name(args.tenant).id)
    document_id = UUID(args.document_id)
    if args.action == "erase":
        result = container.documents.erase_document(
            tenant_id=tenant, actor=actor, document_id=document_id
        )
        print(
            json.dumps(
                {"document_id": str(document_id), "position": result.position,
                 "changed": result.changed}
            )
        )  # fmt: skip
        return 0
    catalog = container.views["catalog"]
    assert isinstance(catalog, CatalogView)
    found = catalog.erasure(tenant, document_id)
    if found is None:
        print(f"kf: document {document_id} was not erased", file=sys.stderr)
        return 1
    expected = sorted(
        name
        for name, view in container.views.items()
        if "Document.Erased" in view.projection.events
    )
    signed = erasure_certificate(found, expected, Signer.load_or_create(container.audit_key_path))
    print(json.dumps(signed, indent=2))
    return 0


def _verify_erasure(args: argparse.Namespace) -> int:
    from projections.catalog.erasure import verify_certificate

    try:
        signed = json.loads(args.file.read_text())
        trusted = args.public_key.read_text() if args.public_key else None
        intact = verify_certificate(signed, trusted)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"kf: {args.file} is not an erasure certificate: {exc}", file=sys.stderr)
        return 1
    certificate = signed["certificate"]
    if not intact:
        print(f"kf: {args.file}: the signature does not match: it was changed", file=sys.stderr)
        return 1
    state = "complete" if certificate.get("complete") else "not yet complete"
    print(
        f"intact: document {certificate.get('document_id')} erased at "
        f"{certificate.get('erased_at')} by {certificate.get('erased_by')} ({state}); "
        f"signed by key {signed.get('key_id')}"
    )
    return 0


def _budgets(args: argparse.Namespace, container: Container, actor: str) -> None:
    from decimal import Decimal, InvalidOperation

    from domain.usage import Limit

    tenant = str(container.access.tenant_by_name(args.tenant).id)
    if args.action == "list":
        for budget in container.budget_guard.status(tenant):
            print(json.dumps({k: v if isinstance(v, str | bool) else str(v)
                              for k, v in budget.items()}))  # fmt: skip
        return
    if args.action == "remove":
        position = container.usage.remove_limit(
            tenant_id=tenant, actor=actor, scope=args.scope, metric=args.metric,
            period=args.period, reason=args.reason,
        )  # fmt: skip
        print(json.dumps({"removed": position is not None, "position": position}))
        return
    try:
        amount = Decimal(args.amount)
    except InvalidOperation:
        raise ValueError("--amount is a number") from None
    limit = Limit(args.scope, args.metric, args.period, amount, hard=not args.soft)
    position = container.usage.set_limit(
        tenant_id=tenant, actor=actor, limit=limit, reason=args.reason
    )
    print(json.dumps({"budget": limit.name, "amount": str(amount), "hard": limit.hard,
                      "position": position}))  # fmt: skip


def _prices(args: argparse.Namespace, container: Container, actor: str) -> None:
    from decimal import Decimal, InvalidOperation

    from commands.usage import describe
    from domain.usage import TokenPrice

    tenant = container.access.tenant_by_name(args.tenant)
    if args.action == "list":
        book = container.usage.price_book(str(tenant.id), args.version)
        print(json.dumps(describe(book), indent=2))
        return
    try:
        price = TokenPrice(
            Decimal(args.input),
            Decimal(args.output),
            None if args.cached_input is None else Decimal(args.cached_input),
        )
    except InvalidOperation:
        raise ValueError("--input, --output and --cached-input are decimal numbers") from None
    effective_from = _moment(args.effective_from) if args.effective_from else datetime.now(UTC)
    result, version = container.usage.set_price(
        tenant_id=str(tenant.id),
        actor=actor,
        provider=args.provider,
        model=args.model,
        price=price,
        effective_from=effective_from,
        reason=args.reason,
    )
    print(json.dumps({"version": version, "position": result.position, **price.as_dict(),
                      "provider": args.provider, "model": args.model,
                      "effective_from": effective_from.isoformat()}))  # fmt: skip


def _progress(status: Any) -> str:
    width = 30
    fraction = min(1.0, status.processed / status.total) if status.total else 0.0
    bar = "#" * int(fraction * width) + "." * (width - int(fraction * width))
    return (
        f"\r[{bar}] {fraction:6.1%} {status.projection or '':<8} {status.state:<9}"
        f" {status.processed}/{status.total} events {status.chunks} chunks {status.seconds:7.1f}s"
    )


def _running_server(settings: Settings) -> tuple[str, str] | None:
    """(url, admin key) of a `kf serve` running on this data directory, if any."""
    from config.root import admin_key_path
    from config.runtime import serving_file

    try:
        serving = json.loads(serving_file(settings.data_dir).read_text())
        os.kill(int(serving["pid"]), 0)
        key = admin_key_path(settings.data_dir).read_text().strip()
    except (OSError, ValueError, KeyError):
        return None
    return str(serving["url"]), key


def _rebuild(args: argparse.Namespace, settings: Settings) -> int:
    import time
    from types import SimpleNamespace

    from domain.access import Tenant
    from projections.read_models import names

    known = names()
    if args.projection != "all" and args.projection not in known:
        print(
            f"kf: no read model {args.projection!r}; choose one of {', '.join(known)} or all",
            file=sys.stderr,
        )
        return 2
    tenant_id = str(Tenant.id_for(args.tenant)) if args.tenant else None
    projections = known if args.projection == "all" else [args.projection]
    server = None if settings.qdrant.url else _running_server(settings)
    if server is not None:
        import httpx

        url, key = server
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as http:
            response = http.post(
                "/v1/admin/rebuilds",
                json={
                    "projection": args.projection,
                    "tenant_id": tenant_id,
                    "compare": not args.no_compare,
                },
            )
            if response.status_code != 202:
                print(f"kf: {response.json().get('message', response.text)}", file=sys.stderr)
                return 1
            rebuild_id = response.json()["id"]
            while True:
                body = http.get(f"/v1/admin/rebuilds/{rebuild_id}").json()
                status: Any = SimpleNamespace(**body)
                print(_progress(status), end="", file=sys.stderr, flush=True)
                if status.state in ("done", "failed"):
                    break
                time.sleep(0.5)
    else:
        from projections.slice import RebuildStatus

        container, endpoints = _with_store(settings)
        try:
            status = RebuildStatus(id="cli", projections=projections, tenant=tenant_id)
            rebuilder = container.rebuilder()
            import threading

            worker = threading.Thread(
                target=rebuilder.run, args=(status,), kwargs={"compare": not args.no_compare}
            )
            worker.start()
            while worker.is_alive():
                print(_progress(status), end="", file=sys.stderr, flush=True)
                worker.join(0.5)
            print(_progress(status), end="", file=sys.stderr, flush=True)
        finally:
            container.close()
            endpoints.close()
    print(file=sys.stderr)
    summary = {
        "state": status.state,
        "projections": projections,
        "tenant_id": tenant_id,
        # Events replayed, summed over the read models rebuilt (each replays its contexts).
        "events": sum(int(r.get("events", 0)) for r in status.results.values()) or status.processed,
        "chunks": status.chunks,
        "seconds": round(status.seconds, 2),
        "matches_live": status.matches_live,
        "phases": status.phases,
        "results": status.results,
        "error": status.error,
    }
    print(json.dumps(summary))
    return 0 if status.state == "done" else 1


def _tenant_events(container: Container) -> list[Any]:
    found: list[Any] = []
    for batch in container.event_logs["access"].read_all(0):
        found.extend(e for e in batch if e.event_type == "Tenant.Created")
    return found


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    """``kf audit verify``: every chain recomputed from the event store (or a bundle), checked
    against the trail and the signed checkpoints; exit 0 if intact, 1 naming what broke.
    ``kf audit export``: a tenant's bundle, to verify offline."""
    from domain.access import Tenant
    from domain.contexts import CONTEXTS
    from infra.signing import load_public_key
    from projections.audit.bundle import verify_bundle
    from projections.audit.checkpoints import BadCheckpointError
    from projections.audit.verify import verify_database

    if args.action == "export":
        return _audit_export(args, settings)
    if args.action == "who-saw":
        return _who_saw(args, settings)
    if args.action == "prune":
        return _audit_prune(args, settings)
    if args.bundle is not None:
        return _print_report(verify_bundle(args.bundle), [], None)
    tenant_id = str(Tenant.id_for(args.tenant)) if args.tenant else None
    container, endpoints = _with_store(settings)
    try:
        store = container.checkpoint_store()
        public_file = container.audit_key_path.with_name(container.audit_key_path.name + ".pub")
        public_key = load_public_key(public_file.read_text()) if public_file.exists() else None
        checkpoints, unreadable = {}, []
        for tenant in store.tenants():
            try:
                checkpoints[tenant] = store.read(tenant)
            except BadCheckpointError as exc:
                unreadable.append(str(exc))
        report = verify_database(
            endpoints.database_url, list(CONTEXTS), checkpoints, public_key, tenant=tenant_id
        )
    finally:
        container.close()
        endpoints.close()
    if public_key is None:
        print(f"  no public key at {public_file}: checkpoints cannot be checked")
    return _print_report(report, unreadable, public_file)


def _print_report(report: Any, unreadable: list[str], public_file: Path | None) -> int:
    print(f"kf audit verify: {report.entries} entries, {report.checkpoints} checkpoints")
    for problem in unreadable:
        print(f"  BROKEN unreadable checkpoint: {problem}")
    for finding in report.findings:
        print(f"  BROKEN {finding}")
    for (tenant, context), count in sorted(report.uncovered.items()):
        if count:
            print(f"  not yet covered by a checkpoint: tenant {tenant}, {context}: {count} entries")
    summary = report.summary()
    summary["ok"] = report.ok and not unreadable
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


def _audit_prune(args: argparse.Namespace, settings: Settings) -> int:
    from domain.activity import NO_TENANT
    from domain.errors import DomainError
    from infra.causation import set_process

    set_process(_cli_origin())
    days = args.days if args.days is not None else settings.audit.access_retention_days
    container, endpoints = _with_store(settings)
    actor = f"cli:{os.environ.get('USER', 'unknown')}"
    try:
        if args.all:
            tenants = [e.aggregate_id for e in _tenant_events(container)] + [NO_TENANT]
        else:
            tenants = [str(container.access.tenant_by_name(args.tenant).id)]
        for tenant_id in tenants:
            result = container.activity.apply_retention(
                tenant_id=tenant_id, actor=actor, retention_days=days, reason=args.reason
            )
            print(
                json.dumps(
                    {
                        "tenant_id": tenant_id,
                        "retention_days": days,
                        "retention_id": str(result.id),
                        "position": result.position,
                    }
                )
            )
    except DomainError as exc:
        print(f"kf: {exc}", file=sys.stderr)
        return 1
    finally:
        container.close()
        endpoints.close()
    return 0


def _usage_report(args: argparse.Namespace, settings: Settings) -> int:
    """``kf usage report``: the usage read model (caught up first), as a table or CSV."""
    from domain.access import Tenant
    from projections.usage import UsageView, Window
    from projections.usage.report import csv_lines, table
    from projections.usage.routes import prices_now
    from projections.usage.view import InvalidGroupingError, grouping

    try:
        end = _moment(args.end) if args.end else datetime.now(UTC)
        start = _moment(args.start) if args.start else end - timedelta(days=30)
        names = grouping(tuple(n.strip() for n in args.group_by.split(",") if n.strip()))
    except (ValueError, InvalidGroupingError) as exc:
        print(f"kf usage report: {exc}", file=sys.stderr)
        return 2
    if start >= end:
        print("kf usage report: --from must be earlier than --to", file=sys.stderr)
        return 2

    tenant_id = str(Tenant.id_for(args.tenant))
    container, endpoints = _with_store(settings)
    try:
        price_of = prices_now(container.usage, tenant_id)
        view = container.views["usage"]
        assert isinstance(view, UsageView)
        view.catch_up_from(container.event_logs)  # never stale, even with no projector running
        window = Window(start, end)
        if args.price_book is not None:
            run = view.latest_repricing(tenant_id, args.price_book)
            if run is None:
                print(
                    f"kf usage report: no re-pricing run at price book version"
                    f" {args.price_book}; run kf usage reprice first",
                    file=sys.stderr,
                )
                return 1
            window = Window(start, end, repricing=run.run_id)
        if args.format == "csv":
            for chunk in csv_lines(view.usage(tenant_id, window, names, price_of), names):
                sys.stdout.write(chunk.decode())
            return 0
        groups = list(view.usage(tenant_id, window, names, price_of)) if names else []
        total = view.total(tenant_id, window, price_of)
    finally:
        container.close()
        endpoints.close()
    print(f"tenant {args.tenant}: {start.isoformat()} to {end.isoformat()}")
    print(table(groups, total, names))
    return 0


def _usage_reprice(args: argparse.Namespace, settings: Settings) -> int:
    """``kf usage reprice``: append the run, apply it to the usage read model, print its totals."""
    from domain.access import Tenant
    from domain.errors import DomainError
    from infra.causation import set_process
    from projections.usage import UsageView

    set_process(_cli_origin())
    tenant_id = str(Tenant.id_for(args.tenant))
    container, endpoints = _with_store(settings)
    try:
        view = container.views["usage"]
        assert isinstance(view, UsageView)
        try:
            result = container.usage.reprice(
                tenant_id=tenant_id,
                actor=f"cli:{os.environ.get('USER', 'unknown')}",
                price_book_version=args.price_book,
                through=container.conversations.head_position(),
                reason=args.reason,
            )
        except DomainError as exc:
            print(f"kf usage reprice: {exc}", file=sys.stderr)
            return 1
        view.catch_up_from(container.event_logs)  # applies the run (and what it covers)
        run = view.repricing(tenant_id, result.id)
    finally:
        container.close()
        endpoints.close()
    if run is None:
        print("kf usage reprice: the run was recorded but not applied", file=sys.stderr)
        return 1
    print(json.dumps({
        "id": str(run.run_id), "price_book_version": run.price_book_version,
        "through": run.through, "answers": run.answers, "unpriced": run.unpriced,
        "cost_charged_usd": f"{run.cost_charged_usd:f}",
        "cost_repriced_usd": f"{run.cost_repriced_usd:f}",
    }))  # fmt: skip
    return 0


def _moment(value: str) -> datetime:
    """An ISO 8601 time; without a zone, UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _who_saw(args: argparse.Namespace, settings: Settings) -> int:
    from uuid import UUID

    from domain.access import Tenant
    from projections.readers import ReadersView

    def moment(value: str | None) -> datetime | None:
        if value is None:
            return None
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    tenant_id = str(Tenant.id_for(args.tenant))
    document_id = UUID(args.document)
    container, endpoints = _with_store(settings)
    try:
        view = container.views["readers"]
        assert isinstance(view, ReadersView)
        view.catch_up_from(container.event_logs)  # never stale, even with no projector running
        found = view.readers(
            tenant_id, document_id, since=moment(args.since), until=moment(args.until)
        )
    finally:
        container.close()
        endpoints.close()
    for reader in found:
        print(
            json.dumps(
                {
                    "actor": reader.actor,
                    "route": reader.route,
                    "times": reader.times,
                    "first_seen": reader.first_seen.isoformat(),
                    "last_seen": reader.last_seen.isoformat(),
                }
            )
        )
    return 0


def _audit_export(args: argparse.Namespace, settings: Settings) -> int:
    import uuid as uuids

    from eventsourcing.persistence import StoredEvent as LibraryStoredEvent

    from domain.access import Tenant
    from domain.contexts import CONTEXTS
    from infra.envelope import Envelope
    from infra.signing import Signer
    from projections.audit.bundle import write_bundle
    from projections.audit.verify import StoredEvent

    tenant_id = str(Tenant.id_for(args.tenant))
    container, endpoints = _with_store(settings)

    def decode(event: StoredEvent) -> dict[str, Any]:
        app = container.applications[event.context]
        try:
            domain_event = app.mapper.to_domain_event(
                LibraryStoredEvent(
                    originator_id=uuids.UUID(event.aggregate_id),
                    originator_version=event.aggregate_version,
                    topic=event.topic,
                    state=event.state,
                )
            )
        except Exception as exc:  # a changed byte: the bundle still carries the bytes
            return {"undecodable": repr(exc)}
        return dict(
            Envelope.from_event(event.context, event.position, event.topic, domain_event).__dict__
        )

    try:
        signer = Signer.load_or_create(container.audit_key_path)
        summary = write_bundle(
            endpoints.database_url,
            list(CONTEXTS),
            tenant_id,
            container.checkpoint_store(),
            signer.public_pem,
            args.out,
            decode,
        )
    finally:
        container.close()
        endpoints.close()
    print(
        json.dumps(
            {
                "bundle": str(summary.directory),
                "tenant_id": summary.tenant_id,
                "events": summary.events,
                "entries": summary.entries,
                "checkpoints": summary.checkpoints,
            }
        )
    )
    return 0


def _migrate(settings: Settings) -> int:
    from config.root import Endpoints
    from config.schema import migrate, reader_password

    endpoints = Endpoints.resolve(settings, need_nats=False)
    try:
        created = migrate(endpoints.database_url, reader_password=reader_password(settings))
    finally:
        endpoints.close()
    print(json.dumps({"applied": created}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = _settings(args)
    from infra.crypto import MasterKeyError
    from infra.db import SchemaNotReadyError  # light: no metrics are created by importing it

    try:
        return _run(args, settings)
    except SchemaNotReadyError as exc:
        print(f"kf: {exc}", file=sys.stderr)
        return 2
    except MasterKeyError as exc:
        print(f"kf: refusing to start: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command in ("serve", "api", "write-api", "read-api"):
        refusal = _preflight(settings)
        if refusal:
            print(f"kf: refusing to start: {refusal}", file=sys.stderr)
            return 2
    if args.command == "serve":
        _prepare_metrics_dir(settings)
    from infra.telemetry import configure_logging

    configure_logging(settings.logging.level, json_output=settings.logging.json_output)
    from config import runtime

    if args.command == "serve":
        runtime.run_serve(settings)
    elif args.command == "relay":
        os.nice(args.nice)
        runtime.run_relay(settings, args.context)
    elif args.command == "worker":
        runtime.run_worker(settings, args.stage)
    elif args.command == "project":
        os.nice(args.nice)
        runtime.run_projectors(settings, args.names or None, args.group)
    elif args.command in ("api", "write-api", "read-api"):
        role = {"api": "all", "write-api": "write", "read-api": "read"}[args.command]
        if role != "write" and not settings.qdrant.url:
            print(f"kf: refusing to start: {_SEARCH_NEEDS_A_SERVER}", file=sys.stderr)
            return 2
        runtime.run_api(settings, role)  # type: ignore[arg-type]
    elif args.command == "rebuild-index":
        return _rebuild(args, settings)
    elif args.command == "migrate":
        return _migrate(settings)
    elif args.command == "documents" and args.action == "verify-erasure":
        return _verify_erasure(args)
    elif args.command == "audit":
        return _audit(args, settings)
    elif args.command == "usage" and args.action == "reprice":
        return _usage_reprice(args, settings)
    elif args.command == "usage":
        return _usage_report(args, settings)
    else:
        return _admin(args, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
