"""The feed explorer works for a person: a real server (uvicorn subprocess, real Redis with the
materialised TikTok online store, a mean-pool run over TikTok's real image + audio features)
driven by headless Chromium. Entering a user shows history and recommendations with media
badges, scores and the model version; a click posts an event and the history and feed change
at once; similar items and search answer in the side panel, and API errors are shown as the
API's own message. A screenshot is kept in ./test-artifacts/explorer.png.

A second catalogue with real photos and audio clips checks thumbnails and audio players.
Skipped only on a developer machine without /usr/bin/chromium; in CI (env CI set) a missing
browser is a failure. `RECSYS_DOCS_SCREENSHOT=docs/explorer.png` also writes the README's picture.
"""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fixtures_media.media import image_bytes
from test_explorer_api import media_catalogue_run, write_media_catalogue

from feature_store.materialize import materialize
from recsys.data import load_dataset
from support.local_server import free_port, redis_url_of, wait_until_ready
from support.sample_runs import tiktok_mean_pool_run

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]
MODEL_VERSION = "tiktok-meanpool-explorer"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists() and not os.environ.get("CI"),
                                 reason="/usr/bin/chromium not installed (apt-get install -y chromium)")]

# The production app plus the explorer router (included here until serving.main includes it).
SERVER = """
import sys, uvicorn
from serving.api.routes import explorer
from serving.main import create_app
app = create_app()
if not any(getattr(route, "path", None) == "/" for route in app.routes):
    app.include_router(explorer.router)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools", access_log=False,
            log_level="warning", timeout_graceful_shutdown=5)
"""


class ExplorerServer:
    """The API + explorer on a free loopback port, in its own process; stopped with SIGTERM."""

    def __init__(self, run_dir: Path, env: dict[str, str], log_file: Path, startup_timeout_s: float = 120.0):
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "RECSYS_SERVE_RUN_DIR": str(run_dir), **env}
        self.log_file, self.startup_timeout_s = log_file, startup_timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "ExplorerServer":
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-c", SERVER, str(self.port)], cwd=REPO, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_ready(self.process, self.url, self.startup_timeout_s, str(self.log_file), interval_s=0.2)
        except TimeoutError:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def tiktok_server(tmp_path_factory, redis_server):
    root = tmp_path_factory.mktemp("explorer-tiktok")
    run = tiktok_mean_pool_run(root / "run", model_version=MODEL_VERSION)
    namespace = "test-explorer-browser-tiktok"
    materialize("tiktok", client=redis_server, namespace=namespace, offline_root=root / "offline", progress=False)
    env = {"REDIS_URL": redis_url_of(redis_server), "RECSYS_REDIS_NAMESPACE": namespace,
           "RECSYS_SERVE_LOG_DIR": str(root / "logs")}
    with ExplorerServer(run, env, root / "server.log") as server:
        yield server


@pytest.fixture(scope="module")
def media_server(tmp_path_factory, redis_server):
    root = tmp_path_factory.mktemp("explorer-media")
    catalogue = write_media_catalogue(root / "catalogue")
    run = media_catalogue_run(catalogue, root / "run")
    namespace = "test-explorer-browser-media"
    materialize(load_dataset(catalogue), client=redis_server, namespace=namespace, offline_root=root / "offline",
                progress=False)
    env = {"REDIS_URL": redis_url_of(redis_server), "RECSYS_REDIS_NAMESPACE": namespace,
           "RECSYS_SERVE_LOG_DIR": str(root / "logs")}
    with ExplorerServer(run, env, root / "server.log") as server:
        yield server


@pytest.fixture(scope="module")
def image_search_server(tmp_path_factory, redis_server):
    """The media catalogue under a run whose content path embeds images only (text/audio items, no encoders)."""
    from test_explorer_live import image_content_run

    root = tmp_path_factory.mktemp("explorer-image-search")
    catalogue = write_media_catalogue(root / "catalogue")
    run = image_content_run(catalogue, root / "run")
    namespace = "test-explorer-browser-image-search"
    materialize(load_dataset(catalogue), client=redis_server, namespace=namespace, offline_root=root / "offline",
                progress=False)
    env = {"REDIS_URL": redis_url_of(redis_server), "RECSYS_REDIS_NAMESPACE": namespace,
           "RECSYS_SERVE_LOG_DIR": str(root / "logs"), "RECSYS_STORE_DIR": str(root / "store"), "HF_HUB_OFFLINE": "1"}
    with ExplorerServer(run, env, root / "server.log") as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail("CI is set but /usr/bin/chromium is missing: the CI script must apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Watched:
    """A page whose requests, uncaught exceptions and console errors are recorded."""

    def __init__(self, browser, base_url: str, viewport: dict[str, int]):
        self.page = browser.new_page(viewport=viewport)
        self.page.set_default_timeout(30_000)
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        # API answers such as the expected 422 also log "Failed to load resource"; those are not page bugs.
        self.page.on("console", lambda m: self.errors.append(m.text)
                     if m.type == "error" and "Failed to load resource" not in m.text else None)
        self.base_url = base_url

    def check_clean(self) -> None:
        foreign = [u for u in self.requests if not u.startswith((self.base_url, "data:", "blob:"))]
        assert not foreign, f"the page fetched from other hosts: {foreign}"
        assert not self.errors, self.errors


def _ids(page, selector: str) -> list[str]:
    return page.locator(selector).evaluate_all("cards => cards.map(c => c.dataset.itemId)")


def _screenshot_is_a_real_page(path: Path) -> None:
    from PIL import Image

    assert path.stat().st_size > 50_000, f"{path} is {path.stat().st_size} bytes: a blank page?"
    with Image.open(path) as image:
        assert image.width >= 1200 and image.height >= 800
        colours = image.convert("RGB").resize((300, 300)).getcolors(maxcolors=1_000_000)
        assert len(colours) > 500, f"{path} has {len(colours)} colours: nothing rendered?"


def test_feed_history_click_similar_and_search_in_headless_chromium(tiktok_server, browser):
    api = httpx.Client(base_url=tiktok_server.url, timeout=30)
    examples = api.get("/v1/explorer/examples").json()
    user = examples["users"][0]["user_id"]  # the longest history
    watched = Watched(browser, tiktok_server.url, {"width": 1440, "height": 1000})
    page = watched.page
    page.goto(tiktok_server.url + "/", wait_until="load")
    page.wait_for_selector("body[data-ready='true']")
    assert page.locator("#example-buttons button").count() == len(examples["users"]) + 1
    assert page.locator("#media-filter input[value='text']").is_disabled()  # TikTok has no text items

    # Enter a user: history and recommendations side by side.
    page.fill("#user-id", user)
    page.press("#user-id", "Enter")
    page.wait_for_function("document.querySelectorAll('#feed .card').length === 12")
    page.wait_for_selector("#history .card")
    assert page.locator("#feed-meta .model-version").inner_text() == MODEL_VERSION
    assert page.locator("#feed-meta .variant").inner_text() == "A"
    feed = page.locator("#feed .card")
    for i in range(feed.count()):
        card = feed.nth(i)
        assert card.locator(".badge.medium-image").count() == 1 and card.locator(".badge.medium-audio").count() == 1
        score = card.locator(".score").inner_text()
        assert score.startswith("score ") and 0.0 < float(score.split()[1]) <= 1.0, score
    feed_before = _ids(page, "#feed .card")
    served = api.get(f"/v1/users/{user}/recommendations", params={"k": 12}).json()
    assert feed_before == [i["item_id"] for i in served["items"]]
    history = api.get(f"/v1/users/{user}/history", params={"n": 12}).json()
    assert _ids(page, "#history .card") == [i["item_id"] for i in history["items"]]

    # A click on a recommendation posts an event; the history gains the item and the feed moves.
    clicked = feed_before[2]
    with page.expect_response(lambda r: r.url.endswith("/v1/events") and r.request.method == "POST") as posted:
        page.locator(f"#feed .card[data-item-id='{clicked}'] button.act-click").click()
    assert posted.value.status == 202
    event = posted.value.request.post_data_json
    assert event["user_id"] == user and event["item_id"] == clicked and event["event_id"].startswith("explorer-")
    page.wait_for_function(f"document.querySelector('#history .card')?.dataset.itemId === {clicked!r}")
    page.wait_for_selector("#feed .card.is-new")
    feed_after = _ids(page, "#feed .card")
    assert clicked not in feed_after and feed_after != feed_before and len(feed_after) == 12
    assert page.locator("#history .card").first.locator(".badge.clicked").count() == 1
    assert "recorded" in page.locator("#status").inner_text()
    assert api.get(f"/v1/users/{user}/history", params={"n": 1}).json()["items"][0]["item_id"] == clicked

    # Similar items of a card, in the side panel.
    anchor = feed_after[0]
    page.locator(f"#feed .card[data-item-id='{anchor}'] button.act-similar").click()
    page.wait_for_function("document.querySelectorAll('#results .card').length === 12")
    assert anchor in page.locator("#results-title").inner_text()
    similar = api.get(f"/v1/items/{anchor}/similar", params={"k": 12}).json()
    assert _ids(page, "#results .card") == [i["item_id"] for i in similar["items"]]

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "explorer.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("RECSYS_DOCS_SCREENSHOT"):  # the README's picture: down to the end of the feed
        docs = REPO / os.environ["RECSYS_DOCS_SCREENSHOT"]
        docs.parent.mkdir(parents=True, exist_ok=True)
        page.evaluate("document.activeElement.blur()")
        page.mouse.move(0, 0)
        feed_box = page.locator(".feed-panel").bounding_box()
        page.screenshot(path=str(docs), full_page=True,
                        clip={"x": 0, "y": 0, "width": 1440, "height": feed_box["y"] + feed_box["height"] + 24})
    _screenshot_is_a_real_page(shot)

    # TikTok's features are precomputed: no query medium can be embedded, so every search input is
    # disabled and the page says why, with the reasons the server gives (#17).
    reasons = examples["search_media"]
    assert all(reasons[m] for m in ("text", "image", "audio")), reasons
    assert page.locator("#search-text").is_disabled() and page.locator("#search-file").is_disabled()
    assert page.locator("#search-form button[type='submit']").is_disabled()
    note = page.locator("#search-note")
    assert note.is_visible()
    for medium in ("text", "image", "audio"):
        assert reasons[medium] in note.locator(f".search-off[data-medium='{medium}']").inner_text()

    # The media filter reaches the API (and the feed still renders).
    with page.expect_response(lambda r: "/recommendations" in r.url and "media=image" in r.url) as filtered:
        page.locator("#media-filter input[value='audio']").uncheck()
    assert filtered.value.status == 200
    page.wait_for_function("document.querySelectorAll('#feed .card').length === 12")

    # Another user: the previous user's click note does not stay on screen.
    assert "recorded" in page.locator("#status").inner_text()
    other = examples["users"][1]["user_id"]
    page.fill("#user-id", other)
    page.press("#user-id", "Enter")
    page.wait_for_function(f"new URLSearchParams(location.search).get('user') === {other!r}")
    page.wait_for_function("document.querySelectorAll('#feed .card').length === 12")
    assert page.locator("#status").inner_text() == ""
    watched.check_clean()
    page.close()


def test_cards_show_thumbnails_and_audio_players_for_items_with_files(media_server, browser):
    watched = Watched(browser, media_server.url, {"width": 1280, "height": 900})
    page = watched.page
    page.goto(media_server.url + "/?user=u1", wait_until="load")
    page.wait_for_function("document.querySelectorAll('#history .card').length === 3")
    page.wait_for_selector("#feed .card")
    assert _ids(page, "#history .card") == ["cat", "coffee", "astro"]
    page.wait_for_function("[...document.images].every(img => img.complete)")
    loaded = page.locator("img").evaluate_all(
        "imgs => imgs.map(i => [i.closest('.card').dataset.itemId, i.naturalWidth])")
    assert {item for item, _ in loaded} >= {"cat", "coffee", "astro", "camera"}
    assert all(width > 0 for _, width in loaded), f"broken images: {loaded}"
    gone = page.locator("#feed .card[data-item-id='gone']")
    assert gone.locator("img").count() == 0 and gone.locator(".thumb.placeholder").count() == 1  # its file is missing
    players = page.locator("audio").evaluate_all("els => els.map(a => [a.closest('.card').dataset.itemId, a.src])")
    assert {item for item, _ in players} == {"astro", "cat", "tone"}
    for _, src in players:
        served_as = page.evaluate("src => fetch(src).then(r => r.ok && r.headers.get('content-type'))", src)
        assert served_as.startswith("audio/"), (src, served_as)
    assert page.locator("#feed .card[data-item-id='note'] .badge.medium-text").count() == 1
    with io.BytesIO(page.screenshot(full_page=True)) as png:
        assert png.getbuffer().nbytes > 30_000
    watched.check_clean()
    page.close()


def test_search_inputs_for_media_the_model_cannot_embed_are_disabled_with_the_reason(image_search_server, browser):
    """#17: the run embeds image queries only; its catalogue also has text and audio items."""
    reasons = httpx.get(image_search_server.url + "/v1/explorer/examples", timeout=30).json()["search_media"]
    assert reasons["image"] is None and reasons["text"] and reasons["audio"]
    watched = Watched(browser, image_search_server.url, {"width": 1280, "height": 900})
    page = watched.page
    page.goto(image_search_server.url + "/", wait_until="load")
    page.wait_for_selector("body[data-ready='true']")
    text = page.locator("#search-text")
    assert text.is_disabled() and reasons["text"] in text.get_attribute("title")
    assert page.locator("#search-file").is_enabled() and page.locator("#search-file").get_attribute("accept") == "image/*"
    assert page.locator("label[for='search-file']").inner_text() == "or an image file"
    assert reasons["text"] in page.locator("#search-note .search-off[data-medium='text']").inner_text()
    assert reasons["audio"] in page.locator("#search-note .search-off[data-medium='audio']").inner_text()
    assert page.locator("#search-note .search-off[data-medium='image']").count() == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator(".explore-panel").screenshot(path=str(ARTIFACTS / "explorer-search-media.png"))

    # an audio file is refused on the page with the reason, and never sent
    before = len([u for u in watched.requests if u.endswith("/v1/search")])
    page.set_input_files("#search-file", {"name": "clip.wav", "mimeType": "audio/wav", "buffer": b"RIFF0000WAVE"})
    page.click("#search-form button[type='submit']")
    error = page.locator("#results-error")
    error.wait_for(state="visible")
    assert "cannot search by audio" in error.inner_text() and reasons["audio"] in error.inner_text()
    assert len([u for u in watched.requests if u.endswith("/v1/search")]) == before

    # an image search goes out and answers with the items nearest the photo
    with page.expect_response(lambda r: r.url.endswith("/v1/search")) as answered:
        page.set_input_files("#search-file", {"name": "astronaut.png", "mimeType": "image/png",
                                              "buffer": image_bytes("astronaut")})
        page.click("#search-form button[type='submit']")
    assert answered.value.status == 200, answered.value.text()
    page.wait_for_selector("#results .card")
    assert page.locator("#results-error").is_hidden()
    watched.check_clean()
    page.close()
