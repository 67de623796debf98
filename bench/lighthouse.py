"""Lighthouse on every page of the web app: performance and accessibility, as a browser sees it.

    .venv/bin/python bench/lighthouse.py [--url URL --key ADMIN_KEY] [--desktop]
                                         [--lighthouse 12.8.2] [--chrome /usr/bin/chromium]

1. without ``--url``: starts ``kf serve`` on a fresh data directory (embedded servers, rate
   limits off) and sets the first admin's password with the one-time link it prints; with
   ``--url`` and ``--key`` (an admin API key): invites a benchmark user there and sets its
   password;
2. signs that person in (``POST /v1/auth/login``: the session cookie), uploads a real PDF from
   the shared documents, waits until it is embedded and asks one question, so the pages have
   something on them;
3. installs npm ``lighthouse@<version>`` once into ``<tmp>/kf-lighthouse-<version>``
   (``npm install --no-save``) and runs it with the local Chromium (``CHROME_PATH``,
   ``--chrome-flags="--headless=new --no-sandbox"``) on each page, the session cookie passed
   with ``--extra-headers``; Lighthouse's default mobile emulation (simulated slow 4G and a
   4x slower CPU), or ``--desktop`` for its desktop preset;
4. prints a table: performance and accessibility scores, first contentful paint, time to
   interactive, and the JavaScript transferred (every script response's transfer size).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import start_serve

from tests.shared_data import DOCUMENTS

LIGHTHOUSE = "12.8.2"  # the newest release that runs on Node 20 (13.x needs Node 22)
PDF = "Seige_of_Vicksburg_Sample_OCR.pdf"
QUESTION = "Who tossed a hard tack into Fort Hill?"
PASSWORD = "a benchmark lantern over the harbour"
LINK = re.compile(r"http://\S+/ui/set-password#token=(kfl_\S+)")


def lighthouse_binary(version: str) -> Path:
    """npm's lighthouse at exactly ``version``, installed once into a temporary directory."""
    prefix = Path(tempfile.gettempdir()) / f"kf-lighthouse-{version}"
    binary = prefix / "node_modules" / ".bin" / "lighthouse"
    if not binary.exists():
        prefix.mkdir(parents=True, exist_ok=True)
        print(f"installing lighthouse@{version} into {prefix}", file=sys.stderr)
        subprocess.run(
            ["npm", "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(prefix),
             f"lighthouse@{version}"],
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return binary


def set_password(base: str, token: str, password: str) -> None:
    chosen = httpx.post(
        f"{base}/v1/auth/password", json={"token": token, "password": password}, timeout=30
    )
    chosen.raise_for_status()


def prepare(base: str, key: str, email: str) -> tuple[str, dict[str, str]]:
    """Sign in; a document embedded and one answered question. The Cookie header and the
    ids the pages need."""
    signed = httpx.post(
        f"{base}/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=30
    )
    signed.raise_for_status()
    cookie = "; ".join(f"{name}={value}" for name, value in signed.cookies.items())
    admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    with admin, (DOCUMENTS / PDF).open("rb") as handle:
        accepted = admin.post("/v1/documents", files={"file": (PDF, handle)}).json()
        deadline = time.monotonic() + 300
        status = None
        while time.monotonic() < deadline:
            document = admin.get(
                f"/v1/documents/{accepted['id']}", params={"min_position": accepted["position"]}
            ).json()
            status = document.get("status")
            if status in {"embedded", "failed"}:
                break
            time.sleep(0.5)
        if status != "embedded":
            raise SystemExit(f"{PDF} did not become embedded: {status}")
        admin.get("/v1/search", params={"q": QUESTION, "min_position": document["position"]})
    csrf = signed.json()["csrf_token"]
    with httpx.Client(base_url=base, headers={"Cookie": cookie, "X-CSRF-Token": csrf}) as person:
        conversation = person.post("/v1/conversations", json={"title": QUESTION}).json()["id"]
        answered = person.post(
            f"/v1/conversations/{conversation}/questions", json={"question": QUESTION}, timeout=60
        )
        answered.raise_for_status()
    return cookie, {"document": accepted["id"], "conversation": conversation}


def pages(ids: dict[str, str]) -> list[tuple[str, str, bool]]:
    """(name, path, needs the session) of every page."""
    return [
        ("sign-in", "/ui/login", False),
        ("chat (new)", "/ui/", True),
        ("chat (transcript)", f"/ui/chat/{ids['conversation']}", True),
        ("documents", "/ui/documents", True),
        ("document", f"/ui/documents/{ids['document']}", True),
        ("search", "/ui/search?q=hard+tack+Fort+Hill&mode=hybrid", True),
        ("usage", "/ui/admin/usage", True),
        ("audit", "/ui/admin/audit", True),
        ("admin users", "/ui/admin/users", True),
        ("admin keys", "/ui/admin/keys", True),
        ("admin status", "/ui/admin/status", True),
        ("admin settings", "/ui/admin/settings", True),
    ]


def run_lighthouse(
    binary: Path, chrome: str, url: str, cookie: str | None, desktop: bool
) -> dict[str, Any]:
    command = [
        str(binary), url,
        "--output=json", "--output-path=stdout", "--quiet",
        "--only-categories=performance,accessibility",
        "--chrome-flags=--headless=new --no-sandbox",
    ]  # fmt: skip
    if desktop:
        command.append("--preset=desktop")
    if cookie:
        command.append("--extra-headers=" + json.dumps({"Cookie": cookie}))
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, "CHROME_PATH": chrome},
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"lighthouse failed on {url}:\n{done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def figures(report: dict[str, Any]) -> dict[str, Any]:
    audits = report["audits"]
    categories = report["categories"]
    requests = audits["network-requests"]["details"]["items"]
    script_bytes = sum(
        r.get("transferSize") or 0 for r in requests if r.get("resourceType") == "Script"
    )

    def ms(audit: str) -> float | None:
        value = audits.get(audit, {}).get("numericValue")
        return None if value is None else float(value)

    return {
        "performance": categories["performance"]["score"],
        "accessibility": categories["accessibility"]["score"],
        "fcp_ms": ms("first-contentful-paint"),
        "tti_ms": ms("interactive"),
        "js_kb": script_bytes / 1024,
        "final_url": report.get("finalDisplayedUrl") or report.get("finalUrl"),
        "failing_a11y": [
            audit
            for ref in categories["accessibility"]["auditRefs"]
            if ref["weight"] > 0
            and (audit := ref["id"])
            and audits[audit].get("score") not in (None, 1)
        ],
    }


def table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    def score(value: float | None) -> str:
        return "-" if value is None else f"{round(value * 100):d}"

    def millis(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f}"

    head = (
        f"{'page':<20} {'perf':>5} {'a11y':>5} {'FCP ms':>8} {'TTI ms':>8} {'JS KB':>7}  "
        "a11y audits failing"
    )
    lines = [head, "-" * len(head)]
    for name, f in rows:
        lines.append(
            f"{name:<20} {score(f['performance']):>5} {score(f['accessibility']):>5} "
            f"{millis(f['fcp_ms']):>8} {millis(f['tti_ms']):>8} {f['js_kb']:>7.1f}  "
            f"{', '.join(f['failing_a11y']) or '-'}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (else kf serve is started here)")
    parser.add_argument("--key", help="an admin API key of that server (with --url)")
    parser.add_argument("--desktop", action="store_true", help="Lighthouse's desktop preset")
    parser.add_argument("--lighthouse", default=LIGHTHOUSE, help="npm lighthouse version")
    parser.add_argument(
        "--chrome", default=os.environ.get("KF_CHROMIUM", "/usr/bin/chromium"), help="Chromium"
    )
    args = parser.parse_args()
    if args.url and not args.key:
        parser.error("--url needs --key (an admin API key)")
    if shutil.which("npm") is None:
        raise SystemExit("npm is needed to install lighthouse")
    binary = lighthouse_binary(args.lighthouse)

    process = None
    scratch = Path(tempfile.mkdtemp(prefix="kf-bench-lighthouse-"))
    try:
        if args.url:
            base, key = args.url.rstrip("/"), args.key
            email = f"lighthouse-{uuid.uuid4().hex[:8]}@example.org"
            invited = httpx.post(
                f"{base}/v1/users",
                json={"email": email, "role": "admin"},
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            invited.raise_for_status()
            set_password(base, invited.json()["link"].split("#token=", 1)[1], PASSWORD)
        else:
            process, base, key = start_serve(scratch / "data", scratch / "serve.log")
            (token,) = LINK.findall((scratch / "serve.log").read_text())
            email = "admin@localhost"
            set_password(base, token, PASSWORD)
        cookie, ids = prepare(base, key, email)
        preset = "desktop preset" if args.desktop else "mobile emulation (default)"
        print(f"lighthouse@{args.lighthouse}, {args.chrome}, {preset}, {base}")
        rows = []
        for name, path, signed_in in pages(ids):
            report = run_lighthouse(
                binary, args.chrome, base + path, cookie if signed_in else None, args.desktop
            )
            found = figures(report)
            if signed_in and "/ui/login" in str(found["final_url"]):
                raise SystemExit(f"{name}: sent to sign in; the session cookie was not accepted")
            rows.append((name, found))
            print(f"  {name}: done", file=sys.stderr)
        print(table(rows))
    finally:
        if process is not None:
            process.send_signal(signal.SIGINT)
            process.wait(60)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
