"""Fixtures of the browser tests: Chromium (found, or installed), one browser per session,
the screenshots folder, and a RunningSystem per module that serves the web app at /ui/."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, expect, sync_playwright

from config.schema import migrate
from infra.bus import delete_stream
from infra.embedding import SentenceTransformerEmbedder
from tests.browser.web import outside_playwright_loop
from tests.harness import RunningSystem, Services, make_settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_INSTALL = "apt-get update && apt-get install -y chromium"
INSTALL_TIMEOUT_S = 900

_SCREENSHOTS = pytest.StashKey[Path]()

# Conditions are awaited with Playwright's auto-waiting expect(); none of them takes long
# except where a test says so (documents being processed).
expect.set_options(timeout=15_000)


def _executable(path: str) -> bool:
    return Path(path).is_file() and os.access(path, os.X_OK)


def _install_chromium() -> str | None:
    """Install Debian's Chromium when we may (root, apt-get); None when that worked, else
    why not."""
    if os.geteuid() != 0:
        return "not running as root, so it was not installed"
    if shutil.which("apt-get") is None:
        return "there is no apt-get to install it with"
    try:
        done = subprocess.run(
            ["sh", "-c", CHROMIUM_INSTALL],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"installing it took longer than {INSTALL_TIMEOUT_S} s"
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-2000:]
        return f"installing it failed (exit {done.returncode}):\n{output}"
    return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """KF_CHROMIUM, else Debian's /usr/bin/chromium, installed first when it is missing."""
    configured = os.environ.get("KF_CHROMIUM")
    if configured:
        if not _executable(configured):
            pytest.fail(f"KF_CHROMIUM={configured!r} is not an executable file", pytrace=False)
        return configured
    if _executable(CHROMIUM):
        return CHROMIUM
    problem = _install_chromium()
    if problem is None and _executable(CHROMIUM):
        return CHROMIUM
    pytest.fail(
        f"The browser tests need Chromium at {CHROMIUM} (or KF_CHROMIUM); "
        f"{problem or 'it is still missing after installing it'}. "
        f"Install it with: {CHROMIUM_INSTALL}",
        pytrace=False,
    )


@pytest.fixture(scope="package")
def browser(chromium_path: str) -> Iterator[Browser]:
    """One headless Chromium for all the browser tests; each test opens its own contexts.

    Package-scoped, not session-scoped: between its calls Playwright's sync API marks its
    event loop as running in this thread, so every later test that runs an event loop of its
    own (asyncio.run) would fail while it is open. It closes after the last browser test."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """Open browser contexts (closed after the test); uncaught errors in their pages fail
    the test."""
    opened: list[tuple[BrowserContext, list[str]]] = []

    def factory(**options: Any) -> BrowserContext:
        context = browser.new_context(**options)
        context.set_default_timeout(20_000)
        errors: list[str] = []
        context.on("weberror", lambda error: errors.append(str(error.error)))
        opened.append((context, errors))
        return context

    yield factory
    problems = [error for _, errors in opened for error in errors]
    for context, _ in opened:
        context.close()
    assert not problems, f"uncaught errors in the page: {problems}"


@pytest.fixture(scope="session")
def screenshots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go: KF_SCREENSHOTS, else <pytest's tmp base>/screenshots."""
    configured = os.environ.get("KF_SCREENSHOTS")
    folder = Path(configured) if configured else tmp_path_factory.getbasetemp() / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    request.config.stash[_SCREENSHOTS] = folder
    return folder


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    folder = config.stash.get(_SCREENSHOTS, None)
    if folder is not None:
        count = len(list(folder.glob("*.png")))
        terminalreporter.write_sep("-", "web app screenshots")
        terminalreporter.write_line(f"{count} screenshots in {folder}")


@pytest.fixture(scope="module")
def web_settings() -> dict[str, Any]:
    """Settings of the module's ``web_system`` beside the defaults (a module overrides this)."""
    return {}


@pytest.fixture(scope="module")
def web_system(
    services: Services,
    embedder: SentenceTransformerEmbedder,
    tmp_path_factory: pytest.TempPathFactory,
    web_settings: dict[str, Any],
) -> Iterator[RunningSystem]:
    """The whole platform in-process on this module's database and stream, web app included.

    (Not tests/conftest.py's ``system``: its stream is deleted with asyncio.run(), which
    Playwright's sync API does not allow while the session's browser is open.)
    """
    with services.database() as url:
        migrate(url)
        settings = make_settings(
            url,
            services.nats_url,
            tmp_path_factory.mktemp("web-data"),
            uuid.uuid4().hex[:10],
            # A person's session requests are limited too; these tests make many.
            rate_limits={"session": {"per_hour": 10_000_000, "burst": 1_000_000}},
            **web_settings,
        )
        running = RunningSystem(settings, embedder).start()
        try:
            page = httpx.get(f"{running.base_url}/ui/", timeout=30)
            assert page.status_code == 200 and '<div id="root"' in page.text, page.text[:500]
            yield running
        finally:
            try:
                running.stop()
            finally:
                with outside_playwright_loop():
                    asyncio.run(delete_stream(services.nats_url, settings.nats.stream))
