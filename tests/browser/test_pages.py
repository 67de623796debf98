"""Every page of the web app in a real Chromium, on the whole platform in-process.

One RunningSystem serves the app at /ui/ with a real PDF and a Markdown file full of markup,
both processed by the real pipeline. The tests walk the pages as people do, and check:
axe-core finds no violation in the light or the dark theme, on a desktop and a 390 px
phone (where nothing may overflow sideways and the menu button leads to every page); the
transcript is a live log whose answers are busy until complete; markup in documents is shown,
never run; and a keyboard alone can sign in, upload and ask. Screenshots of every page are
written for people to look at.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect

from tests.browser.web import (
    DESKTOP,
    MOBILE,
    PASSWORD,
    axe_violations,
    create_user,
    horizontal_overflow,
    intercept_file_choosers,
    invite,
    shoot,
    sign_in,
)
from tests.harness import RunningSystem

# Generous: on a fresh machine the session's browser fixture may first install Chromium.
pytestmark = pytest.mark.timeout(1200)

ADMIN = "ada@example.org"
EDITOR = "kay@example.org"
PDF = "Seige_of_Vicksburg_Sample_OCR.pdf"
PDF_QUESTION = "Who tossed a hard tack into Fort Hill?"
PDF_PHRASE = "hard tack was tossed"

XSS_IMG = '<img src=x onerror="window.__xss=1">'
XSS_SCRIPT = "<script>window.__xss=2</script>"
XSS_FILE = "kestrel-ledger.md"
XSS_TEXT = f"# Field notes\n\nThe kestrel ledger keeps {XSS_IMG} and {XSS_SCRIPT} verbatim.\n"
XSS_QUESTION = "What does the kestrel ledger keep verbatim?"

ContextFactory = Callable[..., BrowserContext]


@dataclass(frozen=True)
class Library:
    system: RunningSystem
    base: str
    pdf_id: str
    xss_id: str


@pytest.fixture(scope="module")
def library(
    web_system: RunningSystem, documents_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Library:
    """Two people (an admin, an editor) and two documents, processed and searchable."""
    base = web_system.base_url
    create_user(base, web_system.admin_key, ADMIN, "admin")
    create_user(base, web_system.admin_key, EDITOR, "editor")
    markup = tmp_path_factory.mktemp("markup") / XSS_FILE
    markup.write_text(XSS_TEXT)
    with web_system.client() as client:
        pdf = web_system.upload(client, documents_dir / PDF)
        xss = web_system.upload(client, markup)
        final = web_system.wait_final(client, [pdf["id"], xss["id"]], timeout=300)
    assert {d["status"] for d in final.values()} == {"embedded"}, final
    head = web_system.container.documents.head_position()
    assert web_system.container.search_view.wait_for("documents", head, 60)
    assert web_system.container.fulltext.wait_for("documents", head, 60)
    return Library(web_system, base, pdf["id"], xss["id"])


# ------------------------------------------------------------------------ helpers


def ask(page: Page, question: str) -> Locator:
    """Ask in the chat (typed, Enter); the finished answer."""
    page.get_by_label("Ask a question about your documents").fill(question)
    page.get_by_label("Ask a question about your documents").press("Enter")
    answer = page.get_by_role("log").get_by_role("article").last
    expect(answer).to_have_attribute("aria-busy", "false")
    return answer


def slug(name: str) -> str:
    return re.sub(r"\W+", "-", name.lower()).strip("-")


def settled(page: Page) -> None:
    """Nothing on the page is still loading."""
    expect(page.locator("#main .animate-spin")).to_have_count(0)


def tab_to(page: Page, target: Locator, *, backwards: bool = False, limit: int = 60) -> None:
    """Press Tab (or Shift+Tab) until the target has the focus."""
    key = "Shift+Tab" if backwards else "Tab"
    for _ in range(limit):
        if target.evaluate("element => element === document.activeElement"):
            return
        page.keyboard.press(key)
    raise AssertionError(f"{limit} presses of {key} never reached {target}")


# ------------------------------------------------------ every page, every view

VIEWS = {
    "desktop-light": (DESKTOP, "light"),
    "desktop-dark": (DESKTOP, "dark"),
    "mobile-light": (MOBILE, "light"),
    "mobile-dark": (MOBILE, "dark"),
}
PHOTOGRAPHED = {"desktop-light", "mobile-dark"}


@pytest.mark.parametrize("view", list(VIEWS))
def test_every_page_passes_axe_and_fits_the_screen(
    view: str, library: Library, new_context: ContextFactory, screenshots: Path
) -> None:
    viewport, scheme = VIEWS[view]
    phone = viewport == MOBILE
    base = library.base
    page = new_context(viewport=viewport, color_scheme=scheme, base_url=base).new_page()
    problems: list[str] = []
    seen: list[str] = []

    def check(name: str) -> None:
        if scheme == "dark":
            expect(page.locator("html")).to_have_class(re.compile(r"\bdark\b"))
        else:
            expect(page.locator("html")).not_to_have_class(re.compile(r"\bdark\b"))
        seen.append(name)
        problems.extend(axe_violations(page, f"{view} {name}"))
        if phone:
            overflow = horizontal_overflow(page)
            if overflow:
                problems.append(f"{view} {name}: {overflow}")
        if view in PHOTOGRAPHED:
            shoot(page, screenshots, f"{view}-{len(seen):02d}-{name}")

    def go(label: str) -> None:
        """Follow the main navigation (on a phone, behind the menu button)."""
        if phone:
            menu_button = page.get_by_role("button", name="Open menu")
            expect(menu_button).to_have_attribute("aria-expanded", "false")
            menu_button.click()
            expect(page.get_by_role("button", name="Close menu")).to_have_attribute(
                "aria-expanded", "true"
            )
        nav = page.get_by_role("navigation", name="Main")
        expect(nav).to_be_visible()
        nav.get_by_role("link", name=label, exact=True).click()
        if phone:
            expect(nav).to_be_hidden()  # the menu closes on the way

    # Signed out: the app sends us to sign in.
    page.goto("/ui/")
    expect(page).to_have_url(f"{base}/ui/login")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    check("sign-in")

    # An invitation's set-password page (a real link, left unused).
    token = invite(base, library.system.admin_key, f"{view}@example.org", "viewer")
    page.goto(f"/ui/set-password#token={token}")
    expect(page.get_by_role("heading", name="Set your password")).to_be_visible()
    check("set-password")

    # Sign in with the form.
    page.goto("/ui/login")
    page.get_by_label("Email").fill(ADMIN)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/ui/")
    expect(page.get_by_role("heading", name="Ask your documents")).to_be_visible()
    settled(page)
    check("chat-new")

    if phone:
        page.get_by_role("button", name="Open menu").click()
        expect(page.get_by_role("navigation", name="Main")).to_be_visible()
        check("menu-open")
        page.keyboard.press("Escape")
        expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
        expect(page.get_by_role("button", name="Open menu")).to_be_focused()

    # A transcript with an answer, and its citation open.
    answer = ask(page, PDF_QUESTION)
    expect(answer).to_contain_text(PDF_PHRASE)
    answer.get_by_role("button", name=re.compile(rf"^Source \d+: {re.escape(PDF)}")).first.click()
    popover = page.get_by_role("dialog")
    expect(popover).to_be_visible()
    expect(popover.locator("blockquote")).to_contain_text(PDF_PHRASE)
    settled(page)
    check("chat-citation")
    page.keyboard.press("Escape")
    expect(popover).to_be_hidden()

    # Every other page the main navigation offers an admin.
    if phone:
        page.get_by_role("button", name="Open menu").click()
    links = page.get_by_role("navigation", name="Main").get_by_role("link")
    expect(links.first).to_be_visible()
    labels = [" ".join(text.split()) for text in links.all_inner_texts()]
    if phone:
        page.keyboard.press("Escape")
    assert {"Chat", "Documents", "Search", "Admin"} <= set(labels), labels
    for label in labels:
        if label == "Chat":
            continue
        go(label)
        if label == "Documents":
            expect(page).to_have_url(f"{base}/ui/documents")
            row = page.get_by_role("table").get_by_role("row").filter(has_text=PDF)
            expect(row).to_be_visible()
            settled(page)
            check("documents")
            row.get_by_role("link", name=PDF, exact=True).click()
            expect(page).to_have_url(f"{base}/ui/documents/{library.pdf_id}")
            expect(page.get_by_role("heading", level=1)).to_contain_text(PDF)
            settled(page)
            check("document")
        elif label == "Search":
            expect(page).to_have_url(f"{base}/ui/search")
            page.get_by_label("Search query").fill("hard tack Fort Hill")
            page.get_by_label("Search query").press("Enter")
            results = page.get_by_role("region", name="Results")
            expect(results.get_by_role("listitem").first).to_contain_text(PDF)
            settled(page)
            check("search")
        elif label == "Admin":
            # Every section the admin navigation offers.
            expect(page).to_have_url(f"{base}/ui/admin/users")
            sections = page.get_by_role("navigation", name="Admin sections").get_by_role("link")
            expect(sections.first).to_be_visible()
            names = [" ".join(text.split()) for text in sections.all_inner_texts()]
            assert {"Users", "API keys", "System status"} <= set(names), names
            for name in names:
                tab = sections.filter(has_text=re.compile(rf"^\s*{re.escape(name)}\s*$"))
                tab.click()
                expect(tab).to_have_attribute("aria-current", "page")
                settled(page)
                check(f"admin-{slug(name)}")
        else:
            expect(page.get_by_role("heading", level=1)).to_be_visible()
            settled(page)
            check(slug(label))

    page.goto("/ui/no-such-page")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    check("not-found")

    assert not problems, "\n".join(problems)


# ------------------------------------------------------------- the transcript

# Every change to the answer being written, as the page shows it: aria-busy and the text.
_RECORD_ANSWERS = """() => {
  window.__answerStates = [];
  const log = document.querySelector('[role="log"]');
  const record = () => {
    const answers = log.querySelectorAll("article");
    const answer = answers[answers.length - 1];
    if (answer) {
      window.__answerStates.push({
        busy: answer.getAttribute("aria-busy"),
        text: answer.textContent,
      });
    }
  };
  new MutationObserver(record).observe(log, {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
}"""


def test_the_transcript_is_a_log_and_an_answer_is_busy_until_it_is_complete(
    library: Library, new_context: ContextFactory
) -> None:
    context = new_context(viewport=DESKTOP, base_url=library.base)
    sign_in(context, library.base, ADMIN)
    page = context.new_page()
    page.goto("/ui/")
    log = page.get_by_role("log", name="Conversation")
    expect(log).to_be_attached()
    expect(log).to_have_attribute("aria-live", "polite")
    page.evaluate(_RECORD_ANSWERS)

    answer = ask(page, PDF_QUESTION)
    expect(answer).to_contain_text(PDF_PHRASE)
    expect(log).to_contain_text(PDF_QUESTION)  # the question is in the log too
    final = answer.evaluate("element => element.textContent")
    states = page.evaluate("() => window.__answerStates")
    assert states, "the answer never changed on screen"
    assert states[0]["busy"] == "true", states[0]
    # Busy for as long as what is shown is not the finished answer; then not busy.
    unfinished = [s for s in states if s["busy"] != "true" and s["text"] != final]
    assert not unfinished, unfinished
    assert states[-1] == {"busy": "false", "text": final}


# ------------------------------------------------------------------ markup


def test_markup_in_answers_citations_and_snippets_is_shown_as_text(
    library: Library, new_context: ContextFactory
) -> None:
    # Without the page's Content-Security-Policy, so that markup the app wrongly rendered
    # would run here and be caught, not be stopped by the second line of defence.
    context = new_context(viewport=DESKTOP, base_url=library.base, bypass_csp=True)
    sign_in(context, library.base, ADMIN)
    page = context.new_page()

    def nothing_ran(where: Locator) -> None:
        assert page.evaluate("() => typeof window.__xss") == "undefined"
        expect(where.locator('img[src="x"]')).to_have_count(0)
        expect(where.locator("script")).to_have_count(0)
        expect(page.locator('img[src="x"]')).to_have_count(0)

    page.goto("/ui/")
    answer = ask(page, XSS_QUESTION)
    expect(answer).to_contain_text(XSS_IMG)  # the markup, shown as text
    expect(answer).to_contain_text(XSS_SCRIPT)
    nothing_ran(page.get_by_role("log"))

    answer.get_by_role("button", name=re.compile(rf"^Source \d+: {re.escape(XSS_FILE)}")).click()
    passage = page.get_by_role("dialog").locator("blockquote")
    expect(passage).to_contain_text(XSS_IMG)
    expect(passage).to_contain_text(XSS_SCRIPT)
    nothing_ran(page.get_by_role("dialog"))

    page.goto("/ui/search?q=kestrel+ledger&mode=keyword")
    hit = page.get_by_role("region", name="Results").get_by_role("listitem").first
    expect(hit).to_contain_text(XSS_FILE)
    expect(hit).to_contain_text(XSS_IMG)
    expect(hit).to_contain_text(XSS_SCRIPT)
    expect(hit.locator("mark")).to_have_text(["kestrel", "ledger"])  # highlights stay marks
    nothing_ran(hit)


# ---------------------------------------------------------------- keyboard

KEYBOARD_FILE = "skerryvore-log.md"
KEYBOARD_TEXT = (
    "# Skerryvore\n\n"
    "The Skerryvore keeper sounds the fog signal every ninety seconds while the haze lasts.\n"
)
KEYBOARD_QUESTION = "How often does the Skerryvore keeper sound the fog signal?"


def test_a_keyboard_alone_signs_in_uploads_and_asks(
    library: Library, new_context: ContextFactory, tmp_path: Path
) -> None:
    upload = tmp_path / KEYBOARD_FILE
    upload.write_text(KEYBOARD_TEXT)
    base = library.base
    page = new_context(viewport=DESKTOP, base_url=base).new_page()
    intercept_file_choosers(page)
    keyboard = page.keyboard
    page.goto("/ui/")
    expect(page).to_have_url(f"{base}/ui/login")

    # Sign in: the e-mail field has the focus.
    expect(page.get_by_label("Email")).to_be_focused()
    keyboard.type(EDITOR)
    keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    keyboard.type(PASSWORD)
    keyboard.press("Enter")
    expect(page).to_have_url(f"{base}/ui/")

    # To the documents page, and the file picker opened with Enter.
    main_nav = page.get_by_role("navigation", name="Main")
    tab_to(page, main_nav.get_by_role("link", name="Documents"))
    keyboard.press("Enter")
    expect(page).to_have_url(f"{base}/ui/documents")
    tab_to(page, page.get_by_role("button", name="Choose files…"))
    with page.expect_file_chooser() as chooser:
        keyboard.press("Enter")
    chooser.value.set_files(upload)
    row = page.get_by_role("table").get_by_role("row").filter(has_text=KEYBOARD_FILE)
    status = row.get_by_role("cell").nth(1)  # the badge, and the steps while in progress
    expect(status).to_have_text("embedded", timeout=120_000)
    link = row.get_by_role("link", name=KEYBOARD_FILE, exact=True).get_attribute("href")
    assert link and link.startswith("/ui/documents/"), link
    # The chat reads the search index, a read model of its own: it has the document too
    # before we ask (search with min_position: the server waits for it).
    with library.system.client() as client:
        document = client.get(f"/v1/documents/{link.rsplit('/', 1)[1]}").json()
        searched = client.get(
            "/v1/search", params={"q": KEYBOARD_QUESTION, "min_position": document["position"]}
        )
    assert searched.status_code == 200, searched.text
    assert document["id"] in {hit["document_id"] for hit in searched.json()["results"]}

    # Back to the chat (Shift+Tab up the navigation) and ask.
    tab_to(page, main_nav.get_by_role("link", name="Chat"), backwards=True)
    keyboard.press("Enter")
    expect(page).to_have_url(f"{base}/ui/")
    question = page.get_by_label("Ask a question about your documents")
    tab_to(page, question)
    keyboard.type(KEYBOARD_QUESTION)
    keyboard.press("Enter")
    answer = page.get_by_role("log").get_by_role("article").last
    expect(answer).to_have_attribute("aria-busy", "false")
    expect(answer).to_contain_text("every ninety seconds")
    expect(question).to_be_focused()  # ready for the next question

    # The citation opens with Enter and closes with Escape, focus back on the marker.
    marker = answer.get_by_role("button", name=re.compile(rf"^Source \d+: {KEYBOARD_FILE}"))
    tab_to(page, marker.first, backwards=True)
    keyboard.press("Enter")
    popover = page.get_by_role("dialog")
    expect(popover).to_be_focused()
    expect(popover).to_contain_text("every ninety seconds")
    keyboard.press("Escape")
    expect(popover).to_be_hidden()
    expect(marker.first).to_be_focused()


# ------------------------------------------------------------------- theme


def test_the_theme_toggle_is_remembered(library: Library, new_context: ContextFactory) -> None:
    context = new_context(viewport=DESKTOP, base_url=library.base, color_scheme="light")
    sign_in(context, library.base, ADMIN)
    page = context.new_page()
    page.goto("/ui/documents")
    html = page.locator("html")
    expect(html).not_to_have_class(re.compile(r"\bdark\b"))
    page.get_by_role("button", name="Switch to dark theme").click()
    expect(html).to_have_class(re.compile(r"\bdark\b"))
    assert page.evaluate("() => localStorage.getItem('kf-theme')") == "dark"
    page.reload()
    expect(page.get_by_role("button", name="Switch to light theme")).to_be_visible()
    expect(html).to_have_class(re.compile(r"\bdark\b"))


# ------------------------------------------------------------------- roles

VIEWER = "vic@example.org"


def test_a_viewer_sees_no_upload_delete_or_erase_controls(
    library: Library, new_context: ContextFactory
) -> None:
    create_user(library.base, library.system.admin_key, VIEWER, "viewer")
    context = new_context(viewport=DESKTOP, base_url=library.base)
    sign_in(context, library.base, VIEWER)
    page = context.new_page()
    page.goto("/ui/documents")
    row = page.get_by_role("table").get_by_role("row").filter(has_text=PDF)
    expect(row.get_by_role("link", name=PDF, exact=True)).to_be_visible()
    settled(page)
    expect(page.get_by_text("Drop files here to upload")).to_have_count(0)
    expect(page.get_by_role("button", name="Choose files…")).to_have_count(0)
    expect(page.get_by_label("Choose files to upload")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile(r"^Delete "))).to_have_count(0)
    # The trash is an editor's: a viewer's status filter does not offer it.
    assert "deleted" not in page.get_by_label("Filter by status").inner_text().lower()

    row.get_by_role("link", name=PDF, exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(PDF)
    settled(page)
    for name in ("Delete", "Erase…", "Restore", re.compile("legal hold", re.I)):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Documents", exact=True)).to_be_visible()
    expect(nav.get_by_role("link", name="Admin", exact=True)).to_have_count(0)
    # And the API behind the page refuses what the page does not offer.
    refused = context.request.delete(
        f"{library.base}/v1/documents/{library.pdf_id}",
        headers={"X-CSRF-Token": csrf_of(context)},
    )
    assert refused.status == 403, refused.text()


def csrf_of(context: BrowserContext) -> str:
    [token] = [c["value"] for c in context.cookies() if c["name"] == "kf_csrf"]
    return token


# ------------------------------------------------------------ drag and drop

# Files dropped on the page (made in the page: a DataTransfer holds File objects).
_DATA_TRANSFER = """(files) => {
  const transfer = new DataTransfer();
  for (const f of files) {
    const body = f.repeat > 1 ? f.text.repeat(f.repeat) : f.text;
    transfer.items.add(new File([body], f.name, { type: f.type }));
  }
  return transfer;
}"""


def drop(page: Page, files: list[dict[str, object]]) -> None:
    """Drag ``files`` over the drop zone and let go, as a file manager would."""
    transfer = page.evaluate_handle(_DATA_TRANSFER, files)
    zone = page.get_by_text("Drop files here to upload")
    for event in ("dragenter", "dragover", "drop"):
        zone.dispatch_event(event, {"dataTransfer": transfer})


def test_files_dropped_together_upload_each_with_its_progress_and_status(
    library: Library, new_context: ContextFactory
) -> None:
    context = new_context(viewport=DESKTOP, base_url=library.base)
    sign_in(context, library.base, EDITOR)
    page = context.new_page()
    page.goto("/ui/documents")
    settled(page)
    uploads = page.locator("li", has=page.get_by_text(re.compile(r"\d+(\.\d+)? (B|KB|MB) ·")))

    # Three files at once: two new ones and one identical to a file in the library.
    drop(
        page,
        [
            {"name": "tern-survey.md", "type": "text/markdown", "text": TERN},
            {"name": "gannet-survey.txt", "type": "text/plain", "text": GANNET},
            {"name": "ledger-copy.md", "type": "text/markdown", "text": XSS_TEXT},
        ],
    )
    for name in ("tern-survey.md", "gannet-survey.txt"):
        item = uploads.filter(has_text=name)
        expect(item).to_contain_text("Uploaded")
        # Processing is followed live, without a reload, to the end.
        expect(item.get_by_text("embedded", exact=True)).to_be_visible(timeout=120_000)
        expect(item).to_contain_text("Uploaded and ready")
    expect(uploads.filter(has_text="ledger-copy.md")).to_contain_text(
        "Already uploaded: identical file in the library"
    )
    library_rows = page.get_by_role("table").get_by_role("row")
    expect(library_rows.filter(has_text="tern-survey.md")).to_contain_text("embedded")
    expect(library_rows.filter(has_text="gannet-survey.txt")).to_contain_text("embedded")

    # A big file on a slow line (3.3 MB at 64 KB/s: almost a minute): its bar shows the
    # bytes sent, and Cancel stops it. Clicked while far from the end, so that the server
    # never has the whole file, however slow this machine is.
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 20, "downloadThroughput": -1, "uploadThroughput": 64_000},
    )
    drop(
        page,
        [{"name": "cormorant-census.txt", "type": "text/plain", "text": GANNET, "repeat": 40_000}],
    )
    item = uploads.filter(has_text="cormorant-census.txt")
    bar = item.get_by_role("progressbar", name="Upload of cormorant-census.txt")
    expect(bar).to_be_visible()
    expect(item).to_contain_text(re.compile(r"[\d.]+ (KB|MB) of [\d.]+ MB sent"))
    # Some bytes sent, far from all of them.
    expect(bar).to_have_attribute("aria-valuenow", re.compile(r"^([1-9]|[1-3]\d)$"))
    item.get_by_role("button", name="Cancel upload of cormorant-census.txt").click()
    expect(item).to_contain_text("Cancelled")
    expect(bar).to_have_count(0)

    # Once every byte is out the server may be keeping the file, so Cancel goes (it would
    # say "Cancelled" of a file that was kept): the reply held back 4 s, the row says so.
    cdp.send("Network.emulateNetworkConditions", {**NO_THROTTLE, "latency": 4_000})
    drop(page, [{"name": "shag-count.txt", "type": "text/plain", "text": SHAG}])
    item = uploads.filter(has_text="shag-count.txt")
    expect(item).to_contain_text("All sent · the server is storing it")
    bar = item.get_by_role("progressbar", name="Upload of shag-count.txt")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(item.get_by_role("button", name="Cancel upload of shag-count.txt")).to_have_count(0)
    expect(item).to_contain_text("Uploaded")
    cdp.send("Network.emulateNetworkConditions", {**NO_THROTTLE})

    # What the library holds once it has caught up: the cancelled file never arrived.
    system = library.system
    head = system.container.documents.head_position()
    assert system.container.views["catalog"].wait_for("documents", head, 60)
    with system.client() as client:
        listed = client.get("/v1/documents", params={"limit": 200}).json()["items"]
    names = {d["filename"] for d in listed}
    assert "cormorant-census.txt" not in names, names
    assert {"tern-survey.md", "shag-count.txt"} <= names, names


TERN = "# Terns\n\nThe arctic tern colony on Inner Farne counted 1,932 pairs this summer.\n"
GANNET = "Gannets dive from thirty metres at the Bass Rock, folding their wings at the last.\n"
SHAG = "Shags nest on the ledges of Staple Island: 412 nests were counted this year.\n"
NO_THROTTLE = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}


# ------------------------------------------------------------ conversations


def test_a_conversation_deleted_from_the_sidebar_is_gone(
    library: Library, new_context: ContextFactory
) -> None:
    context = new_context(viewport=DESKTOP, base_url=library.base)
    sign_in(context, library.base, EDITOR)
    page = context.new_page()
    page.goto("/ui/")
    answer = ask(page, PDF_QUESTION)
    expect(answer).to_contain_text(PDF_PHRASE)
    match = re.search(r"/ui/chat/([0-9a-f-]{36})$", page.url)
    assert match, page.url
    conversations = page.get_by_role("navigation", name="Conversations")
    delete = conversations.get_by_role("button", name=f"Delete conversation {PDF_QUESTION}")
    expect(delete).to_be_visible()
    delete.click()
    dialog = page.get_by_role("dialog", name="Delete conversation?")
    expect(dialog).to_contain_text("will be erased")
    dialog.get_by_role("button", name="Delete").click()
    expect(dialog).to_be_hidden()
    expect(delete).to_have_count(0)
    expect(page).to_have_url(f"{library.base}/ui/")  # a new chat, empty
    expect(page.get_by_role("log").get_by_role("article")).to_have_count(0)

    page.goto(f"/ui/chat/{match[1]}")  # an old link
    expect(page.get_by_role("log")).to_contain_text("[erased]")
    expect(page.get_by_role("log")).not_to_contain_text(PDF_QUESTION)
    with library.system.client() as client:
        transcript = client.get(f"/v1/conversations/{match[1]}").json()
        listed = client.get("/v1/conversations", params={"limit": 200}).json()["items"]
    # Its question and answer are gone (what the passages it cited say is the document's).
    [turn] = transcript["turns"]
    assert turn["question"] == turn["answer"] == "[erased]", turn
    assert transcript["erased_at"] and transcript["title"] == "[erased]", transcript
    assert match[1] not in {c["id"] for c in listed}


# ------------------------------------------------------- delete and filters

PUFFIN = "puffin-count.md"
PUFFIN_TEXT = "# Puffins\n\nOn the Shiants the puffin burrows numbered 62,000 this spring.\n"


def test_the_library_filters_by_name_and_status_and_a_delete_is_confirmed_first(
    library: Library, new_context: ContextFactory, tmp_path: Path
) -> None:
    source = tmp_path / PUFFIN
    source.write_text(PUFFIN_TEXT)
    with library.system.client() as client:
        puffin = library.system.upload(client, source)
        final = library.system.wait_final(client, [puffin["id"]], timeout=120)
    assert final[puffin["id"]]["status"] == "embedded", final
    context = new_context(viewport=DESKTOP, base_url=library.base)
    sign_in(context, library.base, EDITOR)
    page = context.new_page()
    page.goto("/ui/documents")
    settled(page)
    rows = page.get_by_role("table").get_by_role("row")
    expect(rows.filter(has_text=PDF)).to_have_count(1)

    # The name filter narrows the list as one types, whatever the case.
    page.get_by_label("Filter by name").fill("PUFFIN")
    expect(rows.filter(has_text=PUFFIN)).to_have_count(1)
    expect(rows.filter(has_text=PDF)).to_have_count(0)
    page.get_by_label("Filter by name").fill("no such file anywhere")
    expect(page.get_by_text("No document matches")).to_be_visible()
    page.get_by_label("Filter by name").fill("")
    # The status filter asks the API for that status only.
    page.get_by_label("Filter by status").select_option("failed")
    settled(page)
    expect(rows.filter(has_text=PUFFIN)).to_have_count(0)
    page.get_by_label("Filter by status").select_option("embedded")
    settled(page)
    expect(rows.filter(has_text=PUFFIN)).to_have_count(1)
    expect(rows.filter(has_text=PDF)).to_have_count(1)

    # Delete asks first; Cancel keeps the document.
    row = rows.filter(has_text=PUFFIN)
    row.get_by_role("button", name=f"Delete {PUFFIN}").click()
    dialog = page.get_by_role("dialog", name="Delete document?")
    expect(dialog).to_contain_text(PUFFIN)
    expect(dialog).to_contain_text("can restore it from the trash")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(row).to_have_count(1)
    with library.system.client() as client:
        assert client.get(f"/v1/documents/{puffin['id']}").json()["status"] == "embedded"

    # Confirmed, it leaves the library at once and waits in the trash.
    row.get_by_role("button", name=f"Delete {PUFFIN}").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(dialog).to_be_hidden()
    expect(row).to_have_count(0)
    expect(page.get_by_role("status").filter(has_text=f"{PUFFIN} deleted.")).to_have_count(1)
    page.get_by_label("Filter by status").select_option("deleted")
    settled(page)
    trashed = rows.filter(has_text=PUFFIN)
    expect(trashed).to_contain_text("deleted")
    expect(trashed.get_by_role("button", name=f"Delete {PUFFIN}")).to_have_count(0)
    expect(rows.filter(has_text=PDF)).to_have_count(0)
    with library.system.client() as client:
        assert client.get(f"/v1/documents/{puffin['id']}").json()["status"] == "deleted"
