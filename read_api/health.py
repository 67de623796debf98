"""Health that tells the truth: ``/health/live`` and ``/health/ready`` (no credential).

``/health/live`` answers 200 while the process serves at all (a liveness probe restarts
it otherwise). ``/health/ready`` runs the checks the composition root gave it (PostgreSQL,
NATS, the search index, projection lag, workers listening), each bounded by
``health.timeout_s``, and answers 200 only when all pass; otherwise 503 with every
failing check's reason, so an operator (or a load balancer) knows why. Each check also
sets ``kf_dependency_up{dependency}``, which the alert rules watch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from infra.telemetry import DEPENDENCY_UP

# A check answers None when healthy, else the reason (for people); it may raise.
Check = Callable[[], Awaitable[str | None]]

router = APIRouter(include_in_schema=False)


@router.get("/health/live")
def live() -> dict[str, str]:
    return {"status": "live"}


async def _run(name: str, check: Check, timeout_s: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        reason = await asyncio.wait_for(check(), timeout_s)
    except TimeoutError:
        reason = f"no answer within {timeout_s:g} s"
    except Exception as exc:  # the dependency failed: its error is the reason
        reason = f"{type(exc).__name__}: {exc}"[:300]
    DEPENDENCY_UP.labels(name).set(0 if reason else 1)
    elapsed = round((time.perf_counter() - started) * 1000, 1)
    return {"ok": reason is None, "reason": reason, "ms": elapsed}


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    checks: dict[str, Check] = request.app.state.readiness
    timeout_s: float = request.app.state.settings.health.timeout_s
    names = list(checks)
    results = await asyncio.gather(*(_run(n, checks[n], timeout_s) for n in names))
    outcome = dict(zip(names, results, strict=True))
    reasons = [f"{name}: {r['reason']}" for name, r in outcome.items() if not r["ok"]]
    body = {"status": "not_ready" if reasons else "ready", "reasons": reasons, "checks": outcome}
    return JSONResponse(
        body, status_code=503 if reasons else 200, headers={"Cache-Control": "no-store"}
    )
