"""The explorer page is self-contained: `/` serves HTML whose scripts, styles and links are all on
this server (nothing from a CDN: production machines may have no internet), and `/static/` serves
only the files in serving/static. No model is loaded: these routes need no state.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from serving.api.routes import explorer
from serving.api.routes.explorer import STATIC_DIR
from serving.config import ServingSettings
from serving.main import create_app

URL = re.compile(r"\b(?:https?|wss?|ftp):", re.I)


class _References(HTMLParser):
    """Every URL-bearing attribute of the document (src, href, action, poster, srcset, data)."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "action", "poster", "srcset", "data") and value is not None:
                self.refs.append((tag, name, value))


@pytest.fixture(scope="module")
def client():
    app = create_app(ServingSettings())
    if not any(getattr(route, "path", None) == "/" for route in app.routes):
        app.include_router(explorer.router)
    return TestClient(app)  # no `with`: the lifespan (model loading) does not run


def test_page_references_only_assets_on_this_server(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    parser = _References()
    parser.feed(response.text)
    refs = parser.refs
    assert ("script", "src", "/static/app.js") in refs and ("link", "href", "/static/style.css") in refs
    for tag, attr, value in refs:
        assert value.startswith(("/", "#", "data:")) and not value.startswith("//"), f"<{tag} {attr}={value!r}>"
        if value.startswith("/static/"):
            asset = client.get(value)
            assert asset.status_code == 200 and asset.content, value
    for name in ("index.html", "app.js", "style.css"):
        text = (STATIC_DIR / name).read_text()
        assert not URL.findall(text), f"{name} names another host: {URL.findall(text)}"
        assert "@import" not in text and "import(" not in text, f"{name} loads code from elsewhere"


def test_static_assets_have_their_content_types(client):
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("path", ["/static/missing.js", "/static/.hidden", "/static/__init__.py",
                                  "/static/..%2F..%2Fmain.py", "/static/%2E%2E/explorer.py",
                                  "/static/../api/routes/explorer.py"])
def test_static_serves_nothing_outside_its_folder(client, path):
    response = client.get(path)
    assert response.status_code == 404 and response.headers["content-type"] == "application/json"
    assert "def " not in response.text


def test_page_has_labelled_controls_and_live_regions(client):
    html = client.get("/").text
    for control in ("user-id", "search-text", "search-file", "k"):
        assert f'<label for="{control}">' in html, control
    assert 'role="status"' in html and html.count('role="alert"') == 3
    assert '<html lang="en">' in html
