"""What the browser tests share: accounts, signing in, axe, layout checks and screenshots."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import BrowserContext, Page, ViewportSize

PASSWORD = "a lantern over the harbour at dusk"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
MOBILE: ViewportSize = {"width": 390, "height": 844}

_AXE = Axe()


@contextlib.contextmanager
def outside_playwright_loop() -> Iterator[None]:
    """Playwright's sync API marks its event loop as running in this thread between calls
    (``wait_for_future`` in ``playwright/_impl/_greenlets.py``), so ``asyncio.run()`` here
    refuses to start. Code that runs a loop of its own does it inside this block (and makes
    no Playwright call there)."""
    loop = asyncio._get_running_loop()
    asyncio._set_running_loop(None)
    try:
        yield
    finally:
        asyncio._set_running_loop(loop)


# ------------------------------------------------------------------------ accounts


def invite(base_url: str, admin_key: str, email: str, role: str) -> str:
    """Invite a person with the API (as an admin would); the one-time link's token."""
    response = httpx.post(
        f"{base_url}/v1/users",
        json={"email": email, "role": role},
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    link: str = response.json()["link"]
    assert "/ui/set-password#token=" in link, link
    return link.split("#token=", 1)[1]


def create_user(
    base_url: str, admin_key: str, email: str, role: str, password: str = PASSWORD
) -> None:
    """An account with a password: invited, then the link used (POST /v1/auth/password)."""
    token = invite(base_url, admin_key, email, role)
    chosen = httpx.post(
        f"{base_url}/v1/auth/password", json={"token": token, "password": password}, timeout=30
    )
    assert chosen.status_code == 200, chosen.text


def sign_in(context: BrowserContext, base_url: str, email: str, password: str = PASSWORD) -> None:
    """Sign the context in through the API (its cookie jar gets kf_session and kf_csrf)."""
    response = context.request.post(
        f"{base_url}/v1/auth/login", data={"email": email, "password": password}
    )
    assert response.status == 200, response.text()
    assert {c["name"] for c in context.cookies()} >= {"kf_session", "kf_csrf"}


# ------------------------------------------------------------------ page checks


def axe_violations(page: Page, where: str) -> list[str]:
    """axe-core's violations on the page as it is now, one readable line each."""
    found = []
    for violation in _AXE.run(page).response["violations"]:
        nodes = violation["nodes"]
        targets = "; ".join(" ".join(map(str, node["target"])) for node in nodes[:8])
        summary = " ".join((nodes[0].get("failureSummary") or "").split())[:300] if nodes else ""
        found.append(
            f"{where}: {violation['id']} ({violation['impact']}): {violation['help']}; "
            f"{len(nodes)} node(s): {targets}; first: {summary}"
        )
    return found


_OVERFLOW = """() => {
  const width = window.innerWidth;
  const overflow = document.documentElement.scrollWidth - width;
  if (overflow <= 0) return null;
  // The innermost elements that reach past the right edge: what to fix.
  const past = [...document.body.querySelectorAll("*")].filter(
    (e) => e.getBoundingClientRect().right > width + 0.5,
  );
  const innermost = past.filter((e) => !past.some((o) => o !== e && e.contains(o)));
  const name = (e) =>
    e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") +
    (typeof e.className === "string" && e.className
      ? "." + e.className.trim().split(/\\s+/).slice(0, 4).join(".") : "") +
    ` (right ${Math.round(e.getBoundingClientRect().right)} px` +
    (e.textContent ? `, "${e.textContent.trim().slice(0, 40)}"` : "") + ")";
  return `${overflow} px wider than the ${width} px screen; past the edge: ` +
    innermost.slice(0, 4).map(name).join("; ");
}"""


def horizontal_overflow(page: Page) -> str | None:
    """None when the document is no wider than the viewport (scrollWidth <= innerWidth),
    else by how much and the innermost elements that reach past the edge."""
    found: str | None = page.evaluate(_OVERFLOW)
    return found


def intercept_file_choosers(page: Page) -> None:
    """Have Playwright take over the page's file choosers from now on.

    Subscribing is fire-and-forget in Playwright: with only ``expect_file_chooser()`` around
    a key press, the press can reach the browser before the interception does, and the
    chooser then opens (and closes) natively, unseen. Subscribed early, it is in place long
    before; ``expect_file_chooser()`` still receives each chooser."""
    page.on("filechooser", lambda chooser: None)


def shoot(page: Page, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    return path
