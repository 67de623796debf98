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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from config.root import Container
    from config.settings import Settings
    from projections.keys import KeyEntry


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
    worker = sub.add_parser("worker", help="parse, chunk and embed documents")
    worker.add_argument("--stage", action="append", choices=["parse", "chunk", "embed"])
    project = sub.add_parser("project", help="keep read models up to date")
    project.add_argument(
        "names", nargs="*", help="read models to keep (default: all; see kf projections status)"
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

    _audit_parser(sub, common)
    _usage_parser(sub, common)
    _prices_parser(sub, common)
    _budgets_parser(sub, common)

    projections = _Subcommands(
        sub.add_parser("projections", help="read-model status").add_subparsers(
            dest="action", required=True
        ),
        common,
    )
    projections.add_parser("status", help="position and lag of every relay and projection")
    return parser


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
        elif args.command == "prices":
            _prices(args, container, actor)
        elif args.command == "budgets":
            _budgets(args, container, actor)
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
    from infra.db import SchemaNotReadyError  # light: no metrics are created by importing it

    try:
        return _run(args, settings)
    except SchemaNotReadyError as exc:
        print(f"kf: {exc}", file=sys.stderr)
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
        runtime.run_relay(settings, args.context)
    elif args.command == "worker":
        runtime.run_worker(settings, args.stage)
    elif args.command == "project":
        runtime.run_projectors(settings, args.names or None)
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
