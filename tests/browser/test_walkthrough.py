"""A person's first hour with ``kf serve``, in a real Chromium.

The real ``kf serve`` (a subprocess, its own data directory, port 0; started as
tests/e2e/test_serve_cli.py starts it, on this session's PostgreSQL and NATS with a database
and a stream of its own) is walked through the web app only: the one-time link it prints for
admin@localhost, signing out and in, uploading a real PDF and watching it become ready,
asking a question, opening the cited page, signing out.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pymupdf
import pytest
import yaml
from playwright.sync_api import Browser, Response, expect

from infra.bus import delete_stream
from tests.browser.web import DESKTOP, intercept_file_choosers, outside_playwright_loop
from tests.e2e.test_serve_cli import Serve
from tests.harness import Services, shared_query_embedder

# Generous: on a fresh machine the session's browser fixture may first install Chromium.
pytestmark = pytest.mark.timeout(1200)

PDF = "Seige_of_Vicksburg_Sample_OCR.pdf"
# The answer is one sentence of the PDF's fifth page; the extractive provider quotes it.
QUESTION = "Who tossed a hard tack into Fort Hill?"
PHRASE = "hard tack was tossed"
PASSWORD = "seven lighthouses along the northern coast"
LINK = re.compile(r"http://\S+/ui/set-password#token=kfl_\S+")


@pytest.fixture(scope="module")
def served(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    shared_query_embedder()  # the ONNX export exists before the server looks for it
    home = tmp_path_factory.mktemp("kf-serve")
    tag = uuid.uuid4().hex[:10]
    stream = f"KFB_{tag}"
    with services.database() as database_url:
        config = home / "kf.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "database": {"url": database_url},
                    "nats": {
                        "url": services.nats_url,
                        "stream": stream,
                        "subject_prefix": f"kfb{tag}",
                    },
                }
            )
        )
        serve = Serve(home / "data", home / "serve.log", config)
        try:
            yield serve
        finally:
            if serve.process.poll() is None:
                assert serve.stop() == 0, serve.output()[-3000:]
            with outside_playwright_loop():
                asyncio.run(delete_stream(services.nats_url, stream))


def _page_of(phrase: str, pdf: Path) -> int:
    with pymupdf.open(pdf) as document:
        pages = [
            i + 1 for i, page in enumerate(document) if phrase in " ".join(page.get_text().split())
        ]
    assert len(pages) == 1, pages
    return pages[0]


def test_first_admin_signs_in_uploads_a_pdf_asks_and_opens_the_cited_page(
    served: Serve, browser: Browser, documents_dir: Path
) -> None:
    base = served.url
    (link,) = LINK.findall(served.output())
    assert "Set the password of admin@localhost (admin)" in served.output()
    context = browser.new_context(viewport=DESKTOP, base_url=base)
    context.set_default_timeout(20_000)
    errors: list[str] = []
    context.on("weberror", lambda error: errors.append(str(error.error)))
    # Responses are reported once subscribed, and subscribing is fire-and-forget: subscribe
    # now, long before the click whose response we wait for.
    contents: list[Response] = []
    context.on("response", lambda r: contents.append(r) if "/content" in r.url else None)
    page = context.new_page()
    intercept_file_choosers(page)
    try:
        # Not signed in: the app sends us to sign in.
        page.goto("/ui/")
        expect(page).to_have_url(f"{base}/ui/login")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()

        # The one-time link kf serve printed: choose a password (it signs us in).
        page.goto(link)
        expect(page.get_by_role("heading", name="Set your password")).to_be_visible()
        expect(page).to_have_url(f"{base}/ui/set-password")  # the token left the address bar
        page.get_by_label("New password").fill(PASSWORD)
        page.get_by_label("Repeat the password").fill(PASSWORD)
        page.get_by_role("button", name="Set password and sign in").click()
        expect(page).to_have_url(f"{base}/ui/")
        expect(page.get_by_text("admin@localhost").first).to_be_visible()

        # Sign out, and back in with the e-mail address and the new password.
        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(f"{base}/ui/login")
        page.get_by_label("Email").fill("admin@localhost")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(f"{base}/ui/")

        # Upload the PDF on the documents page and watch it become ready, without a reload.
        main_nav = page.get_by_role("navigation", name="Main")
        main_nav.get_by_role("link", name="Documents").click()
        expect(page).to_have_url(f"{base}/ui/documents")
        page.evaluate("() => { window.__sameDocument = true; }")
        with page.expect_file_chooser() as chooser:
            page.get_by_role("button", name="Choose files…").click()
        chooser.value.set_files(documents_dir / PDF)
        row = page.get_by_role("table").get_by_role("row").filter(has_text=PDF)
        status = row.get_by_role("cell").nth(1)  # the badge, and the steps while in progress
        expect(status).to_have_text("embedded", timeout=240_000)
        expect(row).to_contain_text("6 pages")
        assert page.evaluate("() => window.__sameDocument") is True  # no reload happened

        # The catalog and the search index are separate read models: before asking, make
        # sure the index has the document too, as an API client reading its own write does
        # (search with min_position: the server waits for it).
        key = (served.data_dir / "admin-key").read_text().strip()
        admin = {"Authorization": f"Bearer {key}"}
        (document,) = [
            d
            for d in httpx.get(f"{base}/v1/documents", headers=admin).json()["items"]
            if d["filename"] == PDF
        ]
        indexed = httpx.get(
            f"{base}/v1/search",
            params={"q": QUESTION, "min_position": document["position"]},
            headers=admin,
            timeout=30,
        )
        assert indexed.status_code == 200, indexed.text
        assert document["id"] in {hit["document_id"] for hit in indexed.json()["results"]}

        # Ask; the extractive answer quotes the PDF and cites it.
        main_nav.get_by_role("link", name="Chat").click()
        expect(page).to_have_url(f"{base}/ui/")
        page.get_by_label("Ask a question about your documents").fill(QUESTION)
        page.keyboard.press("Enter")
        answer = page.get_by_role("log").get_by_role("article").last
        expect(answer).to_have_attribute("aria-busy", "false")
        expect(answer).to_contain_text(PHRASE)

        # The inline citation opens a popover with the document, page and passage.
        marker = answer.get_by_role("button", name=re.compile(rf"^Source \d+: {re.escape(PDF)}"))
        marker.first.click()
        popover = page.get_by_role("dialog")
        expect(popover).to_be_visible()
        expect(popover).to_contain_text(PDF)
        expect(popover.locator("blockquote")).to_contain_text(PHRASE)
        shown = re.search(r"Page (\d+)", popover.inner_text())
        assert shown, popover.inner_text()
        number = int(shown.group(1))
        assert 1 <= number <= _page_of(PHRASE, documents_dir / PDF)  # the chunk starts there
        # The page shown is the one the transcript records for that citation.
        conversation = re.fullmatch(rf"{re.escape(base)}/ui/chat/([0-9a-f-]+)", page.url)
        assert conversation, page.url
        transcript = httpx.get(
            f"{base}/v1/conversations/{conversation.group(1)}", headers=admin
        ).json()
        cited = {c["n"]: c for c in transcript["turns"][-1]["citations"]}
        recorded = cited[int(marker.first.inner_text())]
        assert (recorded["document_id"], recorded["page"]) == (document["id"], number), recorded

        # "Open page N" opens the PDF itself, inline, at that page.
        opener = popover.get_by_role("link", name=re.compile(rf"^Open page {number}\b"))
        with (
            context.expect_event(
                "response", predicate=lambda r: "/content" in r.url
            ) as response_info,
            context.expect_page() as opened,
        ):
            opener.click()
        tab = opened.value
        document_id = document["id"]
        expect(tab).to_have_url(f"{base}/v1/documents/{document_id}/content#page={number}")
        response: Response = response_info.value
        assert response in contents
        assert urlsplit(response.url).path == f"/v1/documents/{document_id}/content"
        assert response.status == 200
        headers = response.all_headers()
        assert headers["content-type"] == "application/pdf", headers
        assert headers["content-disposition"].startswith("inline"), headers
        tab.close()

        # Sign out; the app is behind the sign-in page again.
        page.keyboard.press("Escape")
        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(f"{base}/ui/login")
        page.goto("/ui/")
        expect(page).to_have_url(f"{base}/ui/login")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    finally:
        context.close()
    assert not errors, errors
