"""The web app's committed bundle (read_api/ui/) and the router that serves it (read_api/ui.py).

- every file index.html references is in the bundle;
- the JavaScript the first page loads stays under 250 KB gzipped;
- the bundle is what the sources in web/ build to, byte for byte (when npm is on PATH);
- the router: redirects, cache headers, the client-side routes, 404s, no path traversal.
"""

from __future__ import annotations

import filecmp
import gzip
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from read_api import ui

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "web"
BUNDLE = REPO / "read_api" / "ui"
INDEX = BUNDLE / "index.html"
JS_BUDGET_GZIP = 250 * 1024
REBUILD = "cd web && npm ci && npm run build"


class _References(HTMLParser):
    """The URLs index.html loads: scripts, stylesheets, module preloads, icons."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.others: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self.scripts.append(values["src"] or "")
        elif tag == "link" and values.get("href"):
            rel = (values.get("rel") or "").split()
            href = values["href"] or ""
            if "modulepreload" in rel:
                self.scripts.append(href)
            else:
                self.others.append(href)


def _references() -> _References:
    parser = _References()
    parser.feed(INDEX.read_text(encoding="utf-8"))
    return parser


def _local(url: str) -> Path | None:
    """The bundle file a /ui/ URL names (None for data: URLs)."""
    if url.startswith("data:"):
        return None
    assert url.startswith("/ui/"), f"index.html references {url!r}, outside /ui/"
    return BUNDLE / url.removeprefix("/ui/").split("?")[0].split("#")[0]


def test_the_bundle_is_built() -> None:
    assert INDEX.is_file(), f"read_api/ui/index.html is missing: run `{REBUILD}` and commit it"
    assert any((BUNDLE / "assets").glob("*.js"))


def test_every_asset_index_html_references_exists() -> None:
    refs = _references()
    assert refs.scripts, "index.html loads no script"
    for url in refs.scripts + refs.others:
        path = _local(url)
        if path is not None:
            assert path.is_file(), f"index.html references {url}, not in read_api/ui/"
    # Every JS and CSS file the bundle's files name is in the bundle, too.
    for asset in (BUNDLE / "assets").glob("*.js"):
        for name in re.findall(r"assets/([\w.-]+\.(?:js|css))", asset.read_text("utf-8")):
            assert (BUNDLE / "assets" / name).is_file(), f"{asset.name} imports {name}, missing"


def test_first_page_javascript_is_under_budget() -> None:
    total = 0
    for url in _references().scripts:
        path = _local(url)
        assert path is not None
        total += len(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))
    print(f"\nfirst-page JavaScript: {total / 1024:.1f} KB gzipped (budget 250 KB)")
    assert total < JS_BUDGET_GZIP, f"first-page JavaScript is {total} bytes gzipped"


def _differences(left: Path, right: Path) -> list[str]:
    compared = filecmp.dircmp(left, right)
    found = [f"only in the committed bundle: {n}" for n in compared.left_only]
    found += [f"only in a fresh build: {n}" for n in compared.right_only]
    _, mismatch, errors = filecmp.cmpfiles(left, right, compared.common_files, shallow=False)
    found += [f"differs: {n}" for n in mismatch + errors]
    for sub in compared.common_dirs:
        found += [f"{sub}/{d}" for d in _differences(left / sub, right / sub)]
    return found


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_the_committed_bundle_is_what_the_sources_build_to(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    assert npm is not None
    source = tmp_path / "web"
    shutil.copytree(WEB, source, ignore=shutil.ignore_patterns("node_modules", "*.tsbuildinfo"))
    out = tmp_path / "ui"
    env = {**os.environ, "CI": "1", "npm_config_fund": "false", "npm_config_audit": "false"}
    for command in (
        [npm, "ci", "--prefer-offline", "--no-audit", "--no-fund"],
        [npm, "run", "build", "--", "--outDir", str(out), "--emptyOutDir"],
    ):
        done = subprocess.run(
            command,
            check=False,
            cwd=source,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, (
            f"{' '.join(command[1:])} failed in a copy of web/:\n{done.stdout}\n{done.stderr}"
        )
    differences = _differences(BUNDLE, out)
    assert not differences, (
        "read_api/ui/ is not what web/ builds to; run `"
        + REBUILD
        + "` and commit read_api/ui/:\n  "
        + "\n  ".join(differences)
    )


# --------------------------------------------------------------------------- the router


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    app.include_router(ui.router)
    app.include_router(ui.root_redirect)
    return TestClient(app, follow_redirects=False)


def _an_asset() -> Path:
    """The largest script (a tiny one compresses less than half: not what is measured)."""
    return max((BUNDLE / "assets").glob("*.js"), key=lambda p: p.stat().st_size)


def test_root_and_ui_redirect_to_the_app(client: TestClient) -> None:
    root = client.get("/")
    assert root.status_code == 307
    assert root.headers["location"] == "/ui/"
    bare = client.get("/ui")
    assert bare.status_code in (301, 302, 307, 308)
    assert bare.headers["location"] == "/ui/"


def test_the_app_page_is_revalidated_on_every_load(client: TestClient) -> None:
    page = client.get("/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    assert page.content == INDEX.read_bytes()
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    again = client.get("/ui/", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize(
    "route",
    [
        "/ui/documents",
        "/ui/search?q=x",
        "/ui/chat/8d0b4f8e-1f1e-4bb4-9d3a-0c6f4e1a2b3c",
        "/ui/admin/users",
        "/ui/login",
        "/ui/set-password",
    ],
)
def test_client_routes_get_the_app_page(client: TestClient, route: str) -> None:
    page = client.get(route)
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-cache"
    assert page.content == INDEX.read_bytes()


def test_assets_are_cached_for_good(client: TestClient) -> None:
    asset = _an_asset()
    answer = client.get(f"/ui/assets/{asset.name}")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert answer.headers["content-type"].startswith("text/javascript")
    assert answer.content == asset.read_bytes()
    css = next((BUNDLE / "assets").glob("*.css"))
    styles = client.get(f"/ui/assets/{css.name}")
    assert styles.headers["content-type"].startswith("text/css")


def test_scripts_and_styles_are_gzipped_for_clients_that_accept_it(client: TestClient) -> None:
    import gzip

    asset = _an_asset()
    raw = asset.read_bytes()
    zipped = client.get(f"/ui/assets/{asset.name}", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["vary"] == "Accept-Encoding"
    assert zipped.content == raw  # the client decodes it
    assert int(zipped.headers["content-length"]) < len(raw) / 2
    assert gzip.decompress(gzip.compress(raw)) == raw
    plain = client.get(f"/ui/assets/{asset.name}", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == raw
    refused = client.get(f"/ui/assets/{asset.name}", headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers


def test_a_missing_asset_is_404_not_the_app_page(client: TestClient) -> None:
    for path in ("/ui/assets/index-00000000.js", "/ui/assets/", "/ui/assets/nested/x.css"):
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert "immutable" not in answer.headers.get("cache-control", "")


@pytest.mark.parametrize(
    "path",
    [
        "/ui/assets/..%2f..%2fui.py",
        "/ui/assets/%2e%2e/%2e%2e/ui.py",
        "/ui/assets/..%5c..%5cui.py",
        "/ui/assets/%2fetc%2fpasswd",
        "/ui/%2e%2e/ui.py",
        "/ui/%2e%2e/%2e%2e/pyproject.toml",
        "/ui/assets/.hidden",
    ],
)
def test_path_traversal_is_refused(client: TestClient, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 404, path
    assert b"APIRouter" not in answer.content
    assert b"[project]" not in answer.content


def test_no_bundle_says_how_to_build_it(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ui, "UI_DIR", tmp_path / "missing")
    answer = client.get("/ui/documents")
    assert answer.status_code == 503
    assert "npm run build" in answer.text
